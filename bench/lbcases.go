package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/dataplane/lb"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// LBCases loads a load balancer with one VIP per case kind and returns the
// cases of the load balancer's per-packet cost: the GUE IPv4 hit path
// (established TCP), the miss path (SYN, which always takes the Maglev
// ring and rewrites the connection table), IPv6, IPIP, the Floor of the
// hit path (its unavoidable calls alone), and the hit path with the load
// balancer as the only member of a chain (root and one tail call in front).
// Every case runs
// the program, and its baseline the empty XDP_TX program, through the same
// Restoring shim. The caller closes the returned Closer after measuring.
func LBCases(mode Mode) (cases []Case, closer io.Closer, err error) {
	gw := net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}
	l, err := lb.Load(lb.Options{}, lb.Config{
		Seed:       1,
		SourceV4:   netip.MustParseAddr("198.18.0.1"),
		SourceV6:   netip.MustParseAddr("2001:db8:ffff::1"),
		GatewayMAC: gw,
	})
	if err != nil {
		return nil, nil, err
	}
	vip4 := lb.VIP{Addr: netip.MustParseAddr("198.18.1.1"), Port: 80, Proto: l4.TCP}
	vip6 := lb.VIP{Addr: netip.MustParseAddr("2001:db8:1::1"), Port: 80, Proto: l4.TCP}
	vipIPIP := lb.VIP{Addr: netip.MustParseAddr("198.18.1.2"), Port: 80, Proto: l4.TCP}
	backends4 := make([]lb.Backend, 0, 100)
	backends6 := make([]lb.Backend, 0, 100)
	for i := range 100 {
		backends4 = append(backends4, lb.Backend{Addr: netip.AddrFrom4([4]byte{198, 19, byte(i / 250), byte(1 + i%250)}), Weight: 1})
		backends6 = append(backends6, lb.Backend{Addr: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 2, 14: byte(i >> 8), 15: byte(i)}), Weight: 1})
	}
	for _, v := range []struct {
		vip      lb.VIP
		opts     lb.VIPOptions
		backends []lb.Backend
	}{
		{vip4, lb.VIPOptions{}, backends4},
		{vip6, lb.VIPOptions{}, backends6},
		{vipIPIP, lb.VIPOptions{Encap: lb.IPIP}, backends4},
	} {
		if err := l.AddVIP(v.vip, v.opts); err != nil {
			l.Close()
			return nil, nil, err
		}
		if err := l.SetBackends(v.vip, v.backends); err != nil {
			l.Close()
			return nil, nil, err
		}
	}

	flow := func(src string, vip lb.VIP) pkttest.Flow {
		return pkttest.Flow{
			Src: netip.MustParseAddrPort(src), Dst: netip.AddrPortFrom(vip.Addr, vip.Port),
			DF: true, Payload: make([]byte, 6),
		}
	}
	f4 := flow("198.18.2.7:40000", vip4)
	f6 := flow("[2001:db8:3::7]:40000", vip6)
	fIPIP := flow("198.18.2.7:40001", vipIPIP)
	established := [][]byte{
		pkttest.TCP(f4, pkttest.SYN), pkttest.TCP(f6, pkttest.SYN), pkttest.TCP(fIPIP, pkttest.SYN),
	}
	if err := onEveryCPU(l.Program(), established); err != nil {
		l.Close()
		return nil, nil, fmt.Errorf("open benchmark connections: %w", err)
	}
	res := &resources{closers: []io.Closer{l}}
	defer func() {
		if err != nil {
			res.Close()
		}
	}()
	empty, err := EmptyProgram(TX)
	if err != nil {
		return nil, nil, err
	}
	res.closers = append(res.closers, empty)
	floor, err := NewFloor()
	if err != nil {
		return nil, nil, err
	}
	res.closers = append(res.closers, floor)
	hit4 := pkttest.TCP(f4, pkttest.ACK)
	for _, c := range []struct {
		name   string
		prog   *ebpf.Program
		attach ebpf.AttachType
		frame  []byte
	}{
		{"lb gue v4 hit", l.Program(), ebpf.AttachXDP, hit4},
		{"lb gue v4 miss (syn)", l.Program(), ebpf.AttachXDP, pkttest.TCP(f4, pkttest.SYN)},
		{"lb gue v6 hit", l.Program(), ebpf.AttachXDP, pkttest.TCP(f6, pkttest.ACK)},
		{"lb ipip v4 hit", l.Program(), ebpf.AttachXDP, pkttest.TCP(fIPIP, pkttest.ACK)},
		{"floor: 3 calls of a hit", floor.Program, ebpf.AttachNone, hit4},
	} {
		prog, err := Restoring(c.prog, c.frame, c.attach)
		if err != nil {
			return nil, nil, err
		}
		res.closers = append(res.closers, prog)
		base, err := Restoring(empty, c.frame, ebpf.AttachNone)
		if err != nil {
			return nil, nil, err
		}
		res.closers = append(res.closers, base)
		cases = append(cases, Case{Name: c.name, Program: prog.Program, Baseline: base.Program, Frame: c.frame, Verdict: TX, Mode: mode})
	}
	chained, err := chainedCase("chain [lb] gue v4 hit", l.Program(), hit4, TX, mode, res)
	if err != nil {
		return nil, nil, err
	}
	return append(cases, chained), res, nil
}

// resources closes everything a set of cases holds, newest first.
type resources struct{ closers []io.Closer }

func (r *resources) Close() error {
	var err error
	for i := len(r.closers) - 1; i >= 0; i-- {
		err = errors.Join(err, r.closers[i].Close())
	}
	return err
}

// onEveryCPU runs each frame once on every CPU, so that the per-CPU
// connection tables hold the flows whichever CPU the measurement runs on.
func onEveryCPU(prog *ebpf.Program, frames [][]byte) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	done := make(chan error)
	go func() {
		// The thread is pinned and then discarded with the goroutine.
		runtime.LockOSThread()
		done <- func() error {
			for cpu := range cpus {
				var set unix.CPUSet
				set.Set(cpu)
				if err := unix.SchedSetaffinity(0, &set); err != nil {
					if errors.Is(err, unix.EINVAL) {
						continue // possible but not online
					}
					return fmt.Errorf("pin to cpu %d: %w", cpu, err)
				}
				for _, f := range frames {
					if _, err := prog.Run(&ebpf.RunOptions{Data: f, DataOut: make([]byte, len(f)+256)}); err != nil {
						return fmt.Errorf("run on cpu %d: %w", cpu, err)
					}
				}
			}
			return nil
		}()
	}()
	return <-done
}
