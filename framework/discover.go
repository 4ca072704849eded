package framework

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/knctl/knctl/sdk"
)

// Plugin is an installed plugin binary.
type Plugin struct {
	Kind string `json:"kind"` // sdk.KindModel or sdk.KindAttributor
	Name string `json:"name"`
	Path string `json:"path"`
}

// Binary-name prefixes: knctl-model-NAME and knctl-attributor-NAME.
const (
	modelPrefix      = "knctl-model-"
	attributorPrefix = "knctl-attributor-"
)

// SearchPath lists the directories searched for plugins, first match
// winning: each entry of $KNCTL_PLUGIN_DIR (colon-separated), the
// directory of the knctl executable and its plugins/ subdirectory, and
// ~/.knctl/plugins. Extra directories (e.g. from --plugin-dir) come first.
func SearchPath(extra ...string) []string {
	var dirs []string
	dirs = append(dirs, extra...)
	if env := os.Getenv("KNCTL_PLUGIN_DIR"); env != "" {
		dirs = append(dirs, filepath.SplitList(env)...)
	}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dir := filepath.Dir(exe)
		dirs = append(dirs, dir, filepath.Join(dir, "plugins"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".knctl", "plugins"))
	}
	var out []string
	seen := map[string]bool{}
	for _, d := range dirs {
		if d == "" || seen[d] {
			continue
		}
		seen[d] = true
		out = append(out, d)
	}
	return out
}

// Discover lists the plugins in dirs. A name found in several directories
// is taken from the first.
func Discover(dirs []string) []Plugin {
	var out []Plugin
	seen := map[string]bool{}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			var p Plugin
			switch name := e.Name(); {
			case strings.HasPrefix(name, modelPrefix):
				p = Plugin{Kind: sdk.KindModel, Name: strings.TrimPrefix(name, modelPrefix)}
			case strings.HasPrefix(name, attributorPrefix):
				p = Plugin{Kind: sdk.KindAttributor, Name: strings.TrimPrefix(name, attributorPrefix)}
			default:
				continue
			}
			p.Path = filepath.Join(dir, e.Name())
			st, err := os.Stat(p.Path)
			if err != nil || st.IsDir() || st.Mode()&0o111 == 0 || p.Name == "" {
				continue
			}
			key := p.Kind + "/" + p.Name
			if seen[key] {
				continue
			}
			seen[key] = true
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind > out[j].Kind // models first
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Find returns the plugin of the given kind and name; an unknown name is an
// error listing the installed plugins of that kind and where they were
// looked for.
func Find(dirs []string, kind, name string) (Plugin, error) {
	var names []string
	for _, p := range Discover(dirs) {
		if p.Kind != kind {
			continue
		}
		if p.Name == name {
			return p, nil
		}
		names = append(names, p.Name)
	}
	installed := "none installed"
	if len(names) > 0 {
		installed = "installed: " + strings.Join(names, ", ")
	}
	return Plugin{}, sdk.InvalidInputf("unknown %s plugin %q (%s; searched %s for knctl-%s-%s)",
		kind, name, installed, strings.Join(dirs, ", "), kind, name)
}

// String is the plugin as errors name it, e.g. "model plugin gpt2".
func (p Plugin) String() string { return fmt.Sprintf("%s plugin %s", p.Kind, p.Name) }
