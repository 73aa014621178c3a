package maglev

import (
	"cmp"
	"slices"
)

// unset marks a slot that no backend has taken yet. It can never be a
// backend index: New rejects more backends than slots, and the largest size
// is far below 2^32−1.
const unset = ^uint32(0)

// walker is the per-backend working state of the fill. Together with the
// groups below it is all the fill needs besides the table itself: O(N)
// memory, where a precomputed permutation matrix would need O(N·M).
type walker struct {
	pos  uint32 // next slot of this backend's walk to try
	skip uint32 // stride of the walk
}

// group is the set of backends that share one weight. Their turns have the
// same keys round after round, so among themselves they simply take turns
// round-robin in index order; only the order between groups needs a heap.
// With equal weights (the usual case) there is one group and the fill runs
// at the speed of unweighted Maglev.
type group struct {
	members []int32 // backend indices, ascending
	// members[next] takes the group's next turn. Members before it have had
	// one turn more than it, members from it on as many, so it has the
	// smallest key in the group and, among equal keys, the lowest index.
	next int
}

// turn is a heap entry: the next turn of one group. It carries its key and
// backend inline so that heap comparisons touch nothing else.
type turn struct {
	num     uint64 // 2k−1 for the k-th turn; the key is num/weight
	weight  uint64
	backend int32 // the backend taking the turn; breaks ties
	group   int32
}

// earlier reports whether turn a comes before turn b. Keys are compared by
// cross-multiplication, in integers, so that every node orders turns
// identically (no floating point, whose rounding may differ between
// architectures when operations are fused). num ≤ 2m+1 < 2^22 and weights
// are below 2^32, so the products fit in 64 bits.
func earlier(a, b *turn) bool {
	ka, kb := a.num*b.weight, b.num*a.weight
	if ka != kb {
		return ka < kb
	}
	return a.backend < b.backend
}

// filler holds the state of one table build.
type filler struct {
	m     uint32
	slots []uint32
	// taken mirrors "slots[s] != unset" as a bitmap. Walks probe it about
	// ten times per turn at scattered positions, and at one bit per slot it
	// is 32 times smaller than slots, so it stays in a nearer cache.
	taken   []uint64
	walkers []walker
	groups  []group
	heap    []turn // one entry per group, ordered by earlier
}

// populate fills a table of size m for backends, which must be sorted by
// address, non-empty, no more than m, with non-zero weights.
//
// Turn order. The k-th turn (k = 1, 2, …) of backend i has the key
// (2k−1)/wᵢ. Turns happen in ascending key order; equal keys go to the
// lower index, i.e. the lower address. A turn takes the first free slot of
// the backend's walk. The fill stops when every slot is taken, so it takes
// exactly m turns, each filling exactly one slot.
//
// Invariants that follow, and that the tests check:
//   - Every slot is owned: each turn fills one slot and a walk visits every
//     slot (m prime, 1 ≤ skip < m), so a turn always finds a free slot.
//   - Equal weights give the original Maglev fill: all keys of round k are
//     equal, so backends take turns round-robin in address order, and each
//     owns ⌊m/N⌋ or ⌈m/N⌉ slots.
//   - Shares follow the weights: backend i owns as many slots as it has
//     turns among the first m, and ordering turns by (2k−1)/wᵢ is the
//     Sainte-Laguë divisor method, so for one common divisor d every count
//     is wᵢ·d rounded to the nearest integer. See the package documentation
//     for the bound this gives on |cᵢ − m·wᵢ/Σw|.
//   - Minimal disruption: whether a turn of backend i comes before a turn of
//     backend j depends on i and j alone (their weights, turn numbers and
//     addresses), never on the rest of the set, such as the largest weight
//     or the number of backends. Adding or removing a backend therefore
//     inserts or deletes its own turns and leaves the relative order of all
//     other turns as it was; the only slots that move are those the change
//     frees or claims, plus the short cascades of unweighted Maglev. A
//     scheme that normalised weights by the largest one would reorder every
//     turn whenever the heaviest backend left.
func populate(backends []Backend, m uint32, seed uint64) []uint32 {
	n := len(backends)
	f := filler{
		m:       m,
		slots:   make([]uint32, m),
		taken:   make([]uint64, (m+63)/64),
		walkers: make([]walker, n),
	}
	for i := range f.slots {
		f.slots[i] = unset
	}
	for i, b := range backends {
		offset, skip := permutation(b.Addr, seed, m)
		f.walkers[i] = walker{pos: offset, skip: skip}
	}

	// Stable sort by weight keeps each group's members in index order.
	byWeight := make([]int32, n)
	for i := range byWeight {
		byWeight[i] = int32(i)
	}
	slices.SortStableFunc(byWeight, func(a, b int32) int {
		return cmp.Compare(backends[a].Weight, backends[b].Weight)
	})
	distinct := 1
	for i := 1; i < n; i++ {
		if backends[byWeight[i]].Weight != backends[byWeight[i-1]].Weight {
			distinct++
		}
	}
	f.groups = make([]group, 0, distinct)
	f.heap = make([]turn, 0, distinct)
	for lo := 0; lo < n; {
		w := backends[byWeight[lo]].Weight
		hi := lo + 1
		for hi < n && backends[byWeight[hi]].Weight == w {
			hi++
		}
		f.heap = append(f.heap, turn{num: 1, weight: uint64(w), backend: byWeight[lo], group: int32(len(f.groups))})
		f.groups = append(f.groups, group{members: byWeight[lo:hi]})
		lo = hi
	}
	for i := len(f.heap)/2 - 1; i >= 0; i-- {
		f.down(i)
	}

	for range m {
		t := &f.heap[0]
		f.take(t.backend)
		g := &f.groups[t.group]
		g.next++
		if g.next == len(g.members) {
			g.next = 0
			t.num += 2 // the group starts its next round
		}
		t.backend = g.members[g.next]
		f.down(0)
	}
	return f.slots
}

// take gives backend i one turn: the first free slot of its walk. The caller
// guarantees a free slot exists, so the loop ends within m steps.
func (f *filler) take(i int32) {
	w := &f.walkers[i]
	pos, skip, m, taken := w.pos, w.skip, f.m, f.taken
	for taken[pos/64]&(1<<(pos%64)) != 0 {
		pos += skip
		if pos >= m {
			pos -= m
		}
	}
	taken[pos/64] |= 1 << (pos % 64)
	f.slots[pos] = uint32(i)
	pos += skip
	if pos >= m {
		pos -= m
	}
	w.pos = pos
}

// down restores the heap order below position i after the key of the group
// there grew (it just took a turn), and builds the heap initially.
func (f *filler) down(i int) {
	h := f.heap
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if r := c + 1; r < len(h) && earlier(&h[r], &h[c]) {
			c = r
		}
		if !earlier(&h[c], &h[i]) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}
