package sdk_test

import (
	"context"
	"fmt"

	"github.com/knctl/knctl/plugins/ig"
	"github.com/knctl/knctl/sdk"
	"github.com/knctl/knctl/sdk/sdktest"
)

// A model and an attributor used in process, without plugins: the same
// calls knctl makes across the plugin boundary.
func Example() {
	ctx := context.Background()
	var model sdk.Model = sdktest.NewToy(2, 8, 16, 1)
	var method sdk.Attributor = ig.Attributor{}

	q := sdk.Query{Prompt: "the capital of france is", Answer: "paris"}
	pred, _ := model.Predict(ctx, sdk.PredictRequest{Query: q, TopK: 3})
	fmt.Printf("P(answer) = %.4f\n", pred.AnswerProb)

	res, _ := method.Attribute(ctx, model, sdk.AttributionQuery{Query: q}, sdk.Options{
		Values: map[string]string{"quadrature": "gauss-legendre", "steps": "8"},
	})
	for _, d := range res.LayerDiagnostics {
		fmt.Printf("layer %d: sum of scores %.4f = P(w) - P(0) = %.4f\n", d.Layer, d.ScoreSum, d.ProbFull-d.ProbBaseline)
	}
	// Output:
	// P(answer) = 0.0180
	// layer 0: sum of scores 0.0030 = P(w) - P(0) = 0.0030
	// layer 1: sum of scores -0.0573 = P(w) - P(0) = -0.0573
}
