package scenario

import (
	"net"
	"net/netip"
	"time"

	"github.com/sluice-dp/sluice/dataplane/agent"
	"github.com/sluice-dp/sluice/dataplane/connlimit"
	"github.com/sluice-dp/sluice/dataplane/lb"
	"github.com/sluice-dp/sluice/dataplane/ratelimit"
)

// Scenario is a validated scenario file.
type Scenario struct {
	// File is the path the scenario was read from, for reports.
	File string
	// Name identifies the scenario in reports.
	Name string
	// Description says what the scenario shows, for people.
	Description string
	Nodes       []Node
	Links       []Link
	Routes      []Route
	// LB is the load balancer run on the LB nodes; nil for scenarios
	// without one.
	LB *LBSpec
	// Agents are the backend agents run on backend hosts, in front of
	// their vm nodes.
	Agents []AgentSpec
	// RateLimit and ConnLimit configure the policing programs, the same
	// on every chain that runs them; nil when no chain does.
	RateLimit *RateLimitSpec
	ConnLimit *ConnLimitSpec
	// Chains are the XDP program chains, one per interface.
	Chains   []ChainSpec
	Services []Service
	Steps    []Step
}

// Programs a chain can run, by the names scenarios give them.
const (
	ProgRateLimit = "ratelimit"
	ProgConnLimit = "connlimit"
	ProgLB        = "lb"
)

// RateLimitSpec is the connection rate limiter's rule set
// (dataplane/ratelimit).
type RateLimitSpec struct {
	Rules []ratelimit.Rule
}

// ConnLimitSpec is the concurrent-connection limiter's configuration
// (dataplane/connlimit): a limit per local TCP port.
type ConnLimitSpec struct {
	Ports map[uint16]connlimit.Limit
}

// ChainSpec is a chain of XDP programs (dataplane/chain) on one
// interface, or the new order of one in a chain event. On an interface of
// lb.attach the chain replaces the LB's own attachment, and the LB runs
// only as the chain's member "lb", always the last one.
type ChainSpec struct {
	Attach Iface
	// Programs are ProgRateLimit, ProgConnLimit and ProgLB, in the order
	// packets run through them.
	Programs []string
}

// Role is what a node plays in a topology; it decides how the node is set
// up (see docs/scenarios.md).
type Role string

// Roles.
const (
	RoleClient  Role = "client"
	RoleRouter  Role = "router"
	RoleLB      Role = "lb"
	RoleBackend Role = "backend"
	RoleServer  Role = "server"
	// RoleVM is a virtual machine behind a backend host: the host's agent
	// delivers the LB's traffic to it over a veth.
	RoleVM Role = "vm"
)

// Node is one network namespace.
type Node struct {
	Name string
	Role Role
	// Sysctls are extra net.* settings, applied in order after the role's.
	Sysctls [][2]string
}

// Iface names an interface of a node, written "node/iface".
type Iface struct{ Node, Name string }

func (i Iface) String() string { return i.Node + "/" + i.Name }

// LinkEnd is one end of a veth link.
type LinkEnd struct {
	Node string
	// Iface defaults to the other end's node name.
	Iface  string
	MAC    net.HardwareAddr
	Addrs  []netip.Prefix
	Queues int
	// MTU is the interface's MTU; 0 keeps 1500.
	MTU int
}

// Link is a veth pair.
type Link struct{ A, B LinkEnd }

// Route is a static route of a node; several gateways make an ECMP route.
type Route struct {
	Node string
	Dst  netip.Prefix
	Via  []netip.Addr
}

// LBSpec is the load balancer's configuration, the same on every LB node
// it is attached to, as a control plane would keep it.
type LBSpec struct {
	Seed      uint64
	RingSize  uint32
	TunnelMTU int
	GUEPort   uint16
	// Attach are the interfaces the program runs on, one per LB node.
	Attach []Iface
	VIPs   []VIPSpec
}

// VIPSpec is one VIP with its options and backends.
type VIPSpec struct {
	VIP      lb.VIP
	Options  lb.VIPOptions
	Backends []lb.Backend
}

