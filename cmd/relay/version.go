package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version and commit identify the build. `go build` and `go install`
// record them by themselves (runtime/debug.ReadBuildInfo: the module
// version when installed as module@version, the VCS revision when built
// in a git checkout); builds without either, such as a container build
// from a source tree without .git, set them with
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=$(git rev-parse HEAD)" ./cmd/relay
//
// and the values given there win.
var (
	version = "dev"
	commit  = ""
)

// buildVersion returns the version, the commit (with " (modified)" for a
// build from a tree with uncommitted changes) and the commit's time, from
// the -ldflags values first, then the build information.
func buildVersion() (ver, rev, at string) {
	ver, rev = version, commit
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ver, orUnknown(rev), at
	}
	if ver == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		ver = info.Main.Version
	}
	var vcsRev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			vcsRev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = " (modified)"
			}
		}
	}
	if rev == "" && vcsRev != "" {
		rev = vcsRev + modified
	}
	return ver, orUnknown(rev), at
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// printVersion prints what `relay version` shows.
func printVersion(w io.Writer) {
	ver, rev, at := buildVersion()
	if at != "" {
		rev += " " + at
	}
	fmt.Fprintf(w, "relay %s\ncommit %s\n%s %s/%s\n", ver, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
