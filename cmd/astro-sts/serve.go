package main

import (
	"context"
	"errors"
	"io"
)

// runServe is the 'serve' subcommand. Not built yet: its issue replaces this file.
func runServe(_ context.Context, _ []string, _ map[string]string, _, _ io.Writer) error {
	return errors.New("serve: not implemented yet")
}
