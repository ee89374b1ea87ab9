package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Proc is a client running in a child process under the child protocol.
type Proc struct {
	Name  string
	Times string // its apply-times file
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	errb  limitedWriter // the child's stderr, for error messages
	Ready Ready
}

// ProcSpec says how to start a client process.
type ProcSpec struct {
	Name string   // lib, minimal, sdk-iter, sdk-listener
	Argv []string // the command, without the protocol's arguments
	Dir  string
}

// GoSpec runs this binary with -child (the compare tool's child mode).
func GoSpec(name string) (ProcSpec, error) {
	exe, err := os.Executable()
	if err != nil {
		return ProcSpec{}, err
	}
	return ProcSpec{Name: name, Argv: []string{exe, "-child", name}}, nil
}

// NodeSpec runs bench/sdk/client.mjs with node in mode (iter or listener).
func NodeSpec(node, sdkDir, mode string) ProcSpec {
	return ProcSpec{
		Name: "sdk-" + mode,
		Argv: []string{node, "--expose-gc", "client.mjs", "--mode", mode},
		Dir:  sdkDir,
	}
}

// StartProc starts a client on url and waits for its Ready line.
func StartProc(ctx context.Context, spec ProcSpec, url, token string, events int, times string) (*Proc, error) {
	argv := append(append([]string{}, spec.Argv...),
		"--url", url, "--token", token, "--events", strconv.Itoa(events), "--times", times)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = spec.Dir
	p := &Proc{Name: spec.Name, Times: times, cmd: cmd}
	p.errb.n = 8 << 10
	cmd.Stderr = &p.errb
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.stdin, p.out = stdin, bufio.NewReaderSize(stdout, 1<<20)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", spec.Name, err)
	}
	line, err := p.readLine(ctx)
	if err != nil {
		p.Kill()
		return nil, fmt.Errorf("%s: no ready line: %w (stderr: %s)", spec.Name, err, p.errb.String())
	}
	if err := json.Unmarshal(line, &p.Ready); err != nil {
		p.Kill()
		return nil, fmt.Errorf("%s: ready line %q: %w", spec.Name, line, err)
	}
	return p, nil
}

func (p *Proc) readLine(ctx context.Context) ([]byte, error) {
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		b, err := p.out.ReadBytes('\n')
		ch <- res{b, err}
	}()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-ctx.Done():
		p.Kill()
		r := <-ch
		return r.b, ctx.Err()
	}
}

// Finish sends the Expect line and returns the Result.
func (p *Proc) Finish(ctx context.Context, expected string, quiet time.Duration) (Result, error) {
	var r Result
	b, _ := json.Marshal(Expect{Expected: expected, QuietMS: int(quiet / time.Millisecond)})
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		return r, fmt.Errorf("%s: %w", p.Name, err)
	}
	line, err := p.readLine(ctx)
	if err != nil {
		return r, fmt.Errorf("%s: no result: %w (stderr: %s)", p.Name, err, p.errb.String())
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return r, fmt.Errorf("%s: result line %q: %w", p.Name, line, err)
	}
	_ = p.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.Kill()
		<-done
	}
	if r.Error != "" {
		return r, fmt.Errorf("%s: %s", p.Name, r.Error)
	}
	return r, nil
}

// Kill ends the process.
func (p *Proc) Kill() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
	}
}

// limitedWriter keeps the first n bytes written to it; safe for concurrent
// use (exec copies the child's stderr from a goroutine of its own).
type limitedWriter struct {
	mu sync.Mutex
	b  strings.Builder
	n  int
}

func (w *limitedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if room := w.n - w.b.Len(); room > 0 {
		w.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (w *limitedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
