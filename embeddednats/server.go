// Package embeddednats runs the in-process NATS server, with JetStream file
// storage, that Relay parks queued requests on.
//
// [Start] turns plain [Options] into nats-server options, starts the server,
// waits until it accepts connections and checks that JetStream is enabled.
// The server always runs with NoSigs set (the process owns signal handling),
// and its logs are routed through a [log/slog.Logger]; nothing is printed to
// stdout or stderr.
//
// Clients inside the process connect with [Server.Connect], which uses
// nats.InProcessServer and so works without a TCP listener. [Connect] is the
// counterpart for an external NATS cluster given by URL.
//
// Every connection authenticates. Server.Connect presents a secret made at
// Start and accepted only in-process, and gets every right. On the client
// port (Options.Listen), tenants log in with their relay key and may only
// read their own results and usage (see [TenantPermissions]); static users
// get exactly their listed permissions; anyone else is refused.
// [Server.SetAccess] changes tenants and users at run time.
//
// A [Server] is safe for concurrent use. Whoever calls [Start] owns the
// returned Server and must call [Server.Shutdown] once it is no longer needed,
// after closing or draining the connections made with [Server.Connect].
// This package creates no streams or consumers; that is the job of package
// lanes.
package embeddednats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Fallbacks applied by [Start] to zero-valued [Options] fields. Neither is
// a setting of the relay's configuration (configs owns those: nats.*), so
// zero can mean nothing else.
const (
	// DefaultServerName is the server name used when Options.ServerName is
	// empty.
	DefaultServerName = "relay"
	// DefaultReadyTimeout is how long Start waits for the server to accept
	// connections when Options.ReadyTimeout is zero.
	DefaultReadyTimeout = 10 * time.Second
	// ClientName is the connection name Relay's own NATS clients announce.
	ClientName = "relay"
)

// readyPoll bounds a single readiness probe so that Start notices a
// cancelled context or a fatal server error promptly.
const readyPoll = 100 * time.Millisecond

// ErrInvalidOptions is wrapped by the error [Start] returns when [Options]
// fail validation. Match it with errors.Is.
var ErrInvalidOptions = errors.New("embeddednats: invalid options")

// Options configures the embedded server. The zero value is not usable:
// StoreDir is required.
type Options struct {
	// ServerName names the server. JetStream requires it to stay the same
	// across restarts that reuse StoreDir. Empty means DefaultServerName.
	ServerName string
	// Listen is the client address "host:port" for subscribers outside the
	// process. Empty means no TCP listener at all (in-process clients only).
	// Port 0 picks a random free port; see Server.ClientURL.
	Listen string
	// StoreDir is the directory for JetStream file storage. It is created if
	// missing. Required.
	StoreDir string
	// SyncInterval is how often JetStream fsyncs file storage. Zero means the
	// server default.
	SyncInterval time.Duration
	// SyncAlways makes JetStream fsync every write.
	SyncAlways bool
	// Logger receives the server's logs. Debug and trace logs are produced
	// only when the logger is enabled for slog.LevelDebug (debug) or
	// LevelTrace (trace). Nil discards all server logs.
	Logger *slog.Logger
	// ReadyTimeout bounds how long Start waits for the server to accept
	// connections. Zero means DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Tenants are the relay keys that may log in on the client port (key
	// as token, or as password with any user name) to read their own
	// results and usage: see TenantPermissions. Change them with
	// Server.SetAccess.
	Tenants []Tenant
	// Users are static users of the client port with exactly their listed
	// permissions (plus their inbox). Change them with Server.SetAccess.
	Users []User
	// Cluster, when set, makes the server a node of a JetStream cluster
	// with the servers at Cluster.Routes. ServerName must then be unique
	// in the cluster (and stay the same across restarts).
	Cluster *ClusterOptions
	// MaxPayload is the largest message the server accepts, in bytes;
	// zero means the package's MaxPayload (NATS's ceiling).
	MaxPayload int32
}

// ClusterOptions make the embedded server a node of a JetStream cluster:
// it listens for routes from its peers on Listen and connects to Routes
// (its own address may be among them; a server never routes to itself).
type ClusterOptions struct {
	// Name is the cluster's name, the same on every node.
	Name string
	// Listen is the route address "host:port" the peers connect to.
	Listen string
	// Routes are the peers' route addresses ("host:port" or
	// "nats-route://host:port").
	Routes []string
	// Password, when set, is required from every route: each node
	// presents it (as user ClusterUser) and accepts only routes that do.
	Password string
}

// ClusterUser is the user name routes present with ClusterOptions.Password.
const ClusterUser = "relay-cluster"

