// This file is `relay keys`: the admin API for keys (gateway/keystore)
// from the command line.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

const keysUsage = `usage:
  relay keys list                 [FLAGS]   every key: the file's (read-only) and the admin API's
  relay keys show NAME            [FLAGS]   one key
  relay keys create NAME [KEY FLAGS] [FLAGS]  a new key; its secret is printed once
  relay keys update NAME [KEY FLAGS] [FLAGS]  change the flags given, nothing else
  relay keys rotate NAME [--grace 24h] [FLAGS]  a new secret, printed once; the old one works for the grace period
  relay keys revoke NAME          [FLAGS]   refused on every relay within a second

KEY FLAGS: --default-lane L --lanes a,b --routes r1,r2 --rpm N --input-tpm N
  --output-tpm N --max-concurrency N --budget-usd X | --budget-tokens N, --budget-period day|month|total
  (update: --no-budget removes the budget)
FLAGS: --admin-url URL (default $RELAY_ADMIN_URL, else http://<admin_listen> of --config)
  --config PATH (default $RELAY_CONFIG, then configs/relay.yaml) --token-file PATH
The admin token is read from $RELAY_ADMIN_TOKEN, else --token-file, else the config's admin.token;
never pass it as an argument (other users see arguments in ps).
`

// keysTimeout bounds one `relay keys` call.
const keysTimeout = 30 * time.Second

// keysClient calls the admin API.
type keysClient struct {
	base  string // http://host:port
	token string
	http  *http.Client
}

// keyFlags are the settings of create and update.
type keyFlags struct {
	defaultLane, lanes, routes         string
	rpm, inputTPM, outputTPM, maxConc  int
	budgetUSD                          float64
	budgetTokens                       int64
	budgetPeriod                       string
	noBudget                           bool
	adminURL, config, tokenFile, grace string
}

// keysCommand runs `relay keys ...`.
func keysCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, keysUsage)
		return errUsage
	}
	sub, args := args[0], args[1:]
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("keys "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, keysUsage) }
	var f keyFlags
	fs.StringVar(&f.adminURL, "admin-url", "", "admin API base URL")
	fs.StringVar(&f.config, "config", "", "configuration file whose admin_listen and admin.token to use")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding the admin token")
	withKey := sub == "create" || sub == "update"
	if withKey {
		fs.StringVar(&f.defaultLane, "default-lane", "", "lane of requests that name none")
		fs.StringVar(&f.lanes, "lanes", "", "lanes the key may use, comma-separated (default every lane)")
		fs.StringVar(&f.routes, "routes", "", `routes the key may use, comma-separated (default "*")`)
		fs.IntVar(&f.rpm, "rpm", 0, "requests per minute")
		fs.IntVar(&f.inputTPM, "input-tpm", 0, "input tokens per minute")
		fs.IntVar(&f.outputTPM, "output-tpm", 0, "output tokens per minute")
		fs.IntVar(&f.maxConc, "max-concurrency", 0, "in-flight requests")
		fs.Float64Var(&f.budgetUSD, "budget-usd", 0, "budget in USD per period")
		fs.Int64Var(&f.budgetTokens, "budget-tokens", 0, "budget in tokens per period")
		fs.StringVar(&f.budgetPeriod, "budget-period", "", "budget period: day, month or total")
		if sub == "update" {
			fs.BoolVar(&f.noBudget, "no-budget", false, "remove the budget")
		}
	}
	if sub == "rotate" {
		fs.StringVar(&f.grace, "grace", "", "how long the old secret keeps working (default 24h, at most 168h; 0s ends it now)")
	}
	switch sub {
	case "list", "show", "create", "update", "rotate", "revoke":
	default:
		fmt.Fprintf(stderr, "relay keys: unknown command %q\n%s", sub, keysUsage)
		return errUsage
	}
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
		_ = fs.Parse(fs.Args()[1:])
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "relay keys %s: unexpected argument %q\n", sub, fs.Arg(0))
		return errUsage
	}
	if (sub == "list") != (name == "") {
		if sub == "list" {
			fmt.Fprintf(stderr, "relay keys list: unexpected argument %q\n", name)
		} else {
			fmt.Fprintf(stderr, "relay keys %s: missing the key's NAME\n", sub)
		}
		return errUsage
	}
	c, err := newKeysClient(f)
	if err != nil {
		return fmt.Errorf("keys %s: %w", sub, err)
	}
	ctx, cancel := context.WithTimeout(ctx, keysTimeout)
	defer cancel()
	path := "/admin/keys/" + url.PathEscape(name)
	var method string
	var body any
	switch sub {
	case "list":
		method, path = http.MethodGet, "/admin/keys"
	case "show":
		method = http.MethodGet
	case "create":
		m := f.settings(fs)
		m["name"] = name
		method, path, body = http.MethodPost, "/admin/keys", m
	case "update":
		method, body = http.MethodPatch, f.settings(fs)
	case "rotate":
		method, path = http.MethodPost, path+"/rotate"
		if f.grace != "" {
			body = map[string]string{"grace": f.grace}
		}
	case "revoke":
		method = http.MethodDelete
	}
	out, err := c.do(ctx, method, path, body)
	if err != nil {
		return fmt.Errorf("keys %s: %w", sub, err)
	}
	if _, err := stdout.Write(out); err != nil {
		return err
	}
	if sub == "create" || sub == "rotate" {
		fmt.Fprintln(stderr, `relay keys: "key" is the secret; it is shown only now, store it safely.`)
	}
	return nil
}

