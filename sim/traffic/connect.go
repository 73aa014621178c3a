package traffic

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/sim/topo"
)

// SYNRetransmit is Linux's initial retransmission timeout for a SYN
// (TCP_TIMEOUT_INIT). A connection attempt that waits this long sends its
// SYN again, and a policing program would count it as a second attempt;
// ConnectLoad and Hold therefore refuse timeouts that reach it.
const SYNRetransmit = time.Second

// DefaultConnectTimeout is the connect timeout of ConnectLoad and Hold when
// given 0.
const DefaultConnectTimeout = 500 * time.Millisecond

// Limits of ConnectSpec: more than MaxConnectRate attempts a second
// outruns one pacing goroutine on a small machine, and a load longer than
// MaxConnectDuration would exhaust a node's ephemeral ports with
// TIME_WAIT sockets.
const (
	MaxConnectRate     = 10_000
	MaxConnectDuration = time.Minute
)

// Outcome is how one connection attempt ended.
type Outcome int

// Outcomes of a connection attempt.
const (
	// Connected: the handshake completed.
	Connected Outcome = iota
	// Refused: a RST answered the SYN (ECONNREFUSED).
	Refused
	// TimedOut: nothing answered the SYN within the timeout.
	TimedOut
	// Failed: any other error (an ICMP unreachable, a local error);
	// ConnectResult.Errors says which.
	Failed
)

func (o Outcome) String() string {
	switch o {
	case Connected:
		return "ok"
	case Refused:
		return "refused"
	case TimedOut:
		return "timeout"
	}
	return "failed"
}

// ConnectSpec describes a ConnectLoad run.
type ConnectSpec struct {
	// Dst is where to connect.
	Dst netip.AddrPort
	// Rate is the number of connection attempts per second, 1 to
	// MaxConnectRate; attempts are evenly spaced, never in bursts.
	Rate int
	// Duration is how long attempts are started for; the load makes
	// round(Rate × Duration) attempts, at least one.
	Duration time.Duration
	// Timeout bounds each attempt; 0 means DefaultConnectTimeout. It must
	// be shorter than SYNRetransmit.
	Timeout time.Duration
	// Start is when the first attempt is made, so that concurrent loads
	// can share one clock for their per-second counts (NextWholeSecond
	// gives one); zero means now. A Start in the past moves to now.
	Start time.Time
}

// ConnectResult counts connection attempts by outcome.
type ConnectResult struct {
	// Attempts is OK + Refused + Timeout + Failed.
	Attempts                     int
	OK, Refused, Timeout, Failed int
	// Errors counts the Failed attempts by kind of error.
	Errors map[string]int
	// PerSecond[i] and OKPerSecond[i] count the attempts started in
	// second i of the load (from its Start), and those of them that
	// connected. A second the load ran only part of is included.
	PerSecond, OKPerSecond []int
	// Latencies are the handshake times of the connected attempts.
	Latencies []time.Duration
	// Elapsed is the time from Start until the last attempt ended.
	Elapsed time.Duration
}

func newConnectResult() ConnectResult { return ConnectResult{Errors: map[string]int{}} }

// add counts one attempt, started at offset since the load's start.
func (r *ConnectResult) add(a attempt, offset time.Duration) {
	r.Attempts++
	sec := int(max(offset, 0) / time.Second)
	for len(r.PerSecond) <= sec {
		r.PerSecond = append(r.PerSecond, 0)
		r.OKPerSecond = append(r.OKPerSecond, 0)
	}
	r.PerSecond[sec]++
	switch a.outcome {
	case Connected:
		r.OK++
		r.OKPerSecond[sec]++
		r.Latencies = append(r.Latencies, a.latency)
	case Refused:
		r.Refused++
	case TimedOut:
		r.Timeout++
	default:
		r.Failed++
		r.Errors[errorKind(a.err)]++
	}
}

func checkTimeout(timeout time.Duration) (time.Duration, error) {
	switch {
	case timeout < 0 || timeout >= SYNRetransmit:
		return 0, fmt.Errorf("%w: timeout %v: want a duration shorter than the SYN retransmission time %v (0 means %v)",
			ErrInvalidSpec, timeout, SYNRetransmit, DefaultConnectTimeout)
	case timeout == 0:
		return DefaultConnectTimeout, nil
	}
	return timeout, nil
}

