// Package l4 holds the transport protocols that the dataplane programs
// match on. The load balancer's VIPs, the backend agent's VIPs and the rate
// limiter's rules all name their protocol with the same type, so that one
// value configures them all.
package l4

import "fmt"

// Proto is a transport protocol, by its IANA protocol number: the number
// the programs compare with the IP header's protocol (next header) field.
type Proto uint8

// The protocols the programs handle.
const (
	TCP Proto = 6
	UDP Proto = 17
)

// String returns the protocol's name as configurations spell it.
func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// ParseProto returns the protocol a configuration names ("tcp", "udp").
func ParseProto(s string) (Proto, error) {
	switch s {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	}
	return 0, fmt.Errorf("protocol %q: want tcp or udp", s)
}
