package sdk

import (
	"strconv"
	"strings"
)

// String returns option name, or def when it is unset or empty.
func (o Options) String(name, def string) string {
	if v, ok := o.Values[name]; ok && v != "" {
		return v
	}
	return def
}

// Int returns option name parsed as an integer, or def when it is unset.
func (o Options) Int(name string, def int) (int, error) {
	v, ok := o.Values[name]
	if !ok || v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, InvalidInputf("option %s=%q: expected an integer", name, v)
	}
	return n, nil
}

// Float returns option name parsed as a number, or def when it is unset.
func (o Options) Float(name string, def float64) (float64, error) {
	v, ok := o.Values[name]
	if !ok || v == "" {
		return def, nil
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		return 0, InvalidInputf("option %s=%q: expected a number", name, v)
	}
	return f, nil
}

// Bool returns option name parsed as a boolean, or def when it is unset.
func (o Options) Bool(name string, def bool) (bool, error) {
	v, ok := o.Values[name]
	if !ok || v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return false, InvalidInputf("option %s=%q: expected true or false", name, v)
	}
	return b, nil
}

// CheckKnown returns an error naming the first option in o that is not in
// specs, so that a misspelt option is not silently ignored.
func (o Options) CheckKnown(method string, specs []OptionSpec) error {
	for name := range o.Values {
		found := false
		for _, s := range specs {
			if s.Name == name {
				found = true
				break
			}
		}
		if !found {
			names := make([]string, len(specs))
			for i, s := range specs {
				names[i] = s.Name
			}
			return InvalidInputf("attributor %s: unknown option %q (known: %s)", method, name, strings.Join(names, ", "))
		}
	}
	return nil
}
