package traffic

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
	"github.com/sluice-dp/sluice/sim/topo"
)

// net3 is the test topology: client — router — server, every address
// inside the test's own namespaces.
type net3 struct {
	client, router, server *topo.Node
	// left is client<->router (A is the client's end), right is
	// router<->server (A is the router's end).
	left, right *topo.Link
}

var (
	clientAddr4 = netip.MustParseAddr("10.100.1.2")
	serverAddr4 = netip.MustParseAddr("10.100.2.2")
	clientAddr6 = netip.MustParseAddr("fd00:100:1::2")
	serverAddr6 = netip.MustParseAddr("fd00:100:2::2")
)

// newNet3 builds the topology and closes it when the test ends, whether
// it passed, failed or panicked. Sockets a test opens must be closed by
// cleanups registered later (which run first), or they keep namespaces
// alive past Close.
func newNet3(t *testing.T) *net3 {
	t.Helper()
	testenv.RequirePriv(t)
	tp, err := topo.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Errorf("close topology: %v", err)
		}
	})
	var n net3
	for _, p := range []struct {
		node **topo.Node
		name string
	}{{&n.client, "client"}, {&n.router, "router"}, {&n.server, "server"}} {
		if *p.node, err = tp.AddNode(p.name); err != nil {
			t.Fatal(err)
		}
	}
	pfx := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	mac := func(last byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 0, last} }
	if n.left, err = tp.AddLink(
		topo.LinkEnd{Node: n.client, MAC: mac(0x12), Addrs: pfx("10.100.1.2/24", "fd00:100:1::2/64")},
		topo.LinkEnd{Node: n.router, MAC: mac(0x11), Addrs: pfx("10.100.1.1/24", "fd00:100:1::1/64")},
	); err != nil {
		t.Fatal(err)
	}
	if n.right, err = tp.AddLink(
		topo.LinkEnd{Node: n.router, MAC: mac(0x21), Addrs: pfx("10.100.2.1/24", "fd00:100:2::1/64")},
		topo.LinkEnd{Node: n.server, MAC: mac(0x22), Addrs: pfx("10.100.2.2/24", "fd00:100:2::2/64")},
	); err != nil {
		t.Fatal(err)
	}
	for _, l := range []*topo.Link{n.left, n.right} {
		if err := l.PinNeighbors(); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.router.EnableForwarding(); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		node *topo.Node
		dst  string
		via  string
	}{
		{n.client, "0.0.0.0/0", "10.100.1.1"},
		{n.client, "::/0", "fd00:100:1::1"},
		{n.server, "0.0.0.0/0", "10.100.2.1"},
		{n.server, "::/0", "fd00:100:2::1"},
	} {
		if err := r.node.AddRoute(topo.Route{Dst: netip.MustParsePrefix(r.dst), Via: netip.MustParseAddr(r.via)}); err != nil {
			t.Fatal(err)
		}
	}
	// What the scenario runner does for real-traffic nodes: complete
	// checksums on the wire (see the package documentation).
	if err := n.client.SetTxChecksum(n.left.A.Iface, false); err != nil {
		t.Fatal(err)
	}
	if err := n.server.SetTxChecksum(n.right.B.Iface, false); err != nil {
		t.Fatal(err)
	}
	return &n
}

// capture starts a capture stopped at the end of the test at the latest.
func capture(t *testing.T, node *topo.Node, iface string) *Capture {
	t.Helper()
	c, err := StartCapture(node, iface)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	return c
}

func stopCapture(t *testing.T, c *Capture) []Frame {
	t.Helper()
	frames, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	return frames
}

// forwarded returns what a router does to frame's IP packet: TTL or hop
// limit one less and, for IPv4, the header checksum recomputed. It is
// computed here from RFC 791/8200 rather than from anything the package
// does.
func forwarded(t *testing.T, frame []byte) []byte {
	t.Helper()
	ip := bytes.Clone(pkttest.IPPacket(frame))
	switch ip[0] >> 4 {
	case 4:
		ip[8]--
		ihl := int(ip[0]&0x0f) * 4
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], pkttest.Checksum(ip[:ihl]))
	case 6:
		ip[7]--
	default:
		t.Fatalf("not an IP packet: % x", ip[:1])
	}
	return ip
}

