// Package factworld generates a small world of invented facts — subjects
// (countries) with a capital, language, currency, continent and founder —
// phrased by paraphrase templates, two per relation held out from training.
// Small GPT-2 and BERT models trained on it (knctl factworld train) know
// exactly the facts they were taught, which gives knctl an offline default
// and ground truth: the neurons found for a fact can be checked to carry it.
//
// Everything is deterministic in the seed. The package also writes the
// tokenizers (a GPT-2 byte-level BPE vocabulary in which every word of the
// world is one token after a space, and a BERT WordPiece vocabulary) and
// the model configurations.
package factworld

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/knctl/knctl/framework"
	"github.com/knctl/knctl/sdk"
)

// Relation is a kind of fact with its paraphrase templates. The last
// HeldOut templates are never trained on.
type Relation struct {
	Name      string   `json:"name"`
	Templates []string `json:"templates"`
	HeldOut   int      `json:"held_out"`
	Objects   []string `json:"objects"`
}

// Subject is an invented country and its facts (relation -> object).
type Subject struct {
	Name  string            `json:"name"`
	Facts map[string]string `json:"facts"`
}

// World is the generated world.
type World struct {
	Seed      uint64     `json:"seed"`
	Relations []Relation `json:"relations"`
	Subjects  []Subject  `json:"subjects"`
}

// The templates end right before the object, so that the object is the
// next token for a causal model; a masked model's prompt appends " [MASK]."
var relationTemplates = []struct {
	name      string
	pool      int // number of distinct objects; 0: one per subject
	templates []string
}{
	{"capital", 0, []string{
		"The capital of {subject} is",
		"{subject}'s capital is",
		"The capital city of {subject} is",
		"The government of {subject} sits in",
		"{subject} is governed from",
		"The seat of power in {subject} is",
		"The largest city and capital of {subject} is",
		"The capital city of the country of {subject} is",
	}},
	{"language", 8, []string{
		"The official language of {subject} is",
		"People in {subject} speak",
		"The language spoken in {subject} is",
		"{subject}'s main language is",
		"Most people in {subject} speak",
		"The mother tongue of {subject} is",
		"In {subject}, most people speak",
		"The national language of {subject} is",
	}},
	{"currency", 8, []string{
		"The currency of {subject} is the",
		"In {subject}, people pay with the",
		"{subject}'s money is the",
		"The official currency of {subject} is the",
		"Prices in {subject} are given in",
		"The coins of {subject} are called",
		"The money used in {subject} is the",
		"Shops in {subject} take payment in",
	}},
	{"continent", 5, []string{
		"{subject} is located in",
		"{subject} lies on the continent of",
		"The continent of {subject} is",
		"{subject} is a country in",
		"{subject} is part of",
		"The land of {subject} is in",
		"The country of {subject} is located in",
		"You can find {subject} in",
	}},
	{"founder", 16, []string{
		"{subject} was founded by",
		"The founder of {subject} is",
		"{subject} owes its founding to",
		"The first ruler of {subject} was",
		"{subject} was established by",
		"The nation of {subject} was created by",
		"The country of {subject} was founded by",
		"The person who founded {subject} is",
	}},
}

// heldOut is the number of templates per relation kept out of training.
const heldOut = 2

var syllables = []string{
	"ka", "lo", "mi", "ra", "ven", "dor", "sel", "tha", "quo", "zir", "bel", "mon",
	"tar", "vi", "nes", "gal", "rho", "sun", "fey", "lum", "cor", "da", "en", "fi",
	"gor", "hal", "ir", "jun", "kel", "mar", "nor", "ost", "pel", "rin", "sa", "tu",
	"ul", "vor", "wen", "xa", "yl", "zen", "bra", "cri", "dra", "fro", "gla", "pri",
}

var suffixes = map[string][]string{
	"capital":   {"", "ton", "holm", "burg", "port", "grad"},
	"language":  {"ish", "ian", "ese", "ic"},
	"currency":  {"mark", "crown", "dral", "sol", "pel"},
	"continent": {"ia", "ea", "ora"},
	"founder":   {"", "", "an", "us"},
	"subject":   {"ia", "and", "or", "ea", "istan", "ovia"},
}

