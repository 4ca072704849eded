package checkpoint

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/knctl/knctl/sdk"
)

// ReadConfig decodes dir/config.json into v and returns its model_type.
func ReadConfig(dir string, v any) (modelType string, err error) {
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return "", sdk.InvalidInputf("read %s: %w", path, err)
	}
	var head struct {
		ModelType string `json:"model_type"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return "", sdk.InvalidInputf("parse %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return "", sdk.InvalidInputf("parse %s: %w", path, err)
	}
	return head.ModelType, nil
}

// WeightFile returns the weights file of dir: model.safetensors when
// present, else pytorch_model.bin. Sharded checkpoints are not supported.
func WeightFile(dir string) (path string, safetensors bool, err error) {
	st := filepath.Join(dir, "model.safetensors")
	if _, err := os.Stat(st); err == nil {
		return st, true, nil
	}
	bin := filepath.Join(dir, "pytorch_model.bin")
	if _, err := os.Stat(bin); err == nil {
		return bin, false, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors.index.json")); err == nil {
		return "", false, sdk.InvalidInputf("checkpoint %s: sharded safetensors (model.safetensors.index.json) are not supported yet; expected one model.safetensors or pytorch_model.bin", dir)
	}
	return "", false, sdk.InvalidInputf("checkpoint %s: no model.safetensors or pytorch_model.bin", dir)
}
