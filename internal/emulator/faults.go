package emulator

import (
	"bytes"
	"context"
	"io"
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
	held.sendTo(w)
}

// late makes a token create [Config.CreateDelay] late: the token is made
// that long after the request arrived, on a copy of the request that the
// caller's hang-up does not cancel, as a slow Astro finishes a create
// whatever became of the connection. The token's createdAt is when it is
// made, not when the request arrived: Astro stamps the row it writes, and
// a listing shows the token only from then on. A caller still waiting
// gets the answer then; one that hung up gets nothing.
func (e *Emulator) late(next http.Handler) http.HandlerFunc {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.createDelay <= 0 {
			next.ServeHTTP(w, r)
			return
		}
		// Read the body now: it is gone with the connection. One byte
		// over the limit lets the handler refuse it as it would.
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
		if err != nil {
			writeError(w, http.StatusBadRequest, "the request body could not be read", nil)
			return
		}
		detached := r.Clone(context.WithoutCancel(r.Context()))
		detached.Body = io.NopCloser(bytes.NewReader(body))
		detached.ContentLength = int64(len(body))
		held := &heldWriter{header: w.Header().Clone()}
		done := make(chan struct{})
		time.AfterFunc(e.createDelay, func() {
			defer close(done)
			next.ServeHTTP(held, detached)
		})
		select {
		case <-done:
			held.sendTo(w)
		case <-r.Context().Done():
		}
	})
}

// heldWriter keeps an answer until serveHeld lets it go.
type heldWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *heldWriter) Header() http.Header { return h.header }

// sendTo writes the kept answer to w.
func (h *heldWriter) sendTo(w http.ResponseWriter) {
	for k, v := range h.header {
		w.Header()[k] = v
	}
	if h.status == 0 {
		h.status = http.StatusOK
	}
	w.WriteHeader(h.status)
	_, _ = w.Write(h.body.Bytes())
}

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
