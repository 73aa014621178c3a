// Package connlimit loads and drives Sluice's concurrent-connection limit
// (bpf/connlimit.bpf.c): a tracepoint counts the established TCP
// connections of each limited local port, and an XDP program refuses SYNs
// to a port whose count has reached its limit, by dropping them or
// answering with a RST.
//
// A Limiter counts the sockets of one network namespace, the one the
// calling thread is in when Load runs: on a kernel shared by several nodes
// or hosts (network namespaces), each counts only its own. Configure the
// ports, Start the counting (which also counts the connections that are
// already open), then Attach the XDP program or hand Program to a chain.
//
// A Limiter is safe for concurrent use.
package connlimit

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
	"github.com/sluice-dp/sluice/dataplane/internal/feature"
	"github.com/sluice-dp/sluice/dataplane/police"
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrInvalid marks rejected options, ports or limits; the error text
	// names the field and what was expected.
	ErrInvalid = errors.New("invalid")
	// ErrFull marks more limited ports than Options.MaxPorts.
	ErrFull = errors.New("capacity exhausted")
	// ErrStarted marks a second Start.
	ErrStarted = errors.New("already started")
	// ErrClosed marks a call on a closed Limiter.
	ErrClosed = errors.New("closed")
)

// Limit is the limit of one local TCP port.
type Limit struct {
	// Max is the number of connections that may be open at once, at
	// least 1.
	Max uint32
	// Action is what a SYN over the limit gets.
	Action police.Action
}

func (l Limit) validate(port uint16) error {
	switch {
	case port == 0:
		return fmt.Errorf("port 0: %w: a port between 1 and 65535", ErrInvalid)
	case l.Max == 0:
		return fmt.Errorf("port %d max 0: %w: at least 1", port, ErrInvalid)
	case l.Action != police.Drop && l.Action != police.RST:
		return fmt.Errorf("port %d action %v: %w: drop or rst", port, l.Action, ErrInvalid)
	}
	return nil
}

// Options size the maps and plug the program into a chain. They are fixed
// at load time.
type Options struct {
	// MaxPorts is the number of limited ports. Default 1024.
	MaxPorts uint32
	// MaxConns is the number of connections counted at once over all
	// ports; a connection beyond it is not counted (counter track_full).
	// It also sizes the cache of established flows. Default 65536.
	MaxConns uint32
	// MaxPending is the number of handshakes that can hold a reservation
	// at once (their final ACK was let through, the kernel has not created
	// the connection yet). A handshake beyond it gets in without one
	// (counter pending_full), which the limit then does not cover.
	// Default 4096.
	MaxPending uint32
	// ChainMaps, when not nil, replaces the program's chain maps with a
	// chain's (dataplane/chain Chain.MemberMaps), to run it as a member of
	// that chain.
	ChainMaps map[string]*ebpf.Map
}

func (o Options) withDefaults() Options {
	if o.MaxPorts == 0 {
		o.MaxPorts = 1024
	}
	if o.MaxConns == 0 {
		o.MaxConns = 65536
	}
	if o.MaxPending == 0 {
		o.MaxPending = 4096
	}
	return o
}

// Limiter is a loaded connection limiter with its maps.
type Limiter struct {
	mu     sync.Mutex
	objs   connlimitObjects
	names  []string
	opts   Options
	ns     netns.NsHandle
	limits map[uint16]Limit
	trace  link.Link
	closed bool

	// The sweeper releases reservations older than grace whose handshake
	// died, every sweepEvery; stop ends it and done says it has.
	sweepEvery, grace time.Duration
	stop, done        chan struct{}
}

