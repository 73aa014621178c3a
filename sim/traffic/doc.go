// Package traffic crafts, sends and captures the traffic of simulator
// scenarios inside the nodes of a sim/topo topology.
//
// It has three parts, matching the kinds of traffic a scenario uses:
//
//   - Crafted traffic: Craft builds frames for N flows with gopacket
//     (through internal/pkttest, so they are the same frames the packet
//     tests use) and Inject writes them out of a node's interface with an
//     AF_PACKET socket. Nothing in the node's stack touches them on the way
//     out, so a program under test sees exactly the bytes the scenario
//     asked for.
//   - Real traffic: ServeHTTP and ServeUDPEcho run servers in one node,
//     HTTPLoad and UDPRequests run clients in another, ConnectLoad opens
//     TCP connections at a fixed rate and Hold keeps some open, all with
//     sockets created inside the nodes, so that packets cross the
//     topology's veths and routers like any application's.
//   - Capture: StartCapture records every frame on one interface of one
//     node with an AF_PACKET socket until Stop, and WritePcap saves the
//     frames for Wireshark or tshark.
//
// Sockets are created inside topo.Node.Do and keep their node's namespace
// alive, so stop every server and capture before closing the topology, or
// the namespaces outlive Close.
//
// Real-traffic clients need transmit checksum offload off on their
// interface (topo.Node.SetTxChecksum(dev, false)) whenever their traffic
// crosses an XDP load balancer: on a veth with offload on, a local socket's
// packets carry only a partial TCP/UDP checksum, and the balancer derives
// the outer GUE checksum from the inner one, so the backends would drop
// every encapsulated packet. Crafted frames are not affected: they carry
// complete checksums and AF_PACKET sends them as they are.
package traffic
