// Package quickstart is the demonstration behind `sluice quickstart`: it
// builds a throwaway topology of network namespaces (client, router, one LB
// node, three backends), runs Sluice's XDP load balancer on the LB node,
// sends real kernel traffic from the client to a VIP, and checks what the
// backends received against the balancer's own answer and against
// independent expectations.
//
// Nothing leaves the namespaces: the addresses exist only on their veths
// and the VIP is in TEST-NET-1. The namespaces are deleted when Run
// returns, whatever happened.
package quickstart

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/sluice-dp/sluice/dataplane/lb"
	"github.com/sluice-dp/sluice/sim/topo"
)

// The VIP's two services.
const (
	vipUDPPort = 53
	vipTCPPort = 80
)

// seed is the LB's hash seed. Any value works; LB nodes of one service
// share it so that each sends a flow to the same backend.
const seed = 0x5eed

// Options configure a run; the zero value is the standard demo.
type Options struct {
	// Mode is how the LB program is attached: lb.Native (default) or
	// lb.Generic.
	Mode lb.Mode
	// UDPFlows is the number of UDP datagrams, each from its own source
	// port. Default 300.
	UDPFlows int
	// TCPFlows is the number of TCP connection attempts. Default 100.
	TCPFlows int
	// Wait bounds how long the backends may take to receive everything.
	// Default 5 s.
	Wait time.Duration
	// Progress receives a line per step; nil discards them.
	Progress io.Writer
}