// withDefaults returns a copy of o with zero fields set to their defaults.
func (o Options) withDefaults() Options {
	if o.ServerName == "" {
		o.ServerName = DefaultServerName
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = DefaultReadyTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// validate reports every problem with o at once. Each one wraps
// ErrInvalidOptions.
func (o Options) validate() error {
	var errs []error
	if o.StoreDir == "" {
		errs = append(errs, fmt.Errorf("%w: store dir is required", ErrInvalidOptions))
	}
	if o.ReadyTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: ready timeout %s is negative", ErrInvalidOptions, o.ReadyTimeout))
	}
	if o.SyncInterval < 0 {
		errs = append(errs, fmt.Errorf("%w: sync interval %s is negative", ErrInvalidOptions, o.SyncInterval))
	}
	if strings.ContainsAny(o.ServerName, " \t\r\n") {
		errs = append(errs, fmt.Errorf("%w: server name %q contains whitespace", ErrInvalidOptions, o.ServerName))
	}
	if o.Listen != "" {
		if _, _, err := splitListen(o.Listen); err != nil {
			errs = append(errs, fmt.Errorf("%w: listen %q: %w", ErrInvalidOptions, o.Listen, err))
		}
	}
	if _, err := newAccess(o.Tenants, o.Users); err != nil {
		errs = append(errs, err)
	}
	if o.Cluster != nil {
		errs = append(errs, o.Cluster.validate()...)
	}
	return errors.Join(errs...)
}

// splitListen parses a "host:port" listen address into nats-server terms:
// port 0 becomes server.RANDOM_PORT.
func splitListen(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number in 0..65535", portStr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// serverOptions maps validated options onto nats-server options.
// MaxPayload is the largest message the embedded server accepts unless
// Options.MaxPayload says less: NATS's ceiling.
const MaxPayload = 64 << 20

func (o Options) serverOptions(auth server.Authentication) *server.Options {
	so := &server.Options{
		// Every client authenticates, in-process ones included: the
		// relay's own connections with the per-process secret, outside
		// ones as tenants or users. The nonce lets nkey users sign in.
		CustomClientAuthentication: auth,
		AlwaysEnableNonce:          true,
		ServerName:                 o.ServerName,
		JetStream:                  true,
		StoreDir:                   o.StoreDir,
		SyncInterval:               o.SyncInterval,
		SyncAlways:                 o.SyncAlways,
		NoSigs:                     true,
		NoLog:                      true,
		DontListen:                 o.Listen == "",
		// Jobs carry whole request bodies (up to max_body_bytes, 32 MiB by
		// default); 64 MB is the largest payload NATS allows.
		MaxPayload: MaxPayload,
	}
	if o.MaxPayload > 0 && o.MaxPayload < MaxPayload {
		so.MaxPayload = o.MaxPayload
	}
	if o.Listen != "" {
		// validate has already checked the address.
		so.Host, so.Port, _ = splitListen(o.Listen)
	}
	if c := o.Cluster; c != nil {
		if o.Listen == "" {
			// nats-server starts routing only once its client port
			// listens: a random loopback port (authenticated as always).
			so.DontListen, so.Host, so.Port = false, "127.0.0.1", server.RANDOM_PORT
		}
		so.Cluster.Name = c.Name
		so.Cluster.Host, so.Cluster.Port, _ = splitListen(c.Listen)
		so.Cluster.Username, so.Cluster.Password = "", ""
		if c.Password != "" {
			so.Cluster.Username, so.Cluster.Password = ClusterUser, c.Password
		}
		so.Routes = c.routeURLs()
	}
	return so
}

// Server is a running embedded NATS server with JetStream. It is safe for
// concurrent use. The caller of [Start] must call [Server.Shutdown].
type Server struct {
	ns        *server.Server
	log       *slogLogger
	auth      *authenticator
	clientURL string
	storeDir  string // Options.StoreDir, for RecoverJetStream

	shutdownOnce sync.Once
	done         chan struct{} // closed when the server has fully shut down
}

// Start starts an embedded NATS server with JetStream and waits until it
// accepts connections, for at most opts.ReadyTimeout or until ctx is done.
// The returned error names the step that failed. On success the caller owns
// the Server and must call [Server.Shutdown].
func Start(ctx context.Context, opts Options) (*Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("embeddednats: start: %w", err)
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("embeddednats: create store dir: %w", err)
	}
	auth, err := newAuthenticator()
	if err != nil {
		return nil, err
	}
	table, _ := newAccess(opts.Tenants, opts.Users) // validated above
	auth.table.Store(table)
	ns, err := server.NewServer(opts.serverOptions(auth))
	if err != nil {
		return nil, fmt.Errorf("embeddednats: new server: %w", err)
	}
	sl := newSlogLogger(opts.Logger)
	ns.SetLoggerV2(sl, sl.debug, sl.trace, false)

	s := &Server{ns: ns, log: sl, auth: auth, done: make(chan struct{}), storeDir: opts.StoreDir}
	ns.Start()
	if err := s.waitReady(ctx, opts.ReadyTimeout); err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, err
	}
	if opts.Listen != "" {
		s.clientURL = clientURL(ns.Addr())
	}
	return s, nil
}

