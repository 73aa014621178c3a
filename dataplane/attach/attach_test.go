package attach

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/internal/attachtest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// counting is a program that adds one to its map's only entry per packet
// and returns verdict, so that a test sees the program run on real traffic.
type counting struct {
	prog  *ebpf.Program
	count *ebpf.Map
}

func newCounting(t *testing.T, typ ebpf.ProgramType, verdict int32) counting {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatalf("create counter map: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    typ,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.StoreImm(asm.R10, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.R10),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
			asm.Mov.Imm(asm.R0, verdict).WithSymbol("out"),
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatalf("load %v program: %v", typ, err)
	}
	t.Cleanup(func() { p.Close() })
	return counting{p, m}
}

func (c counting) read(t *testing.T) uint64 {
	t.Helper()
	var n uint64
	if err := c.count.Lookup(uint32(0), &n); err != nil {
		t.Fatalf("read counter: %v", err)
	}
	return n
}

// probeFrame is a broadcast frame of an unused Ethernet type.
var probeFrame = func() []byte {
	f := make([]byte, 60)
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(f[12:], 0x88b5) // IEEE local experimental
	return f
}()

// waitCount sends frames out of ifindex until c has counted one, for up to
// two seconds: delivery through a veth is asynchronous.
func waitCount(t *testing.T, c counting, ifindex int) bool {
	t.Helper()
	before := c.read(t)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		attachtest.Send(t, ifindex, probeFrame)
		time.Sleep(10 * time.Millisecond)
		if c.read(t) > before {
			return true
		}
	}
	return false
}

// TestXDP attaches an XDP program in both modes to one end of a veth pair
// and checks that the kernel reports it in that mode, that it runs on a
// frame sent from the other end, and that Close detaches it.
func TestXDP(t *testing.T) {
	testenv.RequirePriv(t)
	c := newCounting(t, ebpf.XDP, 2 /* XDP_PASS */)
	attachtest.InNetns(t, func() {
		a, b := attachtest.Veth(t, "att0", "att1")
		xdp := func() *netlink.LinkXdp {
			l, err := netlink.LinkByIndex(a.Attrs().Index)
			if err != nil {
				t.Fatalf("find att0: %v", err)
			}
			return l.Attrs().Xdp
		}
		for _, m := range []struct {
			mode   Mode
			kernel uint32
		}{{Native, nl.XDP_ATTACHED_DRV}, {Generic, nl.XDP_ATTACHED_SKB}} {
			at, err := XDP(c.prog, "att0", m.mode)
			if err != nil {
				t.Errorf("attach in %v mode: %v", m.mode, err)
				continue
			}
			if at.Interface != "att0" || at.Mode != m.mode {
				t.Errorf("attachment says %s/%v, want att0/%v", at.Interface, at.Mode, m.mode)
			}
			if x := xdp(); x == nil || !x.Attached || x.ProgId != uint32(attachtest.ProgID(t, c.prog)) || x.AttachMode != m.kernel {
				t.Errorf("%v mode: the kernel reports XDP %+v, want program %d in mode %d", m.mode, x, attachtest.ProgID(t, c.prog), m.kernel)
			}
			if !waitCount(t, c, b.Attrs().Index) {
				t.Errorf("%v mode: the program did not see a frame sent to att0", m.mode)
			}
			if err := at.Close(); err != nil {
				t.Errorf("%v mode: close: %v", m.mode, err)
			}
			if x := xdp(); x != nil && (x.Attached || x.ProgId != 0) {
				t.Errorf("%v mode: after Close the kernel still reports XDP %+v", m.mode, x)
			}
		}
		if at, err := XDP(c.prog, "att-none0", Native); err == nil {
			at.Close()
			t.Errorf("attach to a missing interface succeeded")
		} else if !strings.Contains(err.Error(), "att-none0") {
			t.Errorf("attach to a missing interface: %q does not name it", err)
		}
	})
}

