// Command knctl-model-toy serves the pure-Go sdktest.Toy model as a model
// plugin, for tests of the host that need no libtorch. Prompts containing
// "__crash__" make the process exit mid-request, "__hang__" make it
// stop answering and "__slow__" make every call take 200ms, so tests can
// check how the host copes.
package main

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/knctl/knctl/sdk"
	"github.com/knctl/knctl/sdk/sdktest"
)

func main() {
	sdk.ServeModel(func(_ context.Context, req sdk.LoadRequest) (sdk.Model, error) {
		if req.Checkpoint != "toy" {
			return nil, sdk.InvalidInputf("checkpoint %q: the toy model plugin only knows \"toy\"", req.Checkpoint)
		}
		m := sdktest.NewToy(3, 16, 32, 1)
		m.Hook = func(_ string, q sdk.Query) {
			switch {
			case strings.Contains(q.Prompt, "__crash__"):
				os.Exit(2)
			case strings.Contains(q.Prompt, "__hang__"):
				select {}
			case strings.Contains(q.Prompt, "__slow__"):
				time.Sleep(200 * time.Millisecond)
			}
		}
		return m, nil
	})
}
