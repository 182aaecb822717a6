package testwait

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestForReturnsWhenTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 3 {
			n.Add(1)
		}
	}()
	if !For(time.Minute, func() bool { return n.Load() == 3 }) {
		t.Fatal("For gave up on a condition that holds")
	}
}

func TestForGivesUp(t *testing.T) {
	if For(10*time.Millisecond, func() bool { return false }) {
		t.Fatal("For reported a condition that never holds")
	}
}

func TestForContextEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := ForContext(ctx, func() bool {
		if calls++; calls == 3 {
			cancel() // a caller that gives up before any deadline
		}
		return false
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("ForContext = %v, want the context's error", err)
	}
	if err := ForContext(t.Context(), func() bool { return true }); err != nil {
		t.Fatalf("ForContext = %v on a condition that holds", err)
	}
}
