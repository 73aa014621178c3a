package flowhash

import (
	"net/netip"
	"testing"

	"github.com/sluice-dp/sluice/ctl/jhash"
)

// The word layouts are spelled out by hand here, from docs/lb.md, rather
// than with the package's own helper.
func TestTupleLayout(t *testing.T) {
	for _, c := range []struct {
		name        string
		client, vip netip.AddrPort
		seed        uint64
		want        []uint32
		wantSeed    uint32
	}{
		{
			name:     "ipv4",
			client:   netip.MustParseAddrPort("198.51.100.7:40000"),
			vip:      netip.MustParseAddrPort("192.0.2.10:80"),
			seed:     0x1_0000_0005,
			want:     []uint32{0xc6336407, 0xc000020a, 40000<<16 | 80},
			wantSeed: 5,
		},
		{
			name:   "ipv6",
			client: netip.MustParseAddrPort("[2001:db8::7]:1234"),
			vip:    netip.MustParseAddrPort("[2001:db8:1::a]:443"),
			seed:   7,
			want: []uint32{
				0x20010db8, 0, 0, 7,
				0x20010db8, 0x00010000, 0, 0xa,
				1234<<16 | 443,
			},
			wantSeed: 7,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got, want := Tuple(c.client, c.vip, c.seed), jhash.Words(c.want, c.wantSeed); got != want {
				t.Errorf("Tuple = %#x, want %#x", got, want)
			}
		})
	}
}

func TestSourceIgnoresPortsAndDestination(t *testing.T) {
	a := netip.MustParseAddr("198.51.100.7")
	if got, want := Source(a, 9), jhash.Words([]uint32{0xc6336407}, 9); got != want {
		t.Errorf("Source = %#x, want %#x", got, want)
	}
	b := netip.MustParseAddr("2001:db8::7")
	if got, want := Source(b, 9), jhash.Words([]uint32{0x20010db8, 0, 0, 7}, 9); got != want {
		t.Errorf("Source v6 = %#x, want %#x", got, want)
	}
}
