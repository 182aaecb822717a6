package emulator

import (
	"bytes"
	"math"
	"net/http"
	"time"
)

// Faults after processing. [Config.Latency] and [Config.ErrorRate] fail a
// request before the emulator acts on it, which a client may always
// repeat. These act after it: the token is created (or deleted, or
// rotated), and the answer is late or lost. That is what a slow or flaky
// Astro does to a client, and the only way to test what a broker does when
// the outcome of a create it must not repeat is unknown.

// SlowAnswers holds every answer d after the request was processed (the
// work is done, the answer is late); a client whose timeout is shorter
// than d gives up on a request that succeeded. d <= 0 turns it off. It
// takes effect for requests that arrive after the call.
func (e *Emulator) SlowAnswers(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.slowAnswers = max(d, 0)
}

// LoseAnswers makes the share rate (0..1) of requests be processed and then
// answered 502 with the error body, as a gateway in front of Astro does
// when it loses Astro's answer. A rate outside 0..1 (or NaN) turns it off.
func (e *Emulator) LoseAnswers(rate float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if math.IsNaN(rate) || rate < 0 || rate > 1 {
		rate = 0
	}
	e.loseRate = rate
}

// afterFault draws the faults after processing of one request.
func (e *Emulator) afterFault() (hold time.Duration, lose bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.slowAnswers, e.loseRate > 0 && e.rng.Float64() < e.loseRate
}

// serveHeld processes r into a buffer, then waits hold and sends the answer
// (or, when lose, a 502 instead). A client that hangs up during the wait
// gets nothing; what it asked for is done all the same.
func (e *Emulator) serveHeld(w http.ResponseWriter, r *http.Request, next http.Handler, hold time.Duration, lose bool) {
	held := &heldWriter{header: http.Header{}}
	next.ServeHTTP(held, r)
	if hold > 0 {
		t := time.NewTimer(hold)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	if lose {
		writeError(w, http.StatusBadGateway, "bad gateway: the answer was lost after processing (injected by the emulator)", nil)
		return
	}
	for k, v := range held.header {
		w.Header()[k] = v
	}
	if held.status == 0 {
		held.status = http.StatusOK
	}
	w.WriteHeader(held.status)
	_, _ = w.Write(held.body.Bytes())
}

// heldWriter keeps an answer until serveHeld lets it go.
type heldWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *heldWriter) Header() http.Header { return h.header }

func (h *heldWriter) WriteHeader(code int) {
	if h.status == 0 {
		h.status = code
	}
}

func (h *heldWriter) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	return h.body.Write(b)
}
