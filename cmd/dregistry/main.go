// Command dregistry is the one binary of dregistry: the node daemon, the
// containerd configuration helper and the swarm inspection CLI.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newApp().RunContext(ctx, os.Args)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dregistry:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:                 "dregistry",
		Usage:                "peer-to-peer container image distribution for containerd",
		Version:              buildVersion(),
		HideVersion:          true,
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			daemonCommand(),
			containerdCommand(),
			swarmCommand(),
			versionCommand(),
		},
	}
}
