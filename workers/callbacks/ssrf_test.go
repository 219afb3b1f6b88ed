package callbacks

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
)

// fakeResolver answers from a table and records the names it was asked.
// Each name may have a sequence of answers, used in turn (the last one
// repeats), to simulate DNS rebinding.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][][]string
	asked   []string
}

var _ Resolver = (*fakeResolver)(nil)

func (f *fakeResolver) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, host)
	seq, ok := f.answers[host]
	if !ok || len(seq) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, Server: "10.9.8.7:53", IsNotFound: true}
	}
	ips := seq[0]
	if len(seq) > 1 {
		f.answers[host] = seq[1:]
	}
	out := make([]net.IPAddr, 0, len(ips))
	for _, s := range ips {
		ip, zone, _ := strings.Cut(s, "%")
		out = append(out, net.IPAddr{IP: net.ParseIP(ip), Zone: zone})
	}
	return out, nil
}

func (f *fakeResolver) askedNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asked...)
}

func newFakeResolver() *fakeResolver {
	return &fakeResolver{answers: map[string][][]string{
		"example.com":           {{"93.184.216.34"}},
		"v6.example.com":        {{"2606:2800:220:1:248:1893:25c8:1946"}},
		"dual.example.com":      {{"93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"}},
		"hooks.example.com":     {{"93.184.216.34"}},
		"internal.example.com":  {{"10.1.2.3"}},
		"mixed.example.com":     {{"93.184.216.34", "127.0.0.1"}},
		"mixed6.example.com":    {{"93.184.216.34", "fd00::1"}},
		"mapped.example.com":    {{"::ffff:169.254.169.254"}},
		"zoned.example.com":     {{"fe80::1%eth0"}},
		"nat64.example.com":     {{"64:ff9b::5db8:d822"}},
		"nat64bad.example.com":  {{"64:ff9b::7f00:1"}},
		"empty.example.com":     {{}},
		"metadata.example.com":  {{"100.100.100.200"}},
		"rebind.example.com":    {{"93.184.216.34"}, {"127.0.0.1"}},
		"ec2-v6-meta.example":   {{"fd00:ec2::254"}},
		"under_score.example.o": {{"93.184.216.34"}},
	}}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		name string
		url  string
		want error // nil means allowed
	}{
		// Allowed: public names and addresses (the fake resolver never dials).
		{name: "https public name", url: "https://example.com/hooks?token=abc", want: nil},
		{name: "http public name with port", url: "http://hooks.example.com:8443/x", want: nil},
		{name: "public IPv4 literal", url: "https://93.184.216.34/cb", want: nil},
		{name: "public IPv6 literal", url: "https://[2606:2800:220:1:248:1893:25c8:1946]/cb", want: nil},
		{name: "public IPv6 name", url: "https://v6.example.com/", want: nil},
		{name: "dual-stack public", url: "https://dual.example.com/", want: nil},
		{name: "upper-case host", url: "https://EXAMPLE.com/", want: nil},
		{name: "NAT64 of public IPv4", url: "https://nat64.example.com/", want: nil},
		{name: "NAT64 literal of public IPv4", url: "https://[64:ff9b::93.184.216.34]/", want: nil},
		{name: "6to4 of public IPv4", url: "https://[2002:5db8:d822::1]/", want: nil},
		{name: "underscore label", url: "https://under_score.example.o/", want: nil},

		// Form.
		{name: "file scheme", url: "file:///etc/passwd", want: ErrBadURL},
		{name: "gopher scheme", url: "gopher://example.com/", want: ErrBadURL},
		{name: "ftp scheme", url: "ftp://example.com/", want: ErrBadURL},
		{name: "no scheme", url: "example.com/hook", want: ErrBadURL},
		{name: "opaque", url: "http:example.com", want: ErrBadURL},
		{name: "missing host", url: "https:///path", want: ErrBadURL},
		{name: "port only", url: "https://:443/", want: ErrBadURL},
		{name: "userinfo", url: "https://user:pass@example.com/", want: ErrBadURL},
		{name: "userinfo before loopback", url: "http://evil@127.0.0.1/", want: ErrBadURL},
		{name: "backslash userinfo trick", url: `http://example.com\@127.0.0.1/`, want: ErrBadURL},
		{name: "port zero", url: "https://example.com:0/", want: ErrBadURL},
		{name: "port too big", url: "https://example.com:65536/", want: ErrBadURL},
		{name: "control character", url: "https://example.com/\n", want: ErrBadURL},
		{name: "too long", url: "https://example.com/" + strings.Repeat("a", MaxURLLength), want: ErrBadURL},
		{name: "unicode host", url: "https://exämple.com/", want: ErrBadURL},
		{name: "empty label", url: "https://example..com/", want: ErrBadURL},
		{name: "trailing dot public name", url: "https://example.com./", want: ErrBadURL},
		{name: "unresolvable", url: "https://nxdomain.example.com/", want: ErrBadURL},
		{name: "no addresses", url: "https://empty.example.com/", want: ErrBadURL},
		{name: "invalid numeric host", url: "http://1.2.3.4.5/", want: ErrBadURL},
		{name: "numeric part overflow", url: "http://256.0.0.1/", want: ErrBadURL},
		{name: "name ending in number", url: "http://example.123/", want: ErrBadURL},
		{name: "bad octal digit", url: "http://0189.0.0.1/", want: ErrBadURL},
		{name: "decimal spelling of public IPv4", url: "http://1572395042/", want: ErrBadURL},
		{name: "bracketed IPv4", url: "http://[127.0.0.1]/", want: ErrBadURL},

		// Loopback, unspecified, broadcast.
		{name: "loopback", url: "http://127.0.0.1/", want: ErrForbiddenAddress},
		{name: "loopback high", url: "http://127.255.255.254:8080/", want: ErrForbiddenAddress},
		{name: "loopback short form", url: "http://127.1/", want: ErrForbiddenAddress},
		{name: "loopback three parts", url: "http://127.0.1/", want: ErrForbiddenAddress},
		{name: "loopback decimal", url: "http://2130706433/", want: ErrForbiddenAddress},
		{name: "loopback hex", url: "http://0x7f000001/", want: ErrForbiddenAddress},
		{name: "loopback hex upper", url: "http://0X7F000001/", want: ErrForbiddenAddress},
		{name: "loopback dotted hex", url: "http://0x7f.0x0.0x0.0x1/", want: ErrForbiddenAddress},
		{name: "loopback octal", url: "http://0177.0.0.1/", want: ErrForbiddenAddress},
		{name: "loopback octal whole", url: "http://017700000001/", want: ErrForbiddenAddress},
		{name: "loopback percent-encoded", url: "http://%31%32%37.0.0.1/", want: ErrBadURL}, // net/url refuses %-escapes in IPv4-looking hosts,
		{name: "loopback trailing dot", url: "http://127.0.0.1./", want: ErrForbiddenAddress},
		{name: "IPv6 loopback", url: "http://[::1]/", want: ErrForbiddenAddress},
		{name: "IPv4-mapped loopback", url: "http://[::ffff:127.0.0.1]/", want: ErrForbiddenAddress},
		{name: "IPv4-mapped loopback hex", url: "http://[::ffff:7f00:1]/", want: ErrForbiddenAddress},
		{name: "IPv4-compatible loopback", url: "http://[::127.0.0.1]/", want: ErrForbiddenAddress},
		{name: "SIIT loopback", url: "http://[::ffff:0:127.0.0.1]/", want: ErrForbiddenAddress},
		{name: "NAT64 of loopback", url: "http://[64:ff9b::127.0.0.1]/", want: ErrForbiddenAddress},
		{name: "NAT64 local-use prefix", url: "http://[64:ff9b:1::5db8:d822]/", want: ErrForbiddenAddress},
		{name: "6to4 of private", url: "http://[2002:c0a8:0101::1]/", want: ErrForbiddenAddress},
		{name: "6to4 of metadata", url: "http://[2002:a9fe:a9fe::]/", want: ErrForbiddenAddress},
		{name: "unspecified", url: "http://0.0.0.0/", want: ErrForbiddenAddress},
		{name: "unspecified short", url: "http://0/", want: ErrForbiddenAddress},
		{name: "this network", url: "http://0.1.2.3/", want: ErrForbiddenAddress},
		{name: "IPv6 unspecified", url: "http://[::]/", want: ErrForbiddenAddress},
		{name: "broadcast", url: "http://255.255.255.255/", want: ErrForbiddenAddress},
		{name: "broadcast decimal", url: "http://4294967295/", want: ErrForbiddenAddress},

		// Private, shared, link-local, multicast, reserved, documentation.
		{name: "10/8", url: "http://10.0.0.1/", want: ErrForbiddenAddress},
		{name: "172.16/12", url: "http://172.16.0.1/", want: ErrForbiddenAddress},
		{name: "172.31 edge", url: "http://172.31.255.255/", want: ErrForbiddenAddress},
		{name: "192.168/16", url: "http://192.168.0.1/", want: ErrForbiddenAddress},
		{name: "private short form", url: "http://10.1/", want: ErrForbiddenAddress},
		{name: "CGNAT", url: "http://100.64.0.1/", want: ErrForbiddenAddress},
		{name: "link-local", url: "http://169.254.1.1/", want: ErrForbiddenAddress},
		{name: "multicast", url: "http://224.0.0.1/", want: ErrForbiddenAddress},
		{name: "reserved 240/4", url: "http://240.0.0.1/", want: ErrForbiddenAddress},
		{name: "TEST-NET-1", url: "http://192.0.2.1/", want: ErrForbiddenAddress},
		{name: "TEST-NET-2", url: "http://198.51.100.1/", want: ErrForbiddenAddress},
		{name: "TEST-NET-3", url: "http://203.0.113.1/", want: ErrForbiddenAddress},
		{name: "benchmarking", url: "http://198.19.0.1/", want: ErrForbiddenAddress},
		{name: "IPv6 unique local", url: "http://[fd00::1]/", want: ErrForbiddenAddress},
		{name: "IPv6 unique local fc", url: "http://[fc00::1]/", want: ErrForbiddenAddress},
		{name: "IPv6 link-local", url: "http://[fe80::1]/", want: ErrForbiddenAddress},
		{name: "IPv6 link-local zoned", url: "http://[fe80::1%25eth0]/", want: ErrForbiddenAddress},
		{name: "IPv6 multicast", url: "http://[ff02::1]/", want: ErrForbiddenAddress},
		{name: "IPv6 documentation", url: "http://[2001:db8::1]/", want: ErrForbiddenAddress},
		{name: "Teredo", url: "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", want: ErrForbiddenAddress},

		// Cloud metadata.
		{name: "metadata IPv4", url: "http://169.254.169.254/latest/meta-data/", want: ErrForbiddenAddress},
		{name: "metadata decimal", url: "http://2852039166/", want: ErrForbiddenAddress},
		{name: "metadata IPv6 (EC2)", url: "http://[fd00:ec2::254]/", want: ErrForbiddenAddress},
		{name: "metadata Alibaba", url: "http://100.100.100.200/", want: ErrForbiddenAddress},
		{name: "metadata GCP name", url: "http://metadata.google.internal/computeMetadata/v1/", want: ErrForbiddenAddress},
		{name: "metadata GCP short name", url: "http://metadata/", want: ErrForbiddenAddress},
		{name: "metadata goog", url: "http://metadata.goog/", want: ErrForbiddenAddress},

		// Names.
		{name: "localhost", url: "http://localhost:8080/", want: ErrForbiddenAddress},
		{name: "localhost upper", url: "http://LOCALHOST/", want: ErrForbiddenAddress},
		{name: "localhost trailing dot", url: "http://localhost./", want: ErrForbiddenAddress},
		{name: "sub.localhost", url: "http://app.localhost/", want: ErrForbiddenAddress},
		{name: "mdns .local", url: "http://printer.local/", want: ErrForbiddenAddress},
		{name: ".internal", url: "http://db.corp.internal/", want: ErrForbiddenAddress},
		{name: "single label", url: "http://intranet/", want: ErrForbiddenAddress},

		// Resolution.
		{name: "public name resolving private", url: "https://internal.example.com/", want: ErrForbiddenAddress},
		{name: "any resolved address private", url: "https://mixed.example.com/", want: ErrForbiddenAddress},
		{name: "any resolved address ULA", url: "https://mixed6.example.com/", want: ErrForbiddenAddress},
		{name: "resolves to mapped metadata", url: "https://mapped.example.com/", want: ErrForbiddenAddress},
		{name: "resolves to zoned link-local", url: "https://zoned.example.com/", want: ErrForbiddenAddress},
		{name: "resolves to NAT64 of loopback", url: "https://nat64bad.example.com/", want: ErrForbiddenAddress},
		{name: "resolves to Alibaba metadata", url: "https://metadata.example.com/", want: ErrForbiddenAddress},
		{name: "resolves to EC2 IPv6 metadata", url: "https://ec2-v6-meta.example/", want: ErrForbiddenAddress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckURL(context.Background(), tt.url, newFakeResolver())
			if tt.want == nil {
				if err != nil {
					t.Errorf("CheckURL(%q) = %v; want nil", tt.url, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("CheckURL(%q) = %v; want %v", tt.url, err, tt.want)
			}
			// Client-safe: never an address the relay resolved, nor its resolver.
			for _, leak := range []string{"10.1.2.3", "10.9.8.7", "fd00::1", "169.254.169.254", "127.0.0.1", "no such host"} {
				if strings.Contains(err.Error(), leak) && !strings.Contains(tt.url, leak) {
					t.Errorf("CheckURL(%q) error %q discloses %q", tt.url, err, leak)
				}
			}
		})
	}
}