func (o Options) withDefaults() (Options, error) {
	if o.Mode != lb.Native && o.Mode != lb.Generic {
		return o, fmt.Errorf("quickstart: unknown xdp mode %v", o.Mode)
	}
	if o.UDPFlows < 0 || o.TCPFlows < 0 || o.Wait < 0 {
		return o, errors.New("quickstart: negative flow count or wait")
	}
	if o.UDPFlows == 0 {
		o.UDPFlows = 300
	}
	if o.TCPFlows == 0 {
		o.TCPFlows = 100
	}
	if o.Wait == 0 {
		o.Wait = 5 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o, nil
}

// Result is what a run saw. Run fills it as far as it got, even when it
// returns an error.
type Result struct {
	// Prefix is the topology's run prefix, the start of its namespaces'
	// names.
	Prefix string
	// Mode is how the LB program was attached.
	Mode lb.Mode
	// Links describe the topology, one line per veth link.
	Links []string
	// VIP, Client and LB are the VIP address, the client's address and
	// the LB node's address (the outer source of GUE).
	VIP, Client, LB netip.Addr
	// SentUDP and SentTCP are the datagrams and connection attempts the
	// client made, each a flow of its own.
	SentUDP, SentTCP int
	// Backends are in the order of their names.
	Backends []BackendResult
	// Counters are the LB program's counters after the traffic, before
	// the consistency lookups (which run the program too).
	Counters map[string]uint64
	// Checks are the verdicts; the run passed when all are OK.
	Checks []Check
}

// BackendResult is what one backend received.
type BackendResult struct {
	// Name is the backend's node name.
	Name string
	// Addr is its address, the GUE destination.
	Addr netip.Addr
	// Weight is its weight in both VIPs.
	Weight uint32
	// Packets are the GUE datagrams its socket received.
	Packets int
	// UDPFlows and TCPFlows are the distinct client flows among them.
	UDPFlows, TCPFlows int
	// Share is its part of all flows; WeightShare what its weight asks.
	Share, WeightShare float64
	// Delivered, CsumErrors and BufferErrors are the backend kernel's UDP
	// InDatagrams, InCsumErrors and RcvbufErrors: datagrams it handed to
	// a socket, and datagrams it dropped for a bad checksum or a full
	// buffer before the socket saw them.
	Delivered, CsumErrors, BufferErrors uint64
}

// Check is one verdict of the run.
type Check struct {
	// Name says what is checked, as a statement that should hold.
	Name string
	// OK is whether it held.
	OK bool
	// Detail gives the numbers, and the first offenders when it failed.
	Detail string
}

// OK reports whether the run ran and every check passed.
func (r *Result) OK() bool {
	if len(r.Checks) == 0 {
		return false
	}
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// Failed returns the checks that did not pass.
func (r *Result) Failed() []Check {
	var f []Check
	for _, c := range r.Checks {
		if !c.OK {
			f = append(f, c)
		}
	}
	return f
}

// Run builds the topology, loads and attaches the LB, sends the traffic,
// collects what the backends received and checks it. An error means the
// demo could not run (setup failed, ctx cancelled); failed checks are in
// the Result. The namespaces are gone when Run returns, also after an
// error or a panic.
func Run(ctx context.Context, opts Options) (res *Result, err error) {
	opts, err = opts.withDefaults()
	if err != nil {
		return nil, err
	}
	res = &Result{Mode: opts.Mode, VIP: vipAddr, Client: clientAddr(), LB: lbAddr()}
	p := &progress{w: opts.Progress, total: 7}

	t, err := topo.New()
	if err != nil {
		return res, err
	}
	res.Prefix = t.Prefix()
	defer func() {
		if cerr := t.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("delete topology %s: %w", t.Prefix(), cerr))
		}
	}()
	nw, err := build(t)
	if err != nil {
		return res, fmt.Errorf("build topology: %w", err)
	}
	for _, l := range nw.links {
		res.Links = append(res.Links, describe(l))
	}
	p.step("topology %s: namespaces client, router, lb and backend1-%d, %d veth links",
		t.Prefix(), len(nw.backends), len(nw.links))
	if err := ctx.Err(); err != nil {
		return res, err
	}

	bal, err := startLB(nw, opts.Mode)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, bal.close()) }()
	p.step("lb: VIP %v:%d/udp and %v:%d/tcp -> %d backends, weights %v; attached to lb/%s in %v mode",
		vipAddr, vipUDPPort, vipAddr, vipTCPPort, len(nw.backends), backendWeights, nw.lbLink.B.Iface, opts.Mode)

	recv, err := listen(nw.backends)
	if err != nil {
		return res, err
	}
	defer recv.close()
	p.step("backends: a UDP socket on :%d in each, reading GUE", guePort)
	if err := ctx.Err(); err != nil {
		return res, err
	}

	var sent clientTraffic
	defer sent.close()
	sentAt := time.Now()
	if err := sent.sendUDP(nw.client, opts.UDPFlows); err != nil {
		return res, fmt.Errorf("client: %w", err)
	}
	res.SentUDP = len(sent.udp)
	p.step("client %v: sent %d UDP datagrams to %v:%d, each from its own source port", clientAddr(), res.SentUDP, vipAddr, vipUDPPort)
	if err := sent.sendSYN(nw.client, opts.TCPFlows); err != nil {
		return res, fmt.Errorf("client: %w", err)
	}
	res.SentTCP = len(sent.tcp)
	p.step("client %v: started %d TCP connections to %v:%d (only the SYNs matter)", clientAddr(), res.SentTCP, vipAddr, vipTCPPort)

	packets, err := collect(ctx, recv, &sent, sentAt, opts.Wait, p)
	if err != nil {
		return res, err
	}
	counters, err := bal.lb.Counters()
	if err != nil {
		return res, fmt.Errorf("read lb counters: %w", err)
	}
	res.Counters = counters.Stats
	if err := res.analyse(nw, bal.lb, &sent, packets); err != nil {
		return res, err
	}
	p.step("checked %d packets against the client's flows, lb.Lookup and the backends' kernel counters: %d of %d checks passed",
		len(packets), len(res.Checks)-len(res.Failed()), len(res.Checks))
	return res, nil
}

// balancer is the loaded LB and where it is attached.
type balancer struct {
	lb  *lb.LB
	att *lb.Attachment
}

func (b *balancer) close() error {
	var errs []error
	if b.att != nil {
		errs = append(errs, b.att.Close())
	}
	errs = append(errs, b.lb.Close())
	return errors.Join(errs...)
}

