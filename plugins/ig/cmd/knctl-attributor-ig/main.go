// Command knctl-attributor-ig is the integrated-gradients attributor
// plugin; knctl starts it.
package main

import (
	"github.com/knctl/knctl/plugins/ig"
	"github.com/knctl/knctl/sdk"
)

func main() { sdk.ServeAttributor(ig.Attributor{}) }
