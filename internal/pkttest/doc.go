// Package pkttest is the harness for packet tests: a frame crafted with
// gopacket goes through a real BPF program with BPF_PROG_RUN, and what comes
// out is decoded, compared field by field with a frame the test built
// independently, and has its checksums recomputed by code that shares
// nothing with gopacket's.
//
// A case has four steps: build the input, run it, check the verdict, and
// compare the output with the expected frame. Maps are set up by the
// program's own Go package before the run.
//
//	func TestVIPHit(t *testing.T) {
//		testenv.RequirePriv(t)
//		prog := loadConfigured(t) // the dataplane package's API, maps filled
//		in := pkttest.TCP(pkttest.Flow{
//			Src: netip.MustParseAddrPort("198.51.100.7:40000"),
//			Dst: netip.MustParseAddrPort("192.0.2.10:443"),
//			DF:  true,
//		}, pkttest.SYN)
//
//		res := pkttest.Run(t, prog, in)
//		if res.Verdict != pkttest.XDPTX {
//			t.Fatalf("verdict %v, want %v", res.Verdict, pkttest.XDPTX)
//		}
//		want := pkttest.GUE(pkttest.Flow{
//			SrcMAC: nodeMAC, DstMAC: gatewayMAC, DF: true,
//			Src:    netip.MustParseAddrPort("10.0.0.2:49200"),
//			Dst:    netip.MustParseAddrPort("10.1.0.5:6080"),
//		}, pkttest.IPPacket(in))
//		pkttest.Expect(t, want, res.Out)
//		pkttest.VerifyChecksums(t, res.Packet)
//	}
//
// Run fails the test on XDP_ABORTED unless the case allows it. Expect prints
// a Diff such as
//
//	IPv4.TTL (layer 2): want 64, got 63
//	GUE/TCP.Checksum (layer 2): want 0x1c46, got 0x1c47
//
// followed by both frames decoded, and writes them to a pcap (see
// PcapDirEnv). Fields whose value the test cannot predict (a hash-derived
// source port or flow label) are excluded with IgnoreFields and checked
// another way, for example by the properties they must have.
//
// Frame constructors (TCP, UDP, ICMPEcho, GUE, IPIP) panic on a malformed
// Flow instead of taking a testing.TB, so that table-driven cases can be
// declared as literals; Serialize is the general form for any gopacket
// layers.
package pkttest
