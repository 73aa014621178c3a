package maglev

import (
	"encoding/binary"
	"net/netip"
)

// The constants below are part of the cross-node contract described in the
// package documentation: changing any of them changes every table built by
// every node, so a cluster that mixes old and new nodes would stop agreeing
// on where flows go.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211

	splitmixGamma = 0x9e3779b97f4a7c15
)

// identityHash is FNV-1a 64 over the bytes that name a backend: the seed
// (8 bytes, little-endian), the family (4 or 6) and the 16-byte form of the
// address. The family byte is there because 10.0.0.1 and ::ffff:10.0.0.1
// have the same 16-byte form but are different backends to the dataplane
// (one is reached over IPv4, the other over IPv6). FNV-1a is written out
// here rather than taken from hash/fnv so that building a table does not
// allocate a hasher per backend; the tests check it against hash/fnv.
func identityHash(addr netip.Addr, seed uint64) uint64 {
	var key [8 + 1 + 16]byte
	binary.LittleEndian.PutUint64(key[:8], seed)
	key[8] = 6
	if addr.Is4() {
		key[8] = 4
	}
	a16 := addr.As16()
	copy(key[9:], a16[:])

	h := uint64(fnvOffset64)
	for _, c := range key {
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return h
}

// splitmix64 advances a SplitMix64 state and returns the next output. FNV-1a
// alone mixes its last bytes poorly (addresses that differ only in the low
// byte would get related offsets), so its result seeds SplitMix64, whose
// finaliser spreads every input bit over the whole word.
func splitmix64(state *uint64) uint64 {
	*state += splitmixGamma
	z := *state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// permutation returns where a backend's walk of a table of size m starts and
// the stride of that walk. Because m is prime and 1 ≤ skip < m, the walk
// offset, offset+skip, offset+2·skip, … (mod m) visits every slot exactly
// once before repeating, which is what guarantees that the fill always finds
// a free slot.
func permutation(addr netip.Addr, seed uint64, m uint32) (offset, skip uint32) {
	state := identityHash(addr, seed)
	offset = uint32(splitmix64(&state) % uint64(m))
	skip = uint32(splitmix64(&state)%uint64(m-1)) + 1
	return offset, skip
}
