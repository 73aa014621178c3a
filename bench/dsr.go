package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"

	"github.com/sluice-dp/sluice/dataplane/agent"
	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/dataplane/lb"
	"github.com/sluice-dp/sluice/sim/topo"
	"github.com/sluice-dp/sluice/sim/traffic"
)

// DSROptions tune [CompareDSR]. The zero value asks for the defaults.
type DSROptions struct {
	// Rounds is the number of rounds; each runs the load once through the
	// load balancer and once directly, in alternating order. Default 9: single rounds
	// vary by a factor of two on a noisy two-CPU machine, the median less.
	Rounds int `json:"rounds"`
	// Requests is the number of requests of one load. Default 3000:
	// about a quarter of a second on the development machine.
	Requests int `json:"requests"`
	// Connections is the number of concurrent keep-alive connections of
	// one load. Default 8.
	Connections int `json:"connections"`
	// Mode is how the load balancer's XDP program is attached.
	Mode Mode `json:"lb_mode"`
}

func (o DSROptions) withDefaults() (DSROptions, error) {
	if o.Rounds == 0 {
		o.Rounds = 9
	}
	if o.Requests == 0 {
		o.Requests = 3000
	}
	if o.Connections == 0 {
		o.Connections = 8
	}
	if o.Rounds < 0 || o.Requests < 0 || o.Connections < 0 {
		return o, fmt.Errorf("dsr options: %d rounds, %d requests, %d connections", o.Rounds, o.Requests, o.Connections)
	}
	return o, nil
}

// DSRResult compares HTTP requests per second through the full direct
// server return path with the same client and server talking directly.
type DSRResult struct {
	Options DSROptions `json:"options"`
	// LBRPS and DirectRPS are requests per second (answered requests over
	// the load's wall-clock time) of each round.
	LBRPS     Stats `json:"lb_rps"`
	DirectRPS Stats `json:"direct_rps"`
	// Ratio is LB over direct within each round.
	Ratio Stats `json:"ratio"`
}

// Addresses of the DSR topology. They live only in the namespaces
// CompareDSR creates.
var (
	dsrVIP    = netip.MustParseAddrPort("192.0.2.10:80")
	dsrApp    = netip.MustParseAddrPort("10.100.21.2:8080")
	dsrPrefix = func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
)

