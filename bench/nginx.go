package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
)

// nginxConf is a production-like reverse proxy: as many workers as cores,
// keep-alive to the upstream, no access log, no buffering (so streams pass
// through as they come). Every path lives under the temp prefix.
var nginxConf = template.Must(template.New("nginx").Parse(`daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile 16384;
pid {{.Prefix}}/nginx.pid;
error_log {{.Prefix}}/error.log warn;
events {
    worker_connections 8192;
}
http {
    access_log off;
    client_body_temp_path {{.Prefix}}/client_body;
    proxy_temp_path {{.Prefix}}/proxy;
    fastcgi_temp_path {{.Prefix}}/fastcgi;
    uwsgi_temp_path {{.Prefix}}/uwsgi;
    scgi_temp_path {{.Prefix}}/scgi;
    keepalive_requests 100000;
    upstream sim {
        server {{.Upstream}};
        keepalive 1024;
        keepalive_requests 100000;
    }
    server {
        listen {{.Listen}};
        location / {
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 60s;
        }
    }
}
`))

// nginxParams fills nginxConf.
type nginxParams struct {
	Prefix   string
	Listen   string // 127.0.0.1:port
	Upstream string // 127.0.0.1:port
}

// renderNginx returns the nginx configuration for p.
func renderNginx(p nginxParams) ([]byte, error) {
	for _, a := range []string{p.Listen, p.Upstream} {
		if err := checkLoopback(a); err != nil {
			return nil, fmt.Errorf("nginx config: %w", err)
		}
	}
	var b bytes.Buffer
	if err := nginxConf.Execute(&b, p); err != nil {
		return nil, fmt.Errorf("nginx config: %w", err)
	}
	return b.Bytes(), nil
}

// nginxVersion returns the path and version of nginx on PATH, or "" when
// there is none.
func nginxVersion() (path, version string) {
	path, err := exec.LookPath("nginx")
	if err != nil {
		return "", ""
	}
	out, err := exec.Command(path, "-v").CombinedOutput()
	if err != nil {
		return path, "unknown"
	}
	return path, strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
}

// startNginx runs nginx in the foreground with a temp prefix in front of
// upstream (host:port). SIGTERM on the master stops the workers too.
func (l *lab) startNginx(ctx context.Context, bin, upstream string) (*child, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	prefix := l.path("nginx")
	if err := os.MkdirAll(prefix, 0o755); err != nil {
		return nil, fmt.Errorf("nginx prefix: %w", err)
	}
	conf, err := renderNginx(nginxParams{Prefix: prefix, Listen: addr, Upstream: upstream})
	if err != nil {
		return nil, err
	}
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, conf, 0o644); err != nil {
		return nil, fmt.Errorf("write nginx config: %w", err)
	}
	return l.start(ctx, "nginx", addr, "/_sim/stats", syscall.SIGTERM, bin, "-p", prefix, "-c", confPath)
}