// TestTC attaches an ingress and an egress program the way the kernel allows
// (tcx from 6.6, netlink before) and with netlink forced, and checks that the
// programs are where the kernel says, that each one runs on traffic in its
// direction, and that Close leaves nothing behind but a clsact qdisc that
// was there before.
func TestTC(t *testing.T) {
	testenv.RequirePriv(t)
	ingress := newCounting(t, ebpf.SchedCLS, 0 /* TC_ACT_OK */)
	egress := newCounting(t, ebpf.SchedCLS, 0)
	progs := []TCProgram{
		{Program: ingress.prog, Direction: Ingress, Name: "test_ingress"},
		{Program: egress.prog, Direction: Egress, Name: "test_egress"},
	}
	opts := TCOptions{Priority: 0x77, Handle: 1}
	for _, c := range []struct {
		name        string
		force       bool
		sharedQdisc bool
	}{{"auto", false, false}, {"netlink forced", true, false}, {"netlink on an existing clsact", true, true}} {
		t.Run(c.name, func(t *testing.T) {
			attachtest.InNetns(t, func() {
				a, b := attachtest.Veth(t, "att0", "att1")
				if c.sharedQdisc {
					if err := netlink.QdiscAdd(clsact(a.Attrs().Index)); err != nil {
						t.Fatalf("add clsact: %v", err)
					}
				}
				o := opts
				o.ForceNetlink = c.force
				at, err := TC("att0", progs, o)
				if err != nil {
					t.Fatalf("attach: %v", err)
				}
				want := Netlink
				if !c.force && tcxProbe() == nil {
					want = TCX
				}
				if at.Method != want {
					t.Errorf("attached with %v, want %v", at.Method, want)
				}
				got := attached(t, a, at.Method)
				for _, p := range []counting{ingress, egress} {
					if !got[attachtest.ProgID(t, p.prog)] {
						t.Errorf("attached programs %v lack program %d", got, attachtest.ProgID(t, p.prog))
					}
				}
				if !waitCount(t, ingress, b.Attrs().Index) {
					t.Errorf("the ingress program did not see a frame sent to att0")
				}
				if !waitCount(t, egress, a.Attrs().Index) {
					t.Errorf("the egress program did not see a frame sent from att0")
				}
				if err := at.Close(); err != nil {
					t.Fatalf("detach: %v", err)
				}
				if got := attached(t, a, at.Method); len(got) != 0 {
					t.Errorf("programs still attached after Close: %v", got)
				}
				if at.Method == Netlink {
					if has := hasClsact(t, a); has != c.sharedQdisc {
						t.Errorf("clsact qdisc present after Close: %v, want %v", has, c.sharedQdisc)
					}
				}
			})
		})
	}
}

// TestTCNetlinkCloseElsewhere closes a netlink attachment from a goroutine
// outside the namespace it was made in, as a topology's teardown does: the
// filters and the qdisc must go all the same (on kernels without tcx every
// TC attachment takes this path).
func TestTCNetlinkCloseElsewhere(t *testing.T) {
	testenv.RequirePriv(t)
	c := newCounting(t, ebpf.SchedCLS, 0 /* TC_ACT_OK */)
	attachtest.InNetns(t, func() {
		a, _ := attachtest.Veth(t, "att0", "att1")
		at, err := TC("att0", []TCProgram{{Program: c.prog, Direction: Ingress, Name: "test_ingress"}},
			TCOptions{Priority: 0x77, Handle: 1, ForceNetlink: true})
		if err != nil {
			t.Fatalf("attach: %v", err)
		}
		// A new goroutine runs on a thread of the original namespace:
		// this one is locked into the test's.
		done := make(chan error)
		go func() { done <- at.Close() }()
		if err := <-done; err != nil {
			t.Fatalf("detach from another namespace: %v", err)
		}
		if got := attached(t, a, Netlink); len(got) != 0 {
			t.Errorf("programs still attached after Close: %v", got)
		}
		if hasClsact(t, a) {
			t.Errorf("clsact qdisc left after Close")
		}
	})
}

func TestTCInvalid(t *testing.T) {
	p := TCProgram{Direction: Ingress, Name: "x"}
	if _, err := TC("lo", []TCProgram{p}, TCOptions{Priority: 1, Handle: 1}); err == nil {
		t.Errorf("a nil program was accepted")
	}
	if _, err := TC("lo", nil, TCOptions{}); err == nil {
		t.Errorf("a zero filter priority and handle were accepted")
	}
}

// tcxProbe says whether the kernel has tcx, by asking for the tcx programs
// of the loopback device, which fails on kernels without it.
func tcxProbe() error {
	_, err := link.QueryPrograms(link.QueryOptions{Target: 1, Attach: ebpf.AttachTCXIngress})
	return err
}

func clsact(index int) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
}

func hasClsact(t *testing.T, l netlink.Link) bool {
	t.Helper()
	qs, err := netlink.QdiscList(l)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			return true
		}
	}
	return false
}

func attached(t *testing.T, l netlink.Link, m Method) map[ebpf.ProgramID]bool {
	t.Helper()
	ids := make(map[ebpf.ProgramID]bool)
	if m == TCX {
		for _, typ := range []ebpf.AttachType{ebpf.AttachTCXEgress, ebpf.AttachTCXIngress} {
			r, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: typ})
			if err != nil {
				t.Fatalf("query tcx programs: %v", err)
			}
			for _, p := range r.Programs {
				ids[p.ID] = true
			}
		}
		return ids
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_EGRESS, netlink.HANDLE_MIN_INGRESS} {
		fs, err := netlink.FilterList(l, parent)
		if errors.Is(err, unix.EINVAL) {
			continue // no clsact qdisc
		}
		if err != nil {
			t.Fatalf("list filters: %v", err)
		}
		for _, f := range fs {
			if bf, ok := f.(*netlink.BpfFilter); ok {
				ids[ebpf.ProgramID(bf.Id)] = true
			}
		}
	}
	return ids
}