func checkDst(dst netip.AddrPort) error {
	if !dst.IsValid() || dst.Port() == 0 || dst.Addr().Zone() != "" {
		return fmt.Errorf("%w: dst %v: want an address and a port other than 0", ErrInvalidSpec, dst)
	}
	return nil
}

// ConnectLoad opens TCP connections from node to spec.Dst at spec.Rate a
// second for spec.Duration, each from a socket of its own created inside
// node, and closes each one as soon as its handshake completes. Each
// attempt waits at most spec.Timeout, shorter than the SYN retransmission
// time, so that every attempt sends exactly one SYN: what a connection
// rate limiter sees is exactly the attempts counted here. Attempts are
// started on a fixed schedule, attempt i at Start + i/Rate, whatever the
// earlier ones are doing, by one thread that sends each SYN itself and
// runs with real-time priority (SCHED_FIFO) where the caller may give it,
// so that a busy machine delays the attempts as little as possible;
// attempts it could not start on time are started as soon as it can, so
// that the load always makes all its attempts.
//
// Outcomes are counted, not returned as errors; the error is for a bad
// spec, sockets that cannot be created, or a cancelled ctx, in which case
// the result counts what was done so far.
func ConnectLoad(ctx context.Context, node *topo.Node, spec ConnectSpec) (ConnectResult, error) {
	res := newConnectResult()
	if err := checkDst(spec.Dst); err != nil {
		return res, err
	}
	switch {
	case spec.Rate < 1 || spec.Rate > MaxConnectRate:
		return res, fmt.Errorf("%w: rate %d: want 1 to %d attempts a second", ErrInvalidSpec, spec.Rate, MaxConnectRate)
	case spec.Duration <= 0 || spec.Duration > MaxConnectDuration:
		return res, fmt.Errorf("%w: duration %v: want a positive duration up to %v", ErrInvalidSpec, spec.Duration, MaxConnectDuration)
	}
	timeout, err := checkTimeout(spec.Timeout)
	if err != nil {
		return res, err
	}
	n := max(1, int(float64(spec.Rate)*spec.Duration.Seconds()+0.5))
	interval := time.Second / time.Duration(spec.Rate)
	start := spec.Start
	if now := time.Now(); start.Before(now) {
		start = now
	}

	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	// The pacing loop runs inside node, so that each socket is created
	// there without a namespace switch per attempt; the waits for the
	// answers run on ordinary goroutines, since a socket stays in the
	// namespace it was created in.
	err = node.Do(func() error {
		// Do's thread ends with fn, so the priority goes with it.
		// Best effort: without the privilege the load runs as it is.
		unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 1}, 0)
		for i := range n {
			if err := sleepUntil(ctx, start.Add(time.Duration(i)*interval)); err != nil {
				return err
			}
			fd, err := tcpSocket(spec.Dst.Addr())
			if err != nil {
				return fmt.Errorf("attempt %d of %d: %w", i+1, n, err)
			}
			// The SYN leaves here, on the pacing thread's schedule;
			// only the wait for its answer is left to a goroutine.
			began := time.Now()
			pending, a := startConnect(fd, spec.Dst)
			wg.Go(func() {
				if pending {
					a = waitConnect(ctx, fd, spec.Dst, began, timeout)
				}
				if a.file != nil {
					a.file.Close()
				}
				mu.Lock()
				res.add(a, began.Sub(start))
				mu.Unlock()
			})
		}
		return nil
	})
	wg.Wait()
	res.Elapsed = time.Since(start)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return res, fmt.Errorf("connect load from %s to %v: %w", node.Name(), spec.Dst, err)
	}
	return res, nil
}

