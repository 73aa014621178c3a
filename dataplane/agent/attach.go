package agent

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Method is how the programs are attached to an interface.
type Method uint8

// Attach methods.
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

// AttachOptions adjust Attach.
type AttachOptions struct {
	// ForceNetlink uses the clsact/cls_bpf path even where tcx exists, for
	// testing it and for tools that only understand filters.
	ForceNetlink bool
}

// filterPriority and filterHandle identify the agent's cls_bpf filters, so
// that replacing them on a second attach and deleting them on detach never
// touches another program's filters.
const (
	filterPriority = 0x5a
	filterHandle   = 1
)

// Attachment is the pair of programs attached to one interface: egress
// toward the VM, ingress from it. Close detaches both.
type Attachment struct {
	Interface string
	Method    Method

	links   []link.Link
	filters []*netlink.BpfFilter
	qdisc   *netlink.GenericQdisc // created by Attach, removed by Close when empty
}

// Attach attaches the egress program (decapsulation) and the ingress
// program (reply rewrite) to iface, the host end of a VM's interface in the
// current network namespace. It uses tcx where the kernel has it and falls
// back to netlink otherwise.
func (a *Agent) Attach(iface string, o AttachOptions) (*Attachment, error) {
	dev, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("attach agent to %s: %w", iface, err)
	}
	if !o.ForceNetlink {
		at, err := a.attachTCX(iface, dev.Index)
		if err == nil {
			return at, nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("attach agent to %s with tcx: %w", iface, err)
		}
	}
	at, err := a.attachNetlink(iface, dev.Index)
	if err != nil {
		return nil, fmt.Errorf("attach agent to %s with netlink: %w", iface, err)
	}
	return at, nil
}

func (a *Agent) attachTCX(iface string, index int) (*Attachment, error) {
	at := &Attachment{Interface: iface, Method: TCX}
	for _, x := range []struct {
		prog *ebpf.Program
		typ  ebpf.AttachType
	}{{a.objs.AgentEgress, ebpf.AttachTCXEgress}, {a.objs.AgentIngress, ebpf.AttachTCXIngress}} {
		l, err := link.AttachTCX(link.TCXOptions{Interface: index, Program: x.prog, Attach: x.typ})
		if err != nil {
			at.Close()
			return nil, err
		}
		at.links = append(at.links, l)
	}
	return at, nil
}

func (a *Agent) attachNetlink(iface string, index int) (*Attachment, error) {
	at := &Attachment{Interface: iface, Method: Netlink}
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: index,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	switch err := netlink.QdiscAdd(q); {
	case err == nil:
		at.qdisc = q
	case errors.Is(err, unix.EEXIST):
		// Another program's clsact: share it and leave it in place.
	default:
		return nil, fmt.Errorf("add clsact qdisc: %w", err)
	}
	for _, x := range []struct {
		prog   *ebpf.Program
		parent uint32
		name   string
	}{
		{a.objs.AgentEgress, netlink.HANDLE_MIN_EGRESS, "sluice_agent_egress"},
		{a.objs.AgentIngress, netlink.HANDLE_MIN_INGRESS, "sluice_agent_ingress"},
	} {
		f := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{
				LinkIndex: index,
				Parent:    x.parent,
				Handle:    filterHandle,
				Priority:  filterPriority,
				Protocol:  unix.ETH_P_ALL,
			},
			Fd:           x.prog.FD(),
			Name:         x.name,
			DirectAction: true,
		}
		if err := netlink.FilterReplace(f); err != nil {
			at.Close()
			return nil, fmt.Errorf("add %s filter: %w", x.name, err)
		}
		at.filters = append(at.filters, f)
	}
	return at, nil
}

// Close detaches both programs. A clsact qdisc that Attach created is
// removed once no filter is left on it.
func (at *Attachment) Close() error {
	var errs []error
	for _, l := range at.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach agent from %s: %w", at.Interface, err))
		}
	}
	at.links = nil
	for _, f := range at.filters {
		if err := netlink.FilterDel(f); err != nil {
			errs = append(errs, fmt.Errorf("delete %s filter on %s: %w", f.Name, at.Interface, err))
		}
	}
	at.filters = nil
	if at.qdisc != nil {
		if empty, err := clsactEmpty(at.qdisc.LinkIndex); err != nil {
			errs = append(errs, fmt.Errorf("list filters on %s: %w", at.Interface, err))
		} else if empty {
			if err := netlink.QdiscDel(at.qdisc); err != nil {
				errs = append(errs, fmt.Errorf("delete clsact qdisc on %s: %w", at.Interface, err))
			}
		}
		at.qdisc = nil
	}
	return errors.Join(errs...)
}

func clsactEmpty(index int) (bool, error) {
	l, err := netlink.LinkByIndex(index)
	if err != nil {
		return false, err
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_EGRESS, netlink.HANDLE_MIN_INGRESS} {
		fs, err := netlink.FilterList(l, parent)
		if err != nil {
			return false, err
		}
		if len(fs) > 0 {
			return false, nil
		}
	}
	return true, nil
}
