package factworld

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/knctl/knctl/plugins/models/tokenize"
)

func TestGenerateIsDeterministic(t *testing.T) {
	a, b := Generate(1, 60), Generate(1, 60)
	assert.Equal(t, a, b)
	assert.NotEqual(t, a.Subjects[0].Name, Generate(2, 60).Subjects[0].Name)
	require.Len(t, a.Subjects, 60)
	require.Len(t, a.Relations, 5)
	names := map[string]bool{}
	for _, s := range a.Subjects {
		require.False(t, names[s.Name], "subject %s twice", s.Name)
		names[s.Name] = true
		for _, rel := range a.Relations {
			require.Contains(t, rel.Objects, s.Facts[rel.Name])
		}
	}
	for _, rel := range a.Relations {
		require.Len(t, rel.Templates, 8)
		require.Equal(t, 2, rel.HeldOut)
		for _, o := range rel.Objects {
			require.False(t, names[o], "object %s is also a subject", o)
		}
	}
	capital, _ := a.Relation("capital")
	assert.Len(t, capital.Objects, 60, "one capital per subject")
	seen, held := a.Examples(Causal, false), a.Examples(Causal, true)
	assert.Len(t, seen, 60*5*6)
	assert.Len(t, held, 60*5*2)
	facts := a.Facts(Masked)
	require.Len(t, facts, 300)
	assert.Equal(t, "capital/"+a.Subjects[0].Name, facts[0].ID)
	assert.True(t, strings.HasSuffix(facts[0].Prompts[0], " [MASK]."))
	assert.Len(t, facts[0].Prompts, 8)
}

func TestTokenizersMakeObjectsOneToken(t *testing.T) {
	w := Generate(7, 60)
	dir := t.TempDir()
	require.NoError(t, w.WriteSkeleton(dir+"/gpt2", "gpt2", DefaultArch("gpt2")))
	require.NoError(t, w.WriteSkeleton(dir+"/bert", "bert", DefaultArch("bert")))
	bpe, err := tokenize.LoadGPT2(dir + "/gpt2")
	require.NoError(t, err)
	wp, err := tokenize.LoadBERT(dir + "/bert")
	require.NoError(t, err)

	for _, rel := range w.Relations {
		for _, o := range rel.Objects {
			enc, err := bpe.Encode(" " + o)
			require.NoError(t, err)
			assert.Len(t, enc.IDs, 1, "GPT-2 %q", " "+o)
			pieces, err := wp.EncodePlain(o)
			require.NoError(t, err)
			assert.Len(t, pieces.IDs, 1, "BERT %q", o)
		}
	}
	// Every word after a space is one token, and no sentence needs [UNK].
	for _, q := range append(w.Examples(Causal, false), w.Examples(Causal, true)...) {
		enc, err := bpe.Encode(q.Prompt + q.Answer)
		require.NoError(t, err)
		words := 0
		for _, f := range strings.Fields(q.Prompt + q.Answer) {
			words += len(splitWords(f))
		}
		assert.LessOrEqual(t, len(enc.IDs), words+2, "%q: %v", q.Prompt, enc.Tokens) // sentence-start subject may split
		assert.Equal(t, q.Prompt+q.Answer, bpe.Decode(enc.IDs))
	}
	for _, q := range w.Examples(Masked, false) {
		enc, err := wp.Encode(q.Prompt)
		require.NoError(t, err)
		assert.NotContains(t, enc.Tokens, "[UNK]", q.Prompt)
		n := 0
		for _, tok := range enc.Tokens {
			if tok == "[MASK]" {
				n++
			}
		}
		assert.Equal(t, 1, n, q.Prompt)
	}
}
