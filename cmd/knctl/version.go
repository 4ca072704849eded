package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/knctl/knctl/sdk"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print knctl's version and plugin protocol version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := struct {
				Version         string `json:"version"`
				Commit          string `json:"commit,omitempty"`
				Go              string `json:"go"`
				ProtocolVersion int    `json:"plugin_protocol"`
			}{Version: version, Go: runtime.Version(), ProtocolVersion: sdk.ProtocolVersion}
			if info, ok := debug.ReadBuildInfo(); ok {
				for _, s := range info.Settings {
					if s.Key == "vcs.revision" {
						v.Commit = s.Value
					}
				}
			}
			if a.v.GetBool("json") {
				return a.printJSON(v)
			}
			fmt.Fprintf(a.out, "knctl %s (plugin protocol %d, %s)\n", v.Version, v.ProtocolVersion, v.Go)
			if v.Commit != "" {
				fmt.Fprintf(a.out, "commit %s\n", v.Commit)
			}
			return nil
		},
	}
}