// AgentSpec is the backend agent (dataplane/agent) of one backend host,
// attached to the host's end of the veth toward one vm node.
type AgentSpec struct {
	// Attach is the host's interface toward the VM.
	Attach Iface
	// Backends are the addresses tunnels are decapsulated for: the VM's
	// addresses, the LB's backends. Default: every address of the VM's
	// end of the link.
	Backends []netip.Addr
	VIPs     []AgentVIP
}

// AgentVIP is a VIP the agent delivers to the VM.
type AgentVIP struct {
	VIP  lb.VIP
	Mode agent.Mode
	// App is where the application listens in transparent mode.
	App netip.AddrPort
}

// Service is a real server run inside a node. Exactly one of HTTP and UDP
// is set.
type Service struct {
	Node string
	// HTTP is the address to serve HTTP on.
	HTTP netip.AddrPort
	// UDP is the address of a UDP echo server (traffic.ServeUDPEcho).
	UDP netip.AddrPort
}

// Step is one stage of a scenario: its events happen first, then its
// traffic, then its assertions are evaluated.
type Step struct {
	Name   string
	Events []Event
	Send   []Send
	HTTP   []HTTPLoad
	UDP    []UDPLoad
	// Hold opens connections and keeps them open; Connect opens
	// connections at a fixed rate. Holds run first, one after another,
	// then every connect load at once.
	Hold    []HoldSpec
	Connect []ConnectLoad
	Capture []Iface
	// Settle is how long to wait for the traffic to drain after the last
	// packet was sent, at most.
	Settle time.Duration
	Expect []Assertion
}

// Send is crafted traffic injected at an interface: frames leave through
// At toward the node at the link's other end.
type Send struct {
	At             Iface
	Kind           string
	Src            netip.Prefix
	SrcPorts       [2]uint16
	Dst            netip.AddrPort
	Flows          int
	PacketsPerFlow int
	Payload        int
	DF             bool
	TTL            uint8
	Seed           uint64
}

// HTTPLoad is real HTTP traffic from a node's own sockets.
type HTTPLoad struct {
	From        string
	URL         string
	Requests    int
	Connections int
	Timeout     time.Duration
	// Until, if set, runs the load in the background from this step to
	// the end of the traffic of the later step it names, whose
	// assertions see its result.
	Until string
}

// UDPLoad is real UDP request/response traffic from a node's own sockets
// to a UDP echo service: Requests datagrams, each from its own socket and
// source port, each waiting up to Timeout for its answer.
type UDPLoad struct {
	From     string
	Dst      netip.AddrPort
	Requests int
	Timeout  time.Duration
}

// ConnectLoad opens TCP connections from a node's own sockets at a fixed
// rate and closes each once established (traffic.ConnectLoad).
type ConnectLoad struct {
	From     string
	Dst      netip.AddrPort
	Rate     int
	Duration time.Duration
	// Timeout bounds each attempt; shorter than the SYN retransmission
	// time, so that an attempt sends one SYN.
	Timeout time.Duration
}

// HoldSpec opens Count TCP connections from a node, one after another,
// and keeps those that connect open until a close event or the end of the
// run (traffic.Hold).
type HoldSpec struct {
	// Name is what close events call the held connections; unique in a
	// scenario.
	Name    string
	From    string
	Dst     netip.AddrPort
	Count   int
	Timeout time.Duration
}

// Event changes the running system between traffic steps. Exactly one of
// its fields is set.
type Event struct {
	// SetBackends replaces a VIP's backends on every LB node.
	SetBackends *SetBackends
	// Link takes an interface down or up.
	Link *LinkState
	// Node takes every interface of a node down or up.
	Node *NodeState
	// Chain gives a chain a new list of programs.
	Chain *ChainSpec
	// Close closes held connections.
	Close *CloseHold
}

// CloseHold closes the Count oldest connections still open of the hold
// named Hold; Count 0 closes all of them.
type CloseHold struct {
	Hold  string
	Count int
}

// SetBackends is the event that replaces a VIP's backends.
type SetBackends struct {
	VIP      lb.VIP
	Backends []lb.Backend
}

// LinkState sets one interface down or up.
type LinkState struct {
	Iface Iface
	Up    bool
}

// NodeState sets every interface of a node down or up.
type NodeState struct {
	Node string
	Up   bool
}

