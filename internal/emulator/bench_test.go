package emulator_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/astro-sts/astro-sts/internal/emulator"
)

// The emulator must never be what limits a benchmark of the broker; these
// measure its per-request cost in-process (authentication included).

func BenchmarkGetOrganizations(b *testing.B) {
	e, err := emulator.New(emulator.Config{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	bearer := "Bearer " + e.OrganizationToken()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if rec := serve(e, "GET", "/v1/organizations", bearer, nil); rec.Code != http.StatusOK {
				b.Fatal(rec.Code)
			}
		}
	})
}

func BenchmarkCreateDelete(b *testing.B) {
	e, err := emulator.New(emulator.Config{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	bearer := "Bearer " + e.OrganizationToken()
	path := "/v1/organizations/" + e.OrganizationID() + "/tokens"
	body := []byte(`{"name":"bench","role":"WORKSPACE_OPERATOR","scope":"WORKSPACE","entityId":"` + e.WorkspaceIDs()[0] + `","tokenExpiryPeriodInDays":1}`)
	for b.Loop() {
		rec := serve(e, "POST", path, bearer, body)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
		var tok struct{ ID string }
		if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil {
			b.Fatal(err)
		}
		if rec := serve(e, "DELETE", path+"/"+tok.ID, bearer, nil); rec.Code != http.StatusNoContent {
			b.Fatal(rec.Code)
		}
	}
}
