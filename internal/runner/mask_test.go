package runner_test

import (
	"testing"

	"github.com/astro-sts/astro-sts/internal/runner"
)

func TestMaskedFirst(t *testing.T) {
	tests := []struct {
		name, stdout string
		wantErr      bool
	}{
		{"masked first", "hello\n::add-mask::tok\nusing tok\n", false},
		{"shown before the mask", "tok\n::add-mask::tok\n", true},
		{"mask line with more on it", "::add-mask::tok extra\n", true},
		{"never masked", "hello\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := runner.MaskedFirst(tt.stdout, "tok"); (err != nil) != tt.wantErr {
				t.Errorf("MaskedFirst = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
