// Package loadtest measures what a server costs per request in CPU time,
// not wall time: on a small machine the load generator shares the cores
// with the server, so requests per second say as much about the generator
// as about the server, while the CPU time the server's own process spent,
// divided by the requests it answered, does not depend on who else runs.
//
// A [Load] sends requests built in advance (so that building them, for
// example signing OIDC tokens, is not measured) at a fixed concurrency over
// keep-alive connections, and reads the CPU time of the watched processes
// just before the first request and just after the last answer.
//
// The package is test support, like internal/testkit/vaulttest: the benchmarks of
// internal/testkit/loadtest drive the broker, a real Vault and the floors with it
// (docs/benchmarks.md).
package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Request is one request of a [Load], built before the run starts.
type Request struct {
	Method string
	URL    string
	Header http.Header
	Body   []byte
}

// Load is a bounded run: every request of Requests sent once, by
// Concurrency workers.
type Load struct {
	// Concurrency is the number of requests in flight at once; 0 means 1.
	Concurrency int
	// Requests are sent in order, each exactly once.
	Requests []Request
	// Watch are the process ids whose CPU time the run measures (the
	// server under test, and whatever else is worth knowing the cost of,
	// such as its upstream).
	Watch []int
	// Client sends the requests; nil means [NewClient](Concurrency).
	Client *http.Client
}

// Result is what a run measured.
type Result struct {
	// Answered counts the requests that got an HTTP answer; Statuses
	// counts them by status code.
	Answered int
	Statuses map[int]int
	// Failed counts the requests that got no answer; Err is the first
	// such failure.
	Failed int
	Err    error
	// Elapsed is the wall time from the first request to the last answer.
	Elapsed time.Duration
	// CPU is the CPU time each watched process spent during the run, in
	// the order of [Load.Watch].
	CPU []time.Duration
}

// PerRequest is d divided by the requests answered.
func (r Result) PerRequest(d time.Duration) time.Duration {
	if r.Answered == 0 {
		return 0
	}
	return d / time.Duration(r.Answered)
}

// Throughput is the answers per second of wall time.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Answered) / r.Elapsed.Seconds()
}

// Only reports an error unless every request was answered with status.
func (r Result) Only(status int) error {
	if r.Failed > 0 {
		return fmt.Errorf("loadtest: %d of %d requests got no answer; first: %w", r.Failed, r.Failed+r.Answered, r.Err)
	}
	if r.Statuses[status] != r.Answered {
		return fmt.Errorf("loadtest: want every answer %d, got %v", status, r.Statuses)
	}
	return nil
}

// NewClient returns a client for a load of the given concurrency: it keeps
// that many idle connections per host (the default keeps 2, so a load of
// 16 would open and close connections all the time and measure that).
func NewClient(concurrency int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(concurrency, 1)
	tr.MaxIdleConns = max(concurrency, 100)
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

// Run sends the requests and measures. It fails only when it cannot
// measure (a watched process is gone); requests that fail are counted in
// the result.
func (l Load) Run(ctx context.Context) (Result, error) {
	conc := max(l.Concurrency, 1)
	client := l.Client
	if client == nil {
		client = NewClient(conc)
	}
	res := Result{Statuses: map[int]int{}}

	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		statuses = make([]int, len(l.Requests)) // 0: no answer
		errs     = make([]error, len(l.Requests))
	)
	before, err := cpuTimes(l.Watch)
	if err != nil {
		return res, err
	}
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(l.Requests) || ctx.Err() != nil {
					return
				}
				statuses[i], errs[i] = send(ctx, client, l.Requests[i])
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	after, err := cpuTimes(l.Watch)
	if err != nil {
		return res, err
	}
	for i := range l.Watch {
		res.CPU = append(res.CPU, after[i]-before[i])
	}
	for i, st := range statuses {
		if st == 0 {
			res.Failed++
			if res.Err == nil {
				res.Err = errs[i]
				if res.Err == nil {
					res.Err = errors.New("not sent: the run was cancelled")
				}
			}
			continue
		}
		res.Answered++
		res.Statuses[st]++
	}
	return res, nil
}

// send sends one request and reads the whole answer, so that the
// connection is reused.
func send(ctx context.Context, c *http.Client, r Request) (int, error) {
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, r.URL, body)
	if err != nil {
		return 0, err
	}
	for k, vs := range r.Header {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

func cpuTimes(pids []int) ([]time.Duration, error) {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		d, err := ProcessCPU(pid)
		if err != nil {
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}
