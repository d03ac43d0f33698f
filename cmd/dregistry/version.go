package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// buildVersion derives the version from the build information Go embeds,
// so there is no linker-set variable to forget.
func buildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	version := info.Main.Version
	var revision, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "-dirty"
			}
		}
	}
	if (version == "" || version == "(devel)") && revision != "" {
		if len(revision) > 12 {
			revision = revision[:12]
		}
		return "devel-" + revision + modified
	}
	if version == "" || version == "(devel)" {
		return "devel"
	}
	return version
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version of this binary",
		Action: func(c *cli.Context) error {
			_, err := fmt.Fprintf(c.App.Writer, "dregistry %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
