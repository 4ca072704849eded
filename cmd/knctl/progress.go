package main

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
)

// progress shows a bar with ETA on a terminal and plain lines otherwise;
// quiet shows nothing.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	quiet bool
	unit  string
	bar   *progressbar.ProgressBar
	total int
	n     int
}

func newProgress(w io.Writer, quiet bool, unit string) *progress {
	return &progress{w: w, quiet: quiet, unit: unit}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

func (p *progress) start(total, skipped int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total, p.n = total, skipped
	if p.quiet {
		return
	}
	if skipped > 0 {
		fmt.Fprintf(p.w, "resuming: %d of %d %s already done\n", skipped, total, p.unit)
	}
	if isTerminal(p.w) {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(p.unit),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionClearOnFinish(),
		)
		_ = p.bar.Set(skipped)
	}
}

// step counts one item done; without a terminal it prints a line with msg.
func (p *progress) step(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	if p.quiet {
		return
	}
	if p.bar != nil {
		_ = p.bar.Add(1)
		return
	}
	fmt.Fprintf(p.w, "[%d/%d] %s\n", p.n, p.total, msg)
}

// stepQuiet counts one item done without printing a line.
func (p *progress) stepQuiet() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	if p.bar != nil && !p.quiet {
		_ = p.bar.Add(1)
	}
}

// clear removes the bar before other output is printed on the terminal.
func (p *progress) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Clear()
	}
}

func (p *progress) logf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Clear()
	}
	if !p.quiet {
		fmt.Fprintf(p.w, format+"\n", args...)
	}
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