// CompareDSR builds a throw-away topology, client → router → LB node →
// backend host → VM, and measures HTTP requests per second from the client
// to a VIP (the LB tunnels each request in GUE to the VM's host, whose
// agent decapsulates it and rewrites the VIP to the application's address,
// transparent mode; the reply goes from the VM through its host, whose agent
// gives it the VIP as source, and the router straight to the client) against
// the same client requesting the application's own address (client → router
// → host → VM, no LB, the agent passing everything untouched). Both loads
// hit the same server socket; rounds alternate which one goes first. Every
// request must succeed. The namespaces are deleted before CompareDSR returns.
func CompareDSR(ctx context.Context, opts DSROptions, progress io.Writer) (res DSRResult, err error) {
	if progress == nil {
		progress = io.Discard
	}
	if opts, err = opts.withDefaults(); err != nil {
		return res, err
	}
	res.Options = opts
	t, err := topo.New()
	if err != nil {
		return res, err
	}
	var closers []func() error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			err = errors.Join(err, closers[i]())
		}
		err = errors.Join(err, t.Close())
	}()
	nodes := map[string]*topo.Node{}
	for _, name := range []string{"client", "router", "lb1", "host1", "vm1"} {
		if nodes[name], err = t.AddNode(name); err != nil {
			return res, err
		}
	}
	links := map[string]*topo.Link{}
	for _, l := range []struct{ a, b, aAddr, bAddr string }{
		{"client", "router", "10.100.1.2/24", "10.100.1.1/24"},
		{"router", "lb1", "10.100.2.1/24", "10.100.2.2/24"},
		{"router", "host1", "10.100.11.1/24", "10.100.11.2/24"},
		{"host1", "vm1", "10.100.21.1/24", "10.100.21.2/24"},
	} {
		link, err := t.AddLink(
			topo.LinkEnd{Node: nodes[l.a], Addrs: []netip.Prefix{dsrPrefix(l.aAddr)}},
			topo.LinkEnd{Node: nodes[l.b], Addrs: []netip.Prefix{dsrPrefix(l.bAddr)}})
		if err != nil {
			return res, err
		}
		if err := link.PinNeighbors(); err != nil {
			return res, err
		}
		links[l.a+"-"+l.b] = link
	}
	for _, n := range []string{"router", "host1"} {
		if err := nodes[n].EnableForwarding(); err != nil {
			return res, err
		}
	}
	// Complete checksums from the client (the LB derives the outer GUE
	// checksum from the inner one) and from the VM, as a real NIC sends;
	// the same for both paths.
	if err := nodes["client"].SetTxChecksum("router", false); err != nil {
		return res, err
	}
	if err := nodes["vm1"].SetTxChecksum("host1", false); err != nil {
		return res, err
	}
	for _, r := range []struct{ node, dst, via string }{
		{"client", "0.0.0.0/0", "10.100.1.1"},
		{"router", "192.0.2.0/24", "10.100.2.2"},
		{"router", "10.100.21.0/24", "10.100.11.2"},
		{"lb1", "0.0.0.0/0", "10.100.2.1"},
		{"host1", "0.0.0.0/0", "10.100.11.1"},
		{"vm1", "0.0.0.0/0", "10.100.21.1"},
	} {
		if err := nodes[r.node].AddRoute(topo.Route{Dst: dsrPrefix(r.dst), Via: netip.MustParseAddr(r.via)}); err != nil {
			return res, err
		}
	}

	// The agent on the host's end of the VM's link, transparent mode: the
	// application listens on the VM's own address, so the direct path
	// reaches the very same socket.
	a, err := agent.Load(agent.Options{}, agent.Config{})
	if err != nil {
		return res, err
	}
	closers = append(closers, a.Close)
	if err := a.AddBackendAddr(dsrApp.Addr()); err != nil {
		return res, err
	}
	vip := agent.VIP{Addr: dsrVIP.Addr(), Port: dsrVIP.Port(), Proto: l4.TCP}
	if err := a.AddVIP(vip, agent.Transparent, dsrApp); err != nil {
		return res, err
	}
	err = nodes["host1"].Do(func() error {
		at, err := a.Attach("vm1", agent.AttachOptions{})
		if err == nil {
			closers = append(closers, at.Close)
		}
		return err
	})
	if err != nil {
		return res, fmt.Errorf("attach agent: %w", err)
	}
	stop, err := traffic.ServeHTTP(nodes["vm1"], dsrApp)
	if err != nil {
		return res, err
	}
	closers = append(closers, stop)

	// The load balancer on lb1's link to the router.
	lbEnd, routerEnd := links["router-lb1"].B, links["router-lb1"].A
	l, err := lb.Load(lb.Options{}, lb.Config{Seed: 1, SourceV4: lbEnd.Addr4(), GatewayMAC: routerEnd.MAC})
	if err != nil {
		return res, err
	}
	closers = append(closers, l.Close)
	lbVIP := lb.VIP{Addr: dsrVIP.Addr(), Port: dsrVIP.Port(), Proto: l4.TCP}
	if err := l.AddVIP(lbVIP, lb.VIPOptions{}); err != nil {
		return res, err
	}
	if err := l.SetBackends(lbVIP, []lb.Backend{{Addr: dsrApp.Addr(), Weight: 1}}); err != nil {
		return res, err
	}
	lbMode := attach.Native
	if opts.Mode == Generic {
		lbMode = attach.Generic
	} else if err := routerEnd.Node.AttachXDPPass(routerEnd.Iface); err != nil {
		// Native XDP_TX into a veth is delivered only to an end that
		// runs XDP itself.
		return res, err
	}
	err = nodes["lb1"].Do(func() error {
		at, err := l.Attach(lbEnd.Iface, lbMode)
		if err == nil {
			closers = append(closers, at.Close)
		}
		return err
	})
	if err != nil {
		return res, fmt.Errorf("attach lb: %w", err)
	}

	urls := []string{"http://" + dsrVIP.Addr().String() + "/", "http://" + dsrApp.String() + "/"}
	names := []string{"through lb", "direct"}
	load := func(url string, requests int) (float64, error) {
		r, err := traffic.HTTPLoad(ctx, nodes["client"], traffic.HTTPSpec{URL: url, Requests: requests, Connections: opts.Connections})
		if err != nil {
			return 0, err
		}
		if r.Failed > 0 || r.OK != requests {
			return 0, fmt.Errorf("%s: %d of %d requests failed (%v)", url, r.Failed, requests, r.Errors)
		}
		return float64(r.OK) / r.Elapsed.Seconds(), nil
	}
	// Warm-up: open the connections' paths and fill caches; discarded.
	for _, u := range urls {
		if _, err := load(u, opts.Requests/10+opts.Connections); err != nil {
			return res, fmt.Errorf("warm-up: %w", err)
		}
	}
	fmt.Fprintf(progress, "[dsr] http through lb vs direct (%s lb): %d rounds of %d requests over %d connections\n",
		opts.Mode, opts.Rounds, opts.Requests, opts.Connections)
	rps := make([][]float64, 2)
	var ratio []float64
	for r := range opts.Rounds {
		got := make([]float64, 2)
		for j := range 2 {
			i := j
			if r%2 == 1 {
				i = 1 - j
			}
			if got[i], err = load(urls[i], opts.Requests); err != nil {
				return res, fmt.Errorf("%s: %w", names[i], err)
			}
		}
		rps[0] = append(rps[0], got[0])
		rps[1] = append(rps[1], got[1])
		ratio = append(ratio, got[0]/got[1])
		fmt.Fprintf(progress, "      round %d/%d: %.0f req/s through lb, %.0f direct\n", r+1, opts.Rounds, got[0], got[1])
	}
	// Proof that the loads took the paths they are named after: the LB
	// encapsulated at least one packet per request made through it, and
	// the agent rewrote the VIP and the replies of those requests.
	lc, err := l.Counters()
	if err != nil {
		return res, err
	}
	ac, err := a.Counters()
	if err != nil {
		return res, err
	}
	viaLB := uint64(opts.Rounds*opts.Requests + opts.Requests/10 + opts.Connections)
	if lc.Stats["tx"] < viaLB || ac.Stats["deliver_transparent"] < viaLB || ac.Stats["reply_rewritten"] < viaLB {
		return res, fmt.Errorf("%d requests through the lb, but lb tx %d, agent deliver_transparent %d, reply_rewritten %d",
			viaLB, lc.Stats["tx"], ac.Stats["deliver_transparent"], ac.Stats["reply_rewritten"])
	}
	res.LBRPS, res.DirectRPS, res.Ratio = newStats(rps[0]), newStats(rps[1]), newStats(ratio)
	fmt.Fprintf(progress, "[dsr] %.0f req/s through lb, %.0f direct, ratio %.3f\n", res.LBRPS.Median, res.DirectRPS.Median, res.Ratio.Median)
	return res, nil
}
