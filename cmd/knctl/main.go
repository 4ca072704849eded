// Command knctl finds, measures and edits the knowledge neurons of
// transformer language models. Models and attribution methods are plugins;
// see `knctl --help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/knctl/knctl/sdk"
)

// Exit codes.
const (
	exitFailure     = 1
	exitBadInput    = 2
	exitInterrupted = 130
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newApp().root.ExecuteContext(ctx)
	interrupted := ctx.Err() != nil
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "knctl:", err)
	switch {
	case interrupted || errors.Is(err, context.Canceled):
		os.Exit(exitInterrupted)
	case errors.Is(err, sdk.ErrInvalidInput), errors.Is(err, errUsage):
		os.Exit(exitBadInput)
	}
	os.Exit(exitFailure)
}