// waitReady waits until the server accepts connections and has JetStream
// enabled, failing fast on a fatal server error or a done ctx.
func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if msg := s.log.fatal(); msg != "" {
			return fmt.Errorf("embeddednats: start server: %s", msg)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("embeddednats: wait for server ready: %w", err)
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return fmt.Errorf("embeddednats: server not ready for connections after %s", timeout)
		}
		if s.ns.ReadyForConnections(min(remaining, readyPoll)) {
			break
		}
	}
	if !s.ns.JetStreamEnabled() {
		return errors.New("embeddednats: jetstream not enabled")
	}
	return nil
}

// clientURL builds a nats:// URL for a listener address. An unspecified
// host (0.0.0.0 or ::) is replaced by the matching loopback address so the
// URL can be dialled.
func clientURL(addr net.Addr) string {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return ""
	}
	ip := ta.IP
	switch {
	case ip == nil || ip.Equal(net.IPv4zero):
		ip = net.IPv4(127, 0, 0, 1)
	case ip.IsUnspecified():
		ip = net.IPv6loopback
	}
	return "nats://" + net.JoinHostPort(ip.String(), strconv.Itoa(ta.Port))
}

// Connect opens a client connection to the server through the in-process
// transport, so it works without a TCP listener. The connection has every
// right: it authenticates with a secret made at Start, held only in
// memory and accepted only in-process. Its inbox prefix is one no outside
// client may subscribe to. The connection is named ClientName unless opts
// say otherwise; opts are applied after the defaults.
// The caller must close or drain the connection, before calling
// [Server.Shutdown].
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.Name(ClientName), nats.CustomInboxPrefix(internalInbox)}, opts...)
	all = append(all, nats.Token(string(s.auth.secret)), nats.InProcessServer(s.ns))
	nc, err := nats.Connect("", all...)
	if err != nil {
		return nil, fmt.Errorf("embeddednats: connect in-process: %w", err)
	}
	return nc, nil
}

// ClientURL returns the nats:// URL of the TCP client listener, with the
// actual port when Options.Listen asked for port 0. It returns "" when the
// server runs in-process only.
func (s *Server) ClientURL() string {
	return s.clientURL
}

// Ready reports whether the server is running with JetStream enabled. It is
// cheap and meant for readiness probes.
func (s *Server) Ready() bool {
	select {
	case <-s.done:
		return false
	default:
	}
	return s.ns.Running() && s.ns.JetStreamEnabled()
}

// Shutdown stops the server and waits until it has fully shut down or ctx
// is done. If ctx ends first, Shutdown returns an error wrapping ctx.Err()
// while the shutdown carries on in the background; a later call waits for
// it again. Shutdown is idempotent: once the server is down it returns nil.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		// The goroutine ends when the server has shut down; done signals that.
		go func() {
			defer close(s.done)
			s.ns.Shutdown()
			s.ns.WaitForShutdown()
		}()
	})
	select {
	case <-s.done:
		return nil
	default:
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("embeddednats: wait for shutdown: %w", err)
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("embeddednats: wait for shutdown: %w", ctx.Err())
	}
}

// SetAccess replaces the tenants and users allowed on the client port. New
// connections are checked against them at once; open connections of a
// tenant or user that is gone, or whose secret or permissions changed,
// are closed (their clients reconnect and are checked again). On an error
// nothing changes.
func (s *Server) SetAccess(tenants []Tenant, users []User) error {
	next, err := newAccess(tenants, users)
	if err != nil {
		return err
	}
	prev := s.auth.table.Swap(next)
	stale := prev.principals()
	for id, fp := range next.principals() {
		if stale[id] == fp {
			delete(stale, id)
		}
	}
	if len(stale) == 0 {
		return nil
	}
	cz, err := s.ns.Connz(&server.ConnzOptions{Username: true, Limit: s.ns.NumClients() + 64})
	if err != nil {
		return fmt.Errorf("embeddednats: list connections: %w", err)
	}
	for _, ci := range cz.Conns {
		if _, ok := stale[ci.AuthorizedUser]; ok {
			_ = s.ns.DisconnectClientByID(ci.Cid) // already gone is fine
		}
	}
	return nil
}
