package testwait

import (
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
