package chain

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/internal/pkttest"
)

// verdicts are the return values a hook's programs use for the verdicts
// the test members return, from the kernel's headers.
var verdicts = map[Hook]map[string]int32{
	XDP:       {"pass": int32(pkttest.XDPPass), "drop": int32(pkttest.XDPDrop), "tx": int32(pkttest.XDPTX)},
	TCIngress: {"pass": int32(pkttest.TCActOK), "drop": int32(pkttest.TCActShot), "tx": int32(pkttest.TCActRedirect)},
	TCEgress:  {"pass": int32(pkttest.TCActOK), "drop": int32(pkttest.TCActShot), "tx": int32(pkttest.TCActRedirect)},
}

// verdictName prints a hook's return value the way the kernel names it.
func verdictName(h Hook, v int32) string {
	if h == XDP {
		return pkttest.Verdict(v).String()
	}
	return pkttest.TCAction(v).String()
}

// TestRun runs a test frame through the root of each hook with chains of
// test members and checks the verdict, the record the members left in the
// frame (which members ran, in which order), the members' own counters and
// the root's.
func TestRun(t *testing.T) {
	cases := []struct {
		name    string
		chain   []string
		verdict string
		ran     []string
	}{
		{"empty chain passes", nil, "pass", nil},
		{"one member", []string{"m0"}, "pass", []string{"m0"}},
		{"order is respected", []string{"m3", "m0", "m7", "m1"}, "pass", []string{"m3", "m0", "m7", "m1"}},
		{"full chain", []string{"m7", "m6", "m5", "m4", "m3", "m2", "m1", "m0"}, "pass",
			[]string{"m7", "m6", "m5", "m4", "m3", "m2", "m1", "m0"}},
		{"drop stops the chain", []string{"m0", "drop", "m1"}, "drop", []string{"m0", "drop"}},
		{"a final member ends the chain", []string{"m2", "final", "m3"}, "pass", []string{"m2", "final"}},
		{"last verdict wins: tx last", []string{"m0", "tx"}, "tx", []string{"m0", "tx"}},
		{"last verdict wins: pass after tx", []string{"tx", "m0"}, "pass", []string{"tx", "m0"}},
		{"last verdict wins: tx alone", []string{"tx"}, "tx", []string{"tx"}},
	}
	for _, hook := range []Hook{XDP, TCIngress, TCEgress} {
		t.Run(hook.String(), func(t *testing.T) {
			c := newChain(t, hook)
			m := loadMembers(t, hook, c)
			frame := testFrame(t)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					if err := c.Set(m.list(tc.chain...)); err != nil {
						t.Fatalf("set chain: %v", err)
					}
					before, seenBefore := counters(t, c), m.seenTotals(t)
					r := pkttest.Run(t, c.Program(), frame)
					if want := verdicts[hook][tc.verdict]; int32(r.Verdict) != want {
						t.Errorf("verdict %s, want %s", verdictName(hook, int32(r.Verdict)), verdictName(hook, want))
					}
					pkttest.Expect(t, marked(frame, m.idsOf(tc.ran...)...), r.Out)
					wantSeen := map[int]uint64{}
					for _, id := range m.idsOf(tc.ran...) {
						wantSeen[id] = 1
					}
					expectSeen(t, seenBefore, m.seenTotals(t), wantSeen)
					after := counters(t, c)
					if d := after.Packets() - before.Packets(); d != 1 {
						t.Errorf("root counted %d packets, want 1", d)
					}
					wantStats := map[string]uint64{}
					if len(tc.chain) == 0 {
						wantStats["empty"] = 1
					}
					pkttest.ExpectDeltas(t, before.Stats, after.Stats, wantStats)
				})
			}
		})
	}
}

func counters(t testing.TB, c *Chain) Counters {
	t.Helper()
	n, err := c.Counters()
	if err != nil {
		t.Fatalf("read chain counters: %v", err)
	}
	return n
}

// expectSeen checks the members' counters moved by want: ids absent from
// want must not have run.
func expectSeen(t testing.TB, before, after, want map[int]uint64) {
	t.Helper()
	for id, a := range after {
		if d := a - before[id]; d != want[id] {
			t.Errorf("member %d ran %d times, want %d", id, d, want[id])
		}
	}
}

// TestStandalone runs members loaded with their own maps, outside any
// chain: each behaves as if chain_next were its plain verdict.
func TestStandalone(t *testing.T) {
	for _, hook := range []Hook{XDP, TCIngress} {
		t.Run(hook.String(), func(t *testing.T) {
			newChain(t, hook) // only for RequirePriv and a like-for-like setup
			m := loadMembers(t, hook, nil)
			frame := testFrame(t)
			for _, c := range []struct{ member, verdict string }{{"m0", "pass"}, {"m5", "pass"}, {"tx", "tx"}, {"drop", "drop"}} {
				r := pkttest.Run(t, m.progs[c.member], frame)
				if want := verdicts[hook][c.verdict]; int32(r.Verdict) != want {
					t.Errorf("%s: verdict %s, want %s", c.member, verdictName(hook, int32(r.Verdict)), verdictName(hook, want))
				}
				pkttest.Expect(t, marked(frame, m.ids[c.member]), r.Out)
			}
		})
	}
}