// settings returns the key fields the flags set, for a create or a
// patch: only the flags given on the command line.
func (f keyFlags) settings(fs *flag.FlagSet) map[string]any {
	m := map[string]any{}
	list := func(s string) []string {
		var out []string
		for _, v := range strings.Split(s, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
		if out == nil {
			out = []string{}
		}
		return out
	}
	budget := map[string]any{}
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "default-lane":
			m["default_lane"] = f.defaultLane
		case "lanes":
			m["lanes"] = list(f.lanes)
		case "routes":
			m["routes"] = list(f.routes)
		case "rpm":
			m["rpm"] = f.rpm
		case "input-tpm":
			m["input_tpm"] = f.inputTPM
		case "output-tpm":
			m["output_tpm"] = f.outputTPM
		case "max-concurrency":
			m["max_concurrency"] = f.maxConc
		case "budget-usd":
			budget["usd"] = f.budgetUSD
		case "budget-tokens":
			budget["tokens"] = f.budgetTokens
		case "budget-period":
			budget["period"] = f.budgetPeriod
		case "no-budget":
			if f.noBudget {
				m["budget"] = nil
			}
		}
	})
	if len(budget) > 0 {
		m["budget"] = budget
	}
	return m
}

// adminFile is what `relay keys` reads of a configuration file: no more,
// and without the checks of a full load (it may run where the
// providers' keys are not set).
type adminFile struct {
	AdminListen string `yaml:"admin_listen"`
	Admin       struct {
		Token string `yaml:"token"`
	} `yaml:"admin"`
}

// newKeysClient finds the admin API's URL and token.
func newKeysClient(f keyFlags) (*keysClient, error) {
	c := &keysClient{base: f.adminURL, token: os.Getenv("RELAY_ADMIN_TOKEN"), http: &http.Client{Timeout: keysTimeout}}
	if c.base == "" {
		c.base = os.Getenv("RELAY_ADMIN_URL")
	}
	if c.token == "" && f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		c.token = strings.TrimSpace(string(b))
	}
	if c.base == "" || c.token == "" {
		path := f.config
		if path == "" {
			path = os.Getenv("RELAY_CONFIG")
		}
		explicit := path != ""
		if path == "" {
			path = "configs/relay.yaml"
		}
		var af adminFile
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			if err := yaml.Unmarshal(b, &af); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
		case explicit || !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("read config: %w", err)
		}
		if c.base == "" {
			addr := os.ExpandEnv(af.AdminListen)
			if addr == "" {
				return nil, errors.New("no admin API address: pass --admin-url, set RELAY_ADMIN_URL, or --config a file with admin_listen")
			}
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, fmt.Errorf("admin_listen %q: %w", addr, err)
			}
			if host == "" || host == "0.0.0.0" || host == "::" {
				host = "127.0.0.1"
			}
			c.base = "http://" + net.JoinHostPort(host, port)
		}
		if c.token == "" {
			c.token = os.ExpandEnv(af.Admin.Token)
		}
	}
	if c.token == "" {
		return nil, errors.New("no admin token: set RELAY_ADMIN_TOKEN, or pass --token-file")
	}
	c.base = strings.TrimRight(c.base, "/")
	return c, nil
}

// do sends one call and returns the answer's body, indented; an error
// answer becomes an error with its status, type and message.
func (c *keysClient) do(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Type, Message string }
		}
		if json.Unmarshal(raw, &e) == nil && e.Error.Message != "" {
			return nil, fmt.Errorf("%s: %s: %s", resp.Status, e.Error.Type, e.Error.Message)
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(raw)))
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return raw, nil
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}
