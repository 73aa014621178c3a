package feature

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/sluice-dp/sluice/internal/testenv"
)

func TestHelperName(t *testing.T) {
	for fn, want := range map[asm.BuiltinFunc]string{
		asm.FnSkcLookupTcp:      "bpf_skc_lookup_tcp",
		asm.FnXdpAdjustHead:     "bpf_xdp_adjust_head",
		asm.FnL3CsumReplace:     "bpf_l3_csum_replace",
		asm.FnMapLookupElem:     "bpf_map_lookup_elem",
		asm.FnTcpCheckSyncookie: "bpf_tcp_check_syncookie",
		asm.FnGetSocketCookie:   "bpf_get_socket_cookie",
	} {
		if got := HelperName(fn); got != want {
			t.Errorf("HelperName(%v) = %q, want %q", fn, got, want)
		}
	}
}

// A kernel that lacks one helper and one map type the collection uses:
// the error names both with the programs and maps that need them, and
// still matches the original error.
func TestExplainNamesMissingFeatures(t *testing.T) {
	spec := &ebpf.CollectionSpec{
		Programs: map[string]*ebpf.ProgramSpec{
			"cl_xdp": {Type: ebpf.XDP, Instructions: asm.Instructions{
				asm.FnMapLookupElem.Call(), asm.FnSkcLookupTcp.Call(), asm.FnSkcLookupTcp.Call(),
				asm.Mov.Imm(asm.R0, 2), asm.Return(),
			}},
			"cl_state": {Type: ebpf.Tracing, Instructions: asm.Instructions{
				asm.FnGetSocketCookie.Call(), asm.Mov.Imm(asm.R0, 0), asm.Return(),
			}},
		},
		Maps: map[string]*ebpf.MapSpec{
			"tombs":  {Type: ebpf.LRUHash},
			"limits": {Type: ebpf.Hash},
		},
	}
	fake := probes{
		progType: func(ebpf.ProgramType) error { return nil },
		helper: func(pt ebpf.ProgramType, fn asm.BuiltinFunc) error {
			switch {
			case fn == asm.FnSkcLookupTcp:
				return ebpf.ErrNotSupported
			case pt == ebpf.Tracing:
				return errors.New("no feature probe") // inconclusive: not named
			}
			return nil
		},
		mapType: func(mt ebpf.MapType) error {
			if mt == ebpf.LRUHash {
				return ebpf.ErrNotSupported
			}
			return nil
		},
	}
	saved := kernel
	kernel = fake
	t.Cleanup(func() { kernel = saved })

	load := errors.New("load program cl_xdp: invalid argument")
	err := Explain(spec, load)
	if !errors.Is(err, load) || !errors.Is(err, ebpf.ErrNotSupported) {
		t.Fatalf("Explain = %v: want it to match the load error and ebpf.ErrNotSupported", err)
	}
	var me *MissingError
	if !errors.As(err, &me) {
		t.Fatalf("Explain = %T, want *MissingError", err)
	}
	want := []string{"helper bpf_skc_lookup_tcp for XDP programs (cl_xdp)", "map type LRUHash (tombs)"}
	if strings.Join(me.Missing, "|") != strings.Join(want, "|") {
		t.Errorf("missing %q, want %q", me.Missing, want)
	}

	kernel = probes{
		progType: func(ebpf.ProgramType) error { return nil },
		helper:   func(ebpf.ProgramType, asm.BuiltinFunc) error { return nil },
		mapType:  func(ebpf.MapType) error { return nil },
	}
	if err := Explain(spec, load); err != load {
		t.Errorf("Explain with nothing missing = %v, want the load error itself", err)
	}
	if err := Explain(spec, nil); err != nil {
		t.Errorf("Explain(nil) = %v", err)
	}
}

// TestKernelHasEveryFeature probes the running kernel for everything the
// committed programs use: nothing may be missing on a kernel Sluice
// supports. In the kernel matrix this checks 6.1 and 6.12.
func TestKernelHasEveryFeature(t *testing.T) {
	testenv.RequirePriv(t)
	// The probes can tell a missing helper: XDP programs have no
	// bpf_skb_adjust_room on any kernel.
	if err := kernel.helper(ebpf.XDP, asm.FnSkbAdjustRoom); !errors.Is(err, ebpf.ErrNotSupported) {
		t.Fatalf("probe of bpf_skb_adjust_room for XDP = %v, want ebpf.ErrNotSupported", err)
	}
	objs, err := filepath.Glob("../../*/*_bpfel.o")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) < 5 {
		t.Fatalf("found %d committed objects (%v), want the 5 programs'", len(objs), objs)
	}
	for _, obj := range objs {
		f, err := os.Open(obj)
		if err != nil {
			t.Fatal(err)
		}
		spec, err := ebpf.LoadCollectionSpecFromReader(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", obj, err)
		}
		if missing := kernel.missing(spec); len(missing) > 0 {
			t.Errorf("%s: the kernel lacks %q", obj, missing)
		}
	}
}
