// Package syncbuf is a bytes.Buffer that several goroutines may write to
// at once: a server's log handler and a test reading what was logged, or a
// child process's stdout and stderr pipes.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer collects writes under a mutex. The zero value is ready to use.
type Buffer struct {
	// Limit, when positive, keeps only the first Limit bytes; later writes
	// still succeed (so a writer is never blocked or failed) but are dropped.
	Limit int

	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p (or the part of it that fits under Limit).
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Limit <= 0 {
		return b.buf.Write(p)
	}
	if room := b.Limit - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// String returns what was collected so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
