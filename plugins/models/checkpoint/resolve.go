package checkpoint

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/knctl/knctl/sdk"
)

// CacheDir returns the HuggingFace hub cache directory: $HF_HUB_CACHE, else
// $HF_HOME/hub, else ~/.cache/huggingface/hub (as huggingface_hub does).
func CacheDir() string {
	if d := os.Getenv("HF_HUB_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("HF_HOME"); d != "" {
		return filepath.Join(d, "hub")
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "huggingface", "hub")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".cache", "huggingface", "hub")
	}
	return filepath.Join(home, ".cache", "huggingface", "hub")
}

// Resolve turns a checkpoint spec into a directory holding config.json: the
// spec itself when it is a directory, else a snapshot of the model id in the
// local HuggingFace cache (the one refs/main points at, else the newest).
func Resolve(spec string) (string, error) {
	if spec == "" {
		return "", sdk.InvalidInputf("checkpoint: empty; expected a directory or a HuggingFace model id")
	}
	if st, err := os.Stat(spec); err == nil {
		if !st.IsDir() {
			return "", sdk.InvalidInputf("checkpoint %s: is a file; expected a directory with config.json", spec)
		}
		if _, err := os.Stat(filepath.Join(spec, "config.json")); err != nil {
			return "", sdk.InvalidInputf("checkpoint %s: no config.json in the directory", spec)
		}
		return spec, nil
	}
	if strings.HasPrefix(spec, ".") || strings.HasPrefix(spec, "/") || strings.Count(spec, "/") > 1 {
		return "", sdk.InvalidInputf("checkpoint %s: no such directory", spec)
	}
	cache := CacheDir()
	repo := filepath.Join(cache, "models--"+strings.ReplaceAll(spec, "/", "--"))
	snaps := filepath.Join(repo, "snapshots")
	if ref, err := os.ReadFile(filepath.Join(repo, "refs", "main")); err == nil {
		dir := filepath.Join(snaps, strings.TrimSpace(string(ref)))
		if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
			return dir, nil
		}
	}
	entries, err := os.ReadDir(snaps)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", sdk.InvalidInputf("checkpoint %s: not a directory, and not in the HuggingFace cache (looked for %s; set HF_HOME or HF_HUB_CACHE, or give a directory)", spec, snaps)
		}
		return "", fmt.Errorf("checkpoint %s: read %s: %w", spec, snaps, err)
	}
	type snap struct {
		dir string
		mod int64
	}
	var found []snap
	for _, e := range entries {
		dir := filepath.Join(snaps, e.Name())
		st, err := os.Stat(filepath.Join(dir, "config.json"))
		if err != nil {
			continue
		}
		found = append(found, snap{dir, st.ModTime().UnixNano()})
	}
	if len(found) == 0 {
		return "", sdk.InvalidInputf("checkpoint %s: no snapshot with config.json under %s", spec, snaps)
	}
	sort.Slice(found, func(i, j int) bool { return found[i].mod > found[j].mod })
	return found[0].dir, nil
}
