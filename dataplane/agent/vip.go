package agent

import (
	"fmt"
	"net/netip"

	"github.com/sluice-dp/sluice/dataplane/internal/bpfenc"
	"github.com/sluice-dp/sluice/dataplane/l4"
)

// VIP identifies a virtual service, as the load balancer does. Port 0 means
// every port of Addr for Proto; a packet matches its exact port first.
type VIP struct {
	Addr  netip.Addr
	Port  uint16
	Proto l4.Proto
}

// String formats the VIP as address:port/protocol.
func (v VIP) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(v.Addr, v.Port), v.Proto)
}

// Mode is how a VIP's packets reach the application.
type Mode uint8

// Delivery modes.
const (
	// Local hands the decapsulated packet to the VM unchanged: the VM has
	// the VIP on an interface (usually lo) and replies from it.
	Local Mode = 1
	// Transparent rewrites the VIP to the application's address, tracks the
	// connection and rewrites replies back, so the VM needs no VIP.
	Transparent Mode = 2
)

// String returns the mode's name as the configuration spells it.
func (m Mode) String() string {
	switch m {
	case Local:
		return "local"
	case Transparent:
		return "transparent"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Target is where a VIP's packets go.
type Target struct {
	Mode Mode
	// App is the application's address and port in transparent mode, of
	// the VIP's family. Port 0 keeps the packet's destination port. Unused
	// in local mode.
	App netip.AddrPort
}

func (v VIP) validate() error {
	switch {
	case !v.Addr.IsValid() || v.Addr.Is4In6():
		return fmt.Errorf("vip %v: address: %w: an IPv4 or IPv6 address", v, ErrInvalid)
	case v.Proto != l4.TCP && v.Proto != l4.UDP:
		return fmt.Errorf("vip %v: protocol: %w: tcp or udp", v, ErrInvalid)
	}
	return nil
}

func (t Target) validate(v VIP) error {
	switch t.Mode {
	case Local:
		if t.App.IsValid() {
			return fmt.Errorf("vip %v: app %v: %w: local mode takes no application address", v, t.App, ErrInvalid)
		}
	case Transparent:
		a := t.App.Addr()
		if !a.IsValid() || a.Is4In6() || a.Is4() != v.Addr.Is4() {
			return fmt.Errorf("vip %v: app %v: %w: transparent mode needs an application address of the VIP's family", v, t.App, ErrInvalid)
		}
	default:
		return fmt.Errorf("vip %v: mode %v: %w: local or transparent", v, t.Mode, ErrInvalid)
	}
	return nil
}

func vipKey(v VIP) agentAgentVipKey {
	return agentAgentVipKey{Addr: bpfenc.AddrWords(v.Addr), Port: bpfenc.Htons(v.Port), Proto: uint8(v.Proto), Family: family(v.Addr)}
}

// AddVIP makes the agent deliver tunnelled packets for v in mode m. app is
// the application's address in transparent mode (see Target.App) and must
// be the zero AddrPort in local mode.
func (a *Agent) AddVIP(v VIP, m Mode, app netip.AddrPort) error {
	t := Target{Mode: m, App: app}
	if err := v.validate(); err != nil {
		return fmt.Errorf("add %w", err)
	}
	if err := t.validate(v); err != nil {
		return fmt.Errorf("add %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.vips[v]; ok {
		return fmt.Errorf("add vip %v: %w", v, ErrExists)
	}
	if uint32(len(a.vips)) >= a.opts.MaxVIPs {
		return fmt.Errorf("add vip %v: %w: at most %d", v, ErrFull, a.opts.MaxVIPs)
	}
	k := vipKey(v)
	val := agentAgentVip{Mode: uint32(t.Mode)}
	if t.Mode == Transparent {
		val.AppAddr = bpfenc.AddrWords(t.App.Addr())
		val.AppPort = bpfenc.Htons(t.App.Port())
	}
	if err := a.objs.Vips.Put(&k, &val); err != nil {
		return fmt.Errorf("add vip %v: %w", v, err)
	}
	a.vips[v] = t
	return nil
}

// RemoveVIP stops delivering v; its tunnelled packets are then dropped.
// Tracked connections keep their reply rewrite until they expire, so that
// replies already under way still leave from the VIP.
func (a *Agent) RemoveVIP(v VIP) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.vips[v]; !ok {
		return fmt.Errorf("remove vip %v: %w", v, ErrNotFound)
	}
	k := vipKey(v)
	if err := a.objs.Vips.Delete(&k); err != nil {
		return fmt.Errorf("remove vip %v: %w", v, err)
	}
	delete(a.vips, v)
	return nil
}

// VIPs returns the configured VIPs and their targets.
func (a *Agent) VIPs() map[VIP]Target {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[VIP]Target, len(a.vips))
	for v, t := range a.vips {
		m[v] = t
	}
	return m
}
