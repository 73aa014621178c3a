package maglev

import (
	"net/netip"
	"slices"
	"testing"
)

// The fill marks free slots with unset; a table handed out must have none
// left. (The external tests check the stronger property that every slot
// indexes a backend.)
func TestPopulateLeavesNoUnsetSlot(t *testing.T) {
	for _, n := range []int{1, 2, 250, 251} {
		bs := make([]Backend, n)
		for i := range bs {
			bs[i] = Backend{Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Weight: uint32(i%3 + 1)}
		}
		slots := populate(bs, 251, 5)
		if i := slices.Index(slots, unset); i >= 0 {
			t.Errorf("N=%d: slot %d left unset", n, i)
		}
	}
}