// Load loads the programs and maps into the kernel. The Limiter counts the
// sockets of the calling thread's network namespace (lock the goroutine to
// its thread when that matters). Nothing runs until Start and Attach.
func Load(opts Options) (*Limiter, error) {
	opts = opts.withDefaults()
	spec, err := loadConnlimit()
	if err != nil {
		return nil, fmt.Errorf("load connlimit spec: %w", err)
	}
	names, err := bpfenc.StatNames(spec, "cl_stat", "CL_STAT_")
	if err != nil {
		return nil, err
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("load connlimit: open network namespace: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(ns), &st); err != nil {
		ns.Close()
		return nil, fmt.Errorf("load connlimit: stat network namespace: %w", err)
	}
	if err := spec.Variables["netns_ino"].Set(uint32(st.Ino)); err != nil {
		ns.Close()
		return nil, fmt.Errorf("load connlimit: set network namespace: %w", err)
	}
	spec.Maps["limits"].MaxEntries = opts.MaxPorts
	spec.Maps["counts"].MaxEntries = opts.MaxPorts
	spec.Maps["socks"].MaxEntries = opts.MaxConns
	spec.Maps["estab"].MaxEntries = opts.MaxConns
	spec.Maps["pending"].MaxEntries = opts.MaxPending
	l := &Limiter{
		names:      names,
		opts:       opts,
		ns:         ns,
		limits:     make(map[uint16]Limit),
		sweepEvery: time.Second,
		grace:      time.Second,
	}
	if err := spec.LoadAndAssign(&l.objs, &ebpf.CollectionOptions{MapReplacements: opts.ChainMaps}); err != nil {
		ns.Close()
		return nil, fmt.Errorf("load connlimit objects: %w", feature.Explain(spec, err))
	}
	return l, nil
}

// Close detaches the tracepoint and releases the programs and maps. XDP
// attachments hold their own reference to the program and keep it running
// until they are closed; without the tracepoint its counts no longer move.
func (l *Limiter) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	stop, done := l.stop, l.done
	l.mu.Unlock()
	// The sweeper takes the lock itself, so it is waited for without it.
	if stop != nil {
		close(stop)
		<-done
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	if l.trace != nil {
		if err := l.trace.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach connlimit tracepoint: %w", err))
		}
	}
	errs = append(errs, l.objs.Close(), l.ns.Close())
	return errors.Join(errs...)
}

// Program returns the XDP program, for attaching it elsewhere, adding it
// to a chain, or running it with BPF_PROG_RUN in tests and benchmarks.
func (l *Limiter) Program() *ebpf.Program { return l.objs.ClXdp }

// Options returns the sizes the program was loaded with.
func (l *Limiter) Options() Options { return l.opts }

// Attach attaches the XDP program to an interface of the calling thread's
// network namespace, which should be the one the Limiter counts: the
// program judges handshakes' final ACKs against the sockets of the
// interface's namespace. Refused SYNs answered with a RST leave through the
// same interface (XDP_TX).
func (l *Limiter) Attach(iface string, mode attach.Mode) (*attach.XDPAttachment, error) {
	at, err := attach.XDP(l.objs.ClXdp, iface, mode)
	if err != nil {
		return nil, fmt.Errorf("attach connlimit to %s: %w", iface, err)
	}
	return at, nil
}

// Start attaches the counting tracepoint, then counts the connections
// already open on the limited ports. Ports set later are counted from
// their open connections when they are set.
func (l *Limiter) Start() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("start connlimit: %w", ErrClosed)
	}
	if l.trace != nil {
		return fmt.Errorf("start connlimit: %w", ErrStarted)
	}
	// Attached before the dump, so that a connection is either in the dump
	// or seen by the tracepoint, never neither.
	tr, err := link.AttachTracing(link.TracingOptions{Program: l.objs.ClState})
	if err != nil {
		return fmt.Errorf("start connlimit: attach tracepoint: %w", err)
	}
	l.trace = tr
	if err := l.seed(slices.Collect(maps.Keys(l.limits))); err != nil {
		return fmt.Errorf("start connlimit: %w", err)
	}
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	go l.sweeper(l.stop, l.done)
	return nil
}

// Limits returns the limits in force.
func (l *Limiter) Limits() map[uint16]Limit {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.limits)
}

// SetPort limits one port, or changes its limit. A lowered limit applies
// to new connections only: the ones open stay open.
func (l *Limiter) SetPort(port uint16, max uint32, action police.Action) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := maps.Clone(l.limits)
	next[port] = Limit{Max: max, Action: action}
	if err := l.apply(next); err != nil {
		return fmt.Errorf("set port %d: %w", port, err)
	}
	return nil
}

// SetPorts makes ports the whole set of limited ports: ports not in it are
// no longer limited. It is validated as a whole before anything changes,
// so a rejected set changes nothing; each port's limit changes with one
// map update, so a packet sees a port's old limit or its new one.
func (l *Limiter) SetPorts(ports map[uint16]Limit) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.apply(ports); err != nil {
		return fmt.Errorf("set ports: %w", err)
	}
	return nil
}