func TestInjectCapture(t *testing.T) {
	n := newNet3(t)
	clientMAC, routerLeftMAC := n.left.A.MAC, n.left.B.MAC
	routerRightMAC, serverMAC := n.right.A.MAC, n.right.B.MAC

	// Sources from TEST-NET-2 / the documentation prefix: the server's
	// answers (port unreachable, RST) die at the router, which has no
	// route back, and never leave the test's namespaces.
	_, udp4, err := Craft(FlowSpec{Kind: KindUDP, Src: netip.MustParsePrefix("198.51.100.0/24"),
		Dst: netip.AddrPortFrom(serverAddr4, 9), Flows: 20, PacketsPerFlow: 2, Payload: 64, DF: true, Seed: 1},
		clientMAC, routerLeftMAC)
	if err != nil {
		t.Fatal(err)
	}
	_, syn6, err := Craft(FlowSpec{Kind: KindTCPSYN, Src: netip.MustParsePrefix("2001:db8:1::/64"),
		Dst: netip.AddrPortFrom(serverAddr6, 9), Flows: 10, Seed: 2}, clientMAC, routerLeftMAC)
	if err != nil {
		t.Fatal(err)
	}
	// A tagged frame goes no further than the router (which has no VLAN
	// device), but its capture there shows whether the tag the kernel
	// strips on receipt is put back.
	_, tagged, err := Craft(FlowSpec{Kind: KindICMPEcho, Src: netip.MustParsePrefix("198.51.100.1/32"),
		Dst: netip.AddrPortFrom(serverAddr4, 0), Flows: 1, VLAN: 100, Seed: 3}, clientMAC, routerLeftMAC)
	if err != nil {
		t.Fatal(err)
	}
	routed := slices.Concat(udp4, syn6)
	all := slices.Concat(routed, tagged)

	start := time.Now()
	atClient := capture(t, n.client, n.left.A.Iface)
	atRouter := capture(t, n.router, n.left.B.Iface)
	atServer := capture(t, n.server, n.right.B.Iface)
	if atServer.Node() != "server" || atServer.Iface() != "router" {
		t.Errorf("capture names itself %s/%s, want server/router", atServer.Node(), atServer.Iface())
	}
	sent, err := Inject(n.client, n.left.A.Iface, all)
	if err != nil || sent != len(all) {
		t.Fatalf("Inject sent %d of %d: %v", sent, len(all), err)
	}
	client, router, server := stopCapture(t, atClient), stopCapture(t, atRouter), stopCapture(t, atServer)
	end := time.Now()

	// exact checks that got holds each frame of want exactly once, with
	// the right direction. It does not insist on the order: the kernel
	// may hand frames to a capture out of order when the sender's thread
	// moves to another CPU while the receive queue is being drained.
	exact := func(where string, got []Frame, want [][]byte, outgoing bool) {
		t.Helper()
		var matched [][]byte
		for _, f := range got {
			for _, w := range want {
				if bytes.Equal(f.Data, w) {
					matched = append(matched, f.Data)
					if f.Outgoing != outgoing || f.Len != len(f.Data) {
						t.Errorf("%s: frame seen with Outgoing=%v Len=%d, want Outgoing=%v Len=%d", where, f.Outgoing, f.Len, outgoing, len(f.Data))
					}
					if f.Time.Before(start) || f.Time.After(end) {
						t.Errorf("%s: frame time %v outside the test's %v..%v", where, f.Time, start, end)
					}
					break
				}
			}
		}
		if !sameFrames(matched, want) {
			t.Errorf("%s: captured %d frames equal to injected ones, want each of the %d exactly once", where, len(matched), len(want))
		}
	}
	exact("client (sender side)", client, all, true)
	exact("router (receiver side, VLAN tag restored)", router, all, false)

	// At the server: the router changed the MACs, the TTL and the IPv4
	// header checksum, nothing else.
	var got [][]byte
	for _, f := range server {
		eth := pkttest.Decode(f.Data).Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		if f.Outgoing || eth.EthernetType == layers.EthernetTypeARP {
			continue
		}
		ip := pkttest.IPPacket(f.Data)
		for _, w := range routed {
			if bytes.Equal(ip, forwarded(t, w)) {
				got = append(got, ip)
				if !bytes.Equal(eth.SrcMAC, routerRightMAC) || !bytes.Equal(eth.DstMAC, serverMAC) {
					t.Errorf("forwarded frame %v -> %v, want %v -> %v", eth.SrcMAC, eth.DstMAC, routerRightMAC, serverMAC)
				}
				if ip[0]>>4 == 4 && pkttest.Checksum(ip[:20]) != 0 {
					t.Errorf("forwarded IPv4 header checksum does not verify: % x", ip[:20])
				}
				break
			}
		}
	}
	var want [][]byte
	for _, w := range routed {
		want = append(want, forwarded(t, w))
	}
	if !sameFrames(got, want) {
		t.Errorf("server saw %d of %d forwarded packets as expected (of %d frames captured)", len(got), len(want), len(server))
	}
	for i, f := range server {
		if f.Time.Before(start) || f.Time.After(end) {
			t.Errorf("server frame %d at %v, outside the test's %v..%v", i, f.Time, start, end)
		}
	}

	// Stop is idempotent.
	again, err := atServer.Stop()
	if err != nil || len(again) != len(server) {
		t.Errorf("second Stop: %d frames, %v; want the same %d frames", len(again), err, len(server))
	}

	testWritePcap(t, client)
}

