package embeddednats

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"
)

// Names of the JetStream assets and subjects a tenant may read. They are
// the ones package lanes/jobs creates; a test keeps them in step.
const (
	// ResultsStream is the stream of finished jobs.
	ResultsStream = "RELAY_RESULTS"
	// UsageStream is the stream of per-request usage records.
	UsageStream = "RELAY_USAGE"
	// ResultsPrefix starts every result subject: relay.results.<key>.<job>.
	ResultsPrefix = "relay.results."
	// UsagePrefix starts every usage subject: relay.usage.<key>.
	UsagePrefix = "relay.usage."
	// InboxPrefix is the first token of every outside client's inbox: a
	// tenant or user called name receives replies on InboxPrefix.name.>,
	// so it must connect with nats.CustomInboxPrefix("_INBOX.<name>").
	InboxPrefix = "_INBOX"
	// internalInbox is the inbox prefix of the relay's own connections;
	// no outside client may subscribe to it.
	internalInbox = "_RELAY_INBOX"
	// internalUser names the relay's own connections on the server.
	internalUser = "relay:internal"
	// tenantUser prefixes the user name a tenant connection is registered
	// under (key names hold no colon), so reloads can find them.
	tenantUser = "key:"
)

// Tenant is a relay key allowed on the client port. A client that presents
// the key's secret as token or password may only read the key's own
// results and usage; see [Options.Tenants]. A key with two valid secrets
// (a rotation's grace period) is listed twice, with the same Name.
type Tenant struct {
	// Name is the key name: one NATS subject token.
	Name string
	// SHA256 is the SHA-256 of the key's secret.
	SHA256 [32]byte
}

// User is a static user of the client port. It gets exactly the listed
// permissions, plus subscribe on its inbox InboxPrefix.<Name>.>.
type User struct {
	// Name is the user name clients send; one NATS subject token.
	Name string
	// Password is the password, in clear or as a bcrypt hash ($2a$...).
	// Exactly one of Password and Nkey is set.
	Password string
	// Nkey is the user's public nkey (U...); the client signs the server's
	// nonce with the matching seed.
	Nkey string
	// Publish lists the subjects the user may publish to; empty: none.
	Publish []string
	// Subscribe lists the subjects the user may subscribe to; empty: none
	// besides its inbox.
	Subscribe []string
}

// access is one immutable snapshot of who may connect.
type access struct {
	tenants []Tenant
	users   map[string]*User // by name, password users
	nkeys   map[string]*User // by public key
}

// authenticator checks every client connection. The relay's own
// connections present a random per-process token over the in-process
// transport; everyone else is a tenant or a static user.
type authenticator struct {
	secret []byte // the internal token; never written anywhere
	table  atomic.Pointer[access]
}

// newAuthenticator returns an authenticator with a fresh random secret.
func newAuthenticator() (*authenticator, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("embeddednats: internal secret: %w", err)
	}
	a := &authenticator{secret: []byte(hex.EncodeToString(raw))}
	a.table.Store(&access{})
	return a, nil
}

// newAccess validates tenants and users and indexes them.
func newAccess(tenants []Tenant, users []User) (*access, error) {
	var errs []error
	t := &access{tenants: slices.Clone(tenants), users: map[string]*User{}, nkeys: map[string]*User{}}
	names := map[string]bool{}
	for _, tn := range tenants {
		if !validToken(tn.Name) {
			errs = append(errs, fmt.Errorf("%w: tenant name %q is not one subject token", ErrInvalidOptions, tn.Name))
		}
		names[tn.Name] = true
	}
	for i := range users {
		u := users[i]
		u.Publish, u.Subscribe = slices.Clone(u.Publish), slices.Clone(u.Subscribe)
		switch {
		case !validToken(u.Name):
			errs = append(errs, fmt.Errorf("%w: user name %q is not one subject token", ErrInvalidOptions, u.Name))
		case names[u.Name]:
			errs = append(errs, fmt.Errorf("%w: user %q has the name of a tenant or another user (they would share an inbox)", ErrInvalidOptions, u.Name))
		case (u.Password == "") == (u.Nkey == ""):
			errs = append(errs, fmt.Errorf("%w: user %q: set exactly one of password and nkey", ErrInvalidOptions, u.Name))
		case u.Nkey != "" && !nkeys.IsValidPublicUserKey(u.Nkey):
			errs = append(errs, fmt.Errorf("%w: user %q: nkey is not a public user key", ErrInvalidOptions, u.Name))
		case u.Nkey != "":
			t.nkeys[u.Nkey] = &u
		default:
			t.users[u.Name] = &u
		}
		names[u.Name] = true
	}
	return t, errors.Join(errs...)
}

// validToken reports whether s is one subject token without wildcards.
func validToken(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n:")
}

// Check implements server.Authentication.
func (a *authenticator) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	o := c.GetOpts()
	if o.Token != "" && subtle.ConstantTimeCompare([]byte(o.Token), a.secret) == 1 && inProcess(c.RemoteAddress()) {
		c.RegisterUser(&server.User{Username: internalUser}) // nil permissions: everything
		return true
	}
	// A reload that swaps the table while this check runs could miss this
	// connection when it closes revoked ones: check again against the new
	// table until it held still for a whole check.
	for {
		t := a.table.Load()
		ok := t.check(c, o)
		if a.table.Load() == t {
			return ok
		}
	}
}

