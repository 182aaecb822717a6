package store_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/astro-sts/astro-sts/internal/store"
)

// FuzzRedisOptions: no URL panics the parser; no error shows the password
// a URL carries; what RedactURL keeps of a URL carries no password.
func FuzzRedisOptions(f *testing.F) {
	f.Add("redis://127.0.0.1:6379", "")
	f.Add("rediss://user:pw-123@redis.example.com:6380/2", "")
	f.Add("redis://:pw-123@redis:6379?dial_timeout=1s", "")
	f.Add("redis://redis:6379", "pw-123")
	f.Add("redis://u:pw-123@[::1", "")
	f.Add("A:pw-123@", "")
	f.Add("unix:///tmp/redis.sock", "")
	f.Fuzz(func(t *testing.T, raw, password string) {
		opts, err := store.RedisOptions(raw, password)
		if err == nil && opts == nil {
			t.Fatal("no options and no error")
		}
		if u, perr := url.Parse(raw); perr == nil {
			if pw, ok := u.User.Password(); ok && len(pw) >= 4 && err != nil && strings.Contains(err.Error(), pw) {
				t.Errorf("error %q shows the password", err)
			}
		}
		if password != "" && len(password) >= 4 && err != nil && strings.Contains(err.Error(), password) {
			t.Errorf("error %q shows the password from the file", err)
		}
		red := store.RedactURL(raw)
		if u, perr := url.Parse(red); perr == nil {
			if pw, ok := u.User.Password(); ok && pw != "xxxxx" {
				t.Errorf("RedactURL(%q) = %q keeps a password", raw, red)
			}
		}
	})
}
