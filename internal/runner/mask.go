package runner

import (
	"errors"
	"fmt"
	"strings"
)

// MaskedFirst checks the runner's masking contract on a step's stdout: the
// first line that contains value is exactly "::add-mask::value", so the
// runner hides the value in every line after it. The error never shows
// the value.
func MaskedFirst(stdout, value string) error {
	for i, line := range strings.Split(stdout, "\n") {
		if !strings.Contains(line, value) {
			continue
		}
		if line != "::add-mask::"+value {
			return fmt.Errorf("line %d shows the value before it was masked", i+1)
		}
		return nil
	}
	return errors.New("the value was never masked")
}
