package store_test

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// BenchmarkRedisUse is one replay check on the package's redis-server:
// the epoch script (with its INFO server) and the SET NX. Its twin
// BenchmarkRedisSetNX is the bare SET NX, the check without the epoch.
func BenchmarkRedisUse(b *testing.B) {
	srv := needRedis(b)
	s := newRedis(b, srv.URL())
	ctx := context.Background()
	iat, exp := time.Now(), time.Now().Add(5*time.Minute)
	b.ResetTimer()
	for i := range b.N {
		if err := s.Use(ctx, "https://iss", strconv.Itoa(i), iat, exp); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRedisSetNX(b *testing.B) {
	srv := needRedis(b)
	c := srv.Client()
	defer c.Close()
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if err := c.SetNX(ctx, "astro-sts:replay:"+strconv.Itoa(i), "owner", 6*time.Minute).Err(); err != nil {
			b.Fatal(err)
		}
	}
}
