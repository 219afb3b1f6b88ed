package callbacks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// MaxURLLength is the longest callback URL accepted, in bytes.
const MaxURLLength = 2048

// Errors returned by the URL policy. Their messages, and the messages of
// the errors that wrap them here, are safe to show the client that sent
// the URL: they never name an address the relay resolved or dialled, nor a
// resolver's address.
var (
	// ErrBadURL reports a callback URL that is malformed or not allowed in
	// form: a scheme other than http or https, no host, credentials, a bad
	// port, an invalid or ambiguous host name, or a host that cannot be
	// resolved.
	ErrBadURL = errors.New("invalid callback_url")
	// ErrForbiddenAddress reports a callback URL whose host is, or resolves
	// to, an address callbacks may not reach: loopback, private, link-local,
	// shared (CGNAT), multicast, unspecified, broadcast, reserved,
	// documentation, benchmarking or cloud metadata.
	ErrForbiddenAddress = errors.New("callback_url address is not allowed")
)

// Resolver looks up the addresses of a host name. *net.Resolver, such as
// net.DefaultResolver, satisfies it; tests use a fake.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

var _ Resolver = (*net.Resolver)(nil)

// Checker applies the callback URL policy. The zero value is the strict
// policy with net.DefaultResolver. A Checker is safe for concurrent use if
// its Resolver is.
type Checker struct {
	// Resolver resolves host names; nil means net.DefaultResolver.
	Resolver Resolver
	// AllowPrivate turns every address check off: host names are not
	// resolved and any address is accepted. The URL form checks (scheme,
	// host, credentials, port, host syntax) stay. It is for development
	// and tests whose receivers listen on loopback or a private network.
	AllowPrivate bool
}

// CheckURL applies the strict callback URL policy, resolving the host with
// r (net.DefaultResolver when nil). It is Checker{Resolver: r}.Check.
func CheckURL(ctx context.Context, raw string, r Resolver) error {
	return Checker{Resolver: r}.Check(ctx, raw)
}

// Check returns nil if raw may be used as a callback URL. Otherwise it
// returns an error wrapping ErrBadURL or ErrForbiddenAddress, whose message
// is safe to show a client.
//
// The URL must be absolute http or https, with a host, without userinfo and
// with a port in 1..65535 if any. Unless AllowPrivate is set, the host must
// not be localhost or *.localhost, a *.local, *.internal, *.localdomain or
// *.home.arpa name, metadata.goog, or a single-label name (which a search
// domain could turn into an internal one); and it must not be, spell or
// resolve to a disallowed address (see ErrForbiddenAddress). Every resolved
// address is checked, not only the first. Numeric hosts are parsed with
// inet_aton rules (decimal, octal, hex and short forms such as 127.1)
// rather than left to the resolver; a numeric host whose address is allowed
// must still be written as a dotted quad, since resolvers disagree about the
// other spellings. Host names with a trailing dot are refused.
//
// Resolution can change between Check and the connection: NewClient checks
// the dialled address again.
func (c Checker) Check(ctx context.Context, raw string) error {
	_, h, err := parseCallbackURL(raw)
	if err != nil {
		return err
	}
	if c.AllowPrivate {
		if h.trailingDot {
			return fmt.Errorf("%w: host name must not end with a dot", ErrBadURL)
		}
		return nil
	}
	if h.addr.IsValid() {
		if !allowedAddr(h.addr) {
			return fmt.Errorf("%w: host is a loopback, private, link-local, metadata or reserved address", ErrForbiddenAddress)
		}
		if !h.canonical {
			return fmt.Errorf("%w: a numeric host must be a dotted-quad IPv4 or a bracketed IPv6 address", ErrBadURL)
		}
		return nil
	}
	if forbiddenName(h.name) {
		return fmt.Errorf("%w: host %q is a local, internal or single-label name", ErrForbiddenAddress, h.name)
	}
	if h.trailingDot {
		return fmt.Errorf("%w: host name must not end with a dot", ErrBadURL)
	}
	r := c.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	addrs, err := r.LookupIPAddr(ctx, h.name)
	if err != nil {
		// The resolver's message may name the relay's DNS server, so only
		// the chain, not the text, carries it.
		return &policyError{msg: fmt.Sprintf("%s: host %q cannot be resolved", ErrBadURL, h.name), errs: []error{ErrBadURL, err}}
	}
	if len(addrs) == 0 {
		return fmt.Errorf("%w: host %q has no addresses", ErrBadURL, h.name)
	}
	for _, ia := range addrs {
		a, ok := netip.AddrFromSlice(ia.IP)
		if !ok || !allowedAddr(a.WithZone(ia.Zone)) {
			return fmt.Errorf("%w: host %q resolves to a loopback, private, link-local, metadata or reserved address", ErrForbiddenAddress, h.name)
		}
	}
	return nil
}

