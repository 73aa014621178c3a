package bench

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/dataplane/chain"
	"github.com/sluice-dp/sluice/dataplane/connlimit"
	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/dataplane/police"
	"github.com/sluice-dp/sluice/dataplane/ratelimit"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/sim/topo"
)

// PoliceCases returns the cases of the policing programs' per-packet cost
// (dataplane/ratelimit, dataplane/connlimit), run standalone but for one:
//   - the rate limiter admitting a SYN (rate far above anything offered),
//     refusing one by dropping it (rate 1 per second: after the first SYN
//     of a window every SYN is refused; the case's warm-up spends that
//     first one), and passing an established-connection ACK;
//   - the rate limiter refusing a SYN with a RST, as the first member of a
//     chain whose second member transmits what the limiter admits: the
//     benchmark checks that every frame of an XDP_TX case reaches the
//     veth's peer, and the SYN admitted once a second must be transmitted
//     too. The case includes the chain root and one tail call (see
//     ChainCases for their cost);
//   - the connection limiter passing a SYN to a limited port below its limit,
//     an ACK to it that belongs to no connection (which takes a socket
//     lookup: the handshake check), and an ACK of a counted connection,
//     which its cache of established flows lets through without one. That
//     connection is real: the limiter counts a throwaway namespace where a
//     client namespace holds one connection open until the Closer runs.
//
// Each is compared with the empty program of its verdict, through the
// Restoring shim where the program rewrites the frame (the RST). The caller
// closes the returned Closer after measuring.
func PoliceCases(mode Mode) (cases []Case, closer io.Closer, err error) {
	res := &resources{}
	defer func() {
		if err != nil {
			res.Close()
		}
	}()
	flow := func(dst string) pkttest.Flow {
		return pkttest.Flow{
			Src: netip.MustParseAddrPort("198.18.2.7:40000"), Dst: netip.MustParseAddrPort(dst),
			DF: true, Payload: make([]byte, 6),
		}
	}
	open, refuseDrop, refuseRST := flow("198.18.1.1:80"), flow("198.18.1.2:80"), flow("198.18.1.3:80")

	ch, err := chain.Load(chain.XDP, chain.Options{Name: "bench_chain_rst"})
	if err != nil {
		return nil, nil, err
	}
	res.closers = append(res.closers, ch)
	// A member loaded with the chain's maps continues wherever the
	// chain's cursor points, so the standalone cases need a limiter of
	// their own.
	chained, err := ratelimit.Load(ratelimit.Options{ChainMaps: ch.MemberMaps()})
	if err != nil {
		return nil, nil, err
	}
	res.closers = append(res.closers, chained)
	tx, err := emptyXDP(TX, ebpf.AttachXDP)
	if err != nil {
		return nil, nil, err
	}
	res.closers = append(res.closers, tx)
	if err := ch.Set([]chain.Member{{Name: "ratelimit", Program: chained.Program()}, {Name: "tx", Program: tx}}); err != nil {
		return nil, nil, fmt.Errorf("bench chain [ratelimit, tx]: %w", err)
	}
	rl, err := ratelimit.Load(ratelimit.Options{})
	if err != nil {
		return nil, nil, err
	}
	res.closers = append(res.closers, rl)
	rule := func(f pkttest.Flow, rate uint32, a police.Action) ratelimit.Rule {
		return ratelimit.Rule{Match: ratelimit.Match{Addr: f.Dst.Addr(), Port: f.Dst.Port(), Proto: l4.TCP}, Rate: rate, Action: a}
	}
	if err := rl.SetRules([]ratelimit.Rule{
		rule(open, ratelimit.MaxBudget, police.Drop),
		rule(refuseDrop, 1, police.Drop),
	}); err != nil {
		return nil, nil, fmt.Errorf("bench rate limiter rules: %w", err)
	}
	if err := chained.SetRules([]ratelimit.Rule{rule(refuseRST, 1, police.RST)}); err != nil {
		return nil, nil, fmt.Errorf("bench rate limiter rules: %w", err)
	}

	cl, counted, err := countedConnection(res, open.Dst.Port())
	if err != nil {
		return nil, nil, fmt.Errorf("bench connection limiter: %w", err)
	}

	for _, c := range []struct {
		name  string
		prog  *ebpf.Program
		frame []byte
		v     Verdict
	}{
		{"ratelimit syn admitted", rl.Program(), pkttest.TCP(open, pkttest.SYN), Pass},
		{"ratelimit syn refused (drop)", rl.Program(), pkttest.TCP(refuseDrop, pkttest.SYN), Drop},
		{"chain [ratelimit] syn refused (rst)", ch.Program(), pkttest.TCP(refuseRST, pkttest.SYN), TX},
		{"ratelimit ack (not new)", rl.Program(), pkttest.TCP(open, pkttest.ACK), Pass},
		{"connlimit syn below limit", cl.Program(), pkttest.TCP(open, pkttest.SYN), Pass},
		{"connlimit ack (handshake check)", cl.Program(), pkttest.TCP(open, pkttest.ACK), Pass},
		{"connlimit ack (established, cached)", cl.Program(), pkttest.TCP(counted, pkttest.ACK), Pass},
	} {
		prog, err := Restoring(c.prog, c.frame, ebpf.AttachXDP)
		if err != nil {
			return nil, nil, err
		}
		res.closers = append(res.closers, prog)
		empty, err := EmptyProgram(c.v)
		if err != nil {
			return nil, nil, err
		}
		res.closers = append(res.closers, empty)
		base, err := Restoring(empty, c.frame, ebpf.AttachNone)
		if err != nil {
			return nil, nil, err
		}
		res.closers = append(res.closers, base)
		// The warm-up spends the one-per-second budgets of the refusing
		// rules; the other cases keep no state about their frame that
		// would change the verdict.
		cases = append(cases, Case{Name: c.name, Program: prog.Program, Baseline: base.Program, Frame: c.frame, Verdict: c.v, Mode: mode, Warmup: 16})
	}
	return cases, res, nil
}

