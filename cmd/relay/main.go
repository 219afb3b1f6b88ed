// Command relay is the Relay AI API gateway.
//
// Usage:
//
//	relay serve [--config PATH]
//	relay config validate [--config PATH]
//	relay version
//	relay healthcheck [--url URL]
//	relay keys list|show|create|update|rotate|revoke [NAME] [FLAGS]
//
// PATH defaults to $RELAY_CONFIG, then configs/relay.yaml.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/relaygw/relay/configs"
)

const usage = `usage:
  relay serve [--config PATH]            run the gateway
  relay config validate [--config PATH]  check a configuration file
  relay version                          print version, commit and Go version
  relay healthcheck [--url URL]          exit 0 when URL (default http://127.0.0.1:8080/healthz) answers 200
  relay keys list|show|create|update|rotate|revoke [NAME]
                                         manage keys through the admin API (relay keys help)

PATH defaults to $RELAY_CONFIG, then configs/relay.yaml.
`

// errUsage reports a command line that could not be understood.
var errUsage = errors.New("bad usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "relay:", err)
		}
		os.Exit(1)
	}
}

// run executes one relay command. It returns when the command is done; for
// serve that is after ctx is cancelled and the shutdown has finished.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "serve":
		path, err := configFlag("serve", args[1:], stderr)
		if err != nil {
			return err
		}
		return serve(ctx, path, stderr)
	case "config":
		if len(args) < 2 || args[1] != "validate" {
			fmt.Fprint(stderr, usage)
			return errUsage
		}
		path, err := configFlag("config validate", args[2:], stderr)
		if err != nil {
			return err
		}
		return validate(path, stdout, stderr)
	case "version", "--version", "-version":
		printVersion(stdout)
		return nil
	case "healthcheck":
		return healthcheck(ctx, args[1:], stdout, stderr)
	case "keys":
		return keysCommand(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "relay: unknown command %q\n%s", args[0], usage)
	return errUsage
}

// configFlag parses [--config PATH] and applies the defaults.
func configFlag(name string, args []string, stderr io.Writer) (string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (default $RELAY_CONFIG, then configs/relay.yaml)")
	if err := fs.Parse(args); err != nil {
		return "", errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "relay %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", errUsage
	}
	if *path == "" {
		*path = os.Getenv("RELAY_CONFIG")
	}
	if *path == "" {
		*path = "configs/relay.yaml"
	}
	return *path, nil
}

// validate loads and checks a configuration file: "ok", or every problem,
// one per line.
func validate(path string, stdout, stderr io.Writer) error {
	if _, err := configs.Load(path); err != nil {
		if probs := configs.Problems(err); len(probs) > 0 {
			fmt.Fprintf(stderr, "%s: %d problem(s):\n", path, len(probs))
			for _, p := range probs {
				fmt.Fprintln(stderr, p.Error())
			}
			return errUsage
		}
		return err
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}
