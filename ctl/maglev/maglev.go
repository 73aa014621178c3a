package maglev

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Backend is one member of a table. Its identity is Addr: the address alone
// decides where the backend's permutation starts and how it steps, so a
// backend keeps its place in the table across weight changes, restarts and
// nodes. Weight is the backend's relative share of the slots and must be at
// least 1; a backend that should receive no new flows is removed from the
// set rather than given weight 0, so that "drained" has one meaning.
type Backend struct {
	Addr   netip.Addr
	Weight uint32
}

// DefaultSize is the table size used when the operator does not choose one:
// large enough for the 1% share guarantee (M ≥ 100·N) up to 655 backends,
// small enough (256 KiB of slots) to rebuild in a few milliseconds.
const DefaultSize = 65537

// allowed is the source of truth for valid sizes; Sizes is a copy so that a
// caller who modifies the exported slice cannot change what New accepts.
var allowed = [...]uint32{
	251, 509, 1021, 2039, 4093, 8191, 16381, 32749,
	65537, 131071, 262139, 524287, 1048573,
}

// Sizes lists the table sizes New accepts, in ascending order. Each is a
// prime, so that a walk with any stride covers the whole table; they roughly
// double from one to the next, so there is a size close to what any pool
// needs. Shares stay within 1% of their targets while the size is at least
// 100 times the number of backends; pick the smallest size that satisfies
// that for the largest pool a service may grow to, since build time and
// memory grow with the size. Modifying this slice does not change what New
// accepts.
var Sizes = slices.Clone(allowed[:])

// Sentinel errors returned (wrapped with the offending object) by New, so
// that callers such as config validation can tell the operator what to fix.
var (
	// ErrNoBackends: a table must send every hash somewhere.
	ErrNoBackends = errors.New("no backends")
	// ErrDuplicateBackend: an address names one backend; two entries for it
	// would make its identity, and so its permutation, ambiguous.
	ErrDuplicateBackend = errors.New("duplicate backend")
	// ErrZeroWeight: weight 0 is rejected rather than treated as drained,
	// see Backend.
	ErrZeroWeight = errors.New("zero weight")
	// ErrBadSize: the size is not in Sizes, or is smaller than the number of
	// backends (some backend would then own no slot at all).
	ErrBadSize = errors.New("bad table size")
	// ErrInvalidAddr: the address is the zero netip.Addr, carries an IPv6
	// zone (zones are local to one host and would break the cross-node
	// contract), or is unspecified (0.0.0.0, ::), none of which can be the
	// destination of an encapsulated packet.
	ErrInvalidAddr = errors.New("invalid backend address")
)

// Table is an immutable Maglev lookup table: every hash maps to one backend,
// and every node that builds a table from the same backends, size and seed
// gets the same table. It is safe for concurrent use. The zero Table is not
// usable; build one with New.
type Table struct {
	backends []Backend
	slots    []uint32
}

// New builds the table of the given size for the given backends. The order of
// backends does not matter (see the package documentation). The seed is
// mixed into every backend's permutation so that services sharing a backend
// pool can be given unrelated tables; it must be the same on every node.
func New(backends []Backend, size uint32, seed uint64) (*Table, error) {
	if !slices.Contains(allowed[:], size) {
		return nil, fmt.Errorf("maglev: table size %d: %w (allowed: %v)", size, ErrBadSize, allowed)
	}
	if len(backends) == 0 {
		return nil, fmt.Errorf("maglev: %w", ErrNoBackends)
	}
	for i, b := range backends {
		if !b.Addr.IsValid() {
			return nil, fmt.Errorf("maglev: backend #%d: %w", i, ErrInvalidAddr)
		}
		if b.Addr.Zone() != "" || b.Addr.IsUnspecified() {
			return nil, fmt.Errorf("maglev: backend %s: %w", b.Addr, ErrInvalidAddr)
		}
		if b.Weight == 0 {
			return nil, fmt.Errorf("maglev: backend %s: %w", b.Addr, ErrZeroWeight)
		}
	}
	if uint64(len(backends)) > uint64(size) {
		return nil, fmt.Errorf("maglev: table size %d for %d backends: %w", size, len(backends), ErrBadSize)
	}

	// Sorting first is what makes the result independent of input order:
	// from here on, everything depends only on the set of backends.
	sorted := slices.Clone(backends)
	slices.SortFunc(sorted, func(a, b Backend) int { return a.Addr.Compare(b.Addr) })
	for i := 1; i < len(sorted); i++ {
		if sorted[i].Addr == sorted[i-1].Addr {
			return nil, fmt.Errorf("maglev: backend %s: %w", sorted[i].Addr, ErrDuplicateBackend)
		}
	}

	return &Table{backends: sorted, slots: populate(sorted, size, seed)}, nil
}

// Backends returns the table's backends in canonical order (ascending
// address, IPv4 before IPv6), which is the order Slots indexes into. It
// returns a copy, so the table stays immutable whatever the caller does.
func (t *Table) Backends() []Backend {
	return slices.Clone(t.backends)
}

// Slots returns, for every slot of the table, the index into Backends of the
// backend that owns it; this is what the dataplane writes into its ring map.
// It returns a copy, so the table stays immutable whatever the caller does.
func (t *Table) Slots() []uint32 {
	return slices.Clone(t.slots)
}

// Size returns the number of slots, which is the modulus the dataplane must
// apply to a flow hash to find its slot.
func (t *Table) Size() uint32 {
	return uint32(len(t.slots))
}

// Lookup returns the backend that owns the slot of hash, the same choice the
// dataplane makes for a flow with that hash; the control plane uses it to
// predict and explain where a flow goes.
func (t *Table) Lookup(hash uint32) Backend {
	return t.backends[t.slots[hash%uint32(len(t.slots))]]
}