// policyError is an error whose message is chosen to be safe for clients
// while errors.Is and errors.As still reach the underlying cause.
type policyError struct {
	msg  string
	errs []error
}

func (e *policyError) Error() string   { return e.msg }
func (e *policyError) Unwrap() []error { return e.errs }

// host is the host part of a callback URL.
type host struct {
	// name is the lower-case host name without a trailing dot; empty when
	// the host is numeric.
	name string
	// addr is the address a numeric host spells, in any spelling.
	addr netip.Addr
	// canonical reports that a numeric host is a dotted quad or a
	// bracketed IPv6 literal.
	canonical   bool
	trailingDot bool
}

// parseCallbackURL applies the form checks that hold whatever the address
// policy: absolute http or https URL, a host, no userinfo, a valid port and
// a syntactically valid host.
func parseCallbackURL(raw string) (*url.URL, host, error) {
	if len(raw) > MaxURLLength {
		return nil, host{}, fmt.Errorf("%w: longer than %d bytes", ErrBadURL, MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, host{}, fmt.Errorf("%w: cannot be parsed", ErrBadURL)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, host{}, fmt.Errorf("%w: scheme must be http or https", ErrBadURL)
	}
	if u.Opaque != "" || u.Host == "" {
		return nil, host{}, fmt.Errorf("%w: host is missing", ErrBadURL)
	}
	if u.User != nil {
		return nil, host{}, fmt.Errorf("%w: credentials in the URL are not allowed", ErrBadURL)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, host{}, fmt.Errorf("%w: port must be between 1 and 65535", ErrBadURL)
		}
	}
	hn := u.Hostname()
	if hn == "" {
		return nil, host{}, fmt.Errorf("%w: host is missing", ErrBadURL)
	}
	if strings.HasPrefix(u.Host, "[") {
		a, err := netip.ParseAddr(hn)
		if err != nil || !a.Is6() {
			return nil, host{}, fmt.Errorf("%w: invalid IPv6 address", ErrBadURL)
		}
		return u, host{addr: a, canonical: true}, nil
	}
	h, err := parseHostName(hn)
	if err != nil {
		return nil, host{}, err
	}
	return u, h, nil
}

// parseHostName classifies an unbracketed host: a numeric IPv4 host in any
// inet_aton spelling, or a DNS name of letters, digits, hyphens and
// underscores.
func parseHostName(hn string) (host, error) {
	name := strings.ToLower(hn)
	var h host
	if rest, ok := strings.CutSuffix(name, "."); ok {
		h.trailingDot = true
		name = rest
	}
	if name == "" || len(name) > 253 {
		return host{}, fmt.Errorf("%w: invalid host name", ErrBadURL)
	}
	labels := strings.Split(name, ".")
	if isNumberLabel(labels[len(labels)-1]) {
		a, ok := parseIPv4Legacy(labels)
		if !ok {
			return host{}, fmt.Errorf("%w: invalid numeric host", ErrBadURL)
		}
		c, err := netip.ParseAddr(name)
		h.addr, h.canonical = a, err == nil && c == a && !h.trailingDot
		return h, nil
	}
	for _, l := range labels {
		if !validLabel(l) {
			return host{}, fmt.Errorf("%w: invalid host name (use the xn-- form for international names)", ErrBadURL)
		}
	}
	h.name = name
	return h, nil
}