func TestCheckURLResolution(t *testing.T) {
	t.Run("numeric hosts are not sent to the resolver", func(t *testing.T) {
		r := newFakeResolver()
		for _, u := range []string{"http://2130706433/", "http://0x7f000001/", "http://127.1/", "http://93.184.216.34/", "http://[::1]/", "http://localhost/"} {
			_ = CheckURL(context.Background(), u, r)
		}
		if got := r.askedNames(); len(got) != 0 {
			t.Errorf("resolver asked %q; want no lookups", got)
		}
	})
	t.Run("resolver error keeps its cause for operators", func(t *testing.T) {
		err := CheckURL(context.Background(), "https://nxdomain.example.com/", newFakeResolver())
		var dnsErr *net.DNSError
		if !errors.As(err, &dnsErr) || !errors.Is(err, ErrBadURL) {
			t.Errorf("CheckURL = %v; want ErrBadURL wrapping *net.DNSError", err)
		}
	})
	t.Run("rebinding is seen by a second check", func(t *testing.T) {
		r := newFakeResolver()
		if err := CheckURL(context.Background(), "https://rebind.example.com/", r); err != nil {
			t.Fatalf("first CheckURL = %v; want nil", err)
		}
		if err := CheckURL(context.Background(), "https://rebind.example.com/", r); !errors.Is(err, ErrForbiddenAddress) {
			t.Fatalf("second CheckURL = %v; want ErrForbiddenAddress", err)
		}
	})
}

