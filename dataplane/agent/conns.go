package agent

import (
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
	"github.com/sluice-dp/sluice/dataplane/l4"
)

// Conn is one entry of the connection table: a transparent-mode connection
// whose replies are rewritten.
type Conn struct {
	Proto l4.Proto
	// Client is the client's address and port.
	Client netip.AddrPort
	// App is where the application listens (the rewritten destination).
	App netip.AddrPort
	// VIP is what the reply's source is rewritten to.
	VIP netip.AddrPort
	// Closing says a FIN or RST was seen: the entry lives for
	// Config.TCPClosing after it.
	Closing bool
	// Idle is how long ago the last packet was seen (for a closing entry,
	// the first FIN or RST).
	Idle time.Duration
	// Expired says the entry is past its timeout: the programs treat it as
	// absent and replace or delete it when they next see it.
	Expired bool
}

// Connections reads the connection table.
func (a *Agent) Connections() ([]Conn, error) {
	a.mu.Lock()
	cfg := a.cfg
	a.mu.Unlock()
	now, err := monoCoarse()
	if err != nil {
		return nil, err
	}
	var (
		k     agentConnKey
		v     agentConnState
		conns []Conn
	)
	it := a.objs.Conns.Iterate()
	for it.Next(&k, &v) {
		c := Conn{
			Proto:   l4.Proto(k.Proto),
			Client:  netip.AddrPortFrom(bpfenc.WordsAddr(k.Client, k.Family == 4), bpfenc.Ntohs(k.ClientPort)),
			App:     netip.AddrPortFrom(bpfenc.WordsAddr(k.App, k.Family == 4), bpfenc.Ntohs(k.AppPort)),
			VIP:     netip.AddrPortFrom(bpfenc.WordsAddr(v.Vip, k.Family == 4), bpfenc.Ntohs(v.VipPort)),
			Closing: v.State == uint8(agentAgentConnStateAGENT_CONN_CLOSING),
		}
		if now > v.LastSeen {
			c.Idle = time.Duration(now - v.LastSeen)
		}
		limit := cfg.TCPIdle
		switch {
		case c.Proto == l4.UDP:
			limit = cfg.UDPIdle
		case c.Closing:
			limit = cfg.TCPClosing
		}
		c.Expired = c.Idle > limit
		conns = append(conns, c)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read connections: %w", err)
	}
	return conns, nil
}

// monoCoarse is the clock of bpf_ktime_get_coarse_ns(), which the programs
// stamp entries with.
func monoCoarse() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		return 0, fmt.Errorf("read monotonic clock: %w", err)
	}
	return uint64(ts.Nano()), nil
}
