// Package attach attaches Sluice's XDP and TC programs to interfaces of the
// current network namespace, the same way for every program: XDP in native
// or generic mode, TC with tcx links where the kernel has them and clsact
// cls_bpf filters where it does not.
package attach

import (
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Mode is how an XDP program is attached.
type Mode uint8

// XDP attach modes.
const (
	// Native runs the program in the driver, before any socket buffer is
	// allocated. The driver must support XDP (veth does).
	Native Mode = iota
	// Generic runs the program on socket buffers; it works on any device
	// and is slower.
	Generic
)

// String returns the mode's name, for logs and errors.
func (m Mode) String() string {
	if m == Generic {
		return "generic"
	}
	return "native"
}

// XDPAttachment is an XDP program attached to one interface. Close detaches
// it.
type XDPAttachment struct {
	link.Link
	Interface string
	Mode      Mode
}

// XDP attaches prog to iface in the given mode. The link holds its own
// reference to the program, so the program keeps running after its loader
// closes it, until the attachment is closed.
func XDP(prog *ebpf.Program, iface string, mode Mode) (*XDPAttachment, error) {
	dev, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("find interface %s: %w", iface, err)
	}
	flags := link.XDPDriverMode
	if mode == Generic {
		flags = link.XDPGenericMode
	}
	lk, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: dev.Index, Flags: flags})
	if err != nil {
		return nil, fmt.Errorf("%s mode: %w", mode, err)
	}
	return &XDPAttachment{Link: lk, Interface: iface, Mode: mode}, nil
}
