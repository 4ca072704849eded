package sdk

import "context"

// Hook names which FFN value a neuron is.
type Hook string

const (
	// HookPost is the activation function's output, the input of the FFN's
	// second linear layer: the neurons of Dai et al. (2022). It is the default.
	HookPost Hook = "post"
	// HookPre is the first FFN linear layer's output, before the activation
	// function (what the EleutherAI knowledge-neurons library hooks on GPT-2).
	HookPre Hook = "pre"
)

// ParseHook returns the hook named by s; "" means HookPost.
func ParseHook(s string) (Hook, error) {
	switch Hook(s) {
	case "", HookPost:
		return HookPost, nil
	case HookPre:
		return HookPre, nil
	}
	return "", InvalidInputf("hook %q: expected %q or %q", s, HookPre, HookPost)
}

// ModelInfo describes a loaded checkpoint.
type ModelInfo struct {
	Architecture string `json:"architecture"` // e.g. "gpt2", "bert"
	Backend      string `json:"backend"`      // e.g. "libtorch 1.13.1 (gotch)"
	Checkpoint   string `json:"checkpoint"`   // the resolved directory
	Layers       int    `json:"layers"`
	Hidden       int    `json:"hidden"`
	FFNWidth     int    `json:"ffn_width"`
	VocabSize    int    `json:"vocab_size"`
	MaxPositions int    `json:"max_positions"`
	Heads        int    `json:"heads"`
	Activation   string `json:"activation"`
	// Causal models predict the answer at the last prompt position; masked
	// language models predict it at the MaskToken.
	Causal        bool           `json:"causal"`
	MaskToken     string         `json:"mask_token,omitempty"`
	SpecialTokens map[string]int `json:"special_tokens"`
	Parameters    int64          `json:"parameters"`
}

// Query is a prompt and the answer whose probability is measured.
//
// For a causal model the target position is the last prompt token; an answer
// of several tokens is teacher-forced, and its probability is the product of
// its tokens' probabilities. For a masked model the prompt holds one mask
// slot; an answer of k word pieces fills k consecutive masks.
type Query struct {
	Prompt string `json:"prompt"`
	Answer string `json:"answer,omitempty"`
}

// Encoding is a tokenized text.
type Encoding struct {
	IDs    []int    `json:"input_ids"`
	Tokens []string `json:"tokens"`
}

// InterventionOp is what an Intervention does to a neuron's activation.
type InterventionOp string

const (
	// OpSet replaces the activation by the intervention's value.
	OpSet InterventionOp = "set"
	// OpScale multiplies the activation by the intervention's value.
	OpScale InterventionOp = "scale"
)

// Intervention changes one neuron's activation at the target position(s)
// during a forward pass; the weights are not touched.
type Intervention struct {
	Layer  int            `json:"layer"`
	Neuron int            `json:"neuron"`
	Hook   Hook           `json:"hook"`
	Op     InterventionOp `json:"op"`
	Value  float32        `json:"value"`
}

// PredictRequest asks for the answer's probability and the top-k tokens at
// the (first) target position, optionally under interventions.
type PredictRequest struct {
	Query         Query          `json:"query"`
	TopK          int            `json:"top_k"`
	Interventions []Intervention `json:"interventions,omitempty"`
}

// TokenProb is one entry of a top-k list.
type TokenProb struct {
	ID    int     `json:"id"`
	Token string  `json:"token"`
	Prob  float64 `json:"prob"`
	Logit float64 `json:"logit"`
}

// Prediction is the result of Predict.
type Prediction struct {
	Tokens          []string    `json:"tokens"`
	InputIDs        []int       `json:"input_ids"`
	TargetPositions []int       `json:"target_positions"`
	AnswerIDs       []int       `json:"target_ids"`
	AnswerTokens    []string    `json:"target_tokens"`
	AnswerTokenProb []float64   `json:"target_token_probs"`
	AnswerProb      float64     `json:"target_prob"`
	AnswerRank      int         `json:"target_rank"` // rank of the first answer token, 0 = top-1
	Top             []TokenProb `json:"top"`
}

// ActivationsRequest asks for FFN activations at the target position(s).
type ActivationsRequest struct {
	Query  Query `json:"query"`
	Layers []int `json:"layers,omitempty"` // empty: every layer
	Hook   Hook  `json:"hook"`
}

// Activations holds Values[layer][position][neuron] for the requested layers
// (in request order) at the target positions.
type Activations struct {
	Hook      Hook          `json:"hook"`
	Layers    []int         `json:"layer_ids"`
	Positions []int         `json:"positions"`
	Values    [][][]float32 `json:"values"`
}

