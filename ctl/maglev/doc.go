// Package maglev builds weighted Maglev lookup tables: the map from a flow
// hash to a backend that every LB node of a service must agree on.
//
// # Why Maglev
//
// Flows reach LB nodes through ECMP, and a routing change can move a flow
// from one LB node to another in the middle of a connection. The new node
// has no state for the flow, so it must pick the same backend as the old
// one from the flow hash alone. Maglev tables give that: a table is a
// function of the backend set, the table size and a seed, and nothing else.
// They also change little when the set changes, so that adding or removing a
// backend breaks few of the connections it does not itself own.
//
// # Algorithm
//
// A table has M slots, M prime (see Sizes). Each backend walks the table in
// its own order: it starts at slot offset and steps by skip, modulo M, where
// 0 ≤ offset < M and 1 ≤ skip < M are derived from the backend's address and
// the seed (see "Cross-node contract" below). Because M is prime, every walk
// visits every slot once before repeating.
//
// Backends then take turns. A turn gives the backend the first slot of its
// walk that nobody has taken yet. The k-th turn of a backend of weight w has
// the key (2k−1)/w; turns happen in ascending key order and equal keys go to
// the backend with the lower address. The table is done after M turns.
// With equal weights this is the round-robin of the original Maglev paper;
// with unequal weights a backend of weight 2w takes two turns for every turn
// of a backend of weight w, spread evenly rather than in bursts.
//
// Only O(1) state per backend is kept (where its walk has got to, its step,
// and one entry per distinct weight for the turn order), never the N×M
// matrix of precomputed walks.
//
// # Invariants
//
// Each of these is checked by the tests.
//   - Every slot is owned by a backend.
//   - With equal weights each backend owns ⌊M/N⌋ or ⌈M/N⌉ slots.
//   - Backend i owns wᵢ·d slots rounded to the nearest integer, for one d
//     common to all backends (the Sainte-Laguë apportionment of M slots to
//     the weights). Since the N roundings of at most ½ each must add up to
//     M, the count cᵢ is within ½ + ½·wᵢ/w̄ slots of its target M·wᵢ/Σw
//     (w̄ the mean weight); relative to the target that is at most
//     1/(2·target) + N/(2M). So for M ≥ 100·N every backend whose target is
//     100 slots or more gets within 1% of it, and every backend of at most
//     average weight gets within 1% of a mean share M/N. In practice the
//     roundings cancel and every count is within about half a slot of its
//     target. A backend whose target is under half a slot (weight 1 next to
//     weight 10⁹, say) owns no slot; that is the proportional answer, not an
//     error.
//   - Whether one backend's turn comes before another's depends only on the
//     two backends, so adding or removing a backend leaves the order of
//     everyone else's turns intact. Removing 1 of 1000 backends with
//     M = 65537 moves about 0.6% of the other backends' slots with equal
//     weights and under 1% with weights 1..10 (the tests allow 1.5%), and
//     adding it back restores the previous table exactly.
//   - The result does not depend on the order of the input: backends are
//     sorted by address (netip.Addr.Compare) before anything else happens,
//     and Slots indexes into that sorted order.
//
// # Cross-node contract
//
// Every node must produce the same table, whatever its architecture, Go
// version or process, so everything below is fixed; changing any part of it
// makes nodes running the old and the new code disagree on where flows go,
// and must be treated as a breaking change of the cluster protocol:
//   - A backend's identity is its address's 16-byte form (netip.Addr.As16)
//     plus its family, 4 or 6. IPv4 10.0.0.1 and IPv4-mapped IPv6
//     ::ffff:10.0.0.1 are therefore two different backends: the dataplane
//     reaches them over different IP versions. Zoned addresses are rejected.
//   - h = FNV-1a 64 over 25 bytes: the seed as 8 bytes little-endian, the
//     family byte (4 or 6), then the 16 address bytes.
//   - h seeds SplitMix64 (state += 0x9e3779b97f4a7c15, then the standard
//     finaliser); its first output modulo M is offset, its second output
//     modulo M−1, plus 1, is skip.
//   - Turn keys are compared exactly, in integers, never in floating point.
//
// A seed-randomised hash (hash/maphash, Go map iteration order) must never
// enter this computation.
package maglev
