package ratelimit

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/dataplane/police"
)

// Match is the destination a rule applies to. The zero Addr is "any
// address" and Port 0 is "any port"; a new connection takes the most
// specific rule of its protocol: address and port, then address, then
// port, then any.
type Match struct {
	Addr netip.Addr
	Port uint16
	// Proto is l4.TCP (the default) or l4.UDP. A TCP rule counts SYNs
	// without ACK; a UDP rule counts every UDP packet (packets per
	// second), which is why UDP is only counted where a UDP rule asks
	// for it.
	Proto l4.Proto
}

// String formats the match as "tcp 192.0.2.1:80", "udp *:53", "tcp [2001:db8::1]:*".
func (m Match) String() string {
	addr := "*"
	if m.Addr.IsValid() {
		addr = m.Addr.String()
		if m.Addr.Is6() {
			addr = "[" + addr + "]"
		}
	}
	port := "*"
	if m.Port != 0 {
		port = fmt.Sprint(m.Port)
	}
	return fmt.Sprintf("%v %s:%s", m.Proto, addr, port)
}

// Window bounds and the largest budget of one window.
const (
	DefaultWindow = time.Second
	MinWindow     = 10 * time.Millisecond
	MaxWindow     = time.Minute
	// MaxBudget bounds rate × window (and source_rate × window): a
	// window's counts are packed in 22-bit fields (see enum rl_window_bits
	// in the C header).
	MaxBudget = 1<<22 - 1
)

// Default source prefix lengths of per-source limits.
const (
	DefaultSourcePrefixV4 = 32
	DefaultSourcePrefixV6 = 64
)

// Rule limits the new connections to one destination.
type Rule struct {
	Match
	// Rate is the connections (UDP: packets) per second admitted to the
	// destination as a whole. 0 means no aggregate limit.
	Rate uint32
	// SourceRate is the connections per second admitted from each source
	// prefix. 0 means no per-source limit.
	SourceRate uint32
	// SourcePrefixV4 and SourcePrefixV6 group sources for SourceRate:
	// every address of a prefix shares one budget. Defaults 32 and 64.
	SourcePrefixV4, SourcePrefixV6 int
	// Window is the length of the sliding window. Rate × Window (and
	// SourceRate × Window) must be a whole number of connections, at most
	// MaxBudget. Default 1 s, between MinWindow and MaxWindow.
	Window time.Duration
	// Action is what happens to refused connections. Default police.Drop; police.RST is
	// for TCP rules only.
	Action police.Action
}

func (r Rule) withDefaults() Rule {
	if r.Proto == 0 {
		r.Proto = l4.TCP
	}
	if r.Window == 0 {
		r.Window = DefaultWindow
	}
	if r.SourcePrefixV4 == 0 {
		r.SourcePrefixV4 = DefaultSourcePrefixV4
	}
	if r.SourcePrefixV6 == 0 {
		r.SourcePrefixV6 = DefaultSourcePrefixV6
	}
	return r
}

// Validate checks a rule as SetRules does, after filling in the defaults,
// so that a configuration can be checked before it is applied. The error
// wraps ErrInvalid and names the field at fault.
func (r Rule) Validate() error {
	return r.withDefaults().validate()
}

func (r Rule) validate() error {
	switch {
	case r.Proto != l4.TCP && r.Proto != l4.UDP:
		return fmt.Errorf("proto %v: %w: tcp or udp", r.Proto, ErrInvalid)
	case r.Addr.IsValid() && (r.Addr.Zone() != "" || r.Addr.Is4In6()):
		return fmt.Errorf("addr %v: %w: an IPv4 or IPv6 address without zone, not IPv4-mapped", r.Addr, ErrInvalid)
	case r.Addr.IsValid() && r.Addr.IsUnspecified():
		return fmt.Errorf("addr %v: %w: a specific address (leave it unset for any address)", r.Addr, ErrInvalid)
	case r.Rate == 0 && r.SourceRate == 0:
		return fmt.Errorf("rate: %w: rate or source_rate must be set", ErrInvalid)
	case r.Window < MinWindow || r.Window > MaxWindow:
		return fmt.Errorf("window %v: %w: between %v and %v", r.Window, ErrInvalid, MinWindow, MaxWindow)
	case r.SourcePrefixV4 < 1 || r.SourcePrefixV4 > 32:
		return fmt.Errorf("source_prefix_v4 %d: %w: between 1 and 32", r.SourcePrefixV4, ErrInvalid)
	case r.SourcePrefixV6 < 1 || r.SourcePrefixV6 > 128:
		return fmt.Errorf("source_prefix_v6 %d: %w: between 1 and 128", r.SourcePrefixV6, ErrInvalid)
	case r.Action != police.Drop && r.Action != police.RST:
		return fmt.Errorf("action %v: %w: drop or rst", r.Action, ErrInvalid)
	case r.Action == police.RST && r.Proto != l4.TCP:
		return fmt.Errorf("action rst: %w: only tcp rules can answer with a reset", ErrInvalid)
	}
	if _, err := budget(r.Rate, r.Window); err != nil {
		return fmt.Errorf("rate %d: %w", r.Rate, err)
	}
	if _, err := budget(r.SourceRate, r.Window); err != nil {
		return fmt.Errorf("source_rate %d: %w", r.SourceRate, err)
	}
	return nil
}

// budget is rate × window as a whole number of connections, at most
// MaxBudget: the program compares whole numbers, so a fractional budget
// would silently change the rate.
func budget(rate uint32, window time.Duration) (uint32, error) {
	n := uint64(rate) * uint64(window.Nanoseconds())
	if n%uint64(time.Second) != 0 {
		return 0, fmt.Errorf("%w: rate × window %v is not a whole number of connections", ErrInvalid, window)
	}
	n /= uint64(time.Second)
	if n > MaxBudget {
		return 0, fmt.Errorf("%w: rate × window %v is %d connections, at most %d", ErrInvalid, window, n, MaxBudget)
	}
	return uint32(n), nil
}

// sameState says whether the window state of old is still meaningful for
// new: counts kept over a change of window length or of source grouping
// would be counts of something else.
func sameState(old, new Rule) bool {
	return old.Window == new.Window && old.SourcePrefixV4 == new.SourcePrefixV4 &&
		old.SourcePrefixV6 == new.SourcePrefixV6
}
