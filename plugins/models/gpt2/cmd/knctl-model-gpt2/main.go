// Command knctl-model-gpt2 is the GPT-2 model plugin (libtorch); knctl
// starts it.
package main

import (
	"github.com/knctl/knctl/plugins/models/gpt2"
	"github.com/knctl/knctl/sdk"
)

func main() { sdk.ServeModel(gpt2.Load) }
