package tokenize

import (
	"unicode"
	"unicode/utf8"
)

// Character classes of GPT-2's pre-tokenization pattern.
const (
	clsLetter = iota // \p{L}
	clsNumber        // \p{N}
	clsSpace         // \s (Unicode White_Space, as in Python's regex module)
	clsOther         // [^\s\p{L}\p{N}]
)

func charClass(r rune) int {
	switch {
	case r < utf8.RuneSelf:
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
			return clsLetter
		case r >= '0' && r <= '9':
			return clsNumber
		case r == ' ', r >= '\t' && r <= '\r':
			return clsSpace
		}
		return clsOther
	case unicode.IsLetter(r):
		return clsLetter
	case unicode.IsNumber(r):
		return clsNumber
	case unicode.IsSpace(r):
		return clsSpace
	}
	return clsOther
}

// splitGPT2 appends to out the words GPT-2's pre-tokenization pattern
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// finds in s, as regex.findall does in GPT2Tokenizer. Go's regexp has no
// lookahead, so the pattern is matched by hand: at each position the
// alternatives are tried in order, and "\s+(?!\S)" takes a whitespace run
// except its last character when a non-space follows (that character then
// starts the next word, e.g. " leading"), or the whole run at the end of s.
// Bytes that are not UTF-8 count as [^\s\p{L}\p{N}].
func splitGPT2(s string, out []string) []string {
	n := len(s)
	for i := 0; i < n; {
		r, w := utf8.DecodeRuneInString(s[i:])
		if r == '\'' {
			if l := contractionLen(s[i+1:]); l > 0 {
				out = append(out, s[i:i+1+l])
				i += 1 + l
				continue
			}
		}
		c := charClass(r)
		j := i + w
		if r == ' ' && j < n {
			// " ?X+": an optional space followed by a run of X.
			r2, w2 := utf8.DecodeRuneInString(s[j:])
			if c2 := charClass(r2); c2 != clsSpace {
				c = c2
				j += w2
			}
		}
		if c != clsSpace {
			for j < n {
				r, w := utf8.DecodeRuneInString(s[j:])
				if charClass(r) != c {
					break
				}
				j += w
			}
			out = append(out, s[i:j])
			i = j
			continue
		}
		// Whitespace run [i, j), last character starting at last.
		last := i
		for j < n {
			r, w := utf8.DecodeRuneInString(s[j:])
			if charClass(r) != clsSpace {
				break
			}
			last = j
			j += w
		}
		if j < n && last > i {
			j = last // \s+(?!\S): leave the last space to the next word
		}
		// else: the run ends s (\s+(?!\S) takes it all), or it is one
		// character before a non-space (\s+ takes it).
		out = append(out, s[i:j])
		i = j
	}
	return out
}

// contractionLen returns the length of the contraction suffix ('s, 't, 're,
// 've, 'm, 'll, 'd; case-sensitive) that s starts with after an apostrophe,
// or 0.
func contractionLen(s string) int {
	if len(s) == 0 {
		return 0
	}
	switch s[0] {
	case 's', 't', 'm', 'd':
		return 1
	case 'r', 'v':
		if len(s) > 1 && s[1] == 'e' {
			return 2
		}
	case 'l':
		if len(s) > 1 && s[1] == 'l' {
			return 2
		}
	}
	return 0
}
