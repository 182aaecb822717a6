package main

import (
	"context"
	"errors"
	"io"
)

// runAction is the 'action' subcommand. Not built yet: its issue replaces this file.
func runAction(_ context.Context, _ []string, _ map[string]string, _, _ io.Writer) error {
	return errors.New("action: not implemented yet")
}
