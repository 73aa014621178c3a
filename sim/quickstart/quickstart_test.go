package quickstart

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/lb"
	"github.com/sluice-dp/sluice/internal/testenv"
	"github.com/sluice-dp/sluice/sim/topo"
)

// assertNoNamespaces fails if a namespace of the run is left.
func assertNoNamespaces(t *testing.T, prefix string) {
	t.Helper()
	if prefix == "" {
		t.Fatal("run has no topology prefix")
	}
	entries, err := os.ReadDir(topo.NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
}

// Each flow picks a backend independently, with probability p = weight
// share: a backend's flow count k out of n is Binomial(n, p). The bound
// is 4 standard deviations, which a correct balancer exceeds with
// probability about 6e-5 per backend (under 4e-4 for the 3 backends in both
// modes of one test run), plus 1% of n for Maglev's own deviation from the
// exact weights (DESIGN.md §5: within 1% of the table). With n = 400 flows
// the bounds for weights 1,1,2 are 100±39 and 200±48: a balancer that
// ignored weights (133 expected for the third backend) falls outside with
// probability about 99%.
func distributionBound(n int, p float64) float64 {
	return 4*math.Sqrt(float64(n)*p*(1-p)) + 0.01*float64(n)
}

func TestRun(t *testing.T) {
	testenv.RequirePriv(t)
	for _, mode := range []lb.Mode{lb.Native, lb.Generic} {
		t.Run(mode.String(), func(t *testing.T) {
			var progress bytes.Buffer
			res, err := Run(context.Background(), Options{Mode: mode, Progress: &progress})
			if res != nil {
				defer assertNoNamespaces(t, res.Prefix)
			}
			if err != nil {
				t.Fatalf("run: %v\nprogress:\n%s", err, progress.String())
			}
			for _, c := range res.Failed() {
				t.Errorf("check failed: %s: %s", c.Name, c.Detail)
			}
			if len(res.Checks) != 9 {
				t.Errorf("%d checks, want 9", len(res.Checks))
			}
			if res.Mode != mode || res.SentUDP != 300 || res.SentTCP != 100 {
				t.Fatalf("mode %v, sent %d UDP and %d TCP; want %v, 300 and 100", res.Mode, res.SentUDP, res.SentTCP, mode)
			}

			// Every flow reached exactly one backend: the per-backend
			// flow counts add up to what was sent.
			var udp, tcp, packets int
			for _, b := range res.Backends {
				udp += b.UDPFlows
				tcp += b.TCPFlows
				packets += b.Packets
			}
			if udp != 300 || tcp != 100 {
				t.Errorf("backends saw %d UDP and %d TCP flows, want 300 and 100", udp, tcp)
			}
			if packets < 400 {
				t.Errorf("backends received %d packets, want at least 400", packets)
			}
			if got := res.Counters["encap_gue"]; got != uint64(packets) {
				t.Errorf("lb encap_gue %d, backends received %d", got, packets)
			}

			weights := []uint32{1, 1, 2}
			if len(res.Backends) != len(weights) {
				t.Fatalf("%d backends, want %d", len(res.Backends), len(weights))
			}
			n := udp + tcp
			for i, b := range res.Backends {
				p := float64(weights[i]) / 4
				k := b.UDPFlows + b.TCPFlows
				if d, bound := math.Abs(float64(k)-float64(n)*p), distributionBound(n, p); d > bound {
					t.Errorf("%s (weight %d) got %d of %d flows, want %.0f ± %.0f", b.Name, weights[i], k, n, float64(n)*p, bound)
				}
			}
			if t.Failed() {
				var report bytes.Buffer
				res.WriteReport(&report)
				t.Logf("progress:\n%s\nreport:\n%s", progress.String(), report.String())
			}
		})
	}
}

func TestRunCancelledCleansUp(t *testing.T) {
	testenv.RequirePriv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := Run(ctx, Options{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("run with a cancelled context: %v, want context.Canceled", err)
	}
	if res != nil {
		assertNoNamespaces(t, res.Prefix)
	}
}

func TestRunRejectsUnknownMode(t *testing.T) {
	if _, err := Run(context.Background(), Options{Mode: lb.Mode(7)}); err == nil {
		t.Error("run in mode 7 succeeded")
	}
}

// rawUDP sends an IPv4/UDP packet built byte by byte from node n with a
// raw socket, checksum given, so that the kernel does not fix it.
func rawUDP(t *testing.T, n *topo.Node, src, dst netip.AddrPort, payload []byte, corrupt bool) {
	t.Helper()
	pkt := make([]byte, 28+len(payload))
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	pkt[8] = 64
	pkt[9] = unix.IPPROTO_UDP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(pkt[12:], s[:])
	copy(pkt[16:], d[:])
	binary.BigEndian.PutUint16(pkt[10:], checksum(pkt[:20]))
	udp := pkt[20:]
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	pseudo := append(append([]byte{}, pkt[12:20]...), 0, unix.IPPROTO_UDP, udp[4], udp[5])
	sum := checksum(pseudo, udp)
	if corrupt {
		sum ^= 0x0101
	}
	binary.BigEndian.PutUint16(udp[6:], sum)
	err := n.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: d})
	})
	if err != nil {
		t.Fatalf("raw send from %s: %v", n.Name(), err)
	}
}

