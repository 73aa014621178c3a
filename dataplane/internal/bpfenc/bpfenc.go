// Package bpfenc converts between Go values and the layouts Sluice's BPF
// programs keep in their maps, and reads what the programs declare in BTF.
// Every dataplane package uses it, so that a layout rule is written once.
package bpfenc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// AddrWords lays an address out as the C side stores it in a __be32[4]:
// network byte order in memory, an IPv4 address in the first word and the
// rest zero.
func AddrWords(a netip.Addr) [4]uint32 {
	var w [4]uint32
	if a.Is4() {
		b := a.As4()
		w[0] = binary.NativeEndian.Uint32(b[:])
		return w
	}
	b := a.As16()
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w
}

// WordsAddr is the inverse of AddrWords: an IPv4 address when v4, else IPv6.
func WordsAddr(w [4]uint32, v4 bool) netip.Addr {
	var b [16]byte
	for i := range w {
		binary.NativeEndian.PutUint32(b[4*i:], w[i])
	}
	if v4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

// Htons is a port as the C side stores it in a __be16.
func Htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// Ntohs is the inverse of Htons.
func Ntohs(v uint16) uint16 { return Htons(v) }

// StatNames reads the names of a program's counters from its C enum, so
// that adding a counter in C needs no change in Go: the value v of every
// enumerator except prefix+"MAX" must be its index, and its name, lower
// case without the prefix, is the counter's name ("LB_STAT_CONN_HIT" with
// prefix "LB_STAT_" is "conn_hit").
func StatNames(spec *ebpf.CollectionSpec, enum, prefix string) ([]string, error) {
	var e *btf.Enum
	if err := spec.Types.TypeByName(enum, &e); err != nil {
		return nil, fmt.Errorf("find enum %s: %w", enum, err)
	}
	var names []string
	for _, v := range e.Values {
		if v.Name == prefix+"MAX" {
			continue
		}
		if int(v.Value) != len(names) {
			return nil, fmt.Errorf("enum %s: %s = %d: %w", enum, v.Name, v.Value, errors.ErrUnsupported)
		}
		names = append(names, strings.ToLower(strings.TrimPrefix(v.Name, prefix)))
	}
	return names, nil
}

// SumPerCPU reads the entry at key of a per-CPU map of __u64 and returns
// its sum over the CPUs.
func SumPerCPU(m *ebpf.Map, key uint32) (uint64, error) {
	var per []uint64
	if err := m.Lookup(key, &per); err != nil {
		return 0, err
	}
	var sum uint64
	for _, v := range per {
		sum += v
	}
	return sum, nil
}

// ReadStats reads a program's counters from m, a per-CPU array of __u64
// indexed like names (see StatNames): each counter's name to its sum over
// the CPUs.
func ReadStats(m *ebpf.Map, names []string) (map[string]uint64, error) {
	out := make(map[string]uint64, len(names))
	for i, name := range names {
		v, err := SumPerCPU(m, uint32(i))
		if err != nil {
			return nil, fmt.Errorf("read counter %s: %w", name, err)
		}
		out[name] = v
	}
	return out, nil
}
