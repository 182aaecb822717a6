package main

import (
	"context"
	"errors"
	"io"
)

// runPost is the 'post' subcommand. Not built yet: its issue replaces this file.
func runPost(_ context.Context, _ []string, _ map[string]string, _, _ io.Writer) error {
	return errors.New("post: not implemented yet")
}
