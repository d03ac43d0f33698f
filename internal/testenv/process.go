package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Bounds of every wait on a child process.
const (
	// processStopTimeout is how long a SIGTERMed process may take to exit
	// before it is killed.
	processStopTimeout = 15 * time.Second
	// readyTimeout bounds the wait for a started daemon's HTTP endpoint.
	readyTimeout = 60 * time.Second
	// tailLines is how much of a log a failing test prints.
	tailLines = 60
)

// Process is a long-running child of a test (a registry, a dregistry daemon)
// with its output in one log file. The zero value is not usable: set Path,
// Args and LogPath.
type Process struct {
	Name    string   // label in messages
	Path    string   // executable
	Args    []string // arguments, without the executable
	Env     []string // extra environment (KEY=VALUE) on top of the test's
	LogPath string   // stdout and stderr, appended across restarts
	// StdoutPath, when set, receives stdout apart from the log (a registry's
	// access log).
	StdoutPath string
	// Netns, when set, is the network namespace the process runs in.
	Netns *Netns

	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for
}

// Start runs the process; it fails if this Process is already running.
func (p *Process) Start() error {
	if p.cmd != nil {
		return fmt.Errorf("%s: already running (pid %d)", p.Name, p.cmd.Process.Pid)
	}
	logFile, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("%s: open log: %w", p.Name, err)
	}
	stdout := logFile
	if p.StdoutPath != "" {
		if stdout, err = os.OpenFile(p.StdoutPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			logFile.Close()
			return fmt.Errorf("%s: open stdout log: %w", p.Name, err)
		}
	}
	path, args := p.Path, p.Args
	if p.Netns != nil {
		// ip netns exec execs in place: the pid and signals stay the process's.
		path, args = p.Netns.Command(path, args)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout = stdout
	cmd.Stderr = logFile
	// The child must not outlive a test binary that dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		stdout.Close()
		return fmt.Errorf("%s: start %s: %w", p.Name, p.Path, err)
	}
	p.cmd = cmd
	p.exited = make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		logFile.Close()
		stdout.Close()
		close(done)
	}(p.exited)
	return nil
}

// Running reports whether the process was started and has not been stopped.
// A process that died on its own still counts until Stop.
func (p *Process) Running() bool { return p.cmd != nil }

// Exited reports whether a started process has exited on its own.
func (p *Process) Exited() bool {
	if p.cmd == nil {
		return true
	}
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Pid returns the process id, or 0 when not running.
func (p *Process) Pid() int {
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Pause stops the process with SIGSTOP: its sockets still accept
// connections, but nothing answers (a hung server). Resume undoes it.
func (p *Process) Pause() error { return p.signal(syscall.SIGSTOP) }

// Resume continues a paused process with SIGCONT.
func (p *Process) Resume() error { return p.signal(syscall.SIGCONT) }

func (p *Process) signal(sig syscall.Signal) error {
	if p.cmd == nil {
		return fmt.Errorf("%s: not running", p.Name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: signal %v: %w", p.Name, sig, err)
	}
	return nil
}

// Stop sends SIGTERM, waits at most processStopTimeout, then SIGKILLs.
// Stopping a stopped process does nothing.
func (p *Process) Stop() error { return p.halt(syscall.SIGTERM) }

// Kill stops the process with SIGKILL at once: a crash, not a shutdown.
func (p *Process) Kill() error { return p.halt(syscall.SIGKILL) }

func (p *Process) halt(sig syscall.Signal) error {
	if p.cmd == nil {
		return nil
	}
	cmd, exited := p.cmd, p.exited
	p.cmd, p.exited = nil, nil
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s: signal %v: %w", p.Name, sig, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(processStopTimeout):
	}
	_ = cmd.Process.Kill()
	select {
	case <-exited:
		return fmt.Errorf("%s: ignored %v for %s and was killed", p.Name, sig, processStopTimeout)
	case <-time.After(processStopTimeout):
		return fmt.Errorf("%s: pid %d did not exit after SIGKILL", p.Name, cmd.Process.Pid)
	}
}

// WaitHTTP polls url until it answers 200, the process exits or the
// deadline passes.
func (p *Process) WaitHTTP(url string, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	var last error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		if p.Exited() {
			return fmt.Errorf("%s exited during start", p.Name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			cancel()
			return fmt.Errorf("%s: %w", p.Name, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		cancel()
		last = err
		time.Sleep(min(time.Duration(attempt+1)*20*time.Millisecond, 250*time.Millisecond))
	}
	return fmt.Errorf("%s not ready after %s: %w", p.Name, timeout, last)
}

// Tail returns the last n lines of the log.
func (p *Process) Tail(n int) string { return tailFile(p.LogPath, n) }

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
