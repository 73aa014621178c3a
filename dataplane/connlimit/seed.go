package connlimit

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// openStates are the TCP states of a connection that has been established
// and not yet closed: ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT,
// LAST_ACK and CLOSING. The tracepoint counts a connection over exactly
// this span (from SYN_RECV -> ESTABLISHED to TCP_CLOSE), so seeding counts
// sockets in these states. TIME_WAIT is not one: the socket that counted
// has closed by then.
var openStates = []uint8{1, 4, 5, 8, 9, 11}

// seedAttempts bounds the retries of a sock_diag dump that the kernel
// reports as interrupted (sockets changed while it ran).
const seedAttempts = 5

// seed counts the open connections of ports found in a sock_diag dump of
// the Limiter's network namespace. The tracepoint is attached already, so a
// connection established after the dump is counted by it; one that closes
// after the dump is not counted, thanks to cl_seed's tombstone check.
func (l *Limiter) seed(ports []uint16) (err error) {
	if len(ports) == 0 {
		return nil
	}
	h, err := netlink.NewHandleAt(l.ns, unix.NETLINK_INET_DIAG)
	if err != nil {
		return fmt.Errorf("seed: open sock_diag socket: %w", err)
	}
	defer h.Close()
	// Closing sockets leave tombstones from before the dump until the
	// last seed; cl_seed checks them.
	if err := l.objs.Seeding.Set(uint32(1)); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	defer func() {
		if e := l.objs.Seeding.Set(uint32(0)); e != nil {
			err = errors.Join(err, fmt.Errorf("seed: %w", e))
		}
	}()
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := dump(h, family)
		if err != nil {
			return err
		}
		for _, s := range socks {
			if !slices.Contains(openStates, s.State) || !slices.Contains(ports, s.ID.SourcePort) ||
				s.ID.Source.IsLoopback() || s.ID.Destination.IsLoopback() {
				continue
			}
			if err := l.seedOne(s); err != nil {
				return err
			}
		}
	}
	return nil
}

func dump(h *netlink.Handle, family uint8) ([]*netlink.Socket, error) {
	for range seedAttempts - 1 {
		socks, err := h.SocketDiagTCP(family)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			if err != nil {
				return nil, fmt.Errorf("seed: dump tcp sockets of family %d: %w", family, err)
			}
			return socks, nil
		}
	}
	socks, err := h.SocketDiagTCP(family)
	if err != nil {
		return nil, fmt.Errorf("seed: dump tcp sockets of family %d: %w", family, err)
	}
	return socks, nil
}

func (l *Limiter) seedOne(s *netlink.Socket) error {
	arg := connlimitClSeedArg{
		Cookie: uint64(s.ID.Cookie[0]) | uint64(s.ID.Cookie[1])<<32,
		Port:   s.ID.SourcePort,
		Flow:   flowOf(s.ID.Destination, s.ID.DestinationPort, s.ID.Source, s.ID.SourcePort),
	}
	ret, err := l.objs.ClSeed.Run(&ebpf.RunOptions{Context: &arg})
	if err != nil {
		return fmt.Errorf("seed connection %v: %w", sockName(s), err)
	}
	if connlimitClSeedResult(ret) == connlimitClSeedResultCL_SEED_FULL {
		return fmt.Errorf("seed connection %v: %w: more than %d connections (Options.MaxConns)",
			sockName(s), ErrFull, l.opts.MaxConns)
	}
	return nil
}

func sockName(s *netlink.Socket) string {
	return fmt.Sprintf("%s->%s", net.JoinHostPort(s.ID.Source.String(), fmt.Sprint(s.ID.SourcePort)),
		net.JoinHostPort(s.ID.Destination.String(), fmt.Sprint(s.ID.DestinationPort)))
}
