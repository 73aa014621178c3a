package lb

import (
	"fmt"

	"github.com/sluice-dp/sluice/dataplane/attach"
)

// Attach attaches the program to an interface of the current network
// namespace. The program returns its encapsulated packets out of the same
// interface (XDP_TX).
func (l *LB) Attach(iface string, mode attach.Mode) (*attach.XDPAttachment, error) {
	a, err := attach.XDP(l.objs.LbXdp, iface, mode)
	if err != nil {
		return nil, fmt.Errorf("attach lb to %s: %w", iface, err)
	}
	return a, nil
}
