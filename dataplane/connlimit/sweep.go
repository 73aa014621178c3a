package connlimit

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
)

// tcpSynRecv is the state sock_diag reports request sockets in.
const tcpSynRecv = 3

// sweeper releases, until stop is closed, the reservations of handshakes
// that died after the XDP program let their final ACK through: the kernel
// dropped the ACK (a full accept queue) and the request socket expired or
// was reset, so no connection will ever take the reservation over.
func (l *Limiter) sweeper(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(l.sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if _, err := l.sweep(); err != nil {
				slog.Warn("connlimit: release dead handshakes", "err", err)
			}
		}
	}
}

// sweep releases every reservation older than l.grace that has no request
// socket any more, and returns how many it released. A reservation lives
// microseconds when all goes well, so the grace only spares the dump.
func (l *Limiter) sweep() (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, nil
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read clock: %w", err)
	}
	now := uint64(ts.Nano())
	var (
		f   connlimitClFlow
		v   connlimitClPending
		old []connlimitClFlow
	)
	it := l.objs.Pending.Iterate()
	for it.Next(&f, &v) {
		if now-v.Since > uint64(l.grace.Nanoseconds()) {
			old = append(old, f)
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("list reservations: %w", err)
	}
	if len(old) == 0 {
		return 0, nil
	}
	alive, err := l.handshakes()
	if err != nil {
		return 0, err
	}
	released := 0
	for _, f := range old {
		if alive[f] {
			continue
		}
		ret, err := l.objs.ClRelease.Run(&ebpf.RunOptions{Context: &f})
		if err != nil {
			return released, fmt.Errorf("release reservation: %w", err)
		}
		released += int(ret)
	}
	return released, nil
}

// handshakes returns the flows of the request sockets of the Limiter's
// namespace, keyed like the reservations.
func (l *Limiter) handshakes() (map[connlimitClFlow]bool, error) {
	h, err := netlink.NewHandleAt(l.ns, unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("open sock_diag socket: %w", err)
	}
	defer h.Close()
	out := make(map[connlimitClFlow]bool)
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := h.SocketDiagTCP(family)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			// Judging from a partial dump could release a live
			// handshake; the next sweep tries again.
			return nil, fmt.Errorf("dump tcp sockets: %w", err)
		}
		if err != nil {
			return nil, fmt.Errorf("dump tcp sockets of family %d: %w", family, err)
		}
		for _, s := range socks {
			if s.State == tcpSynRecv {
				out[flowOf(s.ID.Destination, s.ID.DestinationPort, s.ID.Source, s.ID.SourcePort)] = true
			}
		}
	}
	return out, nil
}

// flowOf keys a connection like the C side's struct cl_flow.
func flowOf(remote net.IP, rport uint16, local net.IP, lport uint16) connlimitClFlow {
	r, _ := netip.AddrFromSlice(remote)
	lo, _ := netip.AddrFromSlice(local)
	r, lo = r.Unmap(), lo.Unmap()
	f := connlimitClFlow{
		Raddr:  bpfenc.AddrWords(r),
		Laddr:  bpfenc.AddrWords(lo),
		Rport:  bpfenc.Htons(rport),
		Lport:  bpfenc.Htons(lport),
		Family: 6,
	}
	if r.Is4() {
		f.Family = 4
	}
	return f
}