// GradientsRequest is the integrated-gradients primitive for one prompt and
// one layer. Let w be the layer's activation at the target position(s) and b
// the baseline (zero when nil). For each alpha the model runs with that
// activation replaced by x = b + alpha*(w-b), other layers computed as usual,
// and returns P(answer) and dP/dx.
type GradientsRequest struct {
	Query    Query     `json:"query"`
	Layer    int       `json:"layer"`
	Hook     Hook      `json:"hook"`
	Alphas   []float32 `json:"alphas"`
	Baseline []float32 `json:"baseline,omitempty"` // positions*width, or nil for zero
	// InputNoise adds Gaussian noise to the input embeddings (FusionGrad).
	InputNoise *InputNoise `json:"input_noise,omitempty"`
}

// InputNoise is Gaussian noise N(0, Sigma²) on the input embeddings, drawn
// from Seed.
type InputNoise struct {
	Sigma float64 `json:"sigma"`
	Seed  int64   `json:"seed"`
}

// Gradients is the answer to a GradientsRequest. Activation and each row of
// Grads hold positions*width values, position-major.
type Gradients struct {
	Positions      int         `json:"positions"`
	Width          int         `json:"width"`
	Activation     []float32   `json:"activation"`
	Grads          [][]float32 `json:"grads"` // one per alpha
	Probs          []float64   `json:"probs"` // one per alpha
	ComputeSeconds float64     `json:"compute_seconds"`
}

// NoiseMode is how weight noise combines with a weight.
type NoiseMode string

const (
	// NoiseMultiplicative multiplies each weight by e ~ N(1, sigma²) (NoiseGrad).
	NoiseMultiplicative NoiseMode = "multiplicative"
	// NoiseAdditive adds e ~ N(0, sigma²) to each weight.
	NoiseAdditive NoiseMode = "additive"
)

// NoiseScope selects the weights that get noise.
type NoiseScope string

const (
	// ScopeAll perturbs every parameter, as in the NoiseGrad paper.
	ScopeAll NoiseScope = "all"
	// ScopeFFN perturbs only the FFN linear layers.
	ScopeFFN NoiseScope = "ffn"
)

// NoiseSpec describes seeded weight noise. The same spec on the same model
// gives bit-identical weights.
type NoiseSpec struct {
	Seed  int64      `json:"seed"`
	Sigma float64    `json:"sigma"`
	Mode  NoiseMode  `json:"mode"`
	Scope NoiseScope `json:"scope"`
}

// EditID identifies a value-slot edit for UndoEdit.
type EditID int64

// Model is what a model backend offers the pipeline and the attributors.
// Implementations must be safe for use by one caller at a time; the host
// serialises calls to one model instance.
type Model interface {
	// Info describes the loaded checkpoint.
	Info(ctx context.Context) (ModelInfo, error)
	// Tokenize encodes text the way the model's tokenizer does, without
	// adding special tokens.
	Tokenize(ctx context.Context, text string) (Encoding, error)
	// Predict runs one forward pass.
	Predict(ctx context.Context, req PredictRequest) (Prediction, error)
	// Activations returns FFN activations at the target position(s).
	Activations(ctx context.Context, req ActivationsRequest) (Activations, error)
	// Gradients is the integrated-gradients primitive (see GradientsRequest).
	Gradients(ctx context.Context, req GradientsRequest) (Gradients, error)
	// Embeddings returns the input embedding rows of the given token ids.
	Embeddings(ctx context.Context, ids []int) ([][]float32, error)
	// ValueSlots returns, for each neuron of layer, its value slot: the
	// vector (of hidden size) the FFN's second linear layer adds to the
	// residual stream per unit of that neuron's activation.
	ValueSlots(ctx context.Context, layer int, neurons []int) ([][]float32, error)
	// SetValueSlots overwrites value slots and returns an id for UndoEdit.
	SetValueSlots(ctx context.Context, layer int, neurons []int, values [][]float32) (EditID, error)
	// UndoEdit restores, bit for bit, the slots an edit overwrote. Undo
	// overlapping edits in reverse order.
	UndoEdit(ctx context.Context, id EditID) error
	// ApplyNoise perturbs the weights in place (replacing any noise already
	// applied); RemoveNoise restores them bit for bit.
	ApplyNoise(ctx context.Context, spec NoiseSpec) error
	// RemoveNoise undoes ApplyNoise; without noise applied it does nothing.
	RemoveNoise(ctx context.Context) error
	// Save writes the current weights (with edits and noise) and the
	// tokenizer as a HuggingFace checkpoint directory.
	Save(ctx context.Context, dir string) error
}

// LoadRequest names the checkpoint a model plugin opens.
type LoadRequest struct {
	// Checkpoint is a directory or a model id found in the local
	// HuggingFace cache.
	Checkpoint string
	// Options are backend-specific (e.g. "threads").
	Options map[string]string
}

// Loader opens a checkpoint; a model plugin is built around one.
type Loader func(ctx context.Context, req LoadRequest) (Model, error)
