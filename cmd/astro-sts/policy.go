package main

import (
	"context"
	"errors"
	"io"
)

// runPolicy is the 'policy' subcommand. Not built yet: its issue replaces this file.
func runPolicy(_ context.Context, _ []string, _ map[string]string, _, _ io.Writer) error {
	return errors.New("policy: not implemented yet")
}
