package configs

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// validateNATSAuth checks who may use the embedded server's client port
// (nats.users, and that the port stays on loopback) and the credentials
// and TLS files for an external server (nats.url).
func (c *Config) validateNATSAuth(ps *problems) {
	n := c.NATS
	if n.URL == "" {
		if n.Listen != "" && !loopbackListen(n.Listen) {
			ps.add("nats.listen", "must be a loopback address such as 127.0.0.1:4222: the client port has no TLS, "+
				"so relay keys and passwords would cross the network in clear text (front it with a TLS proxy "+
				"or a NATS server of your own, via nats.url)")
		}
		for _, f := range []struct{ path, val string }{
			{"nats.credentials", n.Credentials}, {"nats.nkey_seed_file", n.NkeySeedFile},
			{"nats.user", n.User}, {"nats.password", n.Password}, {"nats.token", n.Token},
		} {
			if f.val != "" {
				ps.add(f.path, "only applies to an external server (nats.url is empty)")
			}
		}
		if n.TLS.Enabled() {
			ps.add("nats.tls", "only applies to an external server (nats.url is empty)")
		}
		c.validateNATSUsers(ps)
		return
	}
	if len(n.Users) > 0 {
		ps.add("nats.users", "only applies to the embedded server (nats.url is set): configure users on your NATS server")
	}
	validateNATSClientAuth(ps, n)
}

// validateNATSClientAuth checks the credentials for nats.url: at most one
// way to authenticate, and files that exist.
func validateNATSClientAuth(ps *problems, n NATS) {
	var ways []string
	for _, w := range []struct{ name, val string }{
		{"credentials", n.Credentials}, {"nkey_seed_file", n.NkeySeedFile}, {"user", n.User}, {"token", n.Token},
	} {
		if w.val != "" {
			ways = append(ways, w.name)
		}
	}
	if len(ways) > 1 {
		ps.add("nats", "set at most one of credentials, nkey_seed_file, user (with password) and token, not %s", strings.Join(ways, " and "))
	}
	if (n.User == "") != (n.Password == "") {
		ps.add("nats.password", "user and password go together")
	}
	if n.Token != "" {
		checkSecret(ps, "nats.token", n.Token)
	}
	checkFile(ps, "nats.credentials", n.Credentials)
	checkFile(ps, "nats.nkey_seed_file", n.NkeySeedFile)
	checkFile(ps, "nats.tls.ca_file", n.TLS.CAFile)
	checkFile(ps, "nats.tls.cert_file", n.TLS.CertFile)
	checkFile(ps, "nats.tls.key_file", n.TLS.KeyFile)
	if (n.TLS.CertFile == "") != (n.TLS.KeyFile == "") {
		ps.add("nats.tls", "cert_file and key_file go together")
	}
}

// validateNATSUsers checks nats.users: names that are one subject token,
// unique and distinct from key names (a user's inbox is _INBOX.<user>, a
// tenant's _INBOX.<key-name>), one way to log in, and valid subjects.
func (c *Config) validateNATSUsers(ps *problems) {
	keys := make(map[string]int, len(c.Keys))
	for i, k := range c.Keys {
		keys[k.Name] = i
	}
	seen := make(map[string]int)
	for i, u := range c.NATS.Users {
		p := fmt.Sprintf("nats.users[%d]", i)
		checkName(ps, p+".user", "user", u.User, seen, "nats.users", i)
		if j, ok := keys[u.User]; ok {
			ps.add(p+".user", "same name as keys[%d]: a user and a tenant would share the inbox _INBOX.%s", j, u.User)
		}
		switch {
		case (u.Password == "") == (u.Nkey == ""):
			ps.add(p, "set exactly one of password and nkey")
		case u.Password != "":
			checkSecret(ps, p+".password", u.Password)
		case !validUserNkey(u.Nkey):
			ps.add(p+".nkey", "must be a public user nkey (56 characters starting with U)")
		}
		for j, s := range u.Publish {
			if !validSubject(s) {
				ps.add(fmt.Sprintf("%s.publish[%d]", p, j), "%q is not a NATS subject", s)
			}
		}
		for j, s := range u.Subscribe {
			if !validSubject(s) {
				ps.add(fmt.Sprintf("%s.subscribe[%d]", p, j), "%q is not a NATS subject", s)
			}
		}
	}
}

// loopbackListen reports whether a listen address binds loopback only.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true // reported by checkHostPort
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkFile reports a set path that is not a readable regular file.
func checkFile(ps *problems, path, file string) {
	if file == "" {
		return
	}
	st, err := os.Stat(file)
	switch {
	case err != nil:
		ps.add(path, "cannot read %q: %v", file, err)
	case !st.Mode().IsRegular():
		ps.add(path, "%q is not a regular file", file)
	}
}

// validUserNkey reports whether s looks like a public user nkey: 56
// base32 characters starting with U. The server checks its checksum.
func validUserNkey(s string) bool {
	if len(s) != 56 || s[0] != 'U' {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= '2' && r <= '7') {
			return false
		}
	}
	return true
}

// validSubject reports whether s is a NATS subject or subject pattern:
// non-empty tokens separated by dots, no white space, and ">" only last.
func validSubject(s string) bool {
	if s == "" || strings.ContainsAny(s, " \t\r\n") {
		return false
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		if t == "" || (t == ">" && i != len(toks)-1) {
			return false
		}
		if len(t) > 1 && strings.ContainsAny(t, "*>") {
			return false
		}
	}
	return true
}
