// Package ratelimit loads and drives Sluice's XDP connection rate limiter
// (bpf/ratelimit.bpf.c): sliding-window limits on new TCP connections (and,
// where a rule asks, UDP packets) per destination and per source prefix,
// refused by a drop or a TCP RST built in XDP.
//
// A Limiter is safe for concurrent use. SetRules replaces the whole rule set
// atomically: the program sees the old set or the new one, never a mix, and
// rules that did not change keep their window state and counters.
package ratelimit

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
	"github.com/sluice-dp/sluice/dataplane/internal/feature"
	"github.com/sluice-dp/sluice/dataplane/l4"
)

// Sentinel errors, checked with errors.Is.
var (
	// ErrInvalid marks a rejected rule set or option; the error names the
	// rule and field and says what was expected.
	ErrInvalid = errors.New("invalid")
)

// Options size the program's maps and place it in a chain. They are fixed
// at load time.
type Options struct {
	// MaxRules is the number of rules of a rule set. Default 1024.
	MaxRules uint32
	// MaxSources is the number of (rule, source prefix) states kept; the
	// least recently used is forgotten when it is full. Default 65536.
	MaxSources uint32
	// ChainMaps are the chain's maps (chain_progs, chain_cursor) when the
	// program is loaded as a member of a chain; nil loads it standalone,
	// where it passes what it admits to the stack.
	ChainMaps map[string]*ebpf.Map
}

func (o Options) withDefaults() Options {
	if o.MaxRules == 0 {
		o.MaxRules = 1024
	}
	if o.MaxSources == 0 {
		o.MaxSources = 65536
	}
	return o
}

func (o Options) validate() error {
	if o.MaxRules > 1<<20 {
		return fmt.Errorf("max rules %d: %w: at most %d", o.MaxRules, ErrInvalid, 1<<20)
	}
	if o.MaxSources < 16 {
		return fmt.Errorf("max sources %d: %w: at least 16", o.MaxSources, ErrInvalid)
	}
	return nil
}

// installed is a rule of the active set with the slots the program knows
// it by, and the monotonic-clock time its windows are counted from.
type installed struct {
	rule  Rule
	id    uint32
	gen   uint32
	epoch uint64
}

// Limiter is a loaded rate-limit program with its maps.
type Limiter struct {
	mu        sync.Mutex
	objs      ratelimitObjects
	tableSpec *ebpf.MapSpec
	opts      Options
	names     []string
	cpus      int

	rules map[Match]installed
	order []Match
	gen   uint32
}

// Load loads the program and its maps into the kernel with an empty rule
// set (everything passes). The program is not attached anywhere yet.
func Load(opts Options) (*Limiter, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("load ratelimit: %w", err)
	}
	spec, err := loadRatelimit()
	if err != nil {
		return nil, fmt.Errorf("load ratelimit spec: %w", err)
	}
	names, err := bpfenc.StatNames(spec, "rl_stat", "RL_STAT_")
	if err != nil {
		return nil, err
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count possible cpus: %w", err)
	}
	spec.Maps["rules"].InnerMap.MaxEntries = opts.MaxRules
	// Ids of the old and the new set never overlap during a replacement
	// (a packet may still run with the old set), hence twice MaxRules.
	spec.Maps["aggregate"].MaxEntries = 2 * opts.MaxRules
	spec.Maps["rule_stats"].MaxEntries = 2 * opts.MaxRules
	spec.Maps["sources"].MaxEntries = opts.MaxSources

	l := &Limiter{
		tableSpec: spec.Maps["rules"].InnerMap.Copy(),
		opts:      opts,
		names:     names,
		cpus:      cpus,
		rules:     make(map[Match]installed),
	}
	var lo *ebpf.CollectionOptions
	if opts.ChainMaps != nil {
		lo = &ebpf.CollectionOptions{MapReplacements: opts.ChainMaps}
	}
	if err := spec.LoadAndAssign(&l.objs, lo); err != nil {
		return nil, fmt.Errorf("load ratelimit objects: %w", feature.Explain(spec, err))
	}
	if err := l.SetRules(nil); err != nil {
		l.objs.Close()
		return nil, err
	}
	return l, nil
}

// Close releases the program and maps. Attachments hold their own reference
// to the program and keep it running until they are closed.
func (l *Limiter) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.objs.Close()
}

// Program returns the XDP program, for attaching it, putting it in a chain
// or running it with BPF_PROG_RUN.
func (l *Limiter) Program() *ebpf.Program { return l.objs.RatelimitXdp }

// Rules returns the active rule set, defaults filled in, in the order it
// was given.
func (l *Limiter) Rules() []Rule {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Rule, 0, len(l.order))
	for _, m := range l.order {
		out = append(out, l.rules[m].rule)
	}
	return out
}