// NextWholeSecond returns the first time, at least d from now, at which
// the system's monotonic clock (CLOCK_MONOTONIC, the clock BPF programs
// read with bpf_ktime_get_ns) shows a whole number of seconds. A load that
// starts then has its seconds aligned with the windows of a rate limiter
// whose one-second windows start on whole seconds of that clock.
func NextWholeSecond(d time.Duration) (time.Time, error) {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Time{}, fmt.Errorf("read monotonic clock: %w", err)
	}
	mono := time.Duration(ts.Nano()) + d
	return now.Add(d + (time.Second-mono%time.Second)%time.Second), nil
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// tcpSocket creates a non-blocking TCP socket of addr's family in the
// calling thread's network namespace.
func tcpSocket(addr netip.Addr) (int, error) {
	family := unix.AF_INET6
	if addr.Is4() {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, fmt.Errorf("tcp socket: %w", err)
	}
	return fd, nil
}

func sockaddr(dst netip.AddrPort) unix.Sockaddr {
	if dst.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()}
}

// attempt is one connection attempt's end; file is the connected socket
// when outcome is Connected.
type attempt struct {
	outcome Outcome
	err     error
	latency time.Duration
	file    *os.File
}

// connectFD connects the non-blocking socket fd to dst, waiting at most
// timeout; it takes ownership of fd. The caller closes the returned file
// of a connected attempt.
func connectFD(ctx context.Context, fd int, dst netip.AddrPort, timeout time.Duration) attempt {
	start := time.Now()
	if pending, a := startConnect(fd, dst); !pending {
		return a
	}
	return waitConnect(ctx, fd, dst, start, timeout)
}

// startConnect sends the SYN of the non-blocking socket fd. It reports
// whether the connection is under way, for waitConnect to wait for;
// otherwise the attempt has ended and fd is closed, or, connected at
// once, held by the attempt's file.
func startConnect(fd int, dst netip.AddrPort) (bool, attempt) {
	err := unix.Connect(fd, sockaddr(dst))
	switch {
	case err == nil:
		return false, attempt{outcome: Connected, file: os.NewFile(uintptr(fd), "tcp "+dst.String())}
	case errors.Is(err, unix.EINPROGRESS):
		return true, attempt{}
	}
	unix.Close(fd)
	return false, classify(err)
}

// waitConnect waits for the connection startConnect began on fd, at most
// until start+timeout, through the runtime's poller, as package net does.
func waitConnect(ctx context.Context, fd int, dst netip.AddrPort, start time.Time, timeout time.Duration) attempt {
	// A non-blocking descriptor handed to os.NewFile is registered with
	// the poller, so the wait below takes no thread.
	f := os.NewFile(uintptr(fd), "tcp "+dst.String())
	if err := f.SetWriteDeadline(start.Add(timeout)); err != nil {
		f.Close()
		return attempt{outcome: Failed, err: err}
	}
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Now()) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return attempt{outcome: Failed, err: err}
	}
	var soErr error
	werr := rc.Write(func(fd uintptr) bool {
		n, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			soErr = err
			return true
		case n != 0 && unix.Errno(n) != unix.EINPROGRESS && unix.Errno(n) != unix.EALREADY && unix.Errno(n) != unix.EINTR:
			soErr = unix.Errno(n)
			return true
		}
		// No error yet: connected only once the peer is known; a
		// socket still in SYN_SENT has none.
		_, err = unix.Getpeername(int(fd))
		return err == nil
	})
	if werr == nil {
		werr = soErr
	}
	if werr != nil {
		f.Close()
		if errors.Is(werr, os.ErrDeadlineExceeded) {
			if ctx.Err() != nil {
				return attempt{outcome: Failed, err: ctx.Err()}
			}
			return attempt{outcome: TimedOut, err: werr}
		}
		return classify(werr)
	}
	return attempt{outcome: Connected, latency: time.Since(start), file: f}
}

func classify(err error) attempt {
	if errors.Is(err, unix.ECONNREFUSED) {
		return attempt{outcome: Refused, err: err}
	}
	return attempt{outcome: Failed, err: err}
}

// Held is a set of open TCP connections made by Hold, kept open until
// closed.
type Held struct {
	node string
	dst  netip.AddrPort
	mu   sync.Mutex
	// open are the connected sockets, oldest first.
	open []*os.File
}

