package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/knctl/knctl/framework"
	"github.com/knctl/knctl/sdk"
)

// errUsage marks errors in how knctl was called (flags, config).
var errUsage = errors.New("usage")

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// app holds the command tree and its configuration.
type app struct {
	root   *cobra.Command
	v      *viper.Viper
	out    io.Writer
	errOut io.Writer
	// known lists every flag name of every command: the keys knctl.yaml
	// may set.
	known map[string]bool
}

func newApp() *app {
	a := &app{v: viper.New(), out: os.Stdout, errOut: os.Stderr, known: map[string]bool{}}
	a.root = &cobra.Command{
		Use:   "knctl",
		Short: "Find, measure and edit the knowledge neurons of transformer language models",
		Long: `knctl finds the knowledge neurons of transformer language models: the FFN
neurons whose activation carries a fact ("The capital of France is" -> " Paris"),
following Dai et al. (2022), "Knowledge Neurons in Pretrained Transformers".

Models (GPT-2, BERT) and attribution methods (integrated gradients, ...) are
plugin binaries named knctl-model-NAME and knctl-attributor-NAME, found in
--plugin-dir, $KNCTL_PLUGIN_DIR, beside knctl (and its plugins/ folder) and
~/.knctl/plugins.

Configuration: every flag can also be set as KNCTL_<FLAG> in the environment
(dashes become underscores, e.g. KNCTL_CHECKPOINT) or as a key of knctl.yaml
(read from --config, else ./knctl.yaml, else ~/.knctl/knctl.yaml).
Precedence: flags > environment > knctl.yaml > defaults.

Exit status: 0 success, 1 failure, 2 bad input or usage, 130 interrupted.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.configure(cmd)
		},
	}
	pf := a.root.PersistentFlags()
	pf.String("config", "", "config file (default ./knctl.yaml, else ~/.knctl/knctl.yaml)")
	pf.Bool("json", false, "print machine-readable JSON")
	pf.StringSlice("plugin-dir", nil, "extra directories to search for plugins (searched first)")
	pf.Duration("plugin-timeout", 10*time.Minute, "report a plugin call as hung after this long without an answer or progress (0: never)")
	pf.Bool("quiet", false, "print no progress information")
	a.root.SetOut(a.out)
	a.root.SetErr(a.errOut)
	a.root.AddCommand(a.versionCmd(), a.pluginsCmd(), a.predictCmd(), a.activationsCmd(), a.attributeCmd(), a.runCmd(), a.benchCmd(), a.factworldCmd(), a.compareCmd(), a.editCmd(), a.evalCmd())
	a.collectKnown(a.root)
	return a
}

func (a *app) collectKnown(c *cobra.Command) {
	add := func(f *pflag.Flag) { a.known[f.Name] = true }
	c.Flags().VisitAll(add)
	c.PersistentFlags().VisitAll(add)
	for _, sub := range c.Commands() {
		a.collectKnown(sub)
	}
}

// configure binds the running command's flags to viper and reads the
// environment and the config file.
func (a *app) configure(cmd *cobra.Command) error {
	if err := a.v.BindPFlags(cmd.Flags()); err != nil {
		return err
	}
	a.v.SetEnvPrefix("KNCTL")
	a.v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	a.v.AutomaticEnv()
	path := a.v.GetString("config")
	if path == "" {
		for _, p := range configCandidates() {
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			}
		}
	}
	if path == "" {
		return nil
	}
	a.v.SetConfigFile(path)
	a.v.SetConfigType("yaml")
	if err := a.v.ReadInConfig(); err != nil {
		return usageErr("read config %s: %v", path, err)
	}
	var unknown []string
	for _, k := range a.v.AllKeys() {
		top := strings.SplitN(k, ".", 2)[0]
		if !a.known[top] && a.v.InConfig(k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return usageErr("config %s: unknown keys %s (keys are flag names, e.g. model, checkpoint, hook)", path, strings.Join(unknown, ", "))
	}
	return nil
}

func configCandidates() []string {
	c := []string{"knctl.yaml"}
	if home, err := os.UserHomeDir(); err == nil {
		c = append(c, filepath.Join(home, ".knctl", "knctl.yaml"))
	}
	return c
}

// host returns a plugin host configured from the flags.
func (a *app) host() *framework.Host {
	h := framework.NewHost(framework.SearchPath(a.v.GetStringSlice("plugin-dir")...))
	h.CallTimeout = a.v.GetDuration("plugin-timeout")
	h.Stderr = a.errOut
	return h
}

// hubDefaults are the HuggingFace ids used when --checkpoint is not given
// and the fact-world model is not found.
var hubDefaults = map[string]string{"gpt2": "gpt2", "bert": "bert-base-cased"}

// defaultCheckpoint is the checkpoint used without --checkpoint: the
// fact-world model the repo ships (factworld/NAME), else a HuggingFace id
// resolved offline from the local cache.
func defaultCheckpoint(model string) string {
	if d := repoData(filepath.Join("factworld", model)); d != "" {
		return d
	}
	return hubDefaults[model]
}

// repoData finds a checkpoint directory the repo ships (rel, holding a
// config.json) beside the knctl binary's directory (bin/../rel) or in the
// working directory, so a built knctl finds it from anywhere. It returns ""
// when neither holds it.
func repoData(rel string) string {
	var dirs []string
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dirs = append(dirs, filepath.Join(filepath.Dir(exe), "..", rel))
	}
	dirs = append(dirs, rel)
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "config.json")); err == nil {
			return filepath.Clean(d)
		}
	}
	return ""
}

// modelFlags adds --model, --checkpoint, --threads and --model-option.
func modelFlags(c *cobra.Command) {
	c.Flags().String("model", "gpt2", "model plugin (knctl-model-NAME)")
	c.Flags().String("checkpoint", "", "checkpoint directory, or a HuggingFace model id found in the local cache (default: the fact-world model factworld/MODEL)")
	c.Flags().Int("threads", 0, "libtorch threads in the model plugin (0: all CPUs)")
	c.Flags().StringArray("model-option", nil, "model plugin load option key=value (repeatable): init=random draws the weights of config.json's architecture, seed=N seeds them")
}

// modelSpec resolves the checkpoint and load options from the flags.
func (a *app) modelSpec(name string) (string, map[string]string, error) {
	ckpt := a.v.GetString("checkpoint")
	if ckpt == "" {
		ckpt = defaultCheckpoint(name)
		if ckpt == "" {
			return "", nil, usageErr("--checkpoint: required for model plugin %q", name)
		}
	}
	opts := map[string]string{}
	if t := a.v.GetInt("threads"); t > 0 {
		opts["threads"] = fmt.Sprint(t)
	}
	for _, kv := range a.v.GetStringSlice("model-option") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return "", nil, usageErr("--model-option %q: expected key=value", kv)
		}
		opts[k] = v
	}
	return ckpt, opts, nil
}

// openModel launches the configured model plugin and loads the checkpoint.
func (a *app) openModel(cmd *cobra.Command, h *framework.Host) (*framework.ModelInstance, error) {
	name := a.v.GetString("model")
	if _, err := framework.Find(h.Dirs, sdk.KindModel, name); err != nil {
		return nil, err
	}
	ckpt, opts, err := a.modelSpec(name)
	if err != nil {
		return nil, err
	}
	return h.OpenModel(cmd.Context(), name, ckpt, opts)
}

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseLayers parses "0,2,5-7" into layer indices.
func parseLayers(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		var lo, hi int
		if n, err := fmt.Sscanf(part, "%d-%d", &lo, &hi); err == nil && n == 2 {
			if hi < lo {
				return nil, sdk.InvalidInputf("--layers %q: range %s runs backwards", s, part)
			}
			for l := lo; l <= hi; l++ {
				out = append(out, l)
			}
			continue
		}
		var l int
		if _, err := fmt.Sscanf(part, "%d", &l); err != nil || fmt.Sprint(l) != part {
			return nil, sdk.InvalidInputf("--layers %q: %q is not a layer number or a range like 2-5", s, part)
		}
		out = append(out, l)
	}
	return out, nil
}