func (l *Limiter) apply(next map[uint16]Limit) error {
	if l.closed {
		return ErrClosed
	}
	for _, p := range slices.Sorted(maps.Keys(next)) {
		if err := next[p].validate(p); err != nil {
			return err
		}
	}
	if uint32(len(next)) > l.opts.MaxPorts {
		return fmt.Errorf("%d ports: %w: at most %d (Options.MaxPorts)", len(next), ErrFull, l.opts.MaxPorts)
	}
	var added []uint16
	for p := range l.limits {
		if _, ok := next[p]; !ok {
			if err := l.removePort(p); err != nil {
				return err
			}
		}
	}
	for _, p := range slices.Sorted(maps.Keys(next)) {
		lim := next[p]
		_, had := l.limits[p]
		if !had {
			// The count exists before the limit, because the tracepoint
			// and the XDP program only look at ports with a limit.
			if err := l.objs.Counts.Update(p, int64(0), ebpf.UpdateNoExist); err != nil {
				return fmt.Errorf("create count of port %d: %w", p, err)
			}
			added = append(added, p)
		}
		v := connlimitClLimit{Max: lim.Max, Action: uint32(lim.Action)}
		if err := l.objs.Limits.Put(p, &v); err != nil {
			return fmt.Errorf("write limit of port %d: %w", p, err)
		}
		l.limits[p] = lim
	}
	if l.trace != nil && len(added) > 0 {
		return l.seed(added)
	}
	return nil
}

// removePort stops limiting p: the limit goes first, so that the
// tracepoint and the XDP program stop counting, then the records, cached
// flows and reservations of the port's connections, and its count. A
// cached flow must not outlive its record: the tracepoint deletes it only
// when it deletes the record, at the connection's close.
func (l *Limiter) removePort(p uint16) error {
	if err := l.objs.Limits.Delete(p); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete limit of port %d: %w", p, err)
	}
	delete(l.limits, p)
	var (
		cookie uint64
		rec    connlimitClSock
		stale  []uint64
	)
	it := l.objs.Socks.Iterate()
	for it.Next(&cookie, &rec) {
		if rec.Port == p {
			stale = append(stale, cookie)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list connections of port %d: %w", p, err)
	}
	for _, c := range stale {
		if err := l.objs.Socks.Delete(c); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("forget connection of port %d: %w", p, err)
		}
	}
	var (
		f     connlimitClFlow
		e     connlimitClEstab
		v     connlimitClPending
		flows []connlimitClFlow
	)
	eit := l.objs.Estab.Iterate()
	for eit.Next(&f, &e) {
		if bpfenc.Ntohs(e.Lport) == p {
			flows = append(flows, f)
		}
	}
	if err := eit.Err(); err != nil {
		return fmt.Errorf("list established flows of port %d: %w", p, err)
	}
	for _, f := range flows {
		if err := l.objs.Estab.Delete(&f); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("forget established flow of port %d: %w", p, err)
		}
	}
	flows = flows[:0]
	pit := l.objs.Pending.Iterate()
	for pit.Next(&f, &v) {
		if v.Port == p {
			flows = append(flows, f)
		}
	}
	if err := pit.Err(); err != nil {
		return fmt.Errorf("list handshakes of port %d: %w", p, err)
	}
	for _, f := range flows {
		if err := l.objs.Pending.Delete(&f); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("forget handshake of port %d: %w", p, err)
		}
	}
	if err := l.objs.Counts.Delete(p); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete count of port %d: %w", p, err)
	}
	return nil
}

// Counts returns the number of open connections of each limited port.
func (l *Limiter) Counts() (map[uint16]int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[uint16]int64, len(l.limits))
	for p := range l.limits {
		var n int64
		if err := l.objs.Counts.Lookup(p, &n); err != nil {
			return nil, fmt.Errorf("read count of port %d: %w", p, err)
		}
		out[p] = n
	}
	return out, nil
}

// Counters reads the program's counters summed over CPUs: each counter of
// the C enum cl_stat, in lower case without its CL_STAT_ prefix ("pass",
// "drop_limit", "tx_rst", "conn_open"), to its total.
func (l *Limiter) Counters() (map[string]uint64, error) {
	return bpfenc.ReadStats(l.objs.Stats, l.names)
}
