package pkttest

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/sluice-dp/sluice/internal/testenv"
)

// loadProg loads a hand-assembled program; tests of the harness must not
// depend on clang or on any program of the project.
func loadProg(t *testing.T, typ ebpf.ProgramType, insns ...asm.Instruction) *ebpf.Program {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: typ, Instructions: insns, License: "GPL"})
	if err != nil {
		t.Fatalf("load %v program: %v", typ, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func returns(t *testing.T, typ ebpf.ProgramType, v int32) *ebpf.Program {
	return loadProg(t, typ, asm.Mov.Imm(asm.R0, v), asm.Return())
}

func TestRunVerdicts(t *testing.T) {
	testenv.RequirePriv(t)
	frames := map[string][]byte{
		"TCP4":      TCP(flow4, SYN),
		"UDP6":      UDP(Flow{Src: flow6.Src, Dst: flow6.Dst, Payload: bytes.Repeat([]byte{0xa5}, 1400)}),
		"GUE":       GUE(tunnel4, IPPacket(TCP(flow4, ACK))),
		"VLAN ICMP": ICMPEcho(Flow{Src: flow4.Src, Dst: flow4.Dst, VLAN: 9}, 1, 1),
	}
	for _, v := range []Verdict{XDPPass, XDPDrop, XDPTX, XDPRedirect} {
		prog := returns(t, ebpf.XDP, int32(v))
		for name, fr := range frames {
			r := &recorder{}
			res := Run(r, prog, fr)
			if len(r.errors) != 0 {
				t.Errorf("%v on %s: reported %v", v, name, r.errors)
			}
			if res.Verdict != v {
				t.Errorf("%s: verdict %v, want %v", name, res.Verdict, v)
			}
			// The program does not touch the packet, so it comes back
			// unchanged and with its length.
			Expect(t, fr, res.Out)
			if d := Diff(Decode(fr), res.Packet); d != "" {
				t.Errorf("%v on %s: decoded output differs:\n%s", v, name, d)
			}
		}
	}
}

func TestRunSeesProgramWrites(t *testing.T) {
	testenv.RequirePriv(t)
	// if data + 1 <= data_end { data[0] = 0x42 }; return XDP_TX
	prog := loadProg(t, ebpf.XDP,
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // xdp_md.data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // xdp_md.data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 1),
		asm.JGT.Reg(asm.R4, asm.R3, "out"),
		asm.StoreImm(asm.R2, 0, 0x42, asm.Byte),
		asm.Mov.Imm(asm.R0, int32(XDPTX)).WithSymbol("out"),
		asm.Return(),
	)
	in := TCP(flow4, SYN)
	res := Run(t, prog, in)
	want := TCP(Flow{Src: flow4.Src, Dst: flow4.Dst, DstMAC: []byte{0x42, 0, 0, 0, 0, 2}}, SYN)
	if res.Verdict != XDPTX {
		t.Errorf("verdict %v", res.Verdict)
	}
	Expect(t, want, res.Out)
	if in[0] != 0x02 {
		t.Errorf("Run modified the caller's input frame")
	}
}

// TestRunGrownPacket checks that a packet the program lengthens (as
// encapsulation does) comes back whole.
func TestRunGrownPacket(t *testing.T) {
	testenv.RequirePriv(t)
	// 216 is the most XDP allows: 256 bytes of headroom minus the
	// struct xdp_frame the kernel keeps at its start.
	for _, grow := range []int32{20, 216} {
		prog := loadProg(t, ebpf.XDP,
			asm.Mov.Imm(asm.R2, -grow),
			asm.FnXdpAdjustHead.Call(),
			asm.JNE.Imm(asm.R0, 0, "fail"),
			asm.Mov.Imm(asm.R0, int32(XDPPass)),
			asm.Return(),
			asm.Mov.Imm(asm.R0, int32(XDPDrop)).WithSymbol("fail"),
			asm.Return(),
		)
		in := UDP(Flow{Src: flow4.Src, Dst: flow4.Dst, Payload: bytes.Repeat([]byte{1}, 1000)})
		res := Run(t, prog, in)
		if res.Verdict != XDPPass {
			t.Fatalf("grow %d: verdict %v (adjust_head failed)", grow, res.Verdict)
		}
		if len(res.Out) != len(in)+int(grow) || !bytes.Equal(res.Out[grow:], in) {
			t.Errorf("grow %d: output of %d bytes, want %d ending with the input", grow, len(res.Out), len(in)+int(grow))
		}
	}
}

func TestRunAborted(t *testing.T) {
	testenv.RequirePriv(t)
	for _, v := range []Verdict{XDPAborted, 7} {
		prog := returns(t, ebpf.XDP, int32(v))
		r := &recorder{}
		res := Run(r, prog, TCP(flow4, SYN))
		if res.Verdict != v {
			t.Errorf("verdict %v, want %v", res.Verdict, v)
		}
		if len(r.errors) != 1 || !strings.Contains(r.errors[0], v.String()) || r.fatal {
			t.Errorf("%v: reported %v (fatal %v), want one error naming it", v, r.errors, r.fatal)
		}
		r = &recorder{}
		Run(r, prog, TCP(flow4, SYN), AllowAborted())
		if len(r.errors) != 0 {
			t.Errorf("%v with AllowAborted: reported %v", v, r.errors)
		}
	}
}

// TestRunTC checks that TC programs run too, and that TC_ACT_OK, which is
// 0 like XDP_ABORTED, is not mistaken for an abort.
func TestRunTC(t *testing.T) {
	testenv.RequirePriv(t)
	for _, a := range []TCAction{TCActOK, TCActShot, TCActUnspec} {
		prog := returns(t, ebpf.SchedCLS, int32(a))
		r := &recorder{}
		in := TCP(flow6, SYN)
		res := Run(r, prog, in)
		if len(r.errors) != 0 {
			t.Errorf("%v: reported %v", a, r.errors)
		}
		if res.TC() != a {
			t.Errorf("action %v, want %v", res.TC(), a)
		}
		Expect(t, in, res.Out)
	}
}

func TestRunFailure(t *testing.T) {
	testenv.RequirePriv(t)
	r := &recorder{}
	Run(r, returns(t, ebpf.XDP, int32(XDPPass)), []byte{1, 2, 3}) // shorter than an Ethernet header
	if !r.fatal {
		t.Errorf("a run the kernel rejects was not fatal: %v", r.errors)
	}
}

func TestVerdictNames(t *testing.T) {
	for v, want := range map[Verdict]string{
		XDPAborted: "XDP_ABORTED", XDPDrop: "XDP_DROP", XDPPass: "XDP_PASS", XDPTX: "XDP_TX",
		XDPRedirect: "XDP_REDIRECT", 9: "XDP_UNKNOWN(9)",
	} {
		if v.String() != want {
			t.Errorf("Verdict(%d) = %q, want %q", uint32(v), v.String(), want)
		}
	}
	for a, want := range map[TCAction]string{
		TCActUnspec: "TC_ACT_UNSPEC", TCActOK: "TC_ACT_OK", TCActShot: "TC_ACT_SHOT",
		TCActRedirect: "TC_ACT_REDIRECT", 42: "TC_ACT_UNKNOWN(42)",
	} {
		if a.String() != want {
			t.Errorf("TCAction(%d) = %q, want %q", int32(a), a.String(), want)
		}
	}
}
