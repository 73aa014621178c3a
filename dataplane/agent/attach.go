package agent

import (
	"fmt"

	"github.com/sluice-dp/sluice/dataplane/internal/attach"
)

// Method is how the programs are attached to an interface.
type Method = attach.Method

// Attach methods.
const (
	// TCX links (Linux 6.6 and later): owned by the process, detached when
	// closed, and they never disturb other programs on the interface.
	TCX = attach.TCX
	// Netlink adds cls_bpf filters in direct-action mode to a clsact qdisc,
	// which kernels without tcx (such as 6.1) need.
	Netlink = attach.Netlink
)

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
// toward the VM, ingress from it. Close detaches both; a clsact qdisc that
// Attach created is removed once no filter is left on it.
type Attachment = attach.TCAttachment

// Attach attaches the egress program (decapsulation) and the ingress
// program (reply rewrite) to iface, the host end of a VM's interface in the
// current network namespace. It uses tcx where the kernel has it and falls
// back to netlink otherwise.
func (a *Agent) Attach(iface string, o AttachOptions) (*Attachment, error) {
	at, err := attach.TC(iface, []attach.TCProgram{
		{Program: a.objs.AgentEgress, Direction: attach.Egress, Name: "sluice_agent_egress"},
		{Program: a.objs.AgentIngress, Direction: attach.Ingress, Name: "sluice_agent_ingress"},
	}, attach.TCOptions{ForceNetlink: o.ForceNetlink, Priority: filterPriority, Handle: filterHandle})
	if err != nil {
		return nil, fmt.Errorf("attach agent to %s: %w", iface, err)
	}
	return at, nil
}
