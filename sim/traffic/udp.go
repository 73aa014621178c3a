package traffic

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/sim/topo"
)

// echoBuffer is the echo server's socket receive buffer: UDPRequests sends
// all its datagrams at once, and a default buffer (about 200 KiB, a few
// hundred small datagrams) would drop most of a burst of thousands.
const echoBuffer = 8 << 20

// DefaultUDPTimeout is the reply timeout UDPRequests uses when given 0.
const DefaultUDPTimeout = time.Second

// udpPayloadPrefix starts every request datagram; the request's number
// follows, so each reply can be matched to its request.
const udpPayloadPrefix = "sluice udp #"

// ServeUDPEcho answers every datagram on addr inside node with
// "<node>:" followed by the datagram, so that the client learns which node
// answered. The returned stop closes the socket and waits for the serving
// goroutine; it may be called more than once.
func ServeUDPEcho(node *topo.Node, addr netip.AddrPort) (stop func() error, err error) {
	var conn *net.UDPConn
	err = node.Do(func() error {
		conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return err
		}
		setReceiveBuffer(conn, echoBuffer)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("serve udp echo on %v in %s: %w", addr, node.Name(), err)
	}
	prefix := []byte(node.Name() + ":")
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		out := make([]byte, 0, len(prefix)+len(buf))
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // e.g. ECONNREFUSED reported for an earlier reply
			}
			out = append(append(out[:0], prefix...), buf[:n]...)
			// A reply that cannot be sent is the client's loss, seen
			// there as a timeout; the server keeps serving.
			conn.WriteToUDPAddrPort(out, from)
		}
	}()
	stop = sync.OnceValue(func() error {
		err := conn.Close()
		<-done
		if err != nil {
			return fmt.Errorf("stop udp echo on %v in %s: %w", addr, node.Name(), err)
		}
		return nil
	})
	return stop, nil
}

// setReceiveBuffer raises conn's receive buffer beyond net.core.rmem_max
// when running as root (SO_RCVBUFFORCE), or as far as rmem_max allows.
// It is best effort: a small buffer costs replies, which the client
// reports.
func setReceiveBuffer(conn *net.UDPConn, bytes int) {
	raw, err := conn.SyscallConn()
	if err == nil {
		var serr error
		err = raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bytes)
		})
		if err == nil && serr == nil {
			return
		}
	}
	conn.SetReadBuffer(bytes)
}

// UDPResult is what a UDPRequests run saw.
type UDPResult struct {
	// Sent counts datagrams sent; Answered counts those whose reply came
	// back in time and matched.
	Sent, Answered int
	// Latencies are the round-trip times of the answered requests, in
	// request order.
	Latencies []time.Duration
	// AnsweredBy counts replies by the node they name (see
	// ServeUDPEcho).
	AnsweredBy map[string]int
	// Sources is the local address of request i's socket: its flow's
	// client side, for assertions that follow single flows.
	Sources []netip.AddrPort
	// Responders names the node that answered request i, or "" if none
	// did.
	Responders []string
}

// UDPRequests sends n datagrams to dst from node, each from a socket of its
// own and so from its own source port, all at once, and waits up to
// timeout (0: DefaultUDPTimeout) for each reply. A reply counts when it
// is what ServeUDPEcho sends: a node name, ":", and the request. Lost
// requests are counted, not returned as an error; the error is for bad
// arguments, sockets that cannot be created (n beyond the node's
// ephemeral port range, for one), or a cancelled ctx.
//
// When the traffic crosses an XDP load balancer, the node's interface
// needs transmit checksum offload off; see the package documentation.
func UDPRequests(ctx context.Context, node *topo.Node, dst netip.AddrPort, n int, timeout time.Duration) (UDPResult, error) {
	res := UDPResult{AnsweredBy: map[string]int{}}
	switch {
	case !dst.IsValid() || dst.Port() == 0:
		return res, fmt.Errorf("%w: dst %v: want an address and port", ErrInvalidSpec, dst)
	case n < 1:
		return res, fmt.Errorf("%w: n: %d: want at least 1 request", ErrInvalidSpec, n)
	case timeout < 0:
		return res, fmt.Errorf("%w: timeout: %v: want a positive duration (0 means %v)", ErrInvalidSpec, timeout, DefaultUDPTimeout)
	}
	if timeout == 0 {
		timeout = DefaultUDPTimeout
	}

	conns := make([]*net.UDPConn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	to := net.UDPAddrFromAddrPort(dst)
	err := node.Do(func() error {
		for i := range n {
			// Every socket stays open until the end, so the kernel
			// gives each its own port.
			c, err := net.DialUDP("udp", nil, to)
			if err != nil {
				return fmt.Errorf("socket %d of %d: %w", i+1, n, err)
			}
			conns = append(conns, c)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("udp requests from %s to %v: %w", node.Name(), dst, err)
	}
	res.Sources = make([]netip.AddrPort, n)
	for i, c := range conns {
		res.Sources[i] = c.LocalAddr().(*net.UDPAddr).AddrPort()
	}

	// Cancelling ctx ends every wait at once.
	unblock := context.AfterFunc(ctx, func() {
		for _, c := range conns {
			c.SetReadDeadline(time.Now())
		}
	})
	defer unblock()

	type reply struct {
		sent     bool
		answered bool
		by       string
		latency  time.Duration
	}
	replies := make([]reply, n)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			req := []byte(udpPayloadPrefix + strconv.Itoa(i))
			start := time.Now()
			if err := c.SetReadDeadline(start.Add(timeout)); err != nil {
				return
			}
			if ctx.Err() != nil {
				return
			}
			if _, err := c.Write(req); err != nil {
				return
			}
			replies[i].sent = true
			buf := make([]byte, 2048)
			for {
				m, err := c.Read(buf)
				if err != nil {
					// ECONNREFUSED: an ICMP port unreachable came
					// back; keep waiting, a later real reply counts.
					if errors.Is(err, syscall.ECONNREFUSED) {
						continue
					}
					return
				}
				got := buf[:m]
				if name, ok := bytes.CutSuffix(got, append([]byte(":"), req...)); ok {
					replies[i].answered = true
					replies[i].by = string(name)
					replies[i].latency = time.Since(start)
					return
				}
			}
		})
	}
	wg.Wait()

	res.Responders = make([]string, n)
	for i, r := range replies {
		if r.sent {
			res.Sent++
		}
		if r.answered {
			res.Answered++
			res.Latencies = append(res.Latencies, r.latency)
			res.AnsweredBy[r.by]++
			res.Responders[i] = r.by
		}
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("udp requests from %s to %v: %w", node.Name(), dst, err)
	}
	return res, nil
}

// Percentile returns the p-th percentile (0-100) of Latencies; see
// HTTPResult.Percentile.
func (r UDPResult) Percentile(p float64) time.Duration {
	return percentile(r.Latencies, p)
}
