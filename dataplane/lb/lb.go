// Package lb loads and drives Sluice's XDP layer-4 load balancer
// (bpf/lb.bpf.c): VIPs, their backends and Maglev rings, the per-CPU
// connection tables, the global configuration, attachment to interfaces and
// the counters.
//
// An LB is safe for concurrent use. Every change is applied so that a packet
// in flight sees either the old or the new state: a VIP's ring is rebuilt in a
// new map and swapped in with one update.
package lb

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sluice-dp/sluice/ctl/maglev"
	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
	"github.com/sluice-dp/sluice/dataplane/internal/feature"
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrInvalid marks a rejected configuration, VIP or backend set; the
	// error text names the field and what was expected.
	ErrInvalid = errors.New("invalid")
	// ErrNotFound marks an operation on a VIP that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists marks adding a VIP that already exists.
	ErrExists = errors.New("already exists")
	// ErrFull marks running out of VIP or backend slots (see Options).
	ErrFull = errors.New("capacity exhausted")
)

// Options size the program's maps. They are fixed at load time.
type Options struct {
	// RingSize is the number of Maglev slots per VIP, one of maglev.Sizes.
	// Default maglev.DefaultSize (65537).
	RingSize uint32
	// ConnTableSize is the number of connection-table entries per CPU.
	// Default 65536.
	ConnTableSize uint32
	// MaxVIPs is the number of VIPs (address, port, protocol). Default 512.
	MaxVIPs uint32
	// MaxBackends is the number of (VIP, backend) pairs. Default 4096.
	MaxBackends uint32
}

func (o Options) withDefaults() Options {
	if o.RingSize == 0 {
		o.RingSize = maglev.DefaultSize
	}
	if o.ConnTableSize == 0 {
		o.ConnTableSize = 65536
	}
	if o.MaxVIPs == 0 {
		o.MaxVIPs = 512
	}
	if o.MaxBackends == 0 {
		o.MaxBackends = 4096
	}
	return o
}

func (o Options) validate() error {
	ok := false
	for _, s := range maglev.Sizes {
		ok = ok || s == o.RingSize
	}
	if !ok {
		return fmt.Errorf("ring size %d: %w: one of %v", o.RingSize, ErrInvalid, maglev.Sizes)
	}
	if o.ConnTableSize < 16 {
		return fmt.Errorf("connection table size %d: %w: at least 16", o.ConnTableSize, ErrInvalid)
	}
	// Load sizes maps with 2·MaxVIPs and MaxBackends+1 entries, which
	// must not wrap around.
	if o.MaxVIPs > math.MaxUint32/2 {
		return fmt.Errorf("max vips %d: %w: at most %d", o.MaxVIPs, ErrInvalid, uint32(math.MaxUint32/2))
	}
	if o.MaxBackends > math.MaxUint32-1 {
		return fmt.Errorf("max backends %d: %w: at most %d", o.MaxBackends, ErrInvalid, uint32(math.MaxUint32-1))
	}
	return nil
}

// Config is the runtime configuration; SetConfig replaces it at any time.
type Config struct {
	// Seed seeds both the flow hash and the Maglev permutations. LB nodes
	// with the same seed and backends send a flow to the same backend.
	Seed uint64
	// UDPIdle is how long a UDP connection-table entry lives without
	// traffic. Default 30 s.
	UDPIdle time.Duration
	// TunnelMTU is the largest encapsulated packet, outer header included.
	// Larger packets get ICMP "fragmentation needed" / "packet too big".
	// Default 1500; at least 1328 so that IPv6 keeps its 1280 minimum.
	TunnelMTU int
	// SourceV4 and SourceV6 are this node's addresses, the outer source of
	// GUE packets. A backend of a family needs that family's source.
	SourceV4, SourceV6 netip.Addr
	// GatewayMAC is the next hop of every encapsulated packet.
	GatewayMAC net.HardwareAddr
	// GUEPort is the outer UDP destination port of GUE. Default 6080.
	GUEPort uint16
	// IPIPPrefixV4 and IPIPPrefixV6 hold the per-flow outer source
	// addresses of IPIP packets. Defaults 172.16.0.0/16 and 100::/64; the
	// IPv6 prefix must be a /64.
	IPIPPrefixV4, IPIPPrefixV6 netip.Prefix
}

