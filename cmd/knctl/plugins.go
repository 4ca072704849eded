package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/knctl/knctl/framework"
	"github.com/knctl/knctl/sdk"
)

func (a *app) pluginsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "plugins",
		Short: "List installed model and attributor plugins",
		Long: `List installed plugins and where they were found. Attributor plugins are
started to report their description and options.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dirs := framework.SearchPath(a.v.GetStringSlice("plugin-dir")...)
			type entry struct {
				framework.Plugin
				Info  *sdk.AttributorInfo `json:"info,omitempty"`
				Error string              `json:"error,omitempty"`
			}
			h := a.host()
			defer h.Close()
			var list []entry
			for _, p := range framework.Discover(dirs) {
				e := entry{Plugin: p}
				if p.Kind == sdk.KindAttributor {
					inst, err := h.OpenAttributor(cmd.Context(), p.Name)
					if err == nil {
						var info sdk.AttributorInfo
						info, err = inst.Info(cmd.Context())
						e.Info = &info
						inst.Proc.Close()
					}
					if err != nil {
						e.Error = err.Error()
					}
				}
				list = append(list, e)
			}
			if a.v.GetBool("json") {
				return a.printJSON(struct {
					SearchPath []string `json:"search_path"`
					Plugins    []entry  `json:"plugins"`
				}{dirs, list})
			}
			if len(list) == 0 {
				fmt.Fprintf(a.out, "no plugins found; searched %s\n", strings.Join(dirs, ", "))
				return nil
			}
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tNAME\tPATH\tDESCRIPTION")
			for _, e := range list {
				desc := ""
				if e.Info != nil {
					desc = e.Info.Description
				}
				if e.Error != "" {
					desc = "error: " + e.Error
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Kind, e.Name, e.Path, desc)
			}
			return tw.Flush()
		},
	}
}