func TestCheckerAllowPrivate(t *testing.T) {
	tests := []struct {
		name string
		url  string
		want error
	}{
		{name: "loopback", url: "http://127.0.0.1:8080/cb", want: nil},
		{name: "localhost", url: "http://localhost:8080/cb", want: nil},
		{name: "private", url: "http://10.0.0.5/cb", want: nil},
		{name: "IPv6 loopback", url: "http://[::1]:9000/", want: nil},
		{name: "unresolvable is not looked up", url: "http://nxdomain.example.com/", want: nil},
		{name: "scheme still checked", url: "file:///etc/passwd", want: ErrBadURL},
		{name: "userinfo still checked", url: "http://u:p@127.0.0.1/", want: ErrBadURL},
		{name: "trailing dot still refused", url: "http://localhost./", want: ErrBadURL},
		{name: "bad numeric still refused", url: "http://1.2.3.4.5/", want: ErrBadURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newFakeResolver()
			err := Checker{Resolver: r, AllowPrivate: true}.Check(context.Background(), tt.url)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Check(%q) = %v; want %v", tt.url, err, tt.want)
			}
			if got := r.askedNames(); len(got) != 0 {
				t.Errorf("Check(%q) asked the resolver %q; want no lookups", tt.url, got)
			}
		})
	}
}

func TestParseIPv4Legacy(t *testing.T) {
	tests := []struct {
		host string
		want string // "" means invalid
	}{
		{"127.0.0.1", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"017700000001", "127.0.0.1"},
		{"0x", "0.0.0.0"},
		{"0", "0.0.0.0"},
		{"10.0x10.010.1", "10.16.8.1"},
		{"192.168.65535", "192.168.255.255"},
		{"4294967295", "255.255.255.255"},
		{"4294967296", ""},
		{"192.168.65536", ""},
		{"1.2.3.256", ""},
		{"1.2.3.4.5", ""},
		{"08.1.1.1", ""},
		{"0xg.1.1.1", ""},
		{"1..1", ""},
		{"99999999999999999999999", ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			a, ok := parseIPv4Legacy(strings.Split(tt.host, "."))
			got := ""
			if ok {
				got = a.String()
			}
			if got != tt.want {
				t.Errorf("parseIPv4Legacy(%q) = %q; want %q", tt.host, got, tt.want)
			}
		})
	}
}