// Assertion is one check of a step. Exactly one of the kind-specific
// fields is set.
type Assertion struct {
	// Line is where the assertion is written, for reports.
	Line          int
	Encapsulation *EncapCheck
	Distribution  *DistributionCheck
	Consistency   *ConsistencyCheck
	Disruption    *DisruptionCheck
	Counters      *CountersCheck
	Delivery      *DeliveryCheck
	TooBig        *TooBigCheck
	NoReplies     *NoRepliesCheck
	RepliesFrom   *RepliesFromVIPCheck
	Unbroken      *UnbrokenCheck
	AdmittedRate  *AdmittedRateCheck
	Connections   *ConnectionsCheck
	ChainIntact   *ChainIntactCheck
}

// AdmittedRateCheck: the connections per second that the step's connect
// loads from node From completed, over the whole seconds of the loads
// after the first, is within Tolerance (a fraction) of Rate.
type AdmittedRateCheck struct {
	From      string
	Rate      float64
	Tolerance float64
}

// ConnectionsCheck: the step's connect and hold attempts from node From
// ended exactly so: each non-nil count is compared.
type ConnectionsCheck struct {
	From                         string
	OK, Refused, Timeout, Failed *int
}

// ChainIntactCheck: every packet that entered the chain at At since it
// was built ran through each of Programs, by the programs' own counters.
type ChainIntactCheck struct {
	At       Iface
	Programs []string
}

// NoRepliesCheck: the points At saw requests to VIPs and nothing else; no
// packet (outer or tunnelled) from a VIP or to a client node's address.
type NoRepliesCheck struct {
	At []Iface
}

// RepliesFromVIPCheck: at least Min packets from each of VIPs arrived at
// At, none from a backend's or application's own address, every checksum
// right.
type RepliesFromVIPCheck struct {
	At Iface
	// VIPs default to the addresses of the step's http: URLs.
	VIPs []netip.Addr
	Min  int
}

// UnbrokenCheck: of the background http: loads started in step Started
// and collected in this step, every connection that reached the node of
// a point in At (a TCP SYN captured there during Started) got its
// complete answer from that node, Except for the nodes listed.
type UnbrokenCheck struct {
	Started string
	At      []Iface
	Except  []string
}

// EncapCheck: every packet captured at the given points is encapsulated as
// expected and carries, intact, a packet that was sent.
type EncapCheck struct {
	At    []Iface
	Encap lb.Encap
	// OuterTTL is the expected outer TTL or hop limit; 0 leaves it
	// unchecked.
	OuterTTL uint8
}

// DistributionCheck: the step's flows to VIP spread over its backends in
// proportion to their weights, each share within Tolerance.
type DistributionCheck struct {
	VIP       lb.VIP
	Tolerance float64
}

// ConsistencyCheck: every flow of this step and of the steps With reached
// one backend, the one Maglev predicts, whichever LB node handled it.
type ConsistencyCheck struct {
	With []string
	// MinLBNodes is how many LB nodes must have handled the flows.
	MinLBNodes int
}

// DisruptionCheck: of the flows of step Before seen again in this step, at
// most MaxMoved (a fraction) reached another backend.
type DisruptionCheck struct {
	Before   string
	MaxMoved float64
}

// CountersCheck: counter totals over CPUs (summed over the nodes when
// Node is empty) equal a value or fall in a range: the LB's by their bare
// names, the chains' and their programs' as "<program>.<counter>".
type CountersCheck struct {
	Node   string
	Values []CounterValue
}

// CounterValue is an expected counter total, Min ≤ value ≤ Max.
type CounterValue struct {
	Name     string
	Min, Max uint64
}

// DeliveryCheck: the step's real requests succeeded. HTTP requests count
// as answered with a complete 2xx response and Status; UDP requests with
// their echo back in time; latencies of both are pooled.
type DeliveryCheck struct {
	MinOK     int
	MaxFailed int
	Status    int
	// MaxP99 bounds the 99th latency percentile; 0 leaves it unchecked.
	MaxP99 time.Duration
	// NotServedBy are nodes no answered request may name.
	NotServedBy []string
}

// TooBigCheck: ICMP "fragmentation needed" / ICMPv6 "packet too big"
// messages arrived at At, one per sent packet that exceeded the tunnel MTU,
// advertising MTU.
type TooBigCheck struct {
	At    Iface
	MTU   int
	Count int
}