// TestRejectsForeignMembers checks that Set refuses a member built with
// chain.h but loaded with its own maps or with another chain's: its
// chain_next would end the chain by accident.
func TestRejectsForeignMembers(t *testing.T) {
	c := newChain(t, XDP)
	m := loadMembers(t, XDP, c)
	alone := loadMembers(t, XDP, nil)
	other := loadMembers(t, XDP, newChain(t, XDP))
	for name, p := range map[string]*ebpf.Program{"standalone": alone.progs["m2"], "other chain": other.progs["m2"]} {
		err := c.Set([]Member{{Name: "m0", Program: m.progs["m0"]}, {Name: name, Program: p}, {Name: "m1", Program: m.progs["m1"]}})
		if !errors.Is(err, ErrNotMember) {
			t.Errorf("%s member: Set returned %v, want %v", name, err, ErrNotMember)
		}
	}
}

// TestSetRejects checks that every invalid chain is rejected with its
// sentinel error and leaves the chain in force running, untouched.
func TestSetRejects(t *testing.T) {
	c := newChain(t, XDP)
	m := loadMembers(t, XDP, c)
	tcm := loadMembers(t, TCIngress, nil)
	good := m.list("m4", "m1")
	if err := c.Set(good); err != nil {
		t.Fatalf("set chain: %v", err)
	}
	frame := testFrame(t)
	cases := []struct {
		name  string
		chain []Member
		err   error
	}{
		{"too long", m.list("m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "drop"), ErrTooLong},
		{"nil program", []Member{{Name: "m0", Program: m.progs["m0"]}, {Name: "none"}}, ErrInvalid},
		{"no name", []Member{{Program: m.progs["m0"]}}, ErrInvalid},
		{"name twice", []Member{{Name: "a", Program: m.progs["m0"]}, {Name: "a", Program: m.progs["m1"]}}, ErrDuplicate},
		{"program twice", []Member{{Name: "a", Program: m.progs["m0"]}, {Name: "b", Program: m.progs["m0"]}}, ErrDuplicate},
		{"tc program in xdp chain", []Member{{Name: "m0", Program: m.progs["m0"]}, {Name: "tc", Program: tcm.progs["m0"]}}, ErrProgramType},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := counters(t, c)
			err := c.Set(tc.chain)
			if !errors.Is(err, tc.err) {
				t.Errorf("Set returned %v, want %v", err, tc.err)
			}
			if got := c.Members(); !slices.Equal(got, good) {
				t.Errorf("members after a rejected Set: %v, want %v", names(got), names(good))
			}
			r := pkttest.Run(t, c.Program(), frame)
			if r.Verdict != pkttest.XDPPass {
				t.Errorf("verdict %v, want XDP_PASS", r.Verdict)
			}
			pkttest.Expect(t, marked(frame, 4, 1), r.Out)
			if d := counters(t, c).Packets() - before.Packets(); d != 1 {
				t.Errorf("root counted %d packets, want 1", d)
			}
		})
	}
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := c.Set(good); !errors.Is(err, ErrClosed) {
		t.Errorf("Set after Close returned %v, want %v", err, ErrClosed)
	}
}

func names(ms []Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

// TestRegionRotation checks the rotation Set promises: the k-th chain runs
// in region k mod Generations (region 0 holds the empty chain Load starts
// with), so a region comes round again only after all the others.
func TestRegionRotation(t *testing.T) {
	c := newChain(t, XDP)
	m := loadMembers(t, XDP, c)
	frame := testFrame(t)
	for k := 1; k <= 2*Generations+1; k++ {
		chain := m.list(fmt.Sprintf("m%d", k%8))
		if err := c.Set(chain); err != nil {
			t.Fatalf("set %d: %v", k, err)
		}
		before := counters(t, c)
		r := pkttest.Run(t, c.Program(), frame)
		pkttest.Expect(t, marked(frame, k%8), r.Out)
		after := counters(t, c)
		for g := range Generations {
			want := uint64(0)
			if g == k%Generations {
				want = 1
			}
			if d := after.Regions[g] - before.Regions[g]; d != want {
				t.Errorf("set %d: region %d counted %d packets, want %d", k, g, d, want)
			}
		}
	}
}

// TestLoadRejects checks that Load refuses a hook that does not exist.
func TestLoadRejects(t *testing.T) {
	if _, err := Load(Hook(9), Options{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Load(hook 9) returned %v, want %v", err, ErrInvalid)
	}
}