// sameFrames reports whether a and b hold the same frames, in any order.
func sameFrames(a, b [][]byte) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, bytes.Compare)
	slices.SortFunc(b, bytes.Compare)
	return slices.EqualFunc(a, b, bytes.Equal)
}

// testWritePcap checks the file's layout, and has tshark read it when it is
// installed.
func testWritePcap(t *testing.T, frames []Frame) {
	path := filepath.Join(t.TempDir(), "capture.pcap")
	if err := WritePcap(path, frames); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	size := 24
	for _, f := range frames {
		size += 16 + len(f.Data)
	}
	if len(b) != size || binary.LittleEndian.Uint32(b) != 0xa1b23c4d {
		t.Fatalf("pcap of %d frames has %d bytes and magic %#x, want %d bytes and the nanosecond magic", len(frames), len(b), binary.LittleEndian.Uint32(b), size)
	}

	if _, err := exec.LookPath("tshark"); err != nil {
		t.Log("tshark not installed: pcap not checked by a third-party reader")
		return
	}
	out, err := exec.Command("tshark", "-r", path, "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len").Output()
	if err != nil {
		t.Fatalf("tshark -r: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(frames) {
		t.Fatalf("tshark read %d packets, want %d", len(lines), len(frames))
	}
	for i, l := range lines {
		epoch, length, _ := strings.Cut(l, "\t")
		sec, frac, _ := strings.Cut(epoch, ".")
		s, err1 := strconv.ParseInt(sec, 10, 64)
		ns, err2 := strconv.ParseInt((frac + "000000000")[:9], 10, 64)
		ln, err3 := strconv.Atoi(length)
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("tshark line %q does not parse", l)
		}
		if got := time.Unix(s, ns); !got.Equal(frames[i].Time) || ln != frames[i].Len {
			t.Errorf("tshark packet %d: time %v length %d, want %v and %d", i, got, ln, frames[i].Time, frames[i].Len)
		}
	}
}

