package testserver

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Freeze stops the process with SIGSTOP, like a black-holed server:
// connections are accepted by the kernel and nothing is answered. It
// returns once every thread of the process is stopped, or an error after
// 5 s: the signal takes effect a moment after kill returns, and a thread
// still running could answer one more request.
func (p *Process) Freeze() error {
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("freeze: %w", err)
	}
	pid := p.Cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for !threadsStopped(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("freeze: pid %d not stopped 5s after SIGSTOP", pid)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// Thaw resumes a frozen process with SIGCONT.
func (p *Process) Thaw() error {
	if err := p.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("thaw: %w", err)
	}
	return nil
}

// threadsStopped reports whether every thread of process pid is stopped
// ("T", or "t" under a tracer, in /proc/PID/task/TID/stat).
func threadsStopped(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		s, ok := procState(dir + task.Name() + "/stat")
		if !ok || (s != 'T' && s != 't') {
			return false
		}
	}
	return true
}

// exited reports whether process pid is gone or a zombie.
func exited(pid int) bool {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return true
	}
	s, ok := procState(path)
	return ok && s == 'Z'
}

// procState reads the state letter of a /proc stat file; ok is false when
// the file is gone or unreadable.
func procState(path string) (state byte, ok bool) {
	stat, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	// The state follows the command name, which is in parentheses and may
	// hold anything, parentheses included.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 || i+2 >= len(stat) {
		return 0, false
	}
	return stat[i+2], true
}
