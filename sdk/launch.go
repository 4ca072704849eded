package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Process is a running plugin binary. Its calls' errors name the plugin,
// say when the process has died (with the end of its stderr), and time out
// after CallTimeout when the plugin hangs.
type Process struct {
	// Name identifies the plugin in errors, e.g. "model plugin gpt2".
	Name   string
	Path   string
	client *plugin.Client
	stderr *tail
	raw    any
}

// LaunchOptions tune Launch.
type LaunchOptions struct {
	// Name identifies the plugin in errors; default: the binary's name.
	Name string
	// CallTimeout bounds every call to the plugin; 0 means no bound.
	CallTimeout time.Duration
	// Stderr, if set, also receives the plugin's stderr.
	Stderr io.Writer
	// Env is added to the plugin's environment.
	Env []string
}

// Launch starts the plugin binary at path, completes the handshake and
// dispenses the given kind (KindModel or KindAttributor). Close the process
// when done; it is also killed if the host exits.
func Launch(ctx context.Context, path, kind string, opts LaunchOptions) (*Process, error) {
	if opts.Name == "" {
		opts.Name = filepath.Base(path)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, InvalidInputf("%s: %w", opts.Name, err)
	}
	p := &Process{Name: opts.Name, Path: path, stderr: &tail{max: 8 << 10}}
	var stderr io.Writer = p.stderr
	if opts.Stderr != nil {
		stderr = io.MultiWriter(p.stderr, opts.Stderr)
	}
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(), opts.Env...)
	setParentDeathSignal(cmd)
	p.client = plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          PluginMap,
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Stderr:           stderr,
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "knctl", Output: io.Discard, Level: hclog.Off}),
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithChainUnaryInterceptor(p.intercept(opts.CallTimeout)),
			grpc.WithChainStreamInterceptor(p.interceptStream()),
		},
	})
	rpc, err := p.client.Client()
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("start %s (%s): %w%s", p.Name, path, err, p.stderrTail())
	}
	raw, err := rpc.Dispense(kind)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("start %s (%s): %w", p.Name, path, err)
	}
	p.raw = raw
	return p, nil
}

// Model returns the plugin's model client; nil unless launched as a model.
func (p *Process) Model() *ModelClient {
	m, _ := p.raw.(*ModelClient)
	return m
}

// Attributor returns the plugin's attributor client; nil unless launched as
// an attributor.
func (p *Process) Attributor() *AttributorClient {
	a, _ := p.raw.(*AttributorClient)
	return a
}

// Exited reports whether the plugin process has ended.
func (p *Process) Exited() bool { return p.client.Exited() }

// Close kills the plugin process.
func (p *Process) Close() { p.client.Kill() }

// Kill ends the plugin process at once, without the graceful shutdown
// Close attempts; tests use it to simulate a crash.
func (p *Process) Kill() error {
	rc := p.client.ReattachConfig()
	if rc == nil || rc.Pid == 0 {
		return errors.New("plugin has no process")
	}
	proc, err := os.FindProcess(rc.Pid)
	if err != nil {
		return err
	}
	return proc.Kill()
}

func (p *Process) stderrTail() string {
	s := strings.TrimSpace(p.stderr.String())
	if s == "" {
		return ""
	}
	return "\nplugin stderr (end):\n" + s
}

// intercept names the plugin in every error, reports a dead process, and
// bounds each call.
func (p *Process) intercept(timeout time.Duration) grpc.UnaryClientInterceptor {
	return func(parent context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx := parent
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(parent, timeout)
			defer cancel()
		}
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil {
			return nil
		}
		if timeout > 0 && ctx.Err() != nil && parent.Err() == nil && !p.client.Exited() {
			call := method[strings.LastIndex(method, "/")+1:]
			return status.Errorf(codes.DeadlineExceeded, "%s: %s: no answer within %s (plugin hung?)", p.Name, call, timeout)
		}
		return p.wrap(method, err)
	}
}

// interceptStream names the plugin in the errors of streaming calls
// (training), which have no time bound: they may run for minutes.
func (p *Process) interceptStream() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, p.wrap(method, err)
		}
		return &namedStream{ClientStream: cs, p: p, method: method}, nil
	}
}

type namedStream struct {
	grpc.ClientStream
	p      *Process
	method string
}

func (s *namedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil || err == io.EOF {
		return err
	}
	return s.p.wrap(s.method, err)
}

// wrap names the plugin in a call's error and reports a dead process.
func (p *Process) wrap(method string, err error) error {
	call := method[strings.LastIndex(method, "/")+1:]
	st, _ := status.FromError(err)
	if p.client.Exited() || (st.Code() == codes.Unavailable && p.exitedSoon()) {
		return status.Errorf(codes.Unavailable, "%s: %s: the plugin process died or stopped answering (%s)%s", p.Name, call, st.Message(), p.stderrTail())
	}
	return status.Errorf(st.Code(), "%s: %s: %s", p.Name, call, st.Message())
}

// exitedSoon tells whether the process is gone, allowing a moment for the
// exit to be noticed after a broken connection.
func (p *Process) exitedSoon() bool {
	for i := 0; i < 20; i++ {
		if p.client.Exited() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
