package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/knctl/knctl/framework"
	"github.com/knctl/knctl/framework/factworld"
	"github.com/knctl/knctl/sdk"
)

func (a *app) factworldCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "factworld",
		Short: "Generate the invented fact world, train small models on it, and evaluate the method on them",
		Long: `The fact world is a deterministic set of invented facts (subjects x relations,
8 paraphrase templates per relation, the last 2 held out from training). Small
GPT-2 and BERT models trained on it know exactly the facts they were taught, so
the knowledge neurons knctl finds can be checked to carry them. The repo ships
the world and both trained models in factworld/; they are knctl's default
checkpoints.`,
	}
	c.PersistentFlags().String("dir", "factworld", "the fact world directory")
	c.AddCommand(a.factworldGenerateCmd(), a.factworldTrainCmd(), a.factworldEvalCmd())
	return c
}

func (a *app) factworldGenerateCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "generate",
		Short: "Write world.json and the facts files (facts-gpt2.jsonl, facts-bert.jsonl)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n := a.v.GetInt("subjects")
			if n < 1 {
				return usageErr("--subjects %d: expected at least 1", n)
			}
			w := factworld.Generate(uint64(a.v.GetInt64("seed")), n)
			dir := a.v.GetString("dir")
			if err := w.Write(dir); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "wrote %s: %s\n", dir, w)
			return nil
		},
	}
	c.Flags().Int64("seed", 1, "world seed")
	c.Flags().Int("subjects", 60, "number of invented subjects")
	return c
}

func (a *app) factworldTrainCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "train",
		Short: "Train a small GPT-2 or BERT on the world's seen templates and save it in DIR/MODEL",
		Long: `Train a model of the given shape (default 4 layers, width 128, FFN 256 for
GPT-2 and 512 for BERT) from
random weights on the seen templates' sentences with AdamW, then save it as a
HuggingFace checkpoint in DIR/MODEL (replaced atomically), with the loss curve
in DIR/MODEL/train_log.csv and train_loss.png and the settings in train.json.
Label smoothing (and, if set, stopping once the mean answer probability on the
training prompts reaches --target-prob) keeps the model's confidence realistic:
a model that puts 0.99999 on every answer hides every effect of suppression
behind a saturated softmax. A run is deterministic: the
same settings give bit-identical weights, whatever --threads is.`,
		Example: `  knctl factworld train --model gpt2`,
		Args:    cobra.NoArgs,
		RunE:    a.runFactworldTrain,
	}
	c.Flags().String("model", "gpt2", "model plugin: gpt2 or bert")
	c.Flags().Int("threads", 0, "threads (0: all CPUs; results are the same for any count)")
	c.Flags().Int("steps", 3000, "optimizer steps (at most)")
	c.Flags().Int("batch", 32, "examples per step")
	c.Flags().Float64("lr", 1e-3, "peak learning rate")
	c.Flags().Float64("weight-decay", 0.01, "AdamW weight decay")
	c.Flags().Int("warmup", 100, "warm-up steps")
	c.Flags().Float64("label-smoothing", 0.2, "label smoothing of the cross-entropy (0.2 caps the answer probability near 0.8)")
	c.Flags().Float64("target-prob", 0, "stop once the mean answer probability on training prompts reaches this (0: never)")
	c.Flags().Int("eval-every", 100, "evaluate every so many steps")
	c.Flags().Float64("mask-rate", 0.15, "BERT: share of other tokens masked too")
	c.Flags().Int64("seed", 1, "seed of the initial weights and the batch order")
	c.Flags().Int("layers", 0, "transformer layers (0: 4)")
	c.Flags().Int("hidden", 0, "hidden size (0: 128)")
	c.Flags().Int("heads", 0, "attention heads (0: 4)")
	c.Flags().Int("ffn", 0, "FFN width, neurons per layer (0: 256 for gpt2, 512 for bert)")
	return c
}

