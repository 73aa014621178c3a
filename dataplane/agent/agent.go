// Package agent loads and drives Sluice's backend agent (bpf/agent.bpf.c):
// two TC programs on the host end of a VM's interface that decapsulate the
// load balancer's GUE and IP-in-IP packets for configured VIPs and, in
// transparent mode, translate the VIP to the application's own address and
// back, so that the VM needs no VIP, no tunnel and no change.
//
// An Agent is safe for concurrent use.
package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
	"github.com/sluice-dp/sluice/dataplane/internal/feature"
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrInvalid marks a rejected configuration, address or VIP; the error
	// text names the field and what was expected.
	ErrInvalid = errors.New("invalid")
	// ErrNotFound marks removing a VIP or address that is not configured.
	ErrNotFound = errors.New("not found")
	// ErrExists marks adding a VIP or address that is already configured.
	ErrExists = errors.New("already exists")
	// ErrFull marks running out of VIP or address slots (see Options).
	ErrFull = errors.New("capacity exhausted")
)

// Options size the program's maps. They are fixed at load time.
type Options struct {
	// ConnTableSize is the number of connection-table entries, shared by
	// all CPUs. When it is full the least recently used entry is evicted.
	// Default 65536.
	ConnTableSize uint32
	// MaxVIPs is the number of VIPs (address, port, protocol). Default 512.
	MaxVIPs uint32
	// MaxBackendAddrs is the number of backend addresses. Default 64.
	MaxBackendAddrs uint32
}

func (o Options) withDefaults() Options {
	if o.ConnTableSize == 0 {
		o.ConnTableSize = 65536
	}
	if o.MaxVIPs == 0 {
		o.MaxVIPs = 512
	}
	if o.MaxBackendAddrs == 0 {
		o.MaxBackendAddrs = 64
	}
	return o
}

func (o Options) validate() error {
	if o.ConnTableSize < 16 {
		return fmt.Errorf("connection table size %d: %w: at least 16", o.ConnTableSize, ErrInvalid)
	}
	return nil
}

// Config is the runtime configuration; SetConfig replaces it at any time.
type Config struct {
	// GUEPort is the UDP destination port of GUE. Default 6080, the load
	// balancer's default.
	GUEPort uint16
	// TCPIdle is how long a TCP connection lives in the table without a
	// packet. Default 2 h, like a TCP keepalive.
	TCPIdle time.Duration
	// TCPClosing is how long a TCP connection stays after its first FIN or
	// RST, so that the rest of the close and retransmissions are still
	// rewritten. Default 2 min.
	TCPClosing time.Duration
	// UDPIdle is how long a UDP flow lives without a packet. Default 30 s.
	UDPIdle time.Duration
}

func (c Config) withDefaults() Config {
	if c.GUEPort == 0 {
		c.GUEPort = 6080
	}
	if c.TCPIdle == 0 {
		c.TCPIdle = 2 * time.Hour
	}
	if c.TCPClosing == 0 {
		c.TCPClosing = 2 * time.Minute
	}
	if c.UDPIdle == 0 {
		c.UDPIdle = 30 * time.Second
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.TCPIdle < 0:
		return fmt.Errorf("config tcp_idle %v: %w: not negative", c.TCPIdle, ErrInvalid)
	case c.TCPClosing < 0:
		return fmt.Errorf("config tcp_closing %v: %w: not negative", c.TCPClosing, ErrInvalid)
	case c.UDPIdle < 0:
		return fmt.Errorf("config udp_idle %v: %w: not negative", c.UDPIdle, ErrInvalid)
	}
	return nil
}

// Agent is a loaded agent with its maps.
type Agent struct {
	mu    sync.Mutex
	objs  agentObjects
	opts  Options
	cfg   Config
	names []string

	vips  map[VIP]Target
	addrs map[netip.Addr]bool
}

