package maglev_test

import (
	"errors"
	"math"
	"net/netip"
	"slices"
	"testing"

	"github.com/sluice-dp/sluice/ctl/maglev"
)

// fuzzBackends turns fuzz input into backends, 4 bytes each: kind, two
// address bytes, weight. Kinds mix the address families, make duplicates
// likely, and now and then produce an address New must reject; weight bytes
// 0, 254 and 255 stand for 0, 2^31 and 2^32−1.
func fuzzBackends(data []byte) []maglev.Backend {
	var bs []maglev.Backend
	for ; len(data) >= 4; data = data[4:] {
		kind, x, y, wb := data[0], data[1], data[2], data[3]
		var a netip.Addr
		switch kind % 16 {
		case 0, 1, 2, 3, 4, 5:
			a = netip.AddrFrom4([4]byte{10, 0, x, y})
		case 6, 7, 8, 9, 10:
			a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: x, 15: y})
		case 11, 12, 13:
			a = netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: 10, 13: 0, 14: x, 15: y})
		case 14:
			a = netip.AddrFrom4([4]byte{10, 0, 0, y % 4}) // duplicates
		case 15:
			switch x % 4 {
			case 0:
				a = netip.Addr{}
			case 1:
				a = netip.IPv4Unspecified()
			case 2:
				a = netip.IPv6Unspecified()
			default:
				a = netip.AddrFrom16([16]byte{0xfe, 0x80, 15: y}).WithZone("eth0")
			}
		}
		var w uint32
		switch wb {
		case 255:
			w = math.MaxUint32
		case 254:
			w = 1 << 31
		default:
			w = uint32(wb)
		}
		bs = append(bs, maglev.Backend{Addr: a, Weight: w})
	}
	return bs
}

// expectedErrors lists every error New may rightly return for this input,
// worked out from the rules rather than from New; nil if none applies.
func expectedErrors(bs []maglev.Backend, size uint32) []error {
	var want []error
	if !slices.Contains(maglev.Sizes, size) || len(bs) > int(size) {
		want = append(want, maglev.ErrBadSize)
	}
	if len(bs) == 0 {
		want = append(want, maglev.ErrNoBackends)
	}
	seen := map[netip.Addr]bool{}
	for _, b := range bs {
		if !b.Addr.IsValid() || b.Addr.Zone() != "" || b.Addr.IsUnspecified() {
			want = append(want, maglev.ErrInvalidAddr)
		}
		if b.Weight == 0 {
			want = append(want, maglev.ErrZeroWeight)
		}
		if seen[b.Addr] {
			want = append(want, maglev.ErrDuplicateBackend)
		}
		seen[b.Addr] = true
	}
	return want
}

func FuzzNew(f *testing.F) {
	f.Add([]byte{0, 1, 2, 1}, uint8(0), uint64(0))
	f.Add([]byte{0, 1, 2, 1, 5, 1, 2, 3, 9, 1, 2, 255, 3, 9, 9, 254}, uint8(1), uint64(42))
	f.Add([]byte{14, 0, 1, 1, 14, 0, 1, 2}, uint8(2), uint64(7))              // duplicate
	f.Add([]byte{0, 1, 2, 0}, uint8(3), uint64(7))                            // zero weight
	f.Add([]byte{15, 0, 0, 1}, uint8(4), uint64(7))                           // invalid address
	f.Add([]byte{}, uint8(0), uint64(1))                                      // no backends
	f.Add([]byte{0, 1, 2, 1}, uint8(255), uint64(1000)<<32)                   // bad size
	f.Add([]byte{0, 1, 2, 1, 0, 1, 3, 255, 5, 4, 4, 1}, uint8(0), uint64(99)) // extreme weights

	f.Fuzz(func(t *testing.T, data []byte, sizeSel uint8, seed uint64) {
		bs := fuzzBackends(data)
		small := maglev.Sizes[:slices.Index(maglev.Sizes, 4093)+1] // keep fuzzing fast
		size := small[int(sizeSel)%len(small)]
		if sizeSel >= 250 {
			size = uint32(seed>>32) % 5000 // mostly not an allowed size
		}
		want := expectedErrors(bs, size)

		tab, err := maglev.New(bs, size, seed)
		if len(want) > 0 {
			if err == nil || !errorsIsAny(err, want...) {
				t.Fatalf("New(%v, %d) = %v; want one of %v", bs, size, err, want)
			}
			return
		}
		if err != nil {
			t.Fatalf("New(%v, %d): %v", bs, size, err)
		}
		if tab.Size() != size || len(tab.Slots()) != int(size) {
			t.Fatalf("Size() = %d, len(Slots()) = %d, want %d", tab.Size(), len(tab.Slots()), size)
		}
		got := tab.Backends()
		if !sameSet(bs, got) || !isCanonical(got) {
			t.Fatalf("Backends() = %v, want %v in address order", got, bs)
		}
		c := counts(t, tab)
		checkSainteLague(t, got, c)
		for _, h := range []uint32{0, size - 1, uint32(seed) ^ uint32(seed>>32)} {
			if tab.Lookup(h) != got[tab.Slots()[h%size]] {
				t.Errorf("Lookup(%d) disagrees with Slots", h)
			}
		}
		if size == 251 && len(bs) <= 16 {
			checkAgainstReference(t, tab, bs, seed)
		}
	})
}

// errorsIsAny reports whether err matches one of targets.
func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