// The report claims that the backends' kernels verify each GUE datagram's
// outer UDP checksum. This is the control: on the same path (router to
// backend), a datagram with a wrong checksum is counted and dropped, one
// with a right checksum is delivered and parsed.
func TestBackendKernelDropsBadOuterChecksum(t *testing.T) {
	testenv.RequirePriv(t)
	tp, err := topo.New()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := tp.Close(); err != nil {
			t.Error(err)
		}
		assertNoNamespaces(t, tp.Prefix())
	}()
	nw, err := build(tp)
	if err != nil {
		t.Fatal(err)
	}
	recv, err := listen(nw.backends)
	if err != nil {
		t.Fatal(err)
	}
	defer recv.close()

	inner := gopacketUDP(t, netip.MustParseAddrPort("10.100.1.2:40000"), netip.MustParseAddrPort("192.0.2.10:53"), []byte(udpPayloadPrefix+"7"))
	from := netip.AddrPortFrom(host(backendNet(1), 1), 50000)
	to := netip.AddrPortFrom(backendAddr(0), guePort)
	rawUDP(t, nw.router, from, to, inner, true)
	rawUDP(t, nw.router, from, to, inner, false)

	var packets []packet
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if packets, err = recv.snapshot(); err != nil || len(packets) > 0 {
			break
		}
	}
	time.Sleep(50 * time.Millisecond) // give a wrongly accepted datagram time to show up
	packets, err = recv.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if len(packets) != 1 {
		t.Fatalf("backend socket received %d datagrams, want only the one with the right checksum", len(packets))
	}
	p := packets[0]
	if p.err != nil || p.backend != 0 || p.outer != from || p.inner.src != netip.MustParseAddrPort("10.100.1.2:40000") ||
		datagramNumber(p.inner.payload) != 7 || len(p.inner.badSum) != 0 {
		t.Errorf("received %+v, want datagram #7 from 10.100.1.2:40000 via %v, intact", p, from)
	}
	st, err := readUDPStats(nw.backends[0])
	if err != nil {
		t.Fatal(err)
	}
	if st.InCsumErrors != 1 || st.InDatagrams != 1 {
		t.Errorf("backend1 kernel: InCsumErrors %d, InDatagrams %d; want 1 and 1", st.InCsumErrors, st.InDatagrams)
	}
}

// gopacketUDP builds a client packet with gopacket, independently of the
// parser under test.
func gopacketUDP(t *testing.T, src, dst netip.AddrPort, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 63, Protocol: layers.IPProtocolUDP, Flags: layers.IPv4DontFragment,
		SrcIP: net.IP(src.Addr().AsSlice()), DstIP: net.IP(dst.Addr().AsSlice())}
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gopacketSYN(t *testing.T, src, dst netip.AddrPort) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 63, Protocol: layers.IPProtocolTCP,
		SrcIP: net.IP(src.Addr().AsSlice()), DstIP: net.IP(dst.Addr().AsSlice())}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), SYN: true, Seq: 1, Window: 64240}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParseInner(t *testing.T) {
	client := netip.MustParseAddrPort("10.100.1.2:40000")
	dnsVIP := netip.MustParseAddrPort("192.0.2.10:53")
	webVIP := netip.MustParseAddrPort("192.0.2.10:80")
	udp := gopacketUDP(t, client, dnsVIP, []byte("hello"))
	syn := gopacketSYN(t, client, webVIP)
	flip := func(b []byte, off int) []byte {
		c := slices.Clone(b)
		c[off] ^= 0x10
		return c
	}
	for _, c := range []struct {
		name    string
		pkt     []byte
		proto   uint8
		dst     netip.AddrPort
		syn     bool
		payload string
		badSum  []string
		err     bool
	}{
		{name: "udp datagram", pkt: udp, proto: unix.IPPROTO_UDP, dst: dnsVIP, payload: "hello"},
		{name: "tcp syn", pkt: syn, proto: unix.IPPROTO_TCP, dst: webVIP, syn: true},
		{name: "corrupt udp payload", pkt: flip(udp, len(udp)-1), proto: unix.IPPROTO_UDP, dst: dnsVIP, payload: "hell\x7f", badSum: []string{"udp"}},
		{name: "corrupt ip ttl", pkt: flip(udp, 8), proto: unix.IPPROTO_UDP, dst: dnsVIP, payload: "hello", badSum: []string{"ipv4 header"}},
		{name: "corrupt tcp window", pkt: flip(syn, 20+14), proto: unix.IPPROTO_TCP, dst: webVIP, syn: true, badSum: []string{"tcp"}},
		{name: "truncated", pkt: udp[:len(udp)-1], err: true},
		{name: "ipv6", pkt: append([]byte{0x60}, make([]byte, 39)...), err: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseInner(c.pkt)
			if c.err {
				if err == nil {
					t.Errorf("parsed %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.proto != c.proto || got.src != client || got.dst != c.dst || got.syn != c.syn ||
				string(got.payload) != c.payload || !slices.Equal(got.badSum, c.badSum) {
				t.Errorf("parsed proto %d %v -> %v syn=%t payload %q bad %v; want proto %d %v -> %v syn=%t payload %q bad %v",
					got.proto, got.src, got.dst, got.syn, got.payload, got.badSum, c.proto, client, c.dst, c.syn, c.payload, c.badSum)
			}
		})
	}
}
