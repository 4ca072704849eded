package sdk

import (
	"context"
	"fmt"

	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/knctl/knctl/sdk/pb"
)

// attributorServer serves an Attributor in its plugin process. For each call
// it dials the model (and peers) the host lends through the broker.
type attributorServer struct {
	pb.UnimplementedAttributorServer
	impl   Attributor
	broker *plugin.GRPCBroker
}

func (s *attributorServer) Info(ctx context.Context, _ *pb.Empty) (*pb.AttributorInfo, error) {
	info, err := s.impl.Info(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return attributorInfoToPB(info), nil
}

func (s *attributorServer) Attribute(ctx context.Context, req *pb.AttributeRequest) (*pb.AttributeResponse, error) {
	model, opts, done, err := s.lent(req.ModelBrokerId, req.PeersBrokerId, req.Options)
	if err != nil {
		return nil, toStatus(err)
	}
	defer done()
	a, err := s.impl.Attribute(ctx, model, attributionQueryFromPB(req.Query), opts)
	if err != nil {
		return nil, toStatus(err)
	}
	resp, err := attributionToPB(a)
	return resp, toStatus(err)
}

func (s *attributorServer) AttributeFact(ctx context.Context, req *pb.AttributeFactRequest) (*pb.AttributeFactResponse, error) {
	model, opts, done, err := s.lent(req.ModelBrokerId, req.PeersBrokerId, req.Options)
	if err != nil {
		return nil, toStatus(err)
	}
	defer done()
	qs := make([]AttributionQuery, len(req.Queries))
	for i, q := range req.Queries {
		qs[i] = attributionQueryFromPB(q)
	}
	res, err := AttributeFact(ctx, s.impl, model, qs, opts)
	if err != nil {
		return nil, toStatus(err)
	}
	if len(res) != len(qs) {
		return nil, toStatus(fmt.Errorf("attributor returned %d results for %d prompts", len(res), len(qs)))
	}
	out := &pb.AttributeFactResponse{}
	for _, a := range res {
		r, err := attributionToPB(a)
		if err != nil {
			return nil, toStatus(err)
		}
		out.Results = append(out.Results, r)
	}
	return out, nil
}

// lent dials the model (and peers, when offered) the host lends for one
// call; done hangs up.
func (s *attributorServer) lent(modelID, peersID uint32, values map[string]string) (Model, Options, func(), error) {
	conn, err := s.broker.Dial(modelID)
	if err != nil {
		return nil, Options{}, nil, fmt.Errorf("dial the model lent by the host: %w", err)
	}
	opts := Options{Values: values}
	if peersID == 0 {
		return &ModelClient{c: pb.NewModelClient(conn)}, opts, func() { conn.Close() }, nil
	}
	pconn, err := s.broker.Dial(peersID)
	if err != nil {
		conn.Close()
		return nil, Options{}, nil, fmt.Errorf("dial the host's attributor source: %w", err)
	}
	opts.Peers = &peersClient{c: pb.NewAttributorSourceClient(pconn)}
	return &ModelClient{c: pb.NewModelClient(conn)}, opts, func() { pconn.Close(); conn.Close() }, nil
}

// AttributorClient is an attributor plugin as the host sees it.
type AttributorClient struct {
	c      pb.AttributorClient
	broker *plugin.GRPCBroker
	// busy, when set, brackets every call the plugin makes to what the
	// host lends it (busy() at the start, the returned func at the end), so
	// the launcher's hang detection sees progress.
	busy func() (end func())
}

var _ FactAttributor = (*AttributorClient)(nil)

// Info implements Attributor.
func (c *AttributorClient) Info(ctx context.Context) (AttributorInfo, error) {
	resp, err := c.c.Info(ctx, &pb.Empty{})
	if err != nil {
		return AttributorInfo{}, fromStatus(err)
	}
	return attributorInfoFromPB(resp), nil
}

// Attribute lends model (and opts.Peers) to the plugin for the duration of
// the call and returns its result.
func (c *AttributorClient) Attribute(ctx context.Context, model Model, q AttributionQuery, opts Options) (*Attribution, error) {
	var resp *pb.AttributeResponse
	err := c.lend(model, opts, func(modelID, peersID uint32) error {
		var err error
		resp, err = c.c.Attribute(ctx, &pb.AttributeRequest{
			ModelBrokerId: modelID, PeersBrokerId: peersID, Query: attributionQueryToPB(q), Options: opts.Values,
		})
		return err
	})
	if err != nil {
		return nil, fromStatus(err)
	}
	return attributionFromPB(resp)
}

// AttributeFact implements FactAttributor: one call for all queries. A
// plugin built before the call existed is asked once per query.
func (c *AttributorClient) AttributeFact(ctx context.Context, model Model, qs []AttributionQuery, opts Options) ([]*Attribution, error) {
	req := &pb.AttributeFactRequest{Options: opts.Values}
	for _, q := range qs {
		req.Queries = append(req.Queries, attributionQueryToPB(q))
	}
	var resp *pb.AttributeFactResponse
	err := c.lend(model, opts, func(modelID, peersID uint32) error {
		req.ModelBrokerId, req.PeersBrokerId = modelID, peersID
		var err error
		resp, err = c.c.AttributeFact(ctx, req)
		return err
	})
	if status.Code(err) == codes.Unimplemented {
		return attributeEach(ctx, c, model, qs, opts)
	}
	if err != nil {
		return nil, fromStatus(err)
	}
	if len(resp.Results) != len(qs) {
		return nil, fmt.Errorf("attributor returned %d results for %d prompts", len(resp.Results), len(qs))
	}
	out := make([]*Attribution, len(qs))
	for i, r := range resp.Results {
		if out[i], err = attributionFromPB(r); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// lend serves model (and opts.Peers) through the broker while call runs.
func (c *AttributorClient) lend(model Model, opts Options, call func(modelID, peersID uint32) error) error {
	m := c.serve(func(s *grpc.Server) { pb.RegisterModelServer(s, &modelServer{model: model}) })
	defer m.stop()
	var peersID uint32
	if opts.Peers != nil {
		peers := c.serve(func(s *grpc.Server) { pb.RegisterAttributorSourceServer(s, &peersServer{impl: opts.Peers}) })
		defer peers.stop()
		peersID = peers.id
	}
	return call(m.id, peersID)
}

type brokered struct {
	id   uint32
	srv  chan *grpc.Server
	done chan struct{}
}

// stop ends the brokered server, or returns at once if the broker failed to
// start it.
func (b *brokered) stop() {
	select {
	case s := <-b.srv:
		s.Stop()
		<-b.done
	case <-b.done:
	}
}

func (c *AttributorClient) serve(register func(*grpc.Server)) *brokered {
	b := &brokered{id: c.broker.NextId(), srv: make(chan *grpc.Server, 1), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		c.broker.AcceptAndServe(b.id, func(opts []grpc.ServerOption) *grpc.Server {
			opts = append(opts, serverOptions()...)
			if c.busy != nil {
				opts = append(opts, grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
					defer c.busy()()
					return h(ctx, req)
				}))
			}
			s := grpc.NewServer(opts...)
			register(s)
			b.srv <- s
			return s
		})
	}()
	return b
}

type peersServer struct {
	pb.UnimplementedAttributorSourceServer
	impl AttributorSource
}

func (s *peersServer) Attribute(ctx context.Context, req *pb.PeerAttributeRequest) (*pb.AttributeResponse, error) {
	a, err := s.impl.Attribute(ctx, req.Attributor, attributionQueryFromPB(req.Query), req.Options)
	if err != nil {
		return nil, toStatus(err)
	}
	resp, err := attributionToPB(a)
	return resp, toStatus(err)
}

type peersClient struct{ c pb.AttributorSourceClient }

func (p *peersClient) Attribute(ctx context.Context, name string, q AttributionQuery, opts map[string]string) (*Attribution, error) {
	resp, err := p.c.Attribute(ctx, &pb.PeerAttributeRequest{Attributor: name, Query: attributionQueryToPB(q), Options: opts})
	if err != nil {
		return nil, fromStatus(err)
	}
	return attributionFromPB(resp)
}

func attributorInfoToPB(i AttributorInfo) *pb.AttributorInfo {
	out := &pb.AttributorInfo{Name: i.Name, Description: i.Description, Version: i.Version}
	for _, o := range i.Options {
		out.Options = append(out.Options, &pb.OptionSpec{Name: o.Name, Default: o.Default, Help: o.Help})
	}
	return out
}

func attributorInfoFromPB(i *pb.AttributorInfo) AttributorInfo {
	out := AttributorInfo{Name: i.Name, Description: i.Description, Version: i.Version}
	for _, o := range i.Options {
		out.Options = append(out.Options, OptionSpec{Name: o.Name, Default: o.Default, Help: o.Help})
	}
	return out
}

func attributionQueryToPB(q AttributionQuery) *pb.AttributionQuery {
	return &pb.AttributionQuery{Query: queryToPB(q.Query), Layers: ints32(q.Layers), Hook: string(q.Hook)}
}

func attributionQueryFromPB(q *pb.AttributionQuery) AttributionQuery {
	if q == nil {
		return AttributionQuery{}
	}
	return AttributionQuery{Query: queryFromPB(q.Query), Layers: ints(q.Layers), Hook: Hook(q.Hook)}
}

func attributionToPB(a *Attribution) (*pb.AttributeResponse, error) {
	if a == nil {
		return nil, fmt.Errorf("attributor returned no result")
	}
	if len(a.Scores) != len(a.Layers) {
		return nil, fmt.Errorf("attribution has %d score rows for %d layers", len(a.Scores), len(a.Layers))
	}
	flat, width, err := flatten(a.Scores)
	if err != nil {
		return nil, fmt.Errorf("attribution scores: %w", err)
	}
	resp := &pb.AttributeResponse{
		Layers: ints32(a.Layers), Width: int32(width), ScoresF32: f32Bytes(flat),
		Method: a.Method, Passes: a.Passes, Seconds: a.Seconds, ModelSeconds: a.ModelSeconds, Extra: a.Extra,
	}
	for _, d := range a.LayerDiagnostics {
		resp.LayerDiagnostics = append(resp.LayerDiagnostics, &pb.LayerDiagnostics{
			Layer: int32(d.Layer), ProbFull: d.ProbFull, ProbBaseline: d.ProbBaseline,
			ScoreSum: d.ScoreSum, CompletenessError: d.CompletenessError,
		})
	}
	return resp, nil
}

func attributionFromPB(r *pb.AttributeResponse) (*Attribution, error) {
	flat, err := bytesF32(r.ScoresF32, len(r.Layers)*int(r.Width), "attribution scores")
	if err != nil {
		return nil, err
	}
	a := &Attribution{
		Layers: ints(r.Layers), Scores: split(flat, len(r.Layers), int(r.Width)),
		Method: r.Method, Passes: r.Passes, Seconds: r.Seconds, ModelSeconds: r.ModelSeconds, Extra: r.Extra,
	}
	for _, d := range r.LayerDiagnostics {
		a.LayerDiagnostics = append(a.LayerDiagnostics, LayerDiagnostics{
			Layer: int(d.Layer), ProbFull: d.ProbFull, ProbBaseline: d.ProbBaseline,
			ScoreSum: d.ScoreSum, CompletenessError: d.CompletenessError,
		})
	}
	return a, nil
}
