package bench

import (
	"fmt"
	"io"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/dataplane/chain"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// ChainCases returns the cases of the chain's own cost (dataplane/chain): the
// XDP root with no member, which passes the packet, and the root with one
// member that only returns XDP_DROP, which adds one tail call. Their
// baselines are the empty programs of the same verdicts, so the net figures
// are the root's work and the root's work plus a tail call. (The load
// balancer as the last member of a chain is in LBCases, next to the load
// balancer alone.) The caller closes the returned Closer after measuring.
func ChainCases(mode Mode) (cases []Case, closer io.Closer, err error) {
	res := &resources{}
	defer func() {
		if err != nil {
			res.Close()
		}
	}()
	frame := pkttest.TCP(pkttest.Flow{
		Src: netip.MustParseAddrPort("198.18.2.7:40000"), Dst: netip.MustParseAddrPort("198.18.1.1:80"),
		DF: true, Payload: make([]byte, 6),
	}, pkttest.ACK)

	empty, err := chain.Load(chain.XDP, chain.Options{Name: "bench_chain_empty"})
	if err != nil {
		return nil, nil, err
	}
	res.closers = append(res.closers, empty)

	drop, err := emptyXDP(Drop, ebpf.AttachXDP)
	if err != nil {
		return nil, nil, err
	}
	res.closers = append(res.closers, drop)
	one, err := chain.Load(chain.XDP, chain.Options{Name: "bench_chain_one"})
	if err != nil {
		return nil, nil, err
	}
	res.closers = append(res.closers, one)
	if err := one.Set([]chain.Member{{Name: "drop", Program: drop}}); err != nil {
		return nil, nil, fmt.Errorf("bench chain with one member: %w", err)
	}

	return []Case{
		{Name: "chain root, no member", Program: empty.Program(), Frame: frame, Verdict: Pass, Mode: mode},
		{Name: "chain root + 1 tail call", Program: one.Program(), Frame: frame, Verdict: Drop, Mode: mode},
	}, res, nil
}

// chainedCase returns the case of prog run as the only member of an XDP
// chain, through the same Restoring shim as prog alone, so that it compares
// with prog's own case.
func chainedCase(name string, prog *ebpf.Program, frame []byte, v Verdict, mode Mode, res *resources) (Case, error) {
	c, err := chain.Load(chain.XDP, chain.Options{Name: "bench_chain_last"})
	if err != nil {
		return Case{}, err
	}
	res.closers = append(res.closers, c)
	if err := c.Set([]chain.Member{{Name: "last", Program: prog}}); err != nil {
		return Case{}, fmt.Errorf("bench chain [%s]: %w", name, err)
	}
	shim, err := Restoring(c.Program(), frame, ebpf.AttachXDP)
	if err != nil {
		return Case{}, err
	}
	res.closers = append(res.closers, shim)
	empty, err := EmptyProgram(v)
	if err != nil {
		return Case{}, err
	}
	res.closers = append(res.closers, empty)
	base, err := Restoring(empty, frame, ebpf.AttachNone)
	if err != nil {
		return Case{}, err
	}
	res.closers = append(res.closers, base)
	return Case{Name: name, Program: shim.Program, Baseline: base.Program, Frame: frame, Verdict: v, Mode: mode}, nil
}

// XDPCases returns every XDP case of `make bench`: LBCases, ChainCases and
// PoliceCases, in that order. The caller closes the returned Closer after
// measuring; on error nothing is left open.
func XDPCases(mode Mode) (cases []Case, closer io.Closer, err error) {
	res := &resources{}
	defer func() {
		if err != nil {
			res.Close()
		}
	}()
	for _, load := range []func(Mode) ([]Case, io.Closer, error){LBCases, ChainCases, PoliceCases} {
		cs, c, err := load(mode)
		if err != nil {
			return nil, nil, err
		}
		res.closers = append(res.closers, c)
		cases = append(cases, cs...)
	}
	return cases, res, nil
}
