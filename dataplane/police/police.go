// Package police holds what the policing programs (dataplane/ratelimit,
// dataplane/connlimit) share in their configuration, as bpf/include/police.h
// holds what they share in C.
package police

import "fmt"

// Action is what happens to a connection a policing program refuses.
type Action uint8

// Actions.
const (
	// Drop drops the refused packet: the client retransmits it later and
	// may get in then; the cheapest answer to a flood.
	Drop Action = iota
	// RST answers the refused packet with a TCP reset from its destination,
	// built in XDP and sent back with XDP_TX, so that a legitimate client
	// fails at once instead of retrying.
	RST
)

// String returns the action's name as configurations spell it.
func (a Action) String() string {
	switch a {
	case Drop:
		return "drop"
	case RST:
		return "rst"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}
