package ratelimit

import (
	"fmt"

	"github.com/sluice-dp/sluice/dataplane/attach"
)

// Attach attaches the program on its own (not in a chain) to an interface
// of the current network namespace. RSTs leave by the same interface
// (XDP_TX).
func (l *Limiter) Attach(iface string, mode attach.Mode) (*attach.XDPAttachment, error) {
	a, err := attach.XDP(l.objs.RatelimitXdp, iface, mode)
	if err != nil {
		return nil, fmt.Errorf("attach ratelimit to %s: %w", iface, err)
	}
	return a, nil
}
