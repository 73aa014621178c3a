package pkttest

import "testing"

// ExpectDeltas reports, with t.Errorf, every counter whose change from
// before to after differs from want; a counter absent from want must not
// move, and a name in want that after lacks is a mistake in the case. It
// fits every program of the project: their Go packages read counters as a
// map from name to total.
func ExpectDeltas(t testing.TB, before, after, want map[string]uint64) {
	t.Helper()
	for name := range want {
		if _, ok := after[name]; !ok {
			t.Errorf("bad case: no counter named %q", name)
		}
	}
	for name, a := range after {
		if d := a - before[name]; d != want[name] {
			t.Errorf("counter %s moved by %d, want %d", name, d, want[name])
		}
	}
}
