package configs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestValidateNATSAuth(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f.pem")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	const nkey = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"
	env := mapLookup(map[string]string{"READER_PW": "pw-from-env", "F": file, "MISSING": missing})
	tests := []struct {
		name string
		yaml string // the nats block, appended to minimalYAML
		want []string
	}{
		{name: "default listen is loopback", yaml: ""},
		{name: "listen localhost", yaml: "nats: {listen: localhost:4222}\n"},
		{name: "listen ipv6 loopback", yaml: "nats: {listen: '[::1]:4222'}\n"},
		{name: "in-process only", yaml: "nats: {listen: ''}\n"},
		{name: "listen on every interface", yaml: "nats: {listen: ':4222'}\n", want: []string{"nats.listen: must be a loopback address"}},
		{name: "listen on a public address", yaml: "nats: {listen: 0.0.0.0:4222}\n", want: []string{"nats.listen: must be a loopback address"}},
		{name: "external ignores listen", yaml: "nats: {url: nats://10.0.0.1:4222, listen: 0.0.0.0:4222}\n"},
		{name: "users", yaml: `nats:
  users:
    - {user: results-reader, password: "${READER_PW}", subscribe: ["relay.results.>"], publish: []}
    - {user: hashed, password: "$$2a$$11$$abcdefghijklmnopqrstuv", subscribe: ["relay.results.*.job_1"]}
    - {user: signer, nkey: ` + nkey + `, publish: ["$$JS.API.>"], subscribe: [">"]}
`},
		{name: "bad users", yaml: `nats:
  users:
    - {user: "a.b", password: x}
    - {user: k1, password: x}
    - {user: both, password: x, nkey: ` + nkey + `}
    - {user: neither}
    - {user: badkey, nkey: SUAKEY}
    - {user: subjects, password: x, publish: ["a..b", "a.>.c"], subscribe: ["", "a b", "a.b*"]}
    - {user: subjects, password: "x y"}
`, want: []string{
			`nats.users[0].user: user name "a.b" may only hold`,
			"nats.users[1].user: same name as keys[0]: a user and a tenant would share the inbox _INBOX.k1",
			"nats.users[2]: set exactly one of password and nkey",
			"nats.users[3]: set exactly one of password and nkey",
			"nats.users[4].nkey: must be a public user nkey",
			`nats.users[5].publish[0]: "a..b" is not a NATS subject`,
			`nats.users[5].publish[1]: "a.>.c" is not a NATS subject`,
			`nats.users[5].subscribe[0]: "" is not a NATS subject`,
			`nats.users[5].subscribe[1]: "a b" is not a NATS subject`,
			`nats.users[5].subscribe[2]: "a.b*" is not a NATS subject`,
			`nats.users[6].user: duplicate user "subjects" (also nats.users[5])`,
			"nats.users[6].password: must not hold white space",
		}},
		{name: "users with an external server", yaml: "nats: {url: nats://h:4222, users: [{user: u, password: p}]}\n",
			want: []string{"nats.users: only applies to the embedded server"}},
		{name: "external user and password", yaml: "nats: {url: nats://h:4222, user: relay, password: pw}\n"},
		{name: "external token", yaml: "nats: {url: nats://h:4222, token: t0k}\n"},
		{name: "external creds and tls", yaml: "nats: {url: tls://h:4222, credentials: \"${F}\", tls: {ca_file: \"${F}\", cert_file: \"${F}\", key_file: \"${F}\"}}\n"},
		{name: "external nkey seed", yaml: "nats: {url: nats://h:4222, nkey_seed_file: \"${F}\"}\n"},
		{name: "external: two ways", yaml: "nats: {url: nats://h:4222, token: t, credentials: \"${F}\"}\n",
			want: []string{"nats: set at most one of credentials, nkey_seed_file, user (with password) and token, not credentials and token"}},
		{name: "external: user without password", yaml: "nats: {url: nats://h:4222, user: relay}\n",
			want: []string{"nats.password: user and password go together"}},
		{name: "external: missing files", yaml: "nats: {url: nats://h:4222, nkey_seed_file: \"${MISSING}\", tls: {ca_file: \"${MISSING}\", cert_file: \"${F}\"}}\n",
			want: []string{"nats.nkey_seed_file: cannot read", "nats.tls.ca_file: cannot read", "nats.tls: cert_file and key_file go together"}},
		{name: "external: not a file", yaml: "nats: {url: nats://h:4222, credentials: " + dir + "}\n",
			want: []string{"nats.credentials: " + `"` + dir + `" is not a regular file`}},
		{name: "client settings without url", yaml: "nats: {token: t, user: u, password: p, tls: {ca_file: \"${F}\"}}\n",
			want: []string{"nats.user: only applies to an external server", "nats.token: only applies", "nats.password: only applies", "nats.tls: only applies"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// ParseWithEnv validates.
			_, err := ParseWithEnv([]byte(minimalYAML+tt.yaml), env)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("ParseWithEnv() = %v; want nil", err)
				}
				return
			}
			var got []string
			for _, p := range Problems(err) {
				got = append(got, p.Path+": "+p.Msg)
			}
			for _, w := range tt.want {
				if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, w) }) {
					t.Errorf("problems %q lack %q", got, w)
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("got %d problems %q; want %d", len(got), got, len(tt.want))
			}
			if strings.Contains(err.Error(), "x y") {
				t.Errorf("a password leaks: %v", err)
			}
		})
	}
}

func TestNATSUsersParsed(t *testing.T) {
	c, err := ParseWithEnv([]byte(minimalYAML+"nats:\n  users:\n    - {user: r, password: \"${PW}\", subscribe: [\"relay.results.>\"]}\n"),
		mapLookup(map[string]string{"PW": "s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	want := []NATSUser{{User: "r", Password: "s3cret", Subscribe: []string{"relay.results.>"}}}
	if got := c.NATS.Users; len(got) != 1 || got[0].User != want[0].User || got[0].Password != want[0].Password ||
		!slices.Equal(got[0].Subscribe, want[0].Subscribe) || got[0].Publish != nil {
		t.Errorf("nats.users = %+v; want %+v", got, want)
	}
}
