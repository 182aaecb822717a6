package astro

import (
	"fmt"
	"net/url"
	"strconv"
)

// What every list call shares: Astro's offset paging (offset, limit and
// totalCount on each page), walked to the end.

// PageInfo is what every page of an Astro list says beside its items,
// flattened into the page's JSON object: the offset and limit it answers
// and the total number of items the list's filters match.
type PageInfo struct {
	Limit      int `json:"limit"`
	Offset     int `json:"offset"`
	TotalCount int `json:"totalCount"`
}

// pageSize applies the paging defaults shared by the list calls.
func pageSize(n int) (int, error) {
	switch {
	case n < 0:
		return 0, fmt.Errorf("%w: negative page size", ErrInvalidArgument)
	case n == 0:
		return DefaultPageSize, nil
	case n > MaxPageSize:
		return MaxPageSize, nil
	}
	return n, nil
}

// withPage returns q (nil: a new query) with offset and limit set.
func withPage(q url.Values, offset, limit int) url.Values {
	if q == nil {
		q = url.Values{}
	}
	q.Set("offset", strconv.Itoa(offset))
	q.Set("limit", strconv.Itoa(limit))
	return q
}

// allPages walks a list from offset 0: fetch returns the items of the page
// at offset and the server's totalCount. An item seen twice is kept once,
// by id: one created or deleted during the walk shifts the offsets and can
// show another twice. An empty page ends the walk even if totalCount
// claims more, so that a server that miscounts cannot make it loop
// forever.
func allPages[T any](id func(T) string, fetch func(offset int) (items []T, total int, err error)) ([]T, error) {
	var all []T
	seen := map[string]bool{}
	for offset := 0; ; {
		items, total, err := fetch(offset)
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			if k := id(it); !seen[k] {
				seen[k] = true
				all = append(all, it)
			}
		}
		offset += len(items)
		if len(items) == 0 || offset >= total {
			return all, nil
		}
	}
}