// DefaultIPIPPrefixV4 and DefaultIPIPPrefixV6 are the IPIP outer source
// prefixes used when Config leaves them unset.
var (
	DefaultIPIPPrefixV4 = netip.MustParsePrefix("172.16.0.0/16")
	DefaultIPIPPrefixV6 = netip.MustParsePrefix("100::/64")
)

func (c Config) withDefaults() Config {
	if c.UDPIdle == 0 {
		c.UDPIdle = 30 * time.Second
	}
	if c.TunnelMTU == 0 {
		c.TunnelMTU = 1500
	}
	if c.GUEPort == 0 {
		c.GUEPort = 6080
	}
	if !c.IPIPPrefixV4.IsValid() {
		c.IPIPPrefixV4 = DefaultIPIPPrefixV4
	}
	if !c.IPIPPrefixV6.IsValid() {
		c.IPIPPrefixV6 = DefaultIPIPPrefixV6
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.UDPIdle < 0:
		return fmt.Errorf("config udp_idle %v: %w: not negative", c.UDPIdle, ErrInvalid)
	case c.TunnelMTU < 1328 || c.TunnelMTU > 9216:
		return fmt.Errorf("config tunnel_mtu %d: %w: between 1328 and 9216", c.TunnelMTU, ErrInvalid)
	case c.SourceV4.IsValid() && !c.SourceV4.Is4():
		return fmt.Errorf("config source_v4 %v: %w: an IPv4 address", c.SourceV4, ErrInvalid)
	case c.SourceV6.IsValid() && (!c.SourceV6.Is6() || c.SourceV6.Is4In6()):
		return fmt.Errorf("config source_v6 %v: %w: an IPv6 address", c.SourceV6, ErrInvalid)
	case len(c.GatewayMAC) != 6:
		return fmt.Errorf("config gateway_mac %q: %w: a 6-byte MAC address", c.GatewayMAC, ErrInvalid)
	case !c.IPIPPrefixV4.Addr().Is4():
		return fmt.Errorf("config ipip_prefix_v4 %v: %w: an IPv4 prefix", c.IPIPPrefixV4, ErrInvalid)
	case !c.IPIPPrefixV6.Addr().Is6() || c.IPIPPrefixV6.Bits() != 64:
		return fmt.Errorf("config ipip_prefix_v6 %v: %w: an IPv6 /64", c.IPIPPrefixV6, ErrInvalid)
	}
	return nil
}

// LB is a loaded load-balancer program with its maps.
type LB struct {
	mu       sync.Mutex
	objs     lbObjects
	ringSpec *ebpf.MapSpec
	opts     Options
	cfg      Config
	names    []string

	vips     map[VIP]*vipState
	addrRefs map[netip.Addr]int
	vipIDs   idPool
	realIDs  idPool
	gen      uint32
}

