package sdk

import (
	"errors"
	"fmt"
)

// ErrInvalidInput marks errors caused by the caller's input (a missing
// checkpoint, an empty prompt, a layer out of range) rather than by a fault
// of the plugin. It survives the trip across the plugin boundary.
var ErrInvalidInput = errors.New("invalid input")

type inputError struct{ err error }

func (e *inputError) Error() string        { return e.err.Error() }
func (e *inputError) Unwrap() error        { return e.err }
func (e *inputError) Is(target error) bool { return target == ErrInvalidInput }

// InvalidInputf formats an error, as fmt.Errorf does, that matches
// ErrInvalidInput. The message should name the input and what was expected.
func InvalidInputf(format string, args ...any) error {
	return &inputError{err: fmt.Errorf(format, args...)}
}
