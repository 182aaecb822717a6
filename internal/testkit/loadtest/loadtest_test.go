package loadtest_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/testkit/loadtest"
)

func requests(url string, n int) []loadtest.Request {
	reqs := make([]loadtest.Request, n)
	for i := range reqs {
		reqs[i] = loadtest.Request{Method: http.MethodPost, URL: url, Header: http.Header{"X-N": {"v"}}, Body: []byte(`{}`)}
	}
	return reqs
}

// TestLoadSendsEachRequestOnce counts what the server saw against what
// the result says, at several concurrencies.
func TestLoadSendsEachRequestOnce(t *testing.T) {
	var seen, inFlight, maxInFlight atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		if r.Header.Get("X-N") != "v" || r.Method != http.MethodPost {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if seen.Add(1)%3 == 0 {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	for _, c := range []int{1, 4, 16} {
		seen.Store(0)
		maxInFlight.Store(0)
		res, err := loadtest.Load{Concurrency: c, Requests: requests(srv.URL, 90)}.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(map[int]int{http.StatusOK: 60, http.StatusForbidden: 30}, res.Statuses); diff != "" {
			t.Errorf("concurrency %d: statuses (-want +got):\n%s", c, diff)
		}
		if res.Answered != 90 || res.Failed != 0 || seen.Load() != 90 {
			t.Errorf("concurrency %d: answered %d, failed %d, server saw %d", c, res.Answered, res.Failed, seen.Load())
		}
		if got := maxInFlight.Load(); got > int64(c) {
			t.Errorf("concurrency %d: %d requests were in flight at once", c, got)
		}
		if err := res.Only(http.StatusOK); err == nil {
			t.Errorf("Only(200) accepted %v", res.Statuses)
		}
	}
}

func TestLoadCountsFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	res, err := loadtest.Load{Concurrency: 2, Requests: requests(url, 5)}.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 5 || res.Answered != 0 || res.Err == nil {
		t.Fatalf("result %+v, want 5 failures", res)
	}
	if err := res.Only(http.StatusOK); err == nil {
		t.Fatal("Only accepted a run without answers")
	}
}

// TestProcessCPU runs the floor server as a child process, loads it, and
// checks that its CPU time is measured, and that a process that is gone
// cannot be.
func TestProcessCPU(t *testing.T) {
	if _, err := loadtest.ProcessCPU(os.Getpid()); err != nil {
		t.Skip(err) // not Linux
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = childEnv(floorEnv + "=1")
	var url string
	p, err := loadtest.Start(ctx, cmd, func(line []byte) bool {
		addr, ok := strings.CutPrefix(string(line), "listening on ")
		url = "http://" + addr
		return ok
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	res, err := loadtest.Load{Concurrency: 4, Requests: requests(url, 200), Watch: []int{p.PID()}}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Only(http.StatusForbidden); err != nil {
		t.Fatal(err)
	}
	if len(res.CPU) != 1 || res.CPU[0] <= 0 {
		t.Fatalf("CPU %v: the server answered 200 requests without spending any", res.CPU)
	}
	pid := p.PID()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := loadtest.ProcessCPU(pid); err == nil {
		t.Fatal("ProcessCPU of an exited process succeeded")
	}
}

// TestProcessCPUAgreesWithRusage measures this process both ways while it
// burns CPU: the per-thread sum from /proc must account for at least half
// of what getrusage counts (they measure the same work; the loop ends on
// CPU spent, not on a clock).
func TestProcessCPUAgreesWithRusage(t *testing.T) {
	before, err := loadtest.ProcessCPU(os.Getpid())
	if err != nil {
		t.Skip(err) // not Linux
	}
	start := loadtest.SelfCPU()
	x := 0
	for loadtest.SelfCPU()-start < 50*time.Millisecond {
		for i := range 100000 {
			x += i
		}
	}
	_ = x
	spent := loadtest.SelfCPU() - start
	after, err := loadtest.ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if got := after - before; got < spent/2 {
		t.Fatalf("ProcessCPU advanced %v while getrusage counted %v", got, spent)
	}
}
