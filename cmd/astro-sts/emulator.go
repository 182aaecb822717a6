package main

import (
	"context"
	"errors"
	"io"
)

// runEmulator is the 'emulator' subcommand. Not built yet: its issue replaces this file.
func runEmulator(_ context.Context, _ []string, _ map[string]string, _, _ io.Writer) error {
	return errors.New("emulator: not implemented yet")
}