// check authenticates an outside client against t and registers its
// permissions.
func (t *access) check(c server.ClientAuthentication, o *server.ClientOpts) bool {
	switch {
	case o.Nkey != "":
		u, ok := t.nkeys[o.Nkey]
		if !ok || !verifyNonce(o.Nkey, o.Sig, c.GetNonce()) {
			return false
		}
		c.RegisterUser(&server.User{Username: u.Nkey, Permissions: userPermissions(u)})
		return true
	case o.Username != "":
		if u, ok := t.users[o.Username]; ok {
			if !passwordMatches(u.Password, o.Password) {
				return false
			}
			c.RegisterUser(&server.User{Username: u.Name, Permissions: userPermissions(u)})
			return true
		}
		return t.checkTenant(c, o.Password)
	default:
		return t.checkTenant(c, o.Token)
	}
}

// checkTenant registers the tenant whose secret is secret, comparing
// SHA-256 digests in constant time against every key.
func (t *access) checkTenant(c server.ClientAuthentication, secret string) bool {
	if secret == "" {
		return false
	}
	sum := sha256.Sum256([]byte(secret))
	var found *Tenant
	for i := range t.tenants {
		if subtle.ConstantTimeCompare(sum[:], t.tenants[i].SHA256[:]) == 1 {
			found = &t.tenants[i]
		}
	}
	if found == nil {
		return false
	}
	c.RegisterUser(&server.User{Username: tenantUser + found.Name, Permissions: TenantPermissions(found.Name)})
	return true
}

// inProcess reports whether addr is the in-process transport (net.Pipe).
func inProcess(addr net.Addr) bool { return addr != nil && addr.Network() == "pipe" }

// verifyNonce checks an nkey client's signature of the server's nonce.
func verifyNonce(pub, sig string, nonce []byte) bool {
	if len(nonce) == 0 || sig == "" {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		if raw, err = base64.StdEncoding.DecodeString(sig); err != nil {
			return false
		}
	}
	kp, err := nkeys.FromPublicKey(pub)
	if err != nil {
		return false
	}
	return kp.Verify(nonce, raw) == nil
}

// passwordMatches compares a clear password with a configured one, clear
// (in constant time over digests) or bcrypt-hashed.
func passwordMatches(want, got string) bool {
	if got == "" {
		return false
	}
	if isBcrypt(want) {
		return bcrypt.CompareHashAndPassword([]byte(want), []byte(got)) == nil
	}
	w, g := sha256.Sum256([]byte(want)), sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(w[:], g[:]) == 1
}

// isBcrypt reports whether s looks like a bcrypt hash.
func isBcrypt(s string) bool {
	for _, p := range []string{"$2a$", "$2b$", "$2y$"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// userPermissions returns exactly u's permissions plus its inbox.
func userPermissions(u *User) *server.Permissions {
	pub := append([]string{}, u.Publish...)
	sub := append(append([]string{}, u.Subscribe...), InboxPrefix+"."+u.Name+".>")
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
}

// TenantPermissions returns what a tenant called name may do: subscribe to
// its results, its usage and its inbox, and use the one consumer named
// exactly name on RELAY_RESULTS (filtered to relay.results.<name>.>) and on
// RELAY_USAGE (filtered to relay.usage.<name>): create it, read its info,
// pull from it, ack its messages, delete it.
//
// Consumer names are one subject token, so a wildcard name would let a
// tenant pull from, or re-filter, another tenant's consumer whose name it
// knows. Binding each tenant to the single name equal to its key name
// (unique, and unavailable to anyone else) rules that out.
func TenantPermissions(name string) *server.Permissions {
	pub := []string{}
	for _, s := range []struct{ stream, filter string }{
		{ResultsStream, ResultsPrefix + name + ".>"},
		{UsageStream, UsagePrefix + name},
	} {
		api := "$JS.API.CONSUMER."
		pub = append(pub,
			api+"CREATE."+s.stream+"."+name+"."+s.filter,
			api+"INFO."+s.stream+"."+name,
			api+"DELETE."+s.stream+"."+name,
			api+"MSG.NEXT."+s.stream+"."+name,
			"$JS.ACK."+s.stream+"."+name+".>",
		)
	}
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{
			ResultsPrefix + name + ".>", UsagePrefix + name, InboxPrefix + "." + name + ".>",
		}},
	}
}

// principals returns, for every identity in t, what a connection of it is
// registered as on the server (its user name, or its nkey) and a
// fingerprint of its credentials and rights.
func (t *access) principals() map[string]string {
	out := make(map[string]string, len(t.tenants)+len(t.users)+len(t.nkeys))
	for _, tn := range t.tenants {
		// A tenant may be listed once per valid secret (a rotated key in
		// its grace period): dropping one changes its fingerprint.
		id := tenantUser + tn.Name
		if prev, ok := out[id]; ok {
			out[id] = prev + "," + hex.EncodeToString(tn.SHA256[:])
		} else {
			out[id] = hex.EncodeToString(tn.SHA256[:])
		}
	}
	for name, u := range t.users {
		out[name] = fmt.Sprintf("%x|%q|%q", sha256.Sum256([]byte(u.Password)), u.Publish, u.Subscribe)
	}
	for key, u := range t.nkeys {
		out[key] = fmt.Sprintf("%s|%q|%q", u.Name, u.Publish, u.Subscribe)
	}
	return out
}
