package factworld

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/knctl/knctl/internal/atomicfile"
	"github.com/knctl/knctl/sdk"
)

// Files of a world directory.
const (
	WorldFile     = "world.json"
	FactsFileGPT2 = "facts-gpt2.jsonl"
	FactsFileBERT = "facts-bert.jsonl"
)

// StyleOf returns the phrasing style for a model architecture.
func StyleOf(arch string) (Style, error) {
	switch arch {
	case "gpt2":
		return Causal, nil
	case "bert":
		return Masked, nil
	}
	return 0, sdk.InvalidInputf("fact world: model %q: expected gpt2 or bert", arch)
}

// FactsFile is the facts file name for a model architecture.
func FactsFile(style Style) string {
	if style == Masked {
		return FactsFileBERT
	}
	return FactsFileGPT2
}

// Write writes world.json and both facts files into dir.
func (w *World) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("fact world: %w", err)
	}
	b, err := json.MarshalIndent(w, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(filepath.Join(dir, WorldFile), append(b, '\n')); err != nil {
		return err
	}
	for _, style := range []Style{Causal, Masked} {
		var out []byte
		for _, f := range w.Facts(style) {
			line, err := json.Marshal(f)
			if err != nil {
				return err
			}
			out = append(append(out, line...), '\n')
		}
		if err := atomicfile.WriteBytes(filepath.Join(dir, FactsFile(style)), out); err != nil {
			return err
		}
	}
	return nil
}

// Read reads dir/world.json.
func Read(dir string) (*World, error) {
	path := filepath.Join(dir, WorldFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, sdk.InvalidInputf("fact world: %w (run knctl factworld generate first)", err)
	}
	var w World
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, sdk.InvalidInputf("fact world: parse %s: %w", path, err)
	}
	if len(w.Relations) == 0 || len(w.Subjects) == 0 {
		return nil, sdk.InvalidInputf("fact world %s: no relations or subjects", path)
	}
	return &w, nil
}