// TestCaptureLoopback checks that a packet on lo, which the kernel shows
// once leaving and once arriving, is recorded once.
func TestCaptureLoopback(t *testing.T) {
	n := newNet3(t)
	c := capture(t, n.server, "lo")
	var conn *net.UDPConn
	if err := n.server.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg := []byte("loopback once")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, f := range stopCapture(t, c) {
		// The port-unreachable error quotes the datagram too; count
		// only the datagram itself.
		ip, ok := pkttest.Decode(f.Data).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if ok && ip.Protocol == layers.IPProtocolUDP && bytes.HasSuffix(f.Data, msg) {
			count++
		}
	}
	if count != 1 {
		t.Errorf("datagram captured %d times on lo, want 1", count)
	}
}

func TestCaptureErrors(t *testing.T) {
	n := newNet3(t)
	if _, err := StartCapture(n.client, "nosuch0"); err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Errorf("capture on a missing interface: %v", err)
	}
	if sent, err := Inject(n.client, "nosuch0", [][]byte{make([]byte, 60)}); err == nil || sent != 0 {
		t.Errorf("inject on a missing interface: sent %d, %v", sent, err)
	}
	// Larger than the MTU: refused by the kernel, reported with the
	// frame's number.
	frames := [][]byte{make([]byte, 60), make([]byte, 9000)}
	copy(frames[0], n.left.B.MAC)
	if sent, err := Inject(n.client, n.left.A.Iface, frames); err == nil || sent != 1 || !strings.Contains(err.Error(), "frame 1") {
		t.Errorf("inject of an oversized frame: sent %d, %v; want 1 sent and an error about frame 1", sent, err)
	}
}

// tcpSYNs returns the source ports of TCP SYNs (without ACK) arriving in
// frames to port, and checks they crossed the router.
func tcpSYNs(t *testing.T, frames []Frame, port uint16) []uint16 {
	var ports []uint16
	for _, f := range frames {
		pkt := pkttest.Decode(f.Data)
		tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if f.Outgoing || !ok || !tcp.SYN || tcp.ACK || uint16(tcp.DstPort) != port {
			continue
		}
		if ip, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4); !ok || ip.TTL != 63 || !ip.SrcIP.Equal(clientAddr4.AsSlice()) {
			t.Errorf("SYN not from the client through the router: %v", pkt)
		}
		ports = append(ports, uint16(tcp.SrcPort))
	}
	return ports
}

