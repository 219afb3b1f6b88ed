package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"
)

// newBareProxy returns the baseline the relay is compared with: a plain
// httputil.ReverseProxy set up as one would in production, with keep-alive
// connections to the upstream sized for the load, no HTTP/2 attempt (the
// upstream speaks HTTP/1.1 on loopback) and every write flushed at once, so
// streams are not buffered.
func newBareProxy(target *url.URL) *httputil.ReverseProxy {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   4096,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorLog:      log.New(os.Stderr, "proxy: ", log.LstdFlags),
	}
}

// runProxy is the hidden subcommand "_proxy -listen ADDR -target URL": the
// bare reverse proxy as its own process, until ctx ends.
func runProxy(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("_proxy", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to serve on")
	target := fs.String("target", "", "upstream base URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		return fmt.Errorf("_proxy: bad -target %q", *target)
	}
	rp := newBareProxy(u)
	// Full duplex lets the proxy's transport finish reading the client's
	// body (it reads once more to see EOF) after the response has begun;
	// without it the HTTP/1 server closes that body when the response
	// headers are flushed, and a fast upstream's stream is cut at random.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		rp.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	return serve(ctx, srv, *listen)
}

// serve runs srv on the loopback address listen until ctx ends, then shuts
// it down gracefully.
func serve(ctx context.Context, srv *http.Server, listen string) error {
	if err := checkLoopback(listen); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// checkLoopback refuses addresses other than loopback ones: every byte the
// bench sends stays on this machine.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("address %q: not a loopback address", addr)
	}
	return nil
}