func (a *app) runFactworldTrain(cmd *cobra.Command, _ []string) error {
	ctx := cmd.Context()
	dir := a.v.GetString("dir")
	arch := a.v.GetString("model")
	style, err := factworld.StyleOf(arch)
	if err != nil {
		return err
	}
	w, err := factworld.Read(dir)
	if err != nil {
		return err
	}
	skeleton, err := os.MkdirTemp("", "knctl-factworld-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(skeleton)
	shape := factworld.DefaultArch(arch)
	for flag, field := range map[string]*int{"layers": &shape.Layers, "hidden": &shape.Hidden, "heads": &shape.Heads, "ffn": &shape.FFN} {
		if v := a.v.GetInt(flag); v > 0 {
			*field = v
		}
	}
	if err := w.WriteSkeleton(skeleton, arch, shape); err != nil {
		return err
	}
	h := a.host()
	h.CallTimeout = 0 // training is one long call
	defer h.Close()
	seed := a.v.GetInt64("seed")
	threads := a.v.GetInt("threads")
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	m, err := h.OpenModel(ctx, arch, skeleton, map[string]string{
		"init": "random", "seed": fmt.Sprint(seed), "threads": fmt.Sprint(threads),
	})
	if err != nil {
		return err
	}
	trainer, ok := m.Model.(sdk.Trainer)
	if !ok {
		return fmt.Errorf("model plugin %s cannot train", arch)
	}
	req := sdk.TrainRequest{
		Examples:       w.Examples(style, false),
		Steps:          a.v.GetInt("steps"),
		BatchSize:      a.v.GetInt("batch"),
		LearningRate:   a.v.GetFloat64("lr"),
		WeightDecay:    a.v.GetFloat64("weight-decay"),
		WarmupSteps:    a.v.GetInt("warmup"),
		LabelSmoothing: a.v.GetFloat64("label-smoothing"),
		Seed:           seed,
		MaskRate:       a.v.GetFloat64("mask-rate"),
		EvalEvery:      a.v.GetInt("eval-every"),
		TargetProb:     a.v.GetFloat64("target-prob"),
	}
	fmt.Fprintf(a.errOut, "training %s on %d sentences of %s\n", arch, len(req.Examples), w)
	prog := newProgress(a.errOut, a.v.GetBool("quiet"), "steps")
	prog.start(req.Steps, 0)
	var log []sdk.TrainProgress
	last := 0
	start := time.Now()
	final, err := trainer.Train(ctx, req, func(p sdk.TrainProgress) {
		log = append(log, p)
		// Without a terminal, print a line per evaluation, not per step.
		for ; last < p.Step-1; last++ {
			prog.stepQuiet()
		}
		if last < p.Step {
			last++
			if p.Evaluated {
				prog.step(fmt.Sprintf("step %d: loss %.4f, answer probability %.3f, accuracy %.3f", p.Step, p.Loss, p.MeanAnswerProb, p.Accuracy))
			} else {
				prog.stepQuiet()
			}
		}
	})
	prog.finish()
	if err != nil {
		return fmt.Errorf("train %s: %w", arch, err)
	}
	log = append(log, final)
	out := filepath.Join(dir, arch)
	tmp := out + ".tmp"
	os.RemoveAll(tmp)
	if err := m.Save(ctx, tmp); err != nil {
		return fmt.Errorf("save %s: %w", arch, err)
	}
	if err := writeTrainLog(tmp, req, final, log, time.Since(start)); err != nil {
		return err
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	stopped := final.Stopped
	if stopped == "" {
		stopped = "all steps done"
	}
	fmt.Fprintf(a.out, "trained %s in %.0fs, %d steps (%s): loss %.4f, mean answer probability %.3f, accuracy %.3f; saved to %s\n",
		arch, time.Since(start).Seconds(), final.Step, stopped, final.Loss, final.MeanAnswerProb, final.Accuracy, out)
	return nil
}

// writeTrainLog writes train.json, train_log.csv and train_loss.png.
func writeTrainLog(dir string, req sdk.TrainRequest, final sdk.TrainProgress, log []sdk.TrainProgress, took time.Duration) error {
	meta := struct {
		Request sdk.TrainRequest  `json:"request"`
		Final   sdk.TrainProgress `json:"final"`
		Seconds float64           `json:"seconds"`
	}{req, final, took.Seconds()}
	meta.Request.Examples = nil
	b, _ := json.MarshalIndent(meta, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "train.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "train_log.csv"))
	if err != nil {
		return err
	}
	cw := csv.NewWriter(f)
	_ = cw.Write([]string{"step", "loss", "mean_answer_prob", "accuracy"})
	loss, prob := plotter.XYs{}, plotter.XYs{}
	for _, p := range log {
		row := []string{strconv.Itoa(p.Step), strconv.FormatFloat(p.Loss, 'g', 6, 64), "", ""}
		if p.Evaluated {
			row[2] = strconv.FormatFloat(p.MeanAnswerProb, 'g', 6, 64)
			row[3] = strconv.FormatFloat(p.Accuracy, 'g', 6, 64)
			prob = append(prob, plotter.XY{X: float64(p.Step), Y: p.MeanAnswerProb})
		}
		loss = append(loss, plotter.XY{X: float64(p.Step), Y: p.Loss})
		_ = cw.Write(row)
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	pl := plot.New()
	pl.Title.Text = "training"
	pl.X.Label.Text = "step"
	pl.Y.Label.Text = "loss / answer probability"
	ll, err := plotter.NewLine(loss)
	if err != nil {
		return err
	}
	pl.Add(ll)
	pl.Legend.Add("loss", ll)
	if len(prob) > 0 {
		pp, err := plotter.NewLine(prob)
		if err != nil {
			return err
		}
		pp.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		pl.Add(pp)
		pl.Legend.Add("mean answer probability", pp)
	}
	return pl.Save(6*vg.Inch, 4*vg.Inch, filepath.Join(dir, "train_loss.png"))
}

func (a *app) factworldEvalCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "eval",
		Short: "Measure the trained models and the method on the fact world",
		Long: `For each model: accuracy (answer top-1) on seen and held-out templates; the
knowledge neurons of --sample facts per relation (knctl run's rules and flags);
their distribution over layers and how many neurons facts share within and
across relations; and the effect of suppressing (x0) and amplifying (x2) each
fact's knowledge neurons on its own prompts, on --others facts of other
relations, and — the control — of the same number of random neurons of the
same layers on the own prompts. Changes are reported as ratio of means
(mean after - mean before) / mean before, as Dai et al. report them, and as the
change of the logit margin over the runner-up.`,
		Args: cobra.NoArgs,
		RunE: a.runFactworldEval,
	}
	c.Flags().StringSlice("model", []string{"gpt2", "bert"}, "models to evaluate")
	c.Flags().Int("sample", 10, "facts per relation to find neurons for")
	c.Flags().Int("others", 5, "facts of other relations probed per fact")
	c.Flags().Int("threads", 0, "libtorch threads (0: all CPUs)")
	c.Flags().Int64("seed", 1, "seed of the sample and the random control")
	attributionFlags(c)
	ruleFlags(c)
	return c
}

// modelEval is factworld eval's result for one model.
type modelEval struct {
	Model        string                  `json:"model"`
	SeenAccuracy float64                 `json:"seen_accuracy"`
	SeenProb     float64                 `json:"seen_mean_prob"`
	HeldAccuracy float64                 `json:"held_out_accuracy"`
	HeldProb     float64                 `json:"held_out_mean_prob"`
	Facts        int                     `json:"facts"`
	NeuronsMin   int                     `json:"neurons_min"`
	NeuronsMax   int                     `json:"neurons_max"`
	Sharing      framework.Sharing       `json:"sharing"`
	Suppress     framework.EffectReport  `json:"suppress"`
	Amplify      framework.EffectReport  `json:"amplify"`
	Results      []*framework.FactResult `json:"results"`
	Seconds      float64                 `json:"seconds"`
}

func (a *app) runFactworldEval(cmd *cobra.Command, _ []string) error {
	ctx := cmd.Context()
	dir := a.v.GetString("dir")
	w, err := factworld.Read(dir)
	if err != nil {
		return err
	}
	hook, layers, opts, err := a.scoring()
	if err != nil {
		return err
	}
	rules, err := a.rules()
	if err != nil {
		return err
	}
	var evals []modelEval
	for _, arch := range a.v.GetStringSlice("model") {
		e, err := a.evalWorldModel(ctx, w, dir, arch, hook, layers, opts, rules)
		if err != nil {
			return fmt.Errorf("evaluate %s: %w", arch, err)
		}
		evals = append(evals, e)
	}
	if a.v.GetBool("json") {
		return a.printJSON(evals)
	}
	for _, e := range evals {
		a.printWorldEval(e)
	}
	return nil
}

func (a *app) evalWorldModel(ctx context.Context, w *factworld.World, dir, arch string, hook sdk.Hook, layers []int, opts map[string]string, rules framework.Rules) (modelEval, error) {
	start := time.Now()
	e := modelEval{Model: arch}
	style, err := factworld.StyleOf(arch)
	if err != nil {
		return e, err
	}
	ckpt := filepath.Join(dir, arch)
	h := a.host()
	defer h.Close()
	modelOpts := map[string]string{}
	if t := a.v.GetInt("threads"); t > 0 {
		modelOpts["threads"] = fmt.Sprint(t)
	}
	m, err := h.OpenModel(ctx, arch, ckpt, modelOpts)
	if err != nil {
		return e, err
	}
	accuracy := func(qs []sdk.Query) (acc, prob float64, err error) {
		for _, q := range qs {
			p, err := framework.ProbeQuery(ctx, m, q, nil)
			if err != nil {
				return 0, 0, err
			}
			if p.Correct {
				acc++
			}
			prob += p.Prob
		}
		return acc / float64(len(qs)), prob / float64(len(qs)), nil
	}
	if e.SeenAccuracy, e.SeenProb, err = accuracy(w.Examples(style, false)); err != nil {
		return e, err
	}
	if e.HeldAccuracy, e.HeldProb, err = accuracy(w.Examples(style, true)); err != nil {
		return e, err
	}
	seed := uint64(a.v.GetInt64("seed"))
	all := w.Facts(style)
	sample := framework.SampleFacts(all, a.v.GetInt("sample"), seed)
	cfg := framework.RunConfig{
		Model: arch, Checkpoint: ckpt, ModelOptions: modelOpts, Attributor: "ig", AttributorOptions: opts,
		Layers: layers, Hook: hook, Rules: rules, Workers: 1, AdaptiveP: a.v.GetBool("adaptive-p"),
		Progress: &runReport{progress: newProgress(a.errOut, a.v.GetBool("quiet"), arch+" facts"), a: a, json: true, silent: true},
	}
	sum, err := h.Run(ctx, cfg, sample)
	if err != nil {
		return e, err
	}
	if len(sum.Failed) > 0 {
		return e, fmt.Errorf("fact %s: %s", sum.Failed[0].ID, sum.Failed[0].Err)
	}
	e.Results = sum.Results
	e.Facts = len(sum.Results)
	neurons := map[string][]framework.Neuron{}
	e.NeuronsMin = 1 << 30
	for _, r := range sum.Results {
		neurons[r.ID] = r.Neurons
		e.NeuronsMin = min(e.NeuronsMin, len(r.Neurons))
		e.NeuronsMax = max(e.NeuronsMax, len(r.Neurons))
	}
	e.Sharing = framework.ShareNeurons(sum.Results, m.ModelInfo.Layers)
	ecfg := framework.EffectConfig{Hook: hook, Op: sdk.OpSet, Value: 0, Others: a.v.GetInt("others"), Width: m.ModelInfo.FFNWidth, Seed: seed}
	if e.Suppress, err = framework.Effect(ctx, m, sample, neurons, all, ecfg); err != nil {
		return e, err
	}
	ecfg.Op, ecfg.Value = sdk.OpScale, 2
	if e.Amplify, err = framework.Effect(ctx, m, sample, neurons, all, ecfg); err != nil {
		return e, err
	}
	e.Seconds = time.Since(start).Seconds()
	return e, nil
}

func (a *app) printWorldEval(e modelEval) {
	fmt.Fprintf(a.out, "\n== %s (%.0fs)\n", e.Model, e.Seconds)
	fmt.Fprintf(a.out, "accuracy: seen templates %.1f%% (mean P %.3f), held-out templates %.1f%% (mean P %.3f)\n",
		100*e.SeenAccuracy, e.SeenProb, 100*e.HeldAccuracy, e.HeldProb)
	fmt.Fprintf(a.out, "knowledge neurons: %d facts, %.2f per fact (min %d, max %d); per layer %v\n",
		e.Facts, e.Sharing.NeuronsPerFct, e.NeuronsMin, e.NeuronsMax, e.Sharing.LayerCounts)
	fmt.Fprintf(a.out, "shared neurons per pair of facts: %.3f within a relation, %.3f across relations\n",
		e.Sharing.WithinShared, e.Sharing.AcrossShared)
	tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "intervention\tprompts\tP before\tP after\tratio of means\tmean of ratios\tmargin before\tmargin after\ttop-1 before\ttop-1 after\t")
	row := func(name string, c framework.Change) {
		fmt.Fprintf(tw, "%s\t%d\t%.4f\t%.4f\t%+.1f%%\t%+.1f%%\t%.2f\t%.2f\t%.0f%%\t%.0f%%\t\n", name, c.N, c.MeanBefore, c.MeanAfter,
			100*c.RatioOfMeans, 100*c.MeanOfRatios, c.MarginBefore, c.MarginAfter, 100*c.CorrectBefore, 100*c.CorrectAfter)
	}
	for _, r := range []struct {
		name string
		rep  framework.EffectReport
	}{{"suppress x0", e.Suppress}, {"amplify x2", e.Amplify}} {
		row(r.name+": own fact", r.rep.Own)
		row(r.name+": other relations", r.rep.Others)
		row(r.name+": random neurons", r.rep.RandomOn)
	}
	tw.Flush()
}