func TestHTTPLoad(t *testing.T) {
	n := newNet3(t)
	addr := netip.AddrPortFrom(serverAddr4, 8080)
	stop, err := ServeHTTP(n.server, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	c := capture(t, n.server, n.right.B.Iface)

	spec := HTTPSpec{URL: "http://" + addr.String() + "/", Requests: 1000, Connections: 100, Timeout: 5 * time.Second}
	res, err := HTTPLoad(context.Background(), n.client, spec)
	if err != nil {
		t.Fatal(err)
	}
	frames := stopCapture(t, c)
	t.Logf("1000 requests in %v: p50 %v p90 %v p99 %v max %v", res.Elapsed,
		res.Percentile(50), res.Percentile(90), res.Percentile(99), res.Percentile(100))

	if res.OK != 1000 || res.Failed != 0 || len(res.Errors) != 0 {
		t.Errorf("OK %d Failed %d Errors %v, want 1000 OK", res.OK, res.Failed, res.Errors)
	}
	if len(res.Status) != 1 || res.Status[200] != 1000 {
		t.Errorf("Status %v, want 1000 × 200", res.Status)
	}
	if len(res.ServedBy) != 1 || res.ServedBy["server"] != 1000 {
		t.Errorf("ServedBy %v, want server: 1000", res.ServedBy)
	}
	if len(res.Latencies) != 1000 {
		t.Errorf("%d latencies, want 1000", len(res.Latencies))
	}
	p := []time.Duration{res.Percentile(0), res.Percentile(50), res.Percentile(90), res.Percentile(99), res.Percentile(100)}
	if p[0] <= 0 || !slices.IsSorted(p) || p[4] > spec.Timeout || p[4] > res.Elapsed {
		t.Errorf("percentiles 0/50/90/99/100 = %v: want positive, ordered, at most the timeout and the run's %v", p, res.Elapsed)
	}
	// Keep-alive: every connection carried its share. The client's own
	// count and the SYNs that reached the server must both say 100.
	if res.Dials != 100 {
		t.Errorf("client dialed %d connections, want 100", res.Dials)
	}
	syns := tcpSYNs(t, frames, 8080)
	slices.Sort(syns)
	if len(syns) != 100 || len(slices.Compact(syns)) != 100 {
		t.Errorf("server saw %d SYNs from %d ports, want 100 from 100", len(syns), len(slices.Compact(syns)))
	}

	// A stopped server refuses; stop can be called again.
	if err := stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	if err := stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
	res, err = HTTPLoad(context.Background(), n.client, HTTPSpec{URL: spec.URL, Requests: 4, Connections: 2, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Failed != 4 || res.Errors["connection refused"] != 4 {
		t.Errorf("after stop: OK %d Failed %d Errors %v, want 4 refused", res.OK, res.Failed, res.Errors)
	}
}

func TestHTTPStream(t *testing.T) {
	n := newNet3(t)
	addr := netip.AddrPortFrom(serverAddr4, 8080)
	stop, err := ServeHTTP(n.server, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	base := "http://" + addr.String()

	// Read by hand, to see the chunks arrive over time.
	var dials atomic.Int64
	client := &http.Client{Transport: &http.Transport{DialContext: nodeDialer(n.client, &dials)}}
	start := time.Now()
	resp, err := client.Get(base + "/stream?seconds=2")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !slices.Equal(resp.TransferEncoding, []string{"chunked"}) {
		t.Errorf("status %d transfer encoding %v, want 200 chunked", resp.StatusCode, resp.TransferEncoding)
	}
	sc := bufio.NewScanner(resp.Body)
	var lines []string
	var firstAt time.Duration
	for sc.Scan() {
		if lines = append(lines, sc.Text()); len(lines) == 1 {
			firstAt = time.Since(start)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	total := time.Since(start)
	if len(lines) == 0 || lines[0] != "served-by: server" {
		t.Fatalf("stream starts %q, want served-by: server", lines)
	}
	// 2 s at one chunk per 100 ms: about 20 chunks.
	if chunks := len(lines) - 1; chunks < 15 || chunks > 21 {
		t.Errorf("%d chunks in 2 s, want about 20", chunks)
	}
	if firstAt > 500*time.Millisecond || total < 1900*time.Millisecond || total > 3*time.Second {
		t.Errorf("first line after %v, end after %v: want the first at once and the end after about 2 s", firstAt, total)
	}

	// Through HTTPLoad: two concurrent streams of 1 s take about 1 s.
	res, err := HTTPLoad(context.Background(), n.client, HTTPSpec{URL: base + "/stream?seconds=1", Requests: 2, Connections: 2, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 2 || res.ServedBy["server"] != 2 || res.Percentile(0) < 950*time.Millisecond || res.Elapsed > 1900*time.Millisecond {
		t.Errorf("two 1 s streams: OK %d ServedBy %v shortest %v elapsed %v", res.OK, res.ServedBy, res.Percentile(0), res.Elapsed)
	}
	// A bad duration is the client's error, 400.
	res, err = HTTPLoad(context.Background(), n.client, HTTPSpec{URL: base + "/stream?seconds=forever", Requests: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 0 || res.Failed != 1 || res.Status[400] != 1 {
		t.Errorf("bad seconds: OK %d Failed %d Status %v, want one 400", res.OK, res.Failed, res.Status)
	}

	// stop ends a stream that is still running, and waits for it.
	go client.Get(base + "/stream?seconds=30")
	time.Sleep(200 * time.Millisecond)
	stopStart := time.Now()
	if err := stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	if d := time.Since(stopStart); d > time.Second {
		t.Errorf("stop with a running stream took %v", d)
	}
}

func TestHTTPLoadSpecErrors(t *testing.T) {
	for _, spec := range []HTTPSpec{
		{URL: "https://10.0.0.1/", Requests: 1},
		{URL: "http://server.example/", Requests: 1},
		{URL: "http://10.0.0.1/", Requests: 0},
		{URL: "http://10.0.0.1/", Requests: 1, Connections: -1},
		{URL: "http://10.0.0.1/", Requests: 1, Timeout: -time.Second},
	} {
		// The node is never used: the spec is rejected first.
		if _, err := HTTPLoad(context.Background(), nil, spec); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%+v: err %v, want ErrInvalidSpec", spec, err)
		}
	}
}

func TestUDPRequests(t *testing.T) {
	n := newNet3(t)
	addr := netip.AddrPortFrom(serverAddr6, 7007)
	stop, err := ServeUDPEcho(n.server, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	c := capture(t, n.server, n.right.B.Iface)

	const count = 300
	res, err := UDPRequests(context.Background(), n.client, addr, count, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	frames := stopCapture(t, c)
	if res.Sent != count || res.Answered != count || res.AnsweredBy["server"] != count || len(res.Latencies) != count {
		t.Errorf("Sent %d Answered %d AnsweredBy %v with %d latencies, want %d answered by server", res.Sent, res.Answered, res.AnsweredBy, len(res.Latencies), count)
	}
	if p := res.Percentile(100); p <= 0 || p > 2*time.Second {
		t.Errorf("slowest reply after %v", p)
	}
	var ports []uint16
	for i, s := range res.Sources {
		if s.Addr() != clientAddr6 {
			t.Errorf("request %d from %v, want the client's %v", i, s, clientAddr6)
		}
		if res.Responders[i] != "server" {
			t.Errorf("request %d answered by %q", i, res.Responders[i])
		}
		ports = append(ports, s.Port())
	}
	// What reached the server, read from the wire: one datagram per
	// request, each from its own port, through the router.
	var wire []uint16
	for _, f := range frames {
		pkt := pkttest.Decode(f.Data)
		udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if f.Outgoing || !ok || uint16(udp.DstPort) != addr.Port() {
			continue
		}
		if ip, ok := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6); !ok || ip.HopLimit != 63 {
			t.Errorf("datagram did not cross the router: %v", pkt)
		}
		wire = append(wire, uint16(udp.SrcPort))
	}
	slices.Sort(ports)
	slices.Sort(wire)
	if len(slices.Compact(slices.Clone(ports))) != count || !slices.Equal(ports, wire) {
		t.Errorf("%d distinct source ports reported, server saw %d datagrams from %v", len(slices.Compact(slices.Clone(ports))), len(wire), wire)
	}

	// Nobody listens here: every request is sent and none answered.
	res, err = UDPRequests(context.Background(), n.client, netip.AddrPortFrom(serverAddr6, 7008), 3, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 3 || res.Answered != 0 || !slices.Equal(res.Responders, []string{"", "", ""}) {
		t.Errorf("to a closed port: Sent %d Answered %d Responders %q", res.Sent, res.Answered, res.Responders)
	}

	// A cancelled context ends the wait at once.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	began := time.Now()
	if _, err := UDPRequests(ctx, n.client, netip.AddrPortFrom(serverAddr6, 7008), 2, 10*time.Second); err == nil {
		t.Error("cancelled run returned no error")
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Errorf("cancelled run took %v", d)
	}

	if err := stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	if err := stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
}

// TestServeErrors checks that a server that cannot listen says where.
func TestServeErrors(t *testing.T) {
	n := newNet3(t)
	// Not an address of the server.
	bad := netip.MustParseAddrPort("10.100.1.2:80")
	if _, err := ServeHTTP(n.server, bad); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%v in server", bad)) {
		t.Errorf("ServeHTTP on a foreign address: %v", err)
	}
	if _, err := ServeUDPEcho(n.server, bad); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%v in server", bad)) {
		t.Errorf("ServeUDPEcho on a foreign address: %v", err)
	}
}
