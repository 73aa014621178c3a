package attach

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Method is how TC programs are attached to an interface.
type Method uint8

// TC attach methods.
const (
	// TCX links (Linux 6.6 and later): owned by the process, detached when
	// closed, and they never disturb other programs on the interface.
	TCX Method = iota + 1
	// Netlink adds cls_bpf filters in direct-action mode to a clsact qdisc,
	// which kernels without tcx (such as 6.1) need.
	Netlink
)

// String returns the method's name, for logs.
func (m Method) String() string {
	switch m {
	case TCX:
		return "tcx"
	case Netlink:
		return "netlink"
	}
	return fmt.Sprintf("method(%d)", uint8(m))
}

// Direction is the side of an interface a TC program runs on.
type Direction uint8

// TC directions.
const (
	// Ingress runs the program on packets the interface receives.
	Ingress Direction = iota + 1
	// Egress runs the program on packets the interface sends.
	Egress
)

// String returns the direction's name, for logs.
func (d Direction) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	}
	return fmt.Sprintf("direction(%d)", uint8(d))
}

// TCProgram is one program for TC to attach.
type TCProgram struct {
	Program   *ebpf.Program
	Direction Direction
	// Name is the cls_bpf filter's name on the netlink path, which tools
	// such as `tc filter show` print.
	Name string
}

// TCOptions adjust TC.
type TCOptions struct {
	// ForceNetlink uses the clsact/cls_bpf path even where tcx exists, for
	// testing it and for tools that only understand filters.
	ForceNetlink bool
	// Priority and Handle identify the cls_bpf filters of this caller on the
	// netlink path, so that replacing them on a second attach and deleting
	// them on detach never touches another program's filters. Each caller
	// uses its own priority; both must be non-zero.
	Priority uint16
	Handle   uint32
}

// TCAttachment is a set of TC programs attached to one interface. Close
// detaches all of them.
type TCAttachment struct {
	Interface string
	Method    Method

	links   []link.Link
	filters []*netlink.BpfFilter
	qdisc   *netlink.GenericQdisc // created by TC, removed by Close when empty
	// nl is bound to the namespace the filters were added in, so that
	// Close finds them whichever namespace it is called from.
	nl *netlink.Handle
}

// TC attaches progs to iface, all or none. It uses tcx where the kernel has
// it and falls back to netlink otherwise.
func TC(iface string, progs []TCProgram, o TCOptions) (*TCAttachment, error) {
	if o.Priority == 0 || o.Handle == 0 {
		return nil, errors.New("filter priority and handle must be set")
	}
	for _, p := range progs {
		if p.Program == nil || (p.Direction != Ingress && p.Direction != Egress) {
			return nil, fmt.Errorf("program %q: need a program and a direction", p.Name)
		}
	}
	dev, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("find interface %s: %w", iface, err)
	}
	if !o.ForceNetlink {
		at, err := attachTCX(iface, dev.Index, progs)
		if err == nil {
			return at, nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("with tcx: %w", err)
		}
	}
	at, err := attachNetlink(iface, dev.Index, progs, o)
	if err != nil {
		return nil, fmt.Errorf("with netlink: %w", err)
	}
	return at, nil
}

func attachTCX(iface string, index int, progs []TCProgram) (*TCAttachment, error) {
	at := &TCAttachment{Interface: iface, Method: TCX}
	for _, p := range progs {
		typ := ebpf.AttachTCXIngress
		if p.Direction == Egress {
			typ = ebpf.AttachTCXEgress
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: index, Program: p.Program, Attach: typ})
		if err != nil {
			at.Close()
			return nil, err
		}
		at.links = append(at.links, l)
	}
	return at, nil
}

func attachNetlink(iface string, index int, progs []TCProgram, o TCOptions) (*TCAttachment, error) {
	// A handle's socket stays in the namespace of the thread that opened
	// it: the caller's, where iface is.
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	at := &TCAttachment{Interface: iface, Method: Netlink, nl: nl}
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: index,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	switch err := nl.QdiscAdd(q); {
	case err == nil:
		at.qdisc = q
	case errors.Is(err, unix.EEXIST):
		// Another program's clsact: share it and leave it in place.
	default:
		nl.Close()
		return nil, fmt.Errorf("add clsact qdisc: %w", err)
	}
	for _, p := range progs {
		parent := uint32(netlink.HANDLE_MIN_INGRESS)
		if p.Direction == Egress {
			parent = netlink.HANDLE_MIN_EGRESS
		}
		f := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{
				LinkIndex: index,
				Parent:    parent,
				Handle:    o.Handle,
				Priority:  o.Priority,
				Protocol:  unix.ETH_P_ALL,
			},
			Fd:           p.Program.FD(),
			Name:         p.Name,
			DirectAction: true,
		}
		if err := nl.FilterReplace(f); err != nil {
			at.Close()
			return nil, fmt.Errorf("add %s filter: %w", p.Name, err)
		}
		at.filters = append(at.filters, f)
	}
	return at, nil
}

// Close detaches every program. A clsact qdisc that TC created is removed
// once no filter is left on it.
func (at *TCAttachment) Close() error {
	var errs []error
	for _, l := range at.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach from %s: %w", at.Interface, err))
		}
	}
	at.links = nil
	for _, f := range at.filters {
		if err := at.nl.FilterDel(f); err != nil {
			errs = append(errs, fmt.Errorf("delete %s filter on %s: %w", f.Name, at.Interface, err))
		}
	}
	at.filters = nil
	if at.qdisc != nil {
		if empty, err := clsactEmpty(at.nl, at.qdisc.LinkIndex); err != nil {
			errs = append(errs, fmt.Errorf("list filters on %s: %w", at.Interface, err))
		} else if empty {
			if err := at.nl.QdiscDel(at.qdisc); err != nil {
				errs = append(errs, fmt.Errorf("delete clsact qdisc on %s: %w", at.Interface, err))
			}
		}
		at.qdisc = nil
	}
	if at.nl != nil {
		at.nl.Close()
		at.nl = nil
	}
	return errors.Join(errs...)
}

func clsactEmpty(nl *netlink.Handle, index int) (bool, error) {
	l, err := nl.LinkByIndex(index)
	if err != nil {
		return false, err
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_EGRESS, netlink.HANDLE_MIN_INGRESS} {
		fs, err := nl.FilterList(l, parent)
		if err != nil {
			return false, err
		}
		if len(fs) > 0 {
			return false, nil
		}
	}
	return true, nil
}
