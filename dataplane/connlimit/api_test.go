package connlimit

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/dataplane/police"
	"github.com/sluice-dp/sluice/internal/testenv"
)

func load(t *testing.T, opts Options) *Limiter {
	t.Helper()
	testenv.RequirePriv(t)
	l, err := Load(opts)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return l
}

func TestSetPortsValidation(t *testing.T) {
	l := load(t, Options{MaxPorts: 2})
	if err := l.SetPorts(map[uint16]Limit{80: {Max: 5, Action: police.RST}}); err != nil {
		t.Fatalf("set valid ports: %v", err)
	}
	for name, c := range map[string]struct {
		ports map[uint16]Limit
		want  error
	}{
		"port 0":         {map[uint16]Limit{0: {Max: 1}}, ErrInvalid},
		"max 0":          {map[uint16]Limit{80: {Max: 0}}, ErrInvalid},
		"bad action":     {map[uint16]Limit{80: {Max: 1, Action: 7}}, ErrInvalid},
		"one bad of two": {map[uint16]Limit{443: {Max: 1}, 80: {Max: 0}}, ErrInvalid},
		"too many":       {map[uint16]Limit{1: {Max: 1}, 2: {Max: 1}, 3: {Max: 1}}, ErrFull},
	} {
		t.Run(name, func(t *testing.T) {
			if err := l.SetPorts(c.ports); !errors.Is(err, c.want) {
				t.Fatalf("SetPorts(%v) = %v, want %v", c.ports, err, c.want)
			}
			// A rejected set changes nothing, in Go or in the kernel.
			if got := l.Limits(); len(got) != 1 || got[80] != (Limit{Max: 5, Action: police.RST}) {
				t.Errorf("limits after rejected set: %v", got)
			}
			var v connlimitClLimit
			if err := l.objs.Limits.Lookup(uint16(80), &v); err != nil || v.Max != 5 || v.Action != 1 {
				t.Errorf("kernel limit of port 80: %+v, %v; want max 5 action rst", v, err)
			}
			if n := countEntries(t, l.objs.Limits); n != 1 {
				t.Errorf("kernel has %d limits, want 1", n)
			}
		})
	}
	if err := l.SetPort(80, 0, police.Drop); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetPort(80, 0) = %v, want ErrInvalid", err)
	}
}

func TestSetPortsReplaces(t *testing.T) {
	l := load(t, Options{})
	if err := l.SetPorts(map[uint16]Limit{80: {Max: 5}, 443: {Max: 7, Action: police.RST}}); err != nil {
		t.Fatal(err)
	}
	if err := l.SetPorts(map[uint16]Limit{443: {Max: 9}}); err != nil {
		t.Fatal(err)
	}
	var v connlimitClLimit
	if err := l.objs.Limits.Lookup(uint16(80), &v); err == nil {
		t.Errorf("port 80 still limited in the kernel: %+v", v)
	}
	if err := l.objs.Limits.Lookup(uint16(443), &v); err != nil || v.Max != 9 || v.Action != 0 {
		t.Errorf("kernel limit of port 443: %+v, %v; want max 9 action drop", v, err)
	}
	counts, err := l.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if len(counts) != 1 || counts[443] != 0 {
		t.Errorf("counts = %v, want map[443:0]", counts)
	}
}

func TestStartTwice(t *testing.T) {
	l := load(t, Options{})
	if err := l.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	if err := l.Start(); !errors.Is(err, ErrStarted) {
		t.Errorf("second start = %v, want ErrStarted", err)
	}
}

func TestCounterNames(t *testing.T) {
	l := load(t, Options{})
	c, err := l.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"pass", "pass_unparsed", "syn_admitted", "drop_limit", "tx_rst",
		"drop_rst_failed", "conn_open", "conn_close", "track_full"} {
		if _, ok := c[name]; !ok {
			t.Errorf("counter %q missing from %v", name, c)
		}
	}
}

func countEntries(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	var (
		k, v []byte
		n    int
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iterate %v: %v", m, err)
	}
	return n
}
