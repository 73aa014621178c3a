// Package topo builds the simulator's network topologies: named network
// namespaces ("nodes") joined by veth pairs ("links"), with addresses,
// routes, sysctls and neighbour entries, and runs Go code inside a node.
//
// Every namespace of one Topology is named "<prefix>-<node>", where the
// prefix is "sl" and six random hex digits chosen per run, so that
// `ip netns list` shows which namespaces belong together and which run
// left them, and so that Clean and CleanAll can find the ones a killed
// process could not delete. Veth pairs are created directly inside the
// namespaces, never in the caller's, so a crash cannot leave an interface
// behind in the host's namespace: deleting the namespaces deletes the links.
//
// Nodes are quiet by default: IPv6 is off on every interface that is given
// no IPv6 address, so that no router solicitation, DAD or MLD packet shows
// up in a program's counters unless a scenario asked for IPv6.
//
// The caller owns the cleanup: defer Close right after New. Close deletes
// every namespace it created, also after an error or a panic in the caller,
// and can be called more than once. Sockets opened inside Node.Do keep their
// namespace alive after Close (the kernel frees a namespace only when
// nothing refers to it), so close them first.
package topo