// Load loads the program and its maps into the kernel and applies cfg. The
// program is not attached anywhere yet (see Attach).
func Load(opts Options, cfg Config) (*LB, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("load lb: %w", err)
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("load lb: %w", err)
	}
	spec, err := loadLb()
	if err != nil {
		return nil, fmt.Errorf("load lb spec: %w", err)
	}
	names, err := bpfenc.StatNames(spec, "lb_stat", "LB_STAT_")
	if err != nil {
		return nil, err
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count possible cpus: %w", err)
	}
	// Each VIP address also has a marker entry, hence twice MaxVIPs.
	spec.Maps["vips"].MaxEntries = 2 * opts.MaxVIPs
	spec.Maps["rings"].MaxEntries = opts.MaxVIPs
	spec.Maps["rings"].InnerMap.MaxEntries = opts.RingSize
	spec.Maps["vip_stats"].MaxEntries = opts.MaxVIPs
	// Backend id 0 is reserved (see realIDs below), hence one more slot.
	spec.Maps["reals"].MaxEntries = opts.MaxBackends + 1
	spec.Maps["real_stats"].MaxEntries = opts.MaxBackends + 1
	spec.Maps["conns"].MaxEntries = uint32(cpus)
	spec.Maps["conns"].InnerMap.MaxEntries = opts.ConnTableSize

	l := &LB{
		ringSpec: spec.Maps["rings"].InnerMap.Copy(),
		opts:     opts,
		names:    names,
		vips:     make(map[VIP]*vipState),
		addrRefs: make(map[netip.Addr]int),
		vipIDs:   newIDPool(0, opts.MaxVIPs),
		// Real id 0 is never handed out, so that a zeroed ring slot can
		// never name a live backend.
		realIDs: newIDPool(1, opts.MaxBackends+1),
	}
	if err := spec.LoadAndAssign(&l.objs, nil); err != nil {
		return nil, fmt.Errorf("load lb objects: %w", feature.Explain(spec, err))
	}
	connSpec := spec.Maps["conns"].InnerMap
	for cpu := range cpus {
		m, err := ebpf.NewMap(connSpec)
		if err != nil {
			l.objs.Close()
			return nil, fmt.Errorf("create connection table of cpu %d: %w", cpu, err)
		}
		err = l.objs.Conns.Put(uint32(cpu), m)
		m.Close()
		if err != nil {
			l.objs.Close()
			return nil, fmt.Errorf("install connection table of cpu %d: %w", cpu, err)
		}
	}
	if err := l.writeConfig(cfg); err != nil {
		l.objs.Close()
		return nil, err
	}
	return l, nil
}

// Close releases the program and maps. Attachments hold their own reference
// to the program and keep it running until they are closed.
func (l *LB) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.objs.Close()
}

// Program returns the XDP program, for attaching it elsewhere or running it
// with BPF_PROG_RUN in tests and benchmarks.
func (l *LB) Program() *ebpf.Program { return l.objs.LbXdp }

// Options returns the sizes the program was loaded with.
func (l *LB) Options() Options { return l.opts }

// Config returns the configuration in force, defaults filled in.
func (l *LB) Config() Config {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cfg
}

// SetConfig validates and applies a new configuration. A rejected
// configuration changes nothing. Changing the seed re-hashes every VIP.
func (l *LB) SetConfig(cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("set config: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for v, s := range l.vips {
		if err := checkSources(cfg, v, s.backends); err != nil {
			return fmt.Errorf("set config: %w", err)
		}
	}
	reseed := cfg.Seed != l.cfg.Seed
	if err := l.writeConfig(cfg); err != nil {
		return err
	}
	if reseed {
		for v, s := range l.vips {
			if err := l.publishRing(s.id, s.backends); err != nil {
				return fmt.Errorf("set config: rebuild ring of vip %v: %w", v, err)
			}
		}
	}
	return nil
}

func (l *LB) writeConfig(cfg Config) error {
	var c lbLbConfig
	c.HashSeed = cfg.Seed
	c.UdpIdleNs = uint64(cfg.UDPIdle.Nanoseconds())
	c.RingSize = l.opts.RingSize
	c.TunnelMtu = uint32(cfg.TunnelMTU)
	if cfg.SourceV4.IsValid() {
		c.SrcV4 = bpfenc.AddrWords(cfg.SourceV4)[0]
	}
	if cfg.SourceV6.IsValid() {
		c.SrcV6 = bpfenc.AddrWords(cfg.SourceV6)
	}
	c.IpipV4Prefix = bpfenc.AddrWords(cfg.IPIPPrefixV4.Masked().Addr())[0]
	c.IpipV4PrefixLen = uint8(cfg.IPIPPrefixV4.Bits())
	p6 := bpfenc.AddrWords(cfg.IPIPPrefixV6.Masked().Addr())
	c.IpipV6Prefix = [2]uint32{p6[0], p6[1]}
	c.GuePort = bpfenc.Htons(cfg.GUEPort)
	copy(c.GwMac[:], cfg.GatewayMAC)
	if err := l.objs.Config.Put(uint32(0), &c); err != nil {
		return fmt.Errorf("write lb config: %w", err)
	}
	l.cfg = cfg
	return nil
}

// FlowSeed is the 32-bit seed of the flow hash derived from Config.Seed.
func FlowSeed(seed uint64) uint32 { return uint32(seed) }
