// Package bert is the BERT masked-language-model backend (bert-base/large,
// cased/uncased, multilingual, and any checkpoint with model_type "bert"
// and a BertForMaskedLM or BertForPreTraining head) on libtorch through
// gotch. It loads HuggingFace checkpoints (model.safetensors or
// pytorch_model.bin, vocab.txt or tokenizer.json) and implements the whole
// sdk.Model contract, computing exactly what transformers' modeling_bert.py
// computes (post-LN encoder, MLM head decoding with the tied word
// embeddings plus cls.predictions.bias).
//
// # Queries
//
// The model reads "[CLS] prompt [SEP]" with token_type_ids 0 and no
// padding. The prompt must hold exactly one mask slot, the tokenizer's
// mask token written as text ("[MASK]"). An answer of k word pieces (as
// BertTokenizer.tokenize splits it, without special tokens) replaces that
// slot by k consecutive [MASK] tokens; those k positions are the target
// positions. The answer's probability is the product over j of the
// probability of piece j at mask j, all k masks present in one forward
// pass (no piece is revealed to predict another); for a one-piece answer
// this is the plain softmax probability at the [MASK], what the EleutherAI
// knowledge-neurons library and Dai et al. (2022) use. Predict's top-k
// list is taken at the first mask. An answer that encodes to no word
// piece, or with a piece the vocabulary can only express as [UNK] (whose
// probability says nothing about the answer), is invalid input, as is a
// prompt that does not fit max_position_embeddings once the answer's masks
// are in.
//
// # Neurons
//
// A neuron (layer, index) is a unit of a layer's FFN intermediate
// activation: with sdk.HookPost the output of the activation function
// (BertIntermediate's output, the paper's neurons and the ones the
// EleutherAI library patches), with sdk.HookPre the output of
// intermediate.dense. Interventions and the integrated-gradients scaling
// act at every target position; Activations returns one row per target
// position; Gradients scales the activations at all target positions
// together (x = b + alpha (w - b) over positions x width) and returns the
// gradient of the answer's (joint) probability with respect to all of them.
//
// # Speed
//
// Gradients caches one forward pass per prompt (every layer's input,
// attention projections, attention output and FFN pre-activation). For
// layer l the batch of alphas then starts from the cached attention output
// of layer l at the target positions (only the FFN there changes) and
// reuses every other position's cached layer output. Layer l+1 projects
// only the target rows (the others' queries, keys and values are cached);
// the layers above l run on every position (attention is bidirectional,
// so every position sees the change), except the last, which is evaluated
// only at the target positions. Backpropagation goes only down to the
// scaled activation: weights never require gradients. No input is padded.
//
// # Value slots
//
// The value slot of neuron i of layer l is column i of
// encoder.layer.l.output.dense.weight ([hidden, intermediate] in
// torch.nn.Linear's [out, in] layout): the vector the FFN adds per unit of
// that neuron's activation.
//
// # Training
//
// Model implements sdk.Trainer: masked-LM training with AdamW
// (torch.RunTraining) on the answer's pieces at the mask slot plus a share
// of the other tokens masked at random; knctl factworld train uses it.
package bert
