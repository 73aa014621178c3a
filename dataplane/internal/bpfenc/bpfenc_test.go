package bpfenc

import (
	"maps"
	"net/netip"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/internal/testenv"
)

// The layout is checked against the bytes in memory, which is what the C
// side reads.
func TestAddrWordsMemoryLayout(t *testing.T) {
	for _, c := range []struct {
		addr string
		want [16]byte
	}{
		{"192.0.2.10", [16]byte{192, 0, 2, 10}},
		{"2001:db8::1", [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}},
	} {
		a := netip.MustParseAddr(c.addr)
		w := AddrWords(a)
		if got := *(*[16]byte)(unsafe.Pointer(&w)); got != c.want {
			t.Errorf("AddrWords(%s) in memory = % x, want % x", a, got, c.want)
		}
		if back := WordsAddr(w, a.Is4()); back != a {
			t.Errorf("WordsAddr(AddrWords(%s)) = %s", a, back)
		}
	}
}

func TestHtonsMemoryLayout(t *testing.T) {
	v := Htons(0x1234)
	if got := *(*[2]byte)(unsafe.Pointer(&v)); got != [2]byte{0x12, 0x34} {
		t.Errorf("Htons(0x1234) in memory = % x, want 12 34", got)
	}
	if Ntohs(v) != 0x1234 {
		t.Errorf("Ntohs(Htons(0x1234)) = %#x", Ntohs(v))
	}
}

// ReadStats sums each counter over the CPUs: every CPU's slot holds a
// distinct value, so a reader that took one CPU's, or the wrong index,
// gets another number.
func TestReadStats(t *testing.T) {
	testenv.RequirePriv(t)
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := map[string]uint64{}
	for i, name := range []string{"pass", "drop"} {
		per := make([]uint64, cpus)
		for cpu := range per {
			per[cpu] = uint64(1+i) << (8 * cpu % 56)
			want[name] += per[cpu]
		}
		if err := m.Put(uint32(i), per); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadStats(m, []string{"pass", "drop"})
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, want) {
		t.Errorf("ReadStats = %v, want %v", got, want)
	}
	if _, err := ReadStats(m, []string{"pass", "drop", "beyond"}); err == nil || !strings.Contains(err.Error(), "beyond") {
		t.Errorf("ReadStats of a counter past the map = %v, want an error naming it", err)
	}
}