// Hold opens n TCP connections from node to dst one after another, each
// waiting for the previous one to connect or fail, and keeps those that
// connected open. One at a time, because a concurrent-connection limit
// counts connections once they are established: connections opened
// together could all pass a limit before the first is counted. Each
// attempt waits at most timeout (0: DefaultConnectTimeout), shorter than
// SYNRetransmit, so that it sends one SYN. The result counts the attempts
// by outcome; its per-second counts start at the first attempt.
//
// The error is for bad arguments, sockets that cannot be created or a
// cancelled ctx; the connections opened until then are in the returned
// Held either way, which the caller closes.
func Hold(ctx context.Context, node *topo.Node, dst netip.AddrPort, n int, timeout time.Duration) (*Held, ConnectResult, error) {
	h := &Held{node: node.Name(), dst: dst}
	res := newConnectResult()
	if err := checkDst(dst); err != nil {
		return h, res, err
	}
	if n < 1 {
		return h, res, fmt.Errorf("%w: n: %d: want at least 1 connection", ErrInvalidSpec, n)
	}
	timeout, err := checkTimeout(timeout)
	if err != nil {
		return h, res, err
	}
	fds := make([]int, 0, n)
	err = node.Do(func() error {
		for range n {
			fd, err := tcpSocket(dst.Addr())
			if err != nil {
				return err
			}
			fds = append(fds, fd)
		}
		return nil
	})
	if err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return h, res, fmt.Errorf("hold connections from %s to %v: %w", node.Name(), dst, err)
	}
	start := time.Now()
	for i, fd := range fds {
		if ctx.Err() != nil {
			for _, rest := range fds[i:] {
				unix.Close(rest)
			}
			break
		}
		began := time.Now()
		a := connectFD(ctx, fd, dst, timeout)
		res.add(a, began.Sub(start))
		if a.file != nil {
			h.open = append(h.open, a.file)
		}
	}
	res.Elapsed = time.Since(start)
	if err := ctx.Err(); err != nil {
		return h, res, fmt.Errorf("hold connections from %s to %v: %w", node.Name(), dst, err)
	}
	return h, res, nil
}

// Open returns the number of connections still held.
func (h *Held) Open() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.open)
}

// CloseWait bounds how long Held.Close waits for the server to close its
// end of a connection.
const CloseWait = 2 * time.Second

// Close closes the n oldest connections still held (all of them if fewer)
// and returns how many it closed. Each is shut down with a FIN, and Close
// waits until the server has closed its end too (the client's socket
// leaves FIN_WAIT), at most CloseWait, before releasing the socket: when
// Close returns, the server's kernel has let go of the connection, so a
// concurrent-connection limit there no longer counts it. A server that
// keeps its end open past CloseWait is not waited for further.
func (h *Held) Close(n int) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n = min(max(n, 0), len(h.open))
	var errs []error
	for _, f := range h.open[:n] {
		errs = append(errs, shutdown(f), f.Close())
	}
	h.open = h.open[n:]
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("close connections from %s to %v: %w", h.node, h.dst, err)
	}
	return n, nil
}

// Linux TCP states (include/net/tcp_states.h) that follow the server's
// FIN on the closing side.
const (
	tcpTimeWait = 6
	tcpClose    = 7
)

// shutdown sends f's FIN and waits until the peer's FIN came back (the
// socket is then closed or in TIME_WAIT), at most CloseWait.
func shutdown(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_WR) }); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("shutdown: %w", serr)
	}
	deadline := time.Now().Add(CloseWait)
	for time.Now().Before(deadline) {
		var state uint8
		if err := rc.Control(func(fd uintptr) {
			info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			if err == nil {
				state = info.State
			}
			serr = err
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("tcp info: %w", serr)
		}
		if state == tcpTimeWait || state == tcpClose {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// CloseAll closes every connection still held at once, without waiting
// for the server (a run's teardown). It may be called more than once.
func (h *Held) CloseAll() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for _, f := range h.open {
		errs = append(errs, f.Close())
	}
	h.open = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close connections from %s to %v: %w", h.node, h.dst, err)
	}
	return nil
}
