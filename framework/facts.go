package framework

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/knctl/knctl/sdk"
)

// SubjectSlot is the placeholder templates fill with a fact's subject.
const SubjectSlot = "{subject}"

// Fact is one fact and the prompts that ask for it: a line of a --facts
// file. Prompts are given, or made from templates with a {subject} slot.
type Fact struct {
	ID        string   `json:"id"`
	Relation  string   `json:"relation,omitempty"`
	Subject   string   `json:"subject,omitempty"`
	Target    string   `json:"target"`
	Prompts   []string `json:"prompts,omitempty"`
	Templates []string `json:"templates,omitempty"`
}

// Queries returns the fact's prompts (templates filled in), checking the
// fact is complete.
func (f Fact) Queries() ([]string, error) {
	if f.Target == "" {
		return nil, sdk.InvalidInputf("fact %q: empty target; expected the answer text (e.g. \" Paris\")", f.ID)
	}
	prompts := append([]string(nil), f.Prompts...)
	for _, t := range f.Templates {
		if !strings.Contains(t, SubjectSlot) {
			return nil, sdk.InvalidInputf("fact %q: template %q has no %s slot", f.ID, t, SubjectSlot)
		}
		if f.Subject == "" {
			return nil, sdk.InvalidInputf("fact %q: templates need a subject", f.ID)
		}
		prompts = append(prompts, strings.ReplaceAll(t, SubjectSlot, f.Subject))
	}
	if len(prompts) == 0 {
		return nil, sdk.InvalidInputf("fact %q: no prompts; expected \"prompts\" or \"templates\"", f.ID)
	}
	for i, p := range prompts {
		if strings.TrimSpace(p) == "" {
			return nil, sdk.InvalidInputf("fact %q: prompt %d is empty", f.ID, i+1)
		}
	}
	return prompts, nil
}

// ReadFacts reads a JSONL facts file: one Fact per line, blank lines
// ignored. Every fact is checked, and ids must be unique; errors name the
// file and line.
func ReadFacts(path string) ([]Fact, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, sdk.InvalidInputf("facts file: %w", err)
	}
	defer file.Close()
	var facts []Fact
	seen := map[string]int{}
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var f Fact
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			return nil, sdk.InvalidInputf("%s:%d: expected a JSON object with id, relation, subject, target and prompts or templates: %v", path, line, err)
		}
		if f.ID == "" {
			f.ID = fmt.Sprintf("line%d", line)
		}
		if prev, dup := seen[f.ID]; dup {
			return nil, sdk.InvalidInputf("%s:%d: fact id %q already used on line %d", path, line, f.ID, prev)
		}
		seen[f.ID] = line
		if _, err := f.Queries(); err != nil {
			return nil, sdk.InvalidInputf("%s:%d: %w", path, line, err)
		}
		facts = append(facts, f)
	}
	if err := sc.Err(); err != nil {
		return nil, sdk.InvalidInputf("read facts file %s: %w", path, err)
	}
	if len(facts) == 0 {
		return nil, sdk.InvalidInputf("facts file %s: no facts", path)
	}
	return facts, nil
}
