package sdk

import (
	"context"
	"errors"
	"sync"

	"github.com/knctl/knctl/sdk/pb"
)

// modelServer serves a Model over gRPC. Calls are serialised, so a Model
// implementation never sees two calls at once.
type modelServer struct {
	pb.UnimplementedModelServer
	load Loader

	mu     sync.Mutex
	model  Model
	thread *lockedThread
}

func (s *modelServer) get() (Model, error) {
	if s.model == nil {
		return nil, errors.New("model not loaded: the host must call Load first")
	}
	return s.model, nil
}

func (s *modelServer) Load(ctx context.Context, req *pb.LoadRequest) (*pb.ModelInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.model != nil {
		return nil, toStatus(errors.New("model already loaded; start a new plugin instance for another checkpoint"))
	}
	if s.load == nil {
		return nil, toStatus(errors.New("this model service was lent by the host and is already loaded"))
	}
	if s.thread == nil {
		s.thread = newLockedThread()
	}
	loaded, err := onThread(s.thread, func() (Model, error) {
		return s.load(ctx, LoadRequest{Checkpoint: req.Checkpoint, Options: req.Options})
	})
	if err != nil {
		return nil, toStatus(err)
	}
	m := &lockedModel{m: loaded, t: s.thread}
	info, err := m.Info(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	s.model = m
	return infoToPB(info), nil
}

func (s *modelServer) Info(ctx context.Context, _ *pb.Empty) (*pb.ModelInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.get()
	if err != nil {
		return nil, toStatus(err)
	}
	info, err := m.Info(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return infoToPB(info), nil
}

func (s *modelServer) Tokenize(ctx context.Context, req *pb.TokenizeRequest) (*pb.TokenizeResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.get()
	if err != nil {
		return nil, toStatus(err)
	}
	enc, err := m.Tokenize(ctx, req.Text)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.TokenizeResponse{Ids: ints32(enc.IDs), Tokens: enc.Tokens}, nil
}

func (s *modelServer) Predict(ctx context.Context, req *pb.PredictRequest) (*pb.PredictResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.get()
	if err != nil {
		return nil, toStatus(err)
	}
	r := PredictRequest{Query: queryFromPB(req.Query), TopK: int(req.TopK)}
	for _, iv := range req.Interventions {
		r.Interventions = append(r.Interventions, Intervention{
			Layer: int(iv.Layer), Neuron: int(iv.Neuron), Hook: Hook(iv.Hook), Op: InterventionOp(iv.Op), Value: iv.Value,
		})
	}
	p, err := m.Predict(ctx, r)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.PredictResponse{
		Tokens:           p.Tokens,
		InputIds:         ints32(p.InputIDs),
		TargetPositions:  ints32(p.TargetPositions),
		AnswerIds:        ints32(p.AnswerIDs),
		AnswerTokens:     p.AnswerTokens,
		AnswerTokenProbs: p.AnswerTokenProb,
		AnswerProb:       p.AnswerProb,
		AnswerRank:       int32(p.AnswerRank),
	}
	for _, t := range p.Top {
		resp.Top = append(resp.Top, &pb.TokenProb{Id: int32(t.ID), Token: t.Token, Prob: t.Prob, Logit: t.Logit})
	}
	return resp, nil
}

func (s *modelServer) Activations(ctx context.Context, req *pb.ActivationsRequest) (*pb.ActivationsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.get()
	if err != nil {
		return nil, toStatus(err)
	}
	a, err := m.Activations(ctx, ActivationsRequest{Query: queryFromPB(req.Query), Layers: ints(req.Layers), Hook: Hook(req.Hook)})
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.ActivationsResponse{Hook: string(a.Hook), Layers: ints32(a.Layers), Positions: ints32(a.Positions)}
	var flat []float32
	for _, layer := range a.Values {
		for _, pos := range layer {
			if resp.Width == 0 {
				resp.Width = int32(len(pos))
			}
			flat = append(flat, pos...)
		}
	}
	resp.ValuesF32 = f32Bytes(flat)
	return resp, nil
}

func (s *modelServer) Gradients(ctx context.Context, req *pb.GradientsRequest) (*pb.GradientsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.get()
	if err != nil {
		return nil, toStatus(err)
	}
	r := GradientsRequest{Query: queryFromPB(req.Query), Layer: int(req.Layer), Hook: Hook(req.Hook), Alphas: req.Alphas}
	if len(req.BaselineF32)%4 != 0 {
		return nil, toStatus(InvalidInputf("baseline: %d bytes is not a whole number of float32 values", len(req.BaselineF32)))
	}
	if len(req.BaselineF32) > 0 {
		r.Baseline, _ = bytesF32(req.BaselineF32, len(req.BaselineF32)/4, "baseline")
	}
	if req.InputNoise != nil && req.InputNoise.Sigma != 0 {
		r.InputNoise = &InputNoise{Sigma: req.InputNoise.Sigma, Seed: req.InputNoise.Seed}
	}
	g, err := m.Gradients(ctx, r)
	if err != nil {
		return nil, toStatus(err)
	}
	flat := make([]float32, 0, len(g.Grads)*g.Positions*g.Width)
	for _, row := range g.Grads {
		flat = append(flat, row...)
	}
	return &pb.GradientsResponse{
		Positions:      int32(g.Positions),
		Width:          int32(g.Width),
		ActivationF32:  f32Bytes(g.Activation),
		GradsF32:       f32Bytes(flat),
		Probs:          g.Probs,
		ComputeSeconds: g.ComputeSeconds,
	}, nil
}

func (s *modelServer) Embeddings(ctx context.Context, req *pb.EmbeddingsRequest) (*pb.Matrix, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.get()
	if err != nil {
		return nil, toStatus(err)
	}
	rows, err := m.Embeddings(ctx, ints(req.Ids))
	if err != nil {
		return nil, toStatus(err)
	}
	mat, err := matrixToPB(rows)
	return mat, toStatus(err)
}

func (s *modelServer) ValueSlots(ctx context.Context, req *pb.ValueSlotsRequest) (*pb.Matrix, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.get()
	if err != nil {
		return nil, toStatus(err)
	}
	rows, err := m.ValueSlots(ctx, int(req.Layer), ints(req.Neurons))
	if err != nil {
		return nil, toStatus(err)
	}
	mat, err := matrixToPB(rows)
	return mat, toStatus(err)
}

func (s *modelServer) SetValueSlots(ctx context.Context, req *pb.SetValueSlotsRequest) (*pb.EditResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.get()
	if err != nil {
		return nil, toStatus(err)
	}
	rows, err := matrixFromPB(req.Values, "value slots")
	if err != nil {
		return nil, toStatus(err)
	}
	id, err := m.SetValueSlots(ctx, int(req.Layer), ints(req.Neurons), rows)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.EditResponse{EditId: int64(id)}, nil
}

func (s *modelServer) UndoEdit(ctx context.Context, req *pb.UndoEditRequest) (*pb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.get()
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.Empty{}, toStatus(m.UndoEdit(ctx, EditID(req.EditId)))
}

func (s *modelServer) ApplyNoise(ctx context.Context, req *pb.NoiseSpec) (*pb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.get()
	if err != nil {
		return nil, toStatus(err)
	}
	spec := NoiseSpec{Seed: req.Seed, Sigma: req.Sigma, Mode: NoiseMode(req.Mode), Scope: NoiseScope(req.Scope)}
	return &pb.Empty{}, toStatus(m.ApplyNoise(ctx, spec))
}

func (s *modelServer) RemoveNoise(ctx context.Context, _ *pb.Empty) (*pb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.get()
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.Empty{}, toStatus(m.RemoveNoise(ctx))
}

func (s *modelServer) Save(ctx context.Context, req *pb.SaveRequest) (*pb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.get()
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.Empty{}, toStatus(m.Save(ctx, req.Dir))
}

// ModelClient is a Model reached over gRPC: a model plugin as the host sees
// it, or the model an attributor plugin is lent.
type ModelClient struct {
	c pb.ModelClient
}

var _ Model = (*ModelClient)(nil)

// Load asks the plugin to open a checkpoint.
func (c *ModelClient) Load(ctx context.Context, req LoadRequest) (ModelInfo, error) {
	resp, err := c.c.Load(ctx, &pb.LoadRequest{Checkpoint: req.Checkpoint, Options: req.Options})
	if err != nil {
		return ModelInfo{}, fromStatus(err)
	}
	return infoFromPB(resp), nil
}

// Info implements Model.
func (c *ModelClient) Info(ctx context.Context) (ModelInfo, error) {
	resp, err := c.c.Info(ctx, &pb.Empty{})
	if err != nil {
		return ModelInfo{}, fromStatus(err)
	}
	return infoFromPB(resp), nil
}

// Tokenize implements Model.
func (c *ModelClient) Tokenize(ctx context.Context, text string) (Encoding, error) {
	resp, err := c.c.Tokenize(ctx, &pb.TokenizeRequest{Text: text})
	if err != nil {
		return Encoding{}, fromStatus(err)
	}
	return Encoding{IDs: ints(resp.Ids), Tokens: resp.Tokens}, nil
}

// Predict implements Model.
func (c *ModelClient) Predict(ctx context.Context, req PredictRequest) (Prediction, error) {
	r := &pb.PredictRequest{Query: queryToPB(req.Query), TopK: int32(req.TopK)}
	for _, iv := range req.Interventions {
		r.Interventions = append(r.Interventions, &pb.Intervention{
			Layer: int32(iv.Layer), Neuron: int32(iv.Neuron), Hook: string(iv.Hook), Op: string(iv.Op), Value: iv.Value,
		})
	}
	resp, err := c.c.Predict(ctx, r)
	if err != nil {
		return Prediction{}, fromStatus(err)
	}
	p := Prediction{
		Tokens:          resp.Tokens,
		InputIDs:        ints(resp.InputIds),
		TargetPositions: ints(resp.TargetPositions),
		AnswerIDs:       ints(resp.AnswerIds),
		AnswerTokens:    resp.AnswerTokens,
		AnswerTokenProb: resp.AnswerTokenProbs,
		AnswerProb:      resp.AnswerProb,
		AnswerRank:      int(resp.AnswerRank),
	}
	for _, t := range resp.Top {
		p.Top = append(p.Top, TokenProb{ID: int(t.Id), Token: t.Token, Prob: t.Prob, Logit: t.Logit})
	}
	return p, nil
}

// Activations implements Model.
func (c *ModelClient) Activations(ctx context.Context, req ActivationsRequest) (Activations, error) {
	resp, err := c.c.Activations(ctx, &pb.ActivationsRequest{Query: queryToPB(req.Query), Layers: ints32(req.Layers), Hook: string(req.Hook)})
	if err != nil {
		return Activations{}, fromStatus(err)
	}
	nl, np, w := len(resp.Layers), len(resp.Positions), int(resp.Width)
	flat, err := bytesF32(resp.ValuesF32, nl*np*w, "activations")
	if err != nil {
		return Activations{}, err
	}
	a := Activations{Hook: Hook(resp.Hook), Layers: ints(resp.Layers), Positions: ints(resp.Positions), Values: make([][][]float32, nl)}
	for l := range a.Values {
		a.Values[l] = split(flat[l*np*w:(l+1)*np*w], np, w)
	}
	return a, nil
}

// Gradients implements Model.
func (c *ModelClient) Gradients(ctx context.Context, req GradientsRequest) (Gradients, error) {
	r := &pb.GradientsRequest{Query: queryToPB(req.Query), Layer: int32(req.Layer), Hook: string(req.Hook), Alphas: req.Alphas}
	if req.Baseline != nil {
		r.BaselineF32 = f32Bytes(req.Baseline)
	}
	if req.InputNoise != nil {
		r.InputNoise = &pb.InputNoise{Sigma: req.InputNoise.Sigma, Seed: req.InputNoise.Seed}
	}
	resp, err := c.c.Gradients(ctx, r)
	if err != nil {
		return Gradients{}, fromStatus(err)
	}
	n := int(resp.Positions * resp.Width)
	act, err := bytesF32(resp.ActivationF32, n, "activation")
	if err != nil {
		return Gradients{}, err
	}
	flat, err := bytesF32(resp.GradsF32, len(resp.Probs)*n, "gradients")
	if err != nil {
		return Gradients{}, err
	}
	return Gradients{
		Positions:      int(resp.Positions),
		Width:          int(resp.Width),
		Activation:     act,
		Grads:          split(flat, len(resp.Probs), n),
		Probs:          resp.Probs,
		ComputeSeconds: resp.ComputeSeconds,
	}, nil
}

// Embeddings implements Model.
func (c *ModelClient) Embeddings(ctx context.Context, ids []int) ([][]float32, error) {
	resp, err := c.c.Embeddings(ctx, &pb.EmbeddingsRequest{Ids: ints32(ids)})
	if err != nil {
		return nil, fromStatus(err)
	}
	return matrixFromPB(resp, "embeddings")
}

// ValueSlots implements Model.
func (c *ModelClient) ValueSlots(ctx context.Context, layer int, neurons []int) ([][]float32, error) {
	resp, err := c.c.ValueSlots(ctx, &pb.ValueSlotsRequest{Layer: int32(layer), Neurons: ints32(neurons)})
	if err != nil {
		return nil, fromStatus(err)
	}
	return matrixFromPB(resp, "value slots")
}

// SetValueSlots implements Model.
func (c *ModelClient) SetValueSlots(ctx context.Context, layer int, neurons []int, values [][]float32) (EditID, error) {
	mat, err := matrixToPB(values)
	if err != nil {
		return 0, err
	}
	resp, err := c.c.SetValueSlots(ctx, &pb.SetValueSlotsRequest{Layer: int32(layer), Neurons: ints32(neurons), Values: mat})
	if err != nil {
		return 0, fromStatus(err)
	}
	return EditID(resp.EditId), nil
}

// UndoEdit implements Model.
func (c *ModelClient) UndoEdit(ctx context.Context, id EditID) error {
	_, err := c.c.UndoEdit(ctx, &pb.UndoEditRequest{EditId: int64(id)})
	return fromStatus(err)
}

// ApplyNoise implements Model.
func (c *ModelClient) ApplyNoise(ctx context.Context, spec NoiseSpec) error {
	_, err := c.c.ApplyNoise(ctx, &pb.NoiseSpec{Seed: spec.Seed, Sigma: spec.Sigma, Mode: string(spec.Mode), Scope: string(spec.Scope)})
	return fromStatus(err)
}

// RemoveNoise implements Model.
func (c *ModelClient) RemoveNoise(ctx context.Context) error {
	_, err := c.c.RemoveNoise(ctx, &pb.Empty{})
	return fromStatus(err)
}

// Save implements Model.
func (c *ModelClient) Save(ctx context.Context, dir string) error {
	_, err := c.c.Save(ctx, &pb.SaveRequest{Dir: dir})
	return fromStatus(err)
}

func queryToPB(q Query) *pb.Query { return &pb.Query{Prompt: q.Prompt, Answer: q.Answer} }

func queryFromPB(q *pb.Query) Query {
	if q == nil {
		return Query{}
	}
	return Query{Prompt: q.Prompt, Answer: q.Answer}
}

func infoToPB(i ModelInfo) *pb.ModelInfo {
	return &pb.ModelInfo{
		Architecture: i.Architecture, Backend: i.Backend, Checkpoint: i.Checkpoint,
		Layers: int32(i.Layers), Hidden: int32(i.Hidden), FfnWidth: int32(i.FFNWidth),
		VocabSize: int32(i.VocabSize), MaxPositions: int32(i.MaxPositions), Heads: int32(i.Heads),
		Activation: i.Activation, Causal: i.Causal, MaskToken: i.MaskToken,
		SpecialTokens: specialTokens32(i.SpecialTokens), Parameters: i.Parameters,
	}
}

func infoFromPB(i *pb.ModelInfo) ModelInfo {
	return ModelInfo{
		Architecture: i.Architecture, Backend: i.Backend, Checkpoint: i.Checkpoint,
		Layers: int(i.Layers), Hidden: int(i.Hidden), FFNWidth: int(i.FfnWidth),
		VocabSize: int(i.VocabSize), MaxPositions: int(i.MaxPositions), Heads: int(i.Heads),
		Activation: i.Activation, Causal: i.Causal, MaskToken: i.MaskToken,
		SpecialTokens: specialTokens(i.SpecialTokens), Parameters: i.Parameters,
	}
}

func matrixToPB(rows [][]float32) (*pb.Matrix, error) {
	flat, cols, err := flatten(rows)
	if err != nil {
		return nil, err
	}
	return &pb.Matrix{Rows: int32(len(rows)), Cols: int32(cols), ValuesF32: f32Bytes(flat)}, nil
}

func matrixFromPB(m *pb.Matrix, what string) ([][]float32, error) {
	if m == nil {
		return nil, InvalidInputf("%s: missing matrix", what)
	}
	if m.Rows < 0 || m.Cols < 0 {
		return nil, InvalidInputf("%s: negative shape %dx%d", what, m.Rows, m.Cols)
	}
	flat, err := bytesF32(m.ValuesF32, int(m.Rows*m.Cols), what)
	if err != nil {
		return nil, InvalidInputf("%v", err)
	}
	return split(flat, int(m.Rows), int(m.Cols)), nil
}
