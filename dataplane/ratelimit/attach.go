package ratelimit

import (
	"fmt"

	"github.com/sluice-dp/sluice/dataplane/internal/attach"
)

// Mode is how an XDP program is attached.
type Mode = attach.Mode

// Attach modes.
const (
	// Native runs the program in the driver, before any socket buffer is
	// allocated. The driver must support XDP (veth does).
	Native = attach.Native
	// Generic runs the program on socket buffers; it works on any device
	// and is slower.
	Generic = attach.Generic
)

// Attachment is the program attached to one interface. Close detaches it.
type Attachment = attach.XDPAttachment

// Attach attaches the program on its own (not in a chain) to an interface
// of the current network namespace. RSTs leave by the same interface
// (XDP_TX).
func (l *Limiter) Attach(iface string, mode Mode) (*Attachment, error) {
	a, err := attach.XDP(l.objs.RatelimitXdp, iface, mode)
	if err != nil {
		return nil, fmt.Errorf("attach ratelimit to %s: %w", iface, err)
	}
	return a, nil
}
