package maglev_test

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/sluice-dp/sluice/ctl/maglev"
)

// This file holds a deliberately naive second implementation of the table,
// written from the package documentation rather than from the code: the
// full N×M permutation matrix, the full list of turns sorted by exact
// rational keys, hash/fnv for FNV-1a and a SplitMix64 checked against its
// published outputs. New must agree with it slot for slot.

// refSplitMix64 is SplitMix64 as published by Steele, Lea and Flood (and in
// Vigna's splitmix64.c).
type refSplitMix64 uint64

func (s *refSplitMix64) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func TestReferenceSplitMix64MatchesPublishedOutputs(t *testing.T) {
	// The first outputs of SplitMix64 from state 0, as published with
	// splitmix64.c and used to seed xoshiro generators.
	want := []uint64{0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f, 0xf88bb8a8724c81ec}
	var s refSplitMix64
	for i, w := range want {
		if got := s.next(); got != w {
			t.Errorf("output %d = %#x, want %#x", i, got, w)
		}
	}
}

func refPermutation(a netip.Addr, seed uint64, m uint32) (offset, skip uint64) {
	h := fnv.New64a()
	var key []byte
	key = binary.LittleEndian.AppendUint64(key, seed)
	if a.Is4() {
		key = append(key, 4)
	} else {
		key = append(key, 6)
	}
	a16 := a.As16()
	key = append(key, a16[:]...)
	h.Write(key)
	s := refSplitMix64(h.Sum64())
	offset = s.next() % uint64(m)
	skip = s.next()%uint64(m-1) + 1
	return offset, skip
}

// refTable returns the owner of every slot.
func refTable(bs []maglev.Backend, m uint32, seed uint64) []netip.Addr {
	bs = slices.Clone(bs)
	slices.SortFunc(bs, func(a, b maglev.Backend) int { return a.Addr.Compare(b.Addr) })

	perm := make([][]uint32, len(bs))
	for i, b := range bs {
		offset, skip := refPermutation(b.Addr, seed, m)
		perm[i] = make([]uint32, m)
		for j := range uint64(m) {
			perm[i][j] = uint32((offset + j*skip) % uint64(m))
		}
	}

	type turn struct {
		key     *big.Rat
		backend int
	}
	var turns []turn
	for i, b := range bs {
		for k := int64(1); k <= int64(m); k++ {
			turns = append(turns, turn{big.NewRat(2*k-1, int64(b.Weight)), i})
		}
	}
	slices.SortStableFunc(turns, func(a, b turn) int { // stable: equal keys stay in backend order
		return a.key.Cmp(b.key)
	})

	owner := make([]netip.Addr, m)
	next := make([]int, len(bs))
	filled := uint32(0)
	for _, tu := range turns {
		if filled == m {
			break
		}
		for owner[perm[tu.backend][next[tu.backend]]].IsValid() {
			next[tu.backend]++
		}
		owner[perm[tu.backend][next[tu.backend]]] = bs[tu.backend].Addr
		next[tu.backend]++
		filled++
	}
	return owner
}

func TestNewMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	type tc struct {
		name string
		bs   []maglev.Backend
		m    uint32
	}
	var cases []tc
	for _, m := range []uint32{251, 509, 1021} {
		for _, n := range []int{1, 2, 5, 17, 40} {
			cases = append(cases,
				tc{fmt.Sprintf("M=%d/N=%d/equal", m, n), v4(n), m},
				tc{fmt.Sprintf("M=%d/N=%d/w≤4", m, n), mixed(n, 4, rng), m},
				tc{fmt.Sprintf("M=%d/N=%d/w≤1000", m, n), mixed(n, 1000, rng), m},
			)
		}
	}
	ramp := v4(20)
	for i := range ramp {
		ramp[i].Weight = uint32(i + 1)
	}
	extreme := mixed(6, 3, rng)
	extreme[0].Weight, extreme[3].Weight = math.MaxUint32, math.MaxUint32-7
	cases = append(cases,
		tc{"M=1021/weights 1..20", ramp, 1021},
		tc{"M=251/N=251", v4(251), 251},
		tc{"M=509/extreme weights", extreme, 509},
	)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seed := rng.Uint64()
			checkAgainstReference(t, build(t, c.bs, c.m, seed), c.bs, seed)
		})
	}
}

// checkAgainstReference fails the test unless tab, built from bs and seed,
// is the table the reference builds.
func checkAgainstReference(t testing.TB, tab *maglev.Table, bs []maglev.Backend, seed uint64) {
	t.Helper()
	want, got := refTable(bs, tab.Size(), seed), owners(tab)
	diff, first := 0, -1
	for s := range want {
		if want[s] != got[s] {
			if first < 0 {
				first = s
			}
			diff++
		}
	}
	if diff > 0 {
		t.Errorf("%d of %d slots differ from the reference; first: slot %d is %s, want %s",
			diff, len(want), first, got[first], want[first])
	}
}
