package broker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
)

// A bound shared with the rotator is the broker's only bound: New refuses
// a Config that also sets the concurrency or timeout it would ignore, or a
// bound counting into other metrics than the broker's.
func TestAstroBoundConfig(t *testing.T) {
	m, err := broker.NewMetrics(broker.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	other, err := broker.NewMetrics(broker.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	bound, err := broker.NewAstroBound(2, time.Second, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		cfg  broker.Config
		want string // in New's error
	}{
		{"and a concurrency", broker.Config{AstroBound: bound, Metrics: m, AstroConcurrency: 4}, "set AstroBound or AstroConcurrency and AstroTimeout, not both"},
		{"and a timeout", broker.Config{AstroBound: bound, Metrics: m, AstroTimeout: time.Second}, "not both"},
		{"with other metrics", broker.Config{AstroBound: bound, Metrics: other}, "AstroBound must count into Config.Metrics"},
		{"without metrics", broker.Config{AstroBound: bound}, "AstroBound must count into Config.Metrics"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := broker.New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := broker.NewAstroBound(-1, 0, m); err == nil {
		t.Error("NewAstroBound took a negative concurrency")
	}
	if _, err := broker.NewAstroBound(1, 0, nil); err == nil {
		t.Error("NewAstroBound took no metrics")
	}
}
