package configs

import (
	"strings"
	"testing"
)

// TestAdminToken: admin.token is read (from the environment too) and a
// short one is refused with its YAML path and line.
func TestAdminToken(t *testing.T) {
	env := mapLookup(map[string]string{"TOKEN": "a-long-enough-admin-token", "SHORT": "short"})
	tests := []struct {
		name    string
		yaml    string
		want    string
		wantErr string
	}{
		{name: "absent", yaml: "", want: ""},
		{name: "from the environment", yaml: "admin:\n  token: ${TOKEN}\n", want: "a-long-enough-admin-token"},
		{name: "too short", yaml: "admin:\n  token: ${SHORT}\n", wantErr: "admin.token: must be at least 16 characters"},
		{name: "unknown field", yaml: "admin: {tokn: x}\n", wantErr: "admin.tokn"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseWithEnv([]byte(minimalYAML+tc.yaml), env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v; want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Admin.Token != tc.want {
				t.Errorf("admin.token = %q; want %q", c.Admin.Token, tc.want)
			}
		})
	}
}