// Load loads both programs and their maps into the kernel and applies cfg.
// Nothing is attached yet (see Attach).
func Load(opts Options, cfg Config) (*Agent, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("load agent: %w", err)
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("load agent: %w", err)
	}
	spec, err := loadAgent()
	if err != nil {
		return nil, fmt.Errorf("load agent spec: %w", err)
	}
	names, err := bpfenc.StatNames(spec, "agent_stat", "AGENT_STAT_")
	if err != nil {
		return nil, err
	}
	spec.Maps["conns"].MaxEntries = opts.ConnTableSize
	spec.Maps["vips"].MaxEntries = opts.MaxVIPs
	spec.Maps["backend_addrs"].MaxEntries = opts.MaxBackendAddrs

	a := &Agent{
		opts:  opts,
		names: names,
		vips:  make(map[VIP]Target),
		addrs: make(map[netip.Addr]bool),
	}
	if err := spec.LoadAndAssign(&a.objs, nil); err != nil {
		return nil, fmt.Errorf("load agent objects: %w", feature.Explain(spec, err))
	}
	if err := a.writeConfig(cfg); err != nil {
		a.objs.Close()
		return nil, err
	}
	return a, nil
}

// Close releases the programs and maps. Attachments hold their own
// reference to the programs and keep them running until they are closed.
func (a *Agent) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.objs.Close()
}

// Egress returns the program for packets toward the VM (decapsulation), for
// attaching it elsewhere or running it with BPF_PROG_RUN.
func (a *Agent) Egress() *ebpf.Program { return a.objs.AgentEgress }

// Ingress returns the program for packets from the VM (reply rewrite).
func (a *Agent) Ingress() *ebpf.Program { return a.objs.AgentIngress }

// Options returns the sizes the agent was loaded with.
func (a *Agent) Options() Options { return a.opts }

// Config returns the configuration in force, defaults filled in.
func (a *Agent) Config() Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// SetConfig validates and applies a new configuration; a rejected one
// changes nothing. New timeouts apply to existing connections too.
func (a *Agent) SetConfig(cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("set config: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.writeConfig(cfg)
}

func (a *Agent) writeConfig(cfg Config) error {
	c := agentAgentConfig{
		TcpIdleNs:    uint64(cfg.TCPIdle.Nanoseconds()),
		TcpClosingNs: uint64(cfg.TCPClosing.Nanoseconds()),
		UdpIdleNs:    uint64(cfg.UDPIdle.Nanoseconds()),
		GuePort:      bpfenc.Htons(cfg.GUEPort),
		Configured:   1,
	}
	if err := a.objs.Config.Put(uint32(0), &c); err != nil {
		return fmt.Errorf("write agent config: %w", err)
	}
	a.cfg = cfg
	return nil
}

// AddBackendAddr makes addr, an address of this backend that the load
// balancer sends tunnels to, one whose tunnels the agent decapsulates.
func (a *Agent) AddBackendAddr(addr netip.Addr) error {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return fmt.Errorf("add backend address: %w: an IPv4 or IPv6 address", ErrInvalid)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.addrs[addr] {
		return fmt.Errorf("add backend address %v: %w", addr, ErrExists)
	}
	if uint32(len(a.addrs)) >= a.opts.MaxBackendAddrs {
		return fmt.Errorf("add backend address %v: %w: at most %d", addr, ErrFull, a.opts.MaxBackendAddrs)
	}
	k := backendKey(addr)
	if err := a.objs.BackendAddrs.Put(&k, uint8(1)); err != nil {
		return fmt.Errorf("add backend address %v: %w", addr, err)
	}
	a.addrs[addr] = true
	return nil
}

// RemoveBackendAddr stops decapsulating tunnels to addr; they then reach
// the VM as they are.
func (a *Agent) RemoveBackendAddr(addr netip.Addr) error {
	addr = addr.Unmap()
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.addrs[addr] {
		return fmt.Errorf("remove backend address %v: %w", addr, ErrNotFound)
	}
	k := backendKey(addr)
	if err := a.objs.BackendAddrs.Delete(&k); err != nil {
		return fmt.Errorf("remove backend address %v: %w", addr, err)
	}
	delete(a.addrs, addr)
	return nil
}

func backendKey(addr netip.Addr) agentBackendKey {
	return agentBackendKey{Addr: bpfenc.AddrWords(addr), Family: family(addr)}
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return 4
	}
	return 6
}
