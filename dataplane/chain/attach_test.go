package chain

import (
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/dataplane/internal/attachtest"
)

// TestAttach attaches chains of two test members to one end of a veth pair
// in a namespace of its own, XDP in native and generic mode and TC ingress
// and egress with tcx (where the kernel has it) and netlink, sends test
// frames through that end, and checks that the root and both members saw
// them and that Close detaches the root.
func TestAttach(t *testing.T) {
	cases := []struct {
		name string
		hook Hook
		opts AttachOptions
	}{
		{"xdp native", XDP, AttachOptions{Mode: attach.Native}},
		{"xdp generic", XDP, AttachOptions{Mode: attach.Generic}},
		{"tc ingress", TCIngress, AttachOptions{}},
		{"tc ingress netlink", TCIngress, AttachOptions{ForceNetlink: true}},
		{"tc egress", TCEgress, AttachOptions{}},
		{"tc egress netlink", TCEgress, AttachOptions{ForceNetlink: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newChain(t, tc.hook)
			m := loadMembers(t, tc.hook, c)
			if err := c.Set(m.list("m0", "m1")); err != nil {
				t.Fatalf("set chain: %v", err)
			}
			attachtest.InNetns(t, func() {
				// No IPv6 in the namespace: its neighbour discovery
				// would add frames of its own to the counts.
				for _, conf := range []string{"all", "default"} {
					if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+conf+"/disable_ipv6", []byte("1"), 0o644); err != nil {
						t.Fatalf("disable ipv6: %v", err)
					}
				}
				ch0, ch1 := attachtest.Veth(t, "ch0", "ch1")
				// Frames for ingress and XDP come from the peer;
				// frames for egress leave ch0 itself.
				sender := ch1
				if tc.hook == TCEgress {
					sender = ch0
				}
				at, err := c.Attach("ch0", tc.opts)
				if err != nil {
					t.Fatalf("attach: %v", err)
				}
				if !rootAttached(t, c, tc.hook) {
					t.Errorf("the kernel does not list the root on ch0")
				}
				before, seenBefore := counters(t, c), m.seenTotals(t)
				frame := testFrame(t)
				deadline := time.Now().Add(2 * time.Second)
				var sent uint64
				for time.Now().Before(deadline) {
					attachtest.Send(t, sender.Attrs().Index, frame)
					sent++
					time.Sleep(10 * time.Millisecond)
					seen := m.seenTotals(t)
					if seen[0] > seenBefore[0] && seen[1] > seenBefore[1] {
						break
					}
				}
				after, seenAfter := counters(t, c), m.seenTotals(t)
				root := after.Packets() - before.Packets()
				if root == 0 || root > sent {
					t.Errorf("root saw %d of the %d frames sent, want between 1 and all", root, sent)
				}
				for _, id := range []int{0, 1} {
					if d := seenAfter[id] - seenBefore[id]; d != root {
						t.Errorf("member m%d saw %d frames, the root %d", id, d, root)
					}
				}
				if err := at.Close(); err != nil {
					t.Fatalf("detach: %v", err)
				}
				if rootAttached(t, c, tc.hook) {
					t.Errorf("the root is still attached after Close")
				}
			})
		})
	}
}

// rootAttached says whether the kernel lists the chain's root on ch0, at
// its hook, by any attach method.
func rootAttached(t *testing.T, c *Chain, hook Hook) bool {
	t.Helper()
	info, err := c.Program().Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	l, err := netlink.LinkByName("ch0")
	if err != nil {
		t.Fatal(err)
	}
	if hook == XDP {
		x := l.Attrs().Xdp
		return x != nil && x.Attached && ebpf.ProgramID(x.ProgId) == id
	}
	typ, parent := ebpf.AttachTCXIngress, uint32(netlink.HANDLE_MIN_INGRESS)
	if hook == TCEgress {
		typ, parent = ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS
	}
	if r, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: typ}); err == nil {
		for _, p := range r.Programs {
			if p.ID == id {
				return true
			}
		}
	}
	fs, err := netlink.FilterList(l, parent)
	if err != nil {
		return false // no clsact qdisc
	}
	for _, f := range fs {
		if bf, ok := f.(*netlink.BpfFilter); ok && ebpf.ProgramID(bf.Id) == id {
			return true
		}
	}
	return false
}
