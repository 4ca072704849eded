// Command knctl-attributor-noisegrad is the NoiseGrad / FusionGrad
// attributor plugin; knctl starts it.
package main

import (
	"github.com/knctl/knctl/plugins/noisegrad"
	"github.com/knctl/knctl/sdk"
)

func main() { sdk.ServeAttributor(noisegrad.Attributor{}) }