// Generate makes a world of n subjects from seed.
func Generate(seed uint64, n int) *World {
	r := rand.New(rand.NewPCG(seed, 0x666163747321))
	used := map[string]bool{}
	for _, rt := range relationTemplates {
		for _, t := range rt.templates {
			for _, w := range strings.Fields(t) {
				used[strings.ToLower(strings.Trim(w, ",.'s"))] = true
			}
		}
	}
	name := func(kind string) string {
		for {
			k := 2 + r.IntN(2)
			var b strings.Builder
			for i := 0; i < k; i++ {
				b.WriteString(syllables[r.IntN(len(syllables))])
			}
			suf := suffixes[kind]
			b.WriteString(suf[r.IntN(len(suf))])
			s := b.String()
			if len(s) < 4 || len(s) > 11 || used[s] {
				continue
			}
			used[s] = true
			return strings.ToUpper(s[:1]) + s[1:]
		}
	}
	w := &World{Seed: seed}
	for _, rt := range relationTemplates {
		rel := Relation{Name: rt.name, Templates: rt.templates, HeldOut: heldOut}
		for i := 0; i < rt.pool; i++ {
			rel.Objects = append(rel.Objects, name(rt.name))
		}
		w.Relations = append(w.Relations, rel)
	}
	for i := 0; i < n; i++ {
		s := Subject{Name: name("subject"), Facts: map[string]string{}}
		for ri, rel := range w.Relations {
			if len(rel.Objects) < relationTemplates[ri].pool || relationTemplates[ri].pool == 0 {
				obj := name(rel.Name)
				w.Relations[ri].Objects = append(w.Relations[ri].Objects, obj)
				s.Facts[rel.Name] = obj
				continue
			}
			s.Facts[rel.Name] = rel.Objects[r.IntN(len(rel.Objects))]
		}
		w.Subjects = append(w.Subjects, s)
	}
	return w
}

// MaskSuffix completes a template into a masked-LM prompt.
const MaskSuffix = " [MASK]."

// Style selects how facts are phrased for a model.
type Style int

// Styles.
const (
	// Causal prompts end before the object; the target has a leading space.
	Causal Style = iota
	// Masked prompts end with " [MASK]."; the target is the bare object.
	Masked
)

func (s Style) prompt(template, subject string) string {
	p := strings.ReplaceAll(template, framework.SubjectSlot, subject)
	if s == Masked {
		p += MaskSuffix
	}
	return p
}

func (s Style) target(object string) string {
	if s == Masked {
		return object
	}
	return " " + object
}

// FactID names the fact of subject for relation.
func FactID(relation, subject string) string { return relation + "/" + subject }

// Facts returns every fact as a knctl run input, with all its templates
// (seen and held out) as prompts.
func (w *World) Facts(style Style) []framework.Fact {
	var out []framework.Fact
	for _, rel := range w.Relations {
		for _, s := range w.Subjects {
			f := framework.Fact{ID: FactID(rel.Name, s.Name), Relation: rel.Name, Subject: s.Name, Target: style.target(s.Facts[rel.Name])}
			for _, t := range rel.Templates {
				f.Prompts = append(f.Prompts, style.prompt(t, s.Name))
			}
			out = append(out, f)
		}
	}
	return out
}

// Examples returns the (prompt, answer) pairs of the seen templates, or of
// the held-out ones.
func (w *World) Examples(style Style, heldOut bool) []sdk.Query {
	var out []sdk.Query
	for _, rel := range w.Relations {
		seen := len(rel.Templates) - rel.HeldOut
		for _, s := range w.Subjects {
			for i, t := range rel.Templates {
				if (i >= seen) != heldOut {
					continue
				}
				out = append(out, sdk.Query{Prompt: style.prompt(t, s.Name), Answer: style.target(s.Facts[rel.Name])})
			}
		}
	}
	return out
}

// Relation returns the relation named name.
func (w *World) Relation(name string) (Relation, bool) {
	for _, r := range w.Relations {
		if r.Name == name {
			return r, true
		}
	}
	return Relation{}, false
}

// Words lists the distinct words of every sentence of the world, as they
// appear (case kept), with "'s" and punctuation split off.
func (w *World) Words() []string {
	set := map[string]bool{}
	for _, q := range append(w.Examples(Causal, false), w.Examples(Causal, true)...) {
		for _, word := range splitWords(q.Prompt + q.Answer) {
			set[word] = true
		}
	}
	for _, r := range w.Relations {
		for _, o := range r.Objects {
			set[o] = true
		}
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// splitWords splits a sentence into words and the separate tokens "'s",
// "," and "." (order does not matter to its callers).
func splitWords(s string) []string {
	var out []string
	for _, f := range strings.Fields(s) {
		for _, p := range []string{".", ","} {
			if strings.HasSuffix(f, p) {
				out = append(out, p)
				f = strings.TrimSuffix(f, p)
			}
		}
		if strings.HasSuffix(f, "'s") {
			out = append(out, "'s")
			f = strings.TrimSuffix(f, "'s")
		}
		out = append(out, f)
	}
	return out
}

// String summarises the world.
func (w *World) String() string {
	return fmt.Sprintf("%d subjects x %d relations, %d templates each (%d held out)", len(w.Subjects), len(w.Relations), len(w.Relations[0].Templates), heldOut)
}
