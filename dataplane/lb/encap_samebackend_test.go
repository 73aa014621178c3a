package lb

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/sluice-dp/sluice/ctl/maglev"
	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// TestEncapSameBackendAsMaglev checks the cross-node contract end to end:
// for random flows the program sends each to the backend that a Maglev
// table built here, from the same backends, size and seed, owns at slot
// hash % size, with the hash computed here in Go. Any disagreement in the
// hash words, the seed, the ring upload or the table would show.
func TestEncapSameBackendAsMaglev(t *testing.T) {
	const flows = 10000
	weights := []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	var be4, be6 []Backend
	for i, w := range weights {
		be4 = append(be4, Backend{Addr: netip.AddrFrom4([4]byte{10, 2, 0, byte(i + 1)}), Weight: w})
		a := netip.MustParseAddr("fd00:2::").As16()
		a[15] = byte(i + 1)
		be6 = append(be6, Backend{Addr: netip.AddrFrom16(a), Weight: w})
	}
	// The IPv4 VIP covers all ports, so that destination ports vary too.
	vip4 := VIP{Addr: netip.MustParseAddr("192.0.2.20"), Port: 0, Proto: l4.TCP}
	vip6 := VIP{Addr: netip.MustParseAddr("2001:db8:f::20"), Port: 443, Proto: l4.TCP}

	for _, mode := range []struct {
		name string
		opts VIPOptions
	}{
		{"5-tuple hash", VIPOptions{}},
		{"source hash", VIPOptions{SourceHash: true}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			l := newLB(t, Options{})
			if got := l.Options().RingSize; got != maglev.DefaultSize {
				t.Fatalf("ring size %d, want the default %d", got, maglev.DefaultSize)
			}
			addVIP(t, l, vip4, mode.opts, be4...)
			addVIP(t, l, vip6, mode.opts, be6...)
			seed := testConfig().Seed
			rings := map[VIP]modelRing{
				vip4: newModelRing(t, be4, maglev.DefaultSize, seed),
				vip6: newModelRing(t, be6, maglev.DefaultSize, seed),
			}

			rng := rand.New(rand.NewPCG(1, 2))
			wantPackets := map[VIP]map[netip.Addr]uint64{vip4: {}, vip6: {}}
			wantBytes := map[VIP]map[netip.Addr]uint64{vip4: {}, vip6: {}}
			before := readCounters(t, l)
			for i := range flows {
				var f pkttest.Flow
				var vip VIP
				sport := uint16(1024 + rng.IntN(65536-1024))
				if i%2 == 0 {
					vip = vip4
					var a [4]byte
					for j := range a {
						a[j] = byte(rng.Uint32())
					}
					dport := uint16(1 + rng.IntN(65535))
					f = encIn(netip.AddrPortFrom(netip.AddrFrom4(a), sport), vip.Addr, dport, true)
				} else {
					vip = vip6
					a := netip.MustParseAddr("2001:db8::").As16()
					for j := 4; j < 16; j++ {
						a[j] = byte(rng.Uint32())
					}
					f = encIn(netip.AddrPortFrom(netip.AddrFrom16(a), sport), vip.Addr, vip.Port, false)
				}
				in := pkttest.TCP(f, pkttest.SYN)
				res := pkttest.Run(t, l.Program(), in)
				if res.Verdict != pkttest.XDPTX {
					t.Fatalf("flow %v → %v: verdict %v, want %v", f.Src, f.Dst, res.Verdict, pkttest.XDPTX)
				}

				h5 := modelFlowHash(f.Src, f.Dst, seed)
				hring := h5
				if mode.opts.SourceHash {
					hring = modelSrcHash(f.Src.Addr(), seed)
				}
				want := rings[vip].pick(hring)
				got, sport5, label := encOuterFields(t, res.Packet)
				if got != want {
					t.Errorf("flow %v → %v (hash %#x, slot %d): backend %v, want %v",
						f.Src, f.Dst, hring, hring%maglev.DefaultSize, got, want)
				}
				// The outer source port and flow label always come from the
				// 5-tuple, also for source-hash VIPs, so that one client's
				// connections still spread over the path.
				if w := encGUESport(h5); sport5 != w {
					t.Errorf("flow %v → %v: outer source port %d, want %d", f.Src, f.Dst, sport5, w)
				}
				if vip == vip6 && label != h5&0xfffff {
					t.Errorf("flow %v → %v: flow label %#x, want %#x", f.Src, f.Dst, label, h5&0xfffff)
				}
				if t.Failed() {
					t.FailNow()
				}
				wantPackets[vip][want]++
				wantBytes[vip][want] += uint64(len(pkttest.IPPacket(in)))
			}
			after := readCounters(t, l)
			checkStats(t, before, after, map[string]uint64{
				"tx": flows, "encap_gue": flows, "conn_miss": flows, "conn_miss_syn": flows,
			})
			for _, vip := range []VIP{vip4, vip6} {
				var vp, vb uint64
				for b, a := range after.Backends[vip] {
					got := Traffic{a.Packets - before.Backends[vip][b].Packets, a.Bytes - before.Backends[vip][b].Bytes}
					want := Traffic{wantPackets[vip][b], wantBytes[vip][b]}
					if got != want {
						t.Errorf("vip %v backend %v: traffic %+v, want %+v", vip, b, got, want)
					}
					vp += want.Packets
					vb += want.Bytes
				}
				if n := len(after.Backends[vip]); n != len(weights) {
					t.Errorf("vip %v: counters for %d backends, want %d", vip, n, len(weights))
				}
				got := Traffic{after.VIPs[vip].Packets - before.VIPs[vip].Packets, after.VIPs[vip].Bytes - before.VIPs[vip].Bytes}
				if want := (Traffic{vp, vb}); got != want {
					t.Errorf("vip %v: traffic %+v, want %+v", vip, got, want)
				}
			}
		})
	}
}
