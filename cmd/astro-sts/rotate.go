package main

import (
	"context"
	"errors"
	"io"
)

// runRotate is the 'rotate' subcommand. Not built yet: its issue replaces this file.
func runRotate(_ context.Context, _ []string, _ map[string]string, _, _ io.Writer) error {
	return errors.New("rotate: not implemented yet")
}
