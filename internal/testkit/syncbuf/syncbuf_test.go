package syncbuf_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/astro-sts/astro-sts/internal/testkit/syncbuf"
)

func TestBuffer(t *testing.T) {
	var b syncbuf.Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if _, err := b.Write([]byte("x")); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if got := len(b.String()); got != 800 {
		t.Fatalf("collected %d bytes, want 800", got)
	}
}

func TestBufferLimit(t *testing.T) {
	b := syncbuf.Buffer{Limit: 5}
	for _, s := range []string{"abc", "defg", "hij"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v; a full buffer must still accept writes", s, n, err)
		}
	}
	if got := b.String(); got != "abcde" {
		t.Fatalf("got %q, want the first 5 bytes", got)
	}
	if strings.Contains(b.String(), "hij") {
		t.Fatal("wrote past the limit")
	}
}
