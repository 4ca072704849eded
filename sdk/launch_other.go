//go:build !linux

package sdk

import "os/exec"

// setParentDeathSignal has no portable equivalent; plugins also exit when
// they notice they have been re-parented.
func setParentDeathSignal(*exec.Cmd) {}
