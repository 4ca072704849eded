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
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Process is a running plugin binary. Its calls' errors name the plugin,
// say when the process has died (with the end of its stderr), and time out
// after CallTimeout without progress when the plugin hangs.
type Process struct {
	// Name identifies the plugin in errors, e.g. "model plugin gpt2".
	Name   string
	Path   string
	client *plugin.Client
	stderr *tail
	raw    any
	// activity is the time (UnixNano) the plugin last called back into
	// the host (the model or attributors lent to an attributor).
	activity atomic.Int64
	inflight atomic.Int32
}

// LaunchOptions tune Launch.
type LaunchOptions struct {
	// Name identifies the plugin in errors; default: the binary's name.
	Name string
	// CallTimeout is how long a call may go without an answer or progress
	// (an attributor calling the model it is lent) before it is reported
	// as hung; 0 means no bound.
	CallTimeout time.Duration
	// Stderr, if set, also receives the plugin's stderr.
	Stderr io.Writer
	// Env is added to the plugin's environment.
	Env []string
}

// pluginEnv is the environment plugins start with: the host's, plus
// OMP_WAIT_POLICY=PASSIVE unless the host's sets it. libtorch's OpenMP
// threads otherwise spin after each parallel region and starve the threads
// of OpenBLAS (libtorch's BLAS on Debian): on 2 cores that doubles the time
// of an attribution. OpenMP reads the variable only when it loads, before a
// plugin's main runs, so the launcher has to set it.
func pluginEnv(env []string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "OMP_WAIT_POLICY=") {
			return env
		}
	}
	return append(env[:len(env):len(env)], "OMP_WAIT_POLICY=PASSIVE")
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
	cmd.Env = append(pluginEnv(os.Environ()), opts.Env...)
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
	if a, ok := raw.(*AttributorClient); ok {
		a.busy = p.busy
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
// gives up on a call after timeout without progress. A call makes progress
// while the plugin uses what the host lends it (an attributor driving the
// model), so a long attribution is not mistaken for a hang.
func (p *Process) intercept(timeout time.Duration) grpc.UnaryClientInterceptor {
	return func(parent context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx := parent
		hung := make(chan struct{})
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithCancel(parent)
			defer cancel()
			done := make(chan struct{})
			defer close(done)
			go p.watch(timeout, time.Now(), done, func() { close(hung); cancel() })
		}
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil {
			return nil
		}
		select {
		case <-hung:
			if parent.Err() == nil && !p.client.Exited() {
				call := method[strings.LastIndex(method, "/")+1:]
				return status.Errorf(codes.DeadlineExceeded, "%s: %s: no answer and no progress within %s (plugin hung?)", p.Name, call, timeout)
			}
		default:
		}
		return p.wrap(method, err)
	}
}

// watch calls giveUp once neither the call (started at start) nor anything
// the host lends the plugin has seen activity for timeout, unless done
// closes first.
func (p *Process) watch(timeout time.Duration, start time.Time, done <-chan struct{}, giveUp func()) {
	tick := time.NewTicker(min(timeout/4, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			if p.inflight.Load() > 0 {
				continue
			}
			last := start
			if a := time.Unix(0, p.activity.Load()); a.After(last) {
				last = a
			}
			if now.Sub(last) >= timeout {
				giveUp()
				return
			}
		}
	}
}

// busy records that the plugin calls something the host lent it; the
// returned func records the end of that call. While such a call runs the
// plugin is making progress.
func (p *Process) busy() func() {
	p.inflight.Add(1)
	p.activity.Store(time.Now().UnixNano())
	return func() {
		p.activity.Store(time.Now().UnixNano())
		p.inflight.Add(-1)
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
