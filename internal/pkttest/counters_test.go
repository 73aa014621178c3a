package pkttest

import (
	"strings"
	"testing"
)

func TestExpectDeltas(t *testing.T) {
	before := map[string]uint64{"tx": 5, "drop": 1, "pass": 0}
	after := map[string]uint64{"tx": 6, "drop": 1, "pass": 2}
	for _, c := range []struct {
		name string
		want map[string]uint64
		errs int
	}{
		{"exact", map[string]uint64{"tx": 1, "pass": 2}, 0},
		{"unexpected move", map[string]uint64{"tx": 1}, 1},
		{"wrong amount", map[string]uint64{"tx": 2, "pass": 2}, 1},
		{"unknown name", map[string]uint64{"tx": 1, "pass": 2, "txx": 0}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &recorder{TB: t, name: t.Name()}
			ExpectDeltas(r, before, after, c.want)
			if len(r.errors) != c.errs {
				t.Errorf("%d reports %s, want %d", len(r.errors), strings.Join(r.errors, "; "), c.errs)
			}
		})
	}
}
