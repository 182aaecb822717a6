package main

import (
	"context"
	"errors"
	"io"
)

// runDemo is the 'demo' subcommand. Not built yet: its issue replaces this file.
func runDemo(_ context.Context, _ []string, _ map[string]string, _, _ io.Writer) error {
	return errors.New("demo: not implemented yet")
}