// startLB loads the program, configures the two VIPs and attaches it to
// the LB node's interface.
func startLB(n *network, mode lb.Mode) (_ *balancer, err error) {
	cfg := lb.Config{
		Seed: seed,
		// The LB node's own address and its next hop: every
		// encapsulated packet goes back out to the router.
		SourceV4:   n.lbLink.B.Addr4(),
		GatewayMAC: n.lbLink.A.MAC,
	}
	l, err := lb.Load(lb.Options{}, cfg)
	if err != nil {
		return nil, fmt.Errorf("load lb: %w", err)
	}
	b := &balancer{lb: l}
	defer func() {
		if err != nil {
			err = errors.Join(err, b.close())
		}
	}()
	var backends []lb.Backend
	for i, w := range backendWeights {
		backends = append(backends, lb.Backend{Addr: backendAddr(i), Weight: w})
	}
	for _, v := range vips() {
		if err := l.AddVIP(v, lb.VIPOptions{}); err != nil {
			return nil, fmt.Errorf("add vip %v: %w", v, err)
		}
		if err := l.SetBackends(v, backends); err != nil {
			return nil, fmt.Errorf("set backends of vip %v: %w", v, err)
		}
	}
	if mode == lb.Native {
		// The LB bounces its packets with XDP_TX out of its veth. In
		// native mode veth delivers such frames to the other end only if
		// that end runs an XDP program itself (or has GRO on); without
		// one they are dropped and counted as xdp_tx_errors. A program
		// that passes everything is enough. Generic mode transmits
		// ordinary socket buffers and needs nothing.
		if err := n.router.AttachXDPPass(n.lbLink.A.Iface); err != nil {
			return nil, err
		}
	}
	err = n.lb.Do(func() error {
		// Interface names and indexes are per namespace.
		b.att, err = l.Attach(n.lbLink.B.Iface, mode)
		return err
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

func vips() []lb.VIP {
	return []lb.VIP{
		{Addr: vipAddr, Port: vipUDPPort, Proto: lb.UDP},
		{Addr: vipAddr, Port: vipTCPPort, Proto: lb.TCP},
	}
}

// collect waits until every datagram and every connection attempt has
// reached a backend, or wait has passed, then closes the client's
// sockets and waits for the backends to go quiet, so that the LB's counters
// and the packets received describe the same traffic.
func collect(ctx context.Context, recv *receiver, sent *clientTraffic, start time.Time, wait time.Duration, p *progress) ([]packet, error) {
	deadline := time.Now().Add(wait)
	want := len(sent.udp) + len(sent.tcp)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	lastReport := time.Now()
	for {
		packets, err := recv.snapshot()
		if err != nil {
			return nil, err
		}
		got := flowsSeen(packets)
		if got >= want || time.Now().After(deadline) {
			p.step("backends: %d of %d flows arrived, %v after the first was sent", got, want, time.Since(start).Round(100*time.Microsecond))
			break
		}
		if time.Since(lastReport) > time.Second {
			fmt.Fprintf(p.w, "      ... %d of %d flows so far\n", got, want)
			lastReport = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
	// A SYN-SENT socket retransmits after a second; closing it stops that.
	sent.close()
	// Quiet: no new packet for 100 ms.
	prev, quiet := -1, 0
	for quiet < 10 {
		packets, err := recv.snapshot()
		if err != nil {
			return nil, err
		}
		if len(packets) == prev {
			quiet++
		} else {
			prev, quiet = len(packets), 0
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
	packets, err := recv.snapshot()
	return packets, err
}

// flowsSeen counts the distinct client flows among the packets.
func flowsSeen(packets []packet) int {
	seen := map[flowKey]bool{}
	for _, p := range packets {
		if p.err == nil {
			seen[flowKey{p.inner.proto, p.inner.src}] = true
		}
	}
	return len(seen)
}

// flowKey identifies a client flow: the VIP side is fixed per protocol.
type flowKey struct {
	proto uint8
	src   netip.AddrPort
}

// progress numbers the steps of a run.
type progress struct {
	w     io.Writer
	n     int
	total int
}

func (p *progress) step(format string, args ...any) {
	p.n++
	fmt.Fprintf(p.w, "[%d/%d] %s\n", p.n, p.total, fmt.Sprintf(format, args...))
}
