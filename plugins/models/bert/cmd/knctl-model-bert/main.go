// Command knctl-model-bert is the BERT masked-LM model plugin (libtorch);
// knctl starts it.
package main

import (
	"github.com/knctl/knctl/plugins/models/bert"
	"github.com/knctl/knctl/sdk"
)

func main() { sdk.ServeModel(bert.Load) }