// countedConnection loads a connection limiter that counts a throwaway
// namespace, limits port and the port of a connection that a second
// namespace opens to it, and returns the limiter and that connection's
// flow once the limiter counts it. res closes the connection, the limiter
// and the namespaces.
func countedConnection(res *resources, port uint16) (*connlimit.Limiter, pkttest.Flow, error) {
	server := netip.MustParseAddrPort("10.102.0.1:8080")
	client := netip.MustParseAddrPort("10.102.0.2:40000")
	t, err := topo.New()
	if err != nil {
		return nil, pkttest.Flow{}, err
	}
	res.closers = append(res.closers, t)
	srv, err := t.AddNode("cl")
	if err != nil {
		return nil, pkttest.Flow{}, err
	}
	cli, err := t.AddNode("clclient")
	if err != nil {
		return nil, pkttest.Flow{}, err
	}
	if _, err := t.AddLink(
		topo.LinkEnd{Node: srv, Addrs: []netip.Prefix{netip.PrefixFrom(server.Addr(), 24)}},
		topo.LinkEnd{Node: cli, Addrs: []netip.Prefix{netip.PrefixFrom(client.Addr(), 24)}}); err != nil {
		return nil, pkttest.Flow{}, err
	}
	var cl *connlimit.Limiter
	err = srv.Do(func() error {
		var err error
		if cl, err = connlimit.Load(connlimit.Options{}); err != nil {
			return err
		}
		res.closers = append(res.closers, cl)
		if err := cl.SetPorts(map[uint16]connlimit.Limit{port: {Max: 1000}, server.Port(): {Max: 1000}}); err != nil {
			return err
		}
		if err := cl.Start(); err != nil {
			return err
		}
		ln, err := net.Listen("tcp4", server.String())
		if err != nil {
			return err
		}
		res.closers = append(res.closers, ln)
		return nil
	})
	if err != nil {
		return nil, pkttest.Flow{}, err
	}
	err = cli.Do(func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(client), Timeout: 5 * time.Second}
		c, err := d.Dial("tcp4", server.String())
		if err != nil {
			return err
		}
		res.closers = append(res.closers, c)
		return nil
	})
	if err != nil {
		return nil, pkttest.Flow{}, fmt.Errorf("connect %v to %v: %w", client, server, err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		counts, err := cl.Counts()
		if err != nil {
			return nil, pkttest.Flow{}, err
		}
		if counts[server.Port()] == 1 {
			break
		}
		if time.Now().After(deadline) {
			return nil, pkttest.Flow{}, fmt.Errorf("connection %v -> %v not counted after 5 s (count %d)", client, server, counts[server.Port()])
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cl, pkttest.Flow{Src: client, Dst: server, DF: true, Payload: make([]byte, 6)}, nil
}
