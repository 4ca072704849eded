package sdk

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal asks Linux to kill the plugin if the host dies
// without cleaning up (SIGKILL, a crash).
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