// validLabel reports whether l is a DNS label of 1 to 63 letters, digits,
// hyphens and underscores that does not start or end with a hyphen.
func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// isNumberLabel reports whether a label reads as a number to inet_aton or
// a WHATWG URL parser: decimal digits, or 0x followed by hex digits. A host
// whose last label is a number must be an IPv4 address.
func isNumberLabel(l string) bool {
	if l == "" {
		return false
	}
	if rest, ok := strings.CutPrefix(l, "0x"); ok {
		for i := 0; i < len(rest); i++ {
			if !isHex(rest[i]) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f'
}

// parseIPv4Legacy parses lower-case dot-separated parts with inet_aton
// rules: one to four parts, each decimal, octal (leading 0) or hex (0x);
// every part but the last is one byte and the last fills the remaining
// bytes, so "127.1" is 127.0.0.1 and "2130706433" is 127.0.0.1.
func parseIPv4Legacy(parts []string) (netip.Addr, bool) {
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var v uint32
	for i, p := range parts {
		n, ok := parseIPv4Part(p)
		if !ok {
			return netip.Addr{}, false
		}
		if i < len(parts)-1 {
			if n > 0xff {
				return netip.Addr{}, false
			}
			v |= uint32(n) << (8 * (3 - i))
			continue
		}
		bits := 8 * (4 - i)
		if n >= 1<<bits {
			return netip.Addr{}, false
		}
		v |= uint32(n)
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseIPv4Part parses one inet_aton part, refusing values above 2^32-1.
func parseIPv4Part(p string) (uint64, bool) {
	base, digits := uint64(10), p
	switch {
	case strings.HasPrefix(p, "0x"):
		base, digits = 16, p[2:]
		if digits == "" {
			return 0, true
		}
	case len(p) > 1 && p[0] == '0':
		base, digits = 8, p[1:]
	case p == "":
		return 0, false
	}
	var n uint64
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		var d uint64
		switch {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		n = n*base + d
		if n > 0xffffffff {
			return 0, false
		}
	}
	return n, true
}

// forbiddenName reports whether a host name is local or internal by name:
// localhost, a special-use or private-use suffix, a cloud metadata name, or
// a single label.
func forbiddenName(name string) bool {
	if !strings.Contains(name, ".") {
		return true // localhost, metadata, instance-data, intranet hosts, ...
	}
	switch name {
	case "metadata.goog", "metadata.google.internal":
		return true
	}
	for _, suffix := range [...]string{".localhost", ".local", ".internal", ".localdomain", ".home.arpa"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

// allowedAddr reports whether callbacks may connect to a. IPv6 addresses
// that embed an IPv4 address (mapped, compatible, SIIT, NAT64, 6to4) are
// judged by the embedded address; other IPv6 addresses must be global
// unicast outside the special-purpose and documentation blocks.
func allowedAddr(a netip.Addr) bool {
	if !a.IsValid() || a.Zone() != "" {
		return false
	}
	if a.Is4() {
		return allowedV4(a)
	}
	b := a.As16()
	switch {
	case a.Is4In6(): // ::ffff:0:0/96
		return allowedV4(a.Unmap())
	case isZero(b[:12]): // ::/96, IPv4-compatible; also :: and ::1
		return allowedV4(netip.AddrFrom4([4]byte(b[12:16])))
	case isZero(b[:8]) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0: // ::ffff:0:0:0/96, SIIT
		return allowedV4(netip.AddrFrom4([4]byte(b[12:16])))
	case inPrefix(a, "64:ff9b::/96"): // NAT64 well-known prefix
		return allowedV4(netip.AddrFrom4([4]byte(b[12:16])))
	case inPrefix(a, "2002::/16"): // 6to4
		return allowedV4(netip.AddrFrom4([4]byte(b[2:6])))
	}
	if !inPrefix(a, "2000::/3") { // only global unicast: no ULA, link-local, multicast, NAT64 local-use, discard, ...
		return false
	}
	for _, p := range [...]string{
		"2001::/23",     // IETF protocol assignments: Teredo, benchmarking, ORCHID, ...
		"2001:db8::/32", // documentation
		"3fff::/20",     // documentation
	} {
		if inPrefix(a, p) {
			return false
		}
	}
	return true
}

// allowedV4 reports whether callbacks may connect to the IPv4 address a.
func allowedV4(a netip.Addr) bool {
	for _, p := range [...]string{
		"0.0.0.0/8",          // "this network", unspecified
		"10.0.0.0/8",         // private
		"100.64.0.0/10",      // shared address space (CGNAT); holds 100.100.100.200, Alibaba metadata
		"127.0.0.0/8",        // loopback
		"169.254.0.0/16",     // link-local; holds 169.254.169.254, cloud metadata
		"172.16.0.0/12",      // private
		"192.0.0.0/24",       // IETF protocol assignments
		"192.0.2.0/24",       // documentation (TEST-NET-1)
		"192.88.99.0/24",     // 6to4 relay anycast
		"192.168.0.0/16",     // private
		"198.18.0.0/15",      // benchmarking
		"198.51.100.0/24",    // documentation (TEST-NET-2)
		"203.0.113.0/24",     // documentation (TEST-NET-3)
		"224.0.0.0/4",        // multicast
		"240.0.0.0/4",        // reserved
		"255.255.255.255/32", // limited broadcast (also inside 240/4)
	} {
		if inPrefix(a, p) {
			return false
		}
	}
	return true
}

// inPrefix reports whether a lies in the prefix p, a constant of this file.
func inPrefix(a netip.Addr, p string) bool {
	return netip.MustParsePrefix(p).Contains(a)
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
