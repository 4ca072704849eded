package conformance_test

import (
	"os"
	"testing"

	"github.com/knctl/knctl/internal/testbin"
	"github.com/knctl/knctl/plugins/ig"
	"github.com/knctl/knctl/sdk/conformance"
	"github.com/knctl/knctl/sdk/sdktest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

var toyCase = conformance.ModelCase{Prompt: "the capital of france is", Answer: "paris"}

func TestToyModelInProcess(t *testing.T) {
	conformance.Model(t, sdktest.NewToy(3, 16, 32, 1), toyCase)
}

func TestToyModelPlugin(t *testing.T) {
	conformance.ModelPlugin(t, testbin.Build(t, "./internal/testplugins/knctl-model-toy"), "toy", toyCase)
}

func TestIGInProcess(t *testing.T) {
	conformance.Attributor(t, ig.Attributor{})
}

func TestIGPlugin(t *testing.T) {
	conformance.AttributorPlugin(t, testbin.Build(t, "./plugins/ig/cmd/knctl-attributor-ig"))
}
