package bpfenc

import (
	"net/netip"
	"testing"
	"unsafe"
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
