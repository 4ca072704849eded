package sdk

import (
	"context"
	"math"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/knctl/knctl/sdk/pb"
)

// ProtocolVersion is the plugin protocol version; host and plugin must agree.
const ProtocolVersion = 1

// Handshake is the go-plugin handshake every knctl plugin uses. It keeps a
// plugin binary started by hand from serving and tells it the host's
// protocol version.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "KNCTL_PLUGIN",
	MagicCookieValue: "7d1f0c0e-knowledge-neurons",
}

// Plugin kinds, the keys of PluginMap.
const (
	KindModel      = "model"
	KindAttributor = "attributor"
)

// PluginMap is the go-plugin plugin set of the host: it can dispense either
// kind from any plugin binary.
var PluginMap = map[string]plugin.Plugin{
	KindModel:      &ModelPlugin{},
	KindAttributor: &AttributorPlugin{},
}

// ModelPlugin adapts a Model backend to go-plugin's gRPC transport.
type ModelPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	// Load opens checkpoints in the plugin process; unused on the host side.
	Load Loader
}

// GRPCServer implements plugin.GRPCPlugin.
func (p *ModelPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterModelServer(s, &modelServer{load: p.Load})
	return nil
}

// GRPCClient implements plugin.GRPCPlugin; it returns a *ModelClient.
func (p *ModelPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &ModelClient{c: pb.NewModelClient(c)}, nil
}

// AttributorPlugin adapts an Attributor to go-plugin's gRPC transport.
type AttributorPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	// Impl is the method, in the plugin process; unused on the host side.
	Impl Attributor
}

// GRPCServer implements plugin.GRPCPlugin.
func (p *AttributorPlugin) GRPCServer(b *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterAttributorServer(s, &attributorServer{impl: p.Impl, broker: b})
	return nil
}

// GRPCClient implements plugin.GRPCPlugin; it returns an *AttributorClient.
func (p *AttributorPlugin) GRPCClient(_ context.Context, b *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &AttributorClient{c: pb.NewAttributorClient(c), broker: b}, nil
}

// serverOptions lift gRPC's 4 MB receive limit: gradient batches and value
// slots of large models exceed it.
func serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxRecvMsgSize(math.MaxInt32), grpc.MaxSendMsgSize(math.MaxInt32)}
}

// GRPCServer is the gRPC server constructor plugins serve with.
func GRPCServer(opts []grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append(opts, serverOptions()...)...)
}

// ServeModel runs a model plugin: main() of a backend is one call to it.
// It does not return.
func ServeModel(load Loader) {
	serve(KindModel, &ModelPlugin{Load: load})
}

// ServeAttributor runs an attributor plugin: main() of a method is one call
// to it. It does not return.
func ServeAttributor(a Attributor) {
	serve(KindAttributor, &AttributorPlugin{Impl: a})
}

func serve(kind string, p plugin.Plugin) {
	go exitWithParent()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         map[string]plugin.Plugin{kind: p},
		GRPCServer:      GRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:   "knctl-" + kind,
			Output: os.Stderr,
			Level:  hclog.Warn,
		}),
	})
}

// exitWithParent ends the plugin when the host dies without killing it
// (SIGKILL, a crash): the plugin is re-parented, so its parent id changes.
func exitWithParent() {
	parent := os.Getppid()
	for range time.Tick(500 * time.Millisecond) {
		if os.Getppid() != parent {
			os.Exit(3)
		}
	}
}