// SetRules validates rules and replaces the active set with them. A rule
// set with an error changes nothing. A rule whose match, window and source
// prefixes are unchanged keeps its window state and counters (a new rate or
// action applies to the running windows); any other rule starts afresh.
// A new rule's windows start when SetRules is called, on the monotonic
// clock (CLOCK_MONOTONIC, what bpf_ktime_get_ns reads): a caller that
// wants to count admissions per window can align with them.
func (l *Limiter) SetRules(rules []Rule) error {
	if uint32(len(rules)) > l.opts.MaxRules {
		return fmt.Errorf("set rules: %d rules: %w: at most %d", len(rules), ErrInvalid, l.opts.MaxRules)
	}
	next := make([]Rule, len(rules))
	seen := make(map[Match]int, len(rules))
	for i, r := range rules {
		r = r.withDefaults()
		if err := r.validate(); err != nil {
			return fmt.Errorf("set rules: rule %d (%v): %w", i, r.Match, err)
		}
		if j, dup := seen[r.Match]; dup {
			return fmt.Errorf("set rules: rule %d (%v): %w: same match as rule %d", i, r.Match, ErrInvalid, j)
		}
		seen[r.Match] = i
		next[i] = r
	}

	l.mu.Lock()
	defer l.mu.Unlock()

	used := make(map[uint32]bool, len(l.rules)+len(next))
	for _, in := range l.rules {
		used[in.id] = true
	}
	free := uint32(0)
	nextFree := func() uint32 {
		for used[free] {
			free++
		}
		used[free] = true
		return free
	}
	plan := make(map[Match]installed, len(next))
	var fresh []uint32
	gen := l.gen
	now, err := monotonic()
	if err != nil {
		return fmt.Errorf("set rules: %w", err)
	}
	for _, r := range next {
		if old, ok := l.rules[r.Match]; ok && sameState(old.rule, r) {
			plan[r.Match] = installed{rule: r, id: old.id, gen: old.gen, epoch: old.epoch}
			continue
		}
		gen++
		in := installed{rule: r, id: nextFree(), gen: gen, epoch: now}
		plan[r.Match] = in
		fresh = append(fresh, in.id)
	}

	// Fresh ids start from zero state and counters before any packet can
	// reach them: they are published only by the table swap below.
	for _, id := range fresh {
		if err := l.resetID(id); err != nil {
			return fmt.Errorf("set rules: %w", err)
		}
	}
	table, err := ebpf.NewMap(l.tableSpec)
	if err != nil {
		return fmt.Errorf("set rules: create rule table: %w", err)
	}
	defer table.Close()
	for m, in := range plan {
		k, v := encodeRule(in)
		if err := table.Put(&k, &v); err != nil {
			return fmt.Errorf("set rules: write rule %v: %w", m, err)
		}
	}
	oldCfg, newCfg := configOf(l.rules), configOf(plan)
	// While the table is swapped, the program looks up every kind either
	// set uses, so that no packet skips a lookup its rule set needs.
	union := ratelimitRlConfig{Kinds: oldCfg.Kinds | newCfg.Kinds, Udp: oldCfg.Udp | newCfg.Udp}
	if err := l.objs.Config.Put(uint32(0), &union); err != nil {
		return fmt.Errorf("set rules: write config: %w", err)
	}
	if err := l.objs.Rules.Put(uint32(0), table); err != nil {
		return fmt.Errorf("set rules: install rule table: %w", err)
	}
	l.rules = plan
	l.order = make([]Match, len(next))
	for i, r := range next {
		l.order[i] = r.Match
	}
	l.gen = gen
	if err := l.objs.Config.Put(uint32(0), &newCfg); err != nil {
		return fmt.Errorf("set rules: write config: %w", err)
	}
	return nil
}

func (l *Limiter) resetID(id uint32) error {
	if err := l.objs.Aggregate.Put(id, uint64(0)); err != nil {
		return fmt.Errorf("reset state %d: %w", id, err)
	}
	zero := make([]ratelimitRlRuleStats, l.cpus)
	if err := l.objs.RuleStats.Put(id, zero); err != nil {
		return fmt.Errorf("reset counters %d: %w", id, err)
	}
	return nil
}

// monotonic reads CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns, in
// nanoseconds.
func monotonic() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read monotonic clock: %w", err)
	}
	return uint64(ts.Nano()), nil
}

func configOf(rules map[Match]installed) ratelimitRlConfig {
	var c ratelimitRlConfig
	for m := range rules {
		switch {
		case m.Addr.IsValid() && m.Port != 0:
			c.Kinds |= uint32(ratelimitRlKindRL_KIND_ADDR_PORT)
		case m.Addr.IsValid():
			c.Kinds |= uint32(ratelimitRlKindRL_KIND_ADDR)
		case m.Port != 0:
			c.Kinds |= uint32(ratelimitRlKindRL_KIND_PORT)
		default:
			c.Kinds |= uint32(ratelimitRlKindRL_KIND_ANY)
		}
		if m.Proto == l4.UDP {
			c.Udp = 1
		}
	}
	return c
}

func ruleKey(m Match) ratelimitRlRuleKey {
	k := ratelimitRlRuleKey{Port: bpfenc.Htons(m.Port), Proto: uint8(m.Proto)}
	if m.Addr.IsValid() {
		k.Addr = bpfenc.AddrWords(m.Addr)
		k.Family = 6
		if m.Addr.Is4() {
			k.Family = 4
		}
	}
	return k
}

func encodeRule(in installed) (ratelimitRlRuleKey, ratelimitRlRule) {
	r := in.rule
	// Validated by SetRules.
	limit, _ := budget(r.Rate, r.Window)
	srcLimit, _ := budget(r.SourceRate, r.Window)
	v := ratelimitRlRule{
		WindowNs: uint64(r.Window.Nanoseconds()),
		EpochNs:  in.epoch,
		Id:       in.id,
		Gen:      in.gen,
		Limit:    limit,
		SrcLimit: srcLimit,
		SrcMask4: bpfenc.AddrWords(prefixMask(32, r.SourcePrefixV4))[0],
		SrcMask6: bpfenc.AddrWords(prefixMask(128, r.SourcePrefixV6)),
		Action:   uint8(r.Action),
	}
	return ruleKey(r.Match), v
}

// prefixMask is the netmask of a prefix length as an address.
func prefixMask(addrBits, prefix int) netip.Addr {
	var b [16]byte
	for i := range prefix {
		b[i/8] |= 0x80 >> (i % 8)
	}
	if addrBits == 32 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}
