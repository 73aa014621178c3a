package lb

import (
	"fmt"
	"net"

	"github.com/cilium/ebpf/link"
)

// Mode is how an XDP program is attached.
type Mode uint8

// Attach modes.
const (
	// Native runs the program in the driver, before any socket buffer is
	// allocated. The driver must support XDP (veth does).
	Native Mode = iota
	// Generic runs the program on socket buffers; it works on any device
	// and is slower.
	Generic
)

func (m Mode) String() string {
	if m == Generic {
		return "generic"
	}
	return "native"
}

// Attachment is the program attached to one interface. Close detaches it.
type Attachment struct {
	link.Link
	Interface string
	Mode      Mode
}

// Attach attaches the program to an interface of the current network
// namespace. The program returns its encapsulated packets out of the same
// interface (XDP_TX).
func (l *LB) Attach(iface string, mode Mode) (*Attachment, error) {
	dev, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("attach lb to %s: %w", iface, err)
	}
	flags := link.XDPDriverMode
	if mode == Generic {
		flags = link.XDPGenericMode
	}
	lk, err := link.AttachXDP(link.XDPOptions{Program: l.objs.LbXdp, Interface: dev.Index, Flags: flags})
	if err != nil {
		return nil, fmt.Errorf("attach lb to %s in %s mode: %w", iface, mode, err)
	}
	return &Attachment{Link: lk, Interface: iface, Mode: mode}, nil
}
