package bench

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/dataplane/connlimit"
	"github.com/sluice-dp/sluice/dataplane/ratelimit"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// PoliceCases returns the cases of the policing programs' per-packet cost
// (dataplane/ratelimit, dataplane/connlimit), each run standalone:
//   - the rate limiter admitting a SYN (rate far above anything offered),
//     refusing one by dropping it and by answering with a RST (rate 1 per
//     second: after the first SYN of a window every SYN is refused; the
//     case's warm-up spends that first one),
//     and passing an established-connection ACK;
//   - the connection limiter passing a SYN to a limited port below its limit
//     and an ACK to it (which takes a socket lookup: the handshake check).
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

	rl, err := ratelimit.Load(ratelimit.Options{})
	if err != nil {
		return nil, nil, err
	}
	res.closers = append(res.closers, rl)
	rule := func(f pkttest.Flow, rate uint32, a ratelimit.Action) ratelimit.Rule {
		return ratelimit.Rule{Match: ratelimit.Match{Addr: f.Dst.Addr(), Port: f.Dst.Port(), Proto: ratelimit.TCP}, Rate: rate, Action: a}
	}
	if err := rl.SetRules([]ratelimit.Rule{
		rule(open, ratelimit.MaxBudget, ratelimit.Drop),
		rule(refuseDrop, 1, ratelimit.Drop),
		rule(refuseRST, 1, ratelimit.RST),
	}); err != nil {
		return nil, nil, fmt.Errorf("bench rate limiter rules: %w", err)
	}

	cl, err := connlimit.Load(connlimit.Options{})
	if err != nil {
		return nil, nil, err
	}
	res.closers = append(res.closers, cl)
	if err := cl.SetPort(open.Dst.Port(), 1000, connlimit.Drop); err != nil {
		return nil, nil, fmt.Errorf("bench connection limiter port: %w", err)
	}

	for _, c := range []struct {
		name  string
		prog  *ebpf.Program
		frame []byte
		v     Verdict
	}{
		{"ratelimit syn admitted", rl.Program(), pkttest.TCP(open, pkttest.SYN), Pass},
		{"ratelimit syn refused (drop)", rl.Program(), pkttest.TCP(refuseDrop, pkttest.SYN), Drop},
		{"ratelimit syn refused (rst)", rl.Program(), pkttest.TCP(refuseRST, pkttest.SYN), TX},
		{"ratelimit ack (not new)", rl.Program(), pkttest.TCP(open, pkttest.ACK), Pass},
		{"connlimit syn below limit", cl.Program(), pkttest.TCP(open, pkttest.SYN), Pass},
		{"connlimit ack (handshake check)", cl.Program(), pkttest.TCP(open, pkttest.ACK), Pass},
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
