// Package gpt2 is the GPT-2 family backend (distilgpt2, gpt2 … gpt2-xl and
// any checkpoint with model_type "gpt2") on libtorch through gotch. It loads
// HuggingFace checkpoints and implements the whole sdk.Model contract.
//
// The target position is the last prompt token. An answer of several tokens
// is teacher-forced: the model reads prompt + answer[:-1] and the answer's
// probability is the product of its tokens' probabilities. Interventions and
// the integrated-gradients scaling act on the target position only.
//
// Gradients is fast by construction: one forward pass per prompt is cached
// (residual stream and attention keys/values of every layer); for layer l the
// batch of alphas then recomputes only positions >= the target position in
// layers above l, attending to the cached keys and values of earlier
// positions, and backpropagates only down to the scaled activation (weights
// never require gradients).
//
// Model also implements sdk.Trainer: causal-LM training on prompt+answer
// sentences with AdamW (torch.RunTraining), which knctl factworld train
// uses to train the fact-world model from random weights.
package gpt2
