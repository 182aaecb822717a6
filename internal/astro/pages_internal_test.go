package astro

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestAllPages(t *testing.T) {
	boom := errors.New("boom")
	type page struct {
		items []string
		total int
		err   error
	}
	tests := []struct {
		name    string
		pages   map[int]page // by offset
		want    []string
		wantErr error
		calls   int
	}{
		{"one page", map[int]page{0: {[]string{"a", "b"}, 2, nil}}, []string{"a", "b"}, nil, 1},
		{"empty", map[int]page{0: {nil, 0, nil}}, nil, nil, 1},
		{"two pages", map[int]page{0: {[]string{"a", "b"}, 3, nil}, 2: {[]string{"c"}, 3, nil}}, []string{"a", "b", "c"}, nil, 2},
		// An item created at the front during the walk pushes b onto the
		// second page as well: kept once.
		{"shifted by an insert", map[int]page{0: {[]string{"a", "b"}, 3, nil}, 2: {[]string{"b", "c"}, 4, nil}},
			[]string{"a", "b", "c"}, nil, 2},
		{"a miscount ends at the empty page", map[int]page{0: {[]string{"a"}, 99, nil}, 1: {nil, 99, nil}}, []string{"a"}, nil, 2},
		{"an error ends the walk", map[int]page{0: {[]string{"a"}, 2, nil}, 1: {nil, 0, boom}}, nil, boom, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			got, err := allPages(func(s string) string { return s }, func(offset int) ([]string, int, error) {
				calls++
				p, ok := tt.pages[offset]
				if !ok {
					t.Fatalf("fetched offset %d", offset)
				}
				return p.items, p.total, p.err
			})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("items (-want +got):\n%s", diff)
			}
			if calls != tt.calls {
				t.Errorf("%d fetches, want %d", calls, tt.calls)
			}
		})
	}
}
