package agent

import (
	"fmt"

	"github.com/sluice-dp/sluice/dataplane/attach"
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

// Attach attaches the egress program (decapsulation) and the ingress
// program (reply rewrite) to iface, the host end of a VM's interface in the
// current network namespace. It uses tcx where the kernel has it and falls
// back to netlink otherwise. Closing the attachment detaches both; a clsact
// qdisc that Attach created is removed once no filter is left on it.
func (a *Agent) Attach(iface string, o AttachOptions) (*attach.TCAttachment, error) {
	at, err := attach.TC(iface, []attach.TCProgram{
		{Program: a.objs.AgentEgress, Direction: attach.Egress, Name: "sluice_agent_egress"},
		{Program: a.objs.AgentIngress, Direction: attach.Ingress, Name: "sluice_agent_ingress"},
	}, attach.TCOptions{ForceNetlink: o.ForceNetlink, Priority: filterPriority, Handle: filterHandle})
	if err != nil {
		return nil, fmt.Errorf("attach agent to %s: %w", iface, err)
	}
	return at, nil
}
