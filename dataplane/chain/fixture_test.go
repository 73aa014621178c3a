package chain

import (
	"encoding/binary"
	"net"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/dataplane/chain/internal/testprog"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/internal/testenv"
)

// The test members' record (bpf/testdata/chain_members.bpf.c): in a frame
// of markEthType, the payload starts with a 16-bit mask of member ids, a
// count, and the ids (plus one) in the order the members ran.
const (
	markEthType = 0x88b5
	markRoom    = 3 + 16
)

// Member ids of the test members, as the C source numbers them.
const (
	idDrop  = 8
	idFinal = 9
	idTx    = 10
)

// newChain loads a chain for hook; it is closed when the test ends.
func newChain(t testing.TB, hook Hook) *Chain {
	t.Helper()
	testenv.RequirePriv(t)
	c, err := Load(hook, Options{})
	if err != nil {
		t.Fatalf("load chain: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// members are the test member programs of one type, by the names of the C
// source without the type prefix ("m0", "drop", ...).
type members struct {
	progs map[string]*ebpf.Program
	ids   map[string]int
	seen  *ebpf.Map
}

// loadMembers loads the test members of c's hook with c's member maps, or,
// with a nil chain, standalone with their own never-filled maps.
func loadMembers(t testing.TB, hook Hook, c *Chain) members {
	t.Helper()
	spec, err := testprog.LoadMembers()
	if err != nil {
		t.Fatalf("load member spec: %v", err)
	}
	prefix := "xdp_"
	if hook != XDP {
		prefix = "tc_"
	}
	for name := range spec.Programs {
		if !strings.HasPrefix(name, prefix) {
			delete(spec.Programs, name)
		}
	}
	var opts ebpf.CollectionOptions
	if c != nil {
		opts.MapReplacements = c.MemberMaps()
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, opts)
	if err != nil {
		t.Fatalf("load members: %v", err)
	}
	t.Cleanup(func() { coll.Close() })
	m := members{progs: map[string]*ebpf.Program{}, ids: map[string]int{}, seen: coll.Maps["member_seen"]}
	for name, p := range coll.Programs {
		short := strings.TrimPrefix(name, prefix)
		m.progs[short] = p
	}
	for i := range 8 {
		m.ids["m"+string(rune('0'+i))] = i
	}
	m.ids["drop"], m.ids["final"], m.ids["tx"] = idDrop, idFinal, idTx
	return m
}

// list returns the named members, in order, as a chain.
func (m members) list(names ...string) []Member {
	var out []Member
	for _, n := range names {
		out = append(out, Member{Name: n, Program: m.progs[n]})
	}
	return out
}

// seenTotals returns how often each member id ran, summed over CPUs.
func (m members) seenTotals(t testing.TB) map[int]uint64 {
	t.Helper()
	out := map[int]uint64{}
	for id := range uint32(16) {
		var per []uint64
		if err := m.seen.Lookup(id, &per); err != nil {
			t.Fatalf("read member_seen[%d]: %v", id, err)
		}
		for _, v := range per {
			out[int(id)] += v
		}
	}
	return out
}

// testFrame is an Ethernet frame of the members' test type with a zeroed
// record area, built with gopacket.
func testFrame(t testing.TB) []byte {
	t.Helper()
	return pkttest.Serialize(t,
		&layers.Ethernet{
			SrcMAC:       net.HardwareAddr{2, 0, 0, 0, 0, 1},
			DstMAC:       net.HardwareAddr{2, 0, 0, 0, 0, 2},
			EthernetType: layers.EthernetType(markEthType),
		},
		gopacket.Payload(make([]byte, markRoom+13)),
	)
}

// marked is frame as it must come out after the members with the given
// ids ran in this order: the record written the way the C source
// documents it, computed here byte by byte.
func marked(frame []byte, ids ...int) []byte {
	out := append([]byte(nil), frame...)
	p := out[14:]
	var mask uint16
	for i, id := range ids {
		mask |= 1 << id
		p[3+i] = byte(id + 1)
	}
	binary.LittleEndian.PutUint16(p, mask)
	p[2] = byte(len(ids))
	return out
}

// idsOf returns the member ids of names.
func (m members) idsOf(names ...string) []int {
	var ids []int
	for _, n := range names {
		ids = append(ids, m.ids[n])
	}
	return ids
}
