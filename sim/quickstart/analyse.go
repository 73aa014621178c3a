package quickstart

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/ctl/jhash"
	"github.com/sluice-dp/sluice/dataplane/lb"
)

// maxListed bounds how many offending flows a check's detail names.
const maxListed = 5

// analyse fills the per-backend results and the checks from the packets
// the backends received.
func (r *Result) analyse(n *network, l *lb.LB, sent *clientTraffic, packets []packet) error {
	var weightSum uint32
	for _, w := range backendWeights {
		weightSum += w
	}
	r.Backends = make([]BackendResult, len(n.backends))
	for i, b := range n.backends {
		st, err := readUDPStats(b)
		if err != nil {
			return err
		}
		r.Backends[i] = BackendResult{
			Name: b.Name(), Addr: backendAddr(i), Weight: backendWeights[i],
			WeightShare:  float64(backendWeights[i]) / float64(weightSum),
			Delivered:    st.InDatagrams,
			CsumErrors:   st.InCsumErrors,
			BufferErrors: st.RcvbufErrors,
		}
	}

	sentUDP := map[netip.AddrPort]int{} // source -> datagram number
	for i, src := range sent.udp {
		sentUDP[src] = i
	}
	sentTCP := map[netip.AddrPort]bool{}
	for _, src := range sent.tcp {
		sentTCP[src] = true
	}

	// Where each flow went, and the problems of single packets.
	flowBackends := map[flowKey]map[int]bool{}
	datagrams := make([]int, len(sent.udp)) // receptions per datagram number
	var stray, badOuter, badSum []string
	note := func(list *[]string, format string, args ...any) {
		if len(*list) < maxListed {
			*list = append(*list, fmt.Sprintf(format, args...))
		} else if len(*list) == maxListed {
			*list = append(*list, "...")
		}
	}
	seedWord := lb.FlowSeed(seed)
	for _, p := range packets {
		r.Backends[p.backend].Packets++
		in := p.inner
		if p.err != nil {
			note(&stray, "%s: %v", n.backends[p.backend].Name(), p.err)
			continue
		}
		key := flowKey{in.proto, in.src}
		switch {
		case in.proto == unix.IPPROTO_UDP && in.dst == netip.AddrPortFrom(vipAddr, vipUDPPort):
			i, ok := sentUDP[in.src]
			if !ok || datagramNumber(in.payload) != i {
				note(&stray, "udp %v -> %v %q", in.src, in.dst, in.payload)
				continue
			}
			datagrams[i]++
		case in.proto == unix.IPPROTO_TCP && in.dst == netip.AddrPortFrom(vipAddr, vipTCPPort):
			if !sentTCP[in.src] || !in.syn {
				note(&stray, "tcp %v -> %v syn=%t", in.src, in.dst, in.syn)
				continue
			}
		default:
			note(&stray, "proto %d %v -> %v", in.proto, in.src, in.dst)
			continue
		}
		if flowBackends[key] == nil {
			flowBackends[key] = map[int]bool{}
		}
		flowBackends[key][p.backend] = true
		if want := guePortFor(in, seedWord); p.outer != netip.AddrPortFrom(lbAddr(), want) {
			note(&badOuter, "%v: outer source %v, want %v:%d", in.src, p.outer, lbAddr(), want)
		}
		if len(in.badSum) > 0 {
			note(&badSum, "%v: %s", in.src, strings.Join(in.badSum, ", "))
		}
	}

	// Datagrams: each exactly once.
	var missing, dup []string
	received := 0
	for i, c := range datagrams {
		switch {
		case c == 0:
			note(&missing, "#%d from %v", i, sent.udp[i])
		case c > 1:
			note(&dup, "#%d from %v (%d times)", i, sent.udp[i], c)
		}
		if c == 1 {
			received++
		}
	}
	r.check("every UDP datagram reached exactly one backend", len(missing) == 0 && len(dup) == 0,
		"%d/%d%s%s", received, len(datagrams), listed("; missing ", missing), listed("; duplicated ", dup))

	// TCP: each attempt's SYN arrived; every flow on one backend.
	var noSYN, split []string
	synFlows := 0
	for _, src := range sent.tcp {
		if flowBackends[flowKey{unix.IPPROTO_TCP, src}] == nil {
			note(&noSYN, "%v", src)
		} else {
			synFlows++
		}
	}
	r.check("every TCP connection attempt's SYN reached a backend", len(noSYN) == 0,
		"%d/%d%s", synFlows, len(sent.tcp), listed("; missing ", noSYN))
	for k, bs := range flowBackends {
		if len(bs) > 1 {
			note(&split, "%v (%d backends)", k.src, len(bs))
		}
	}
	r.check("each flow's packets all went to one backend", len(split) == 0, "%d flows%s", len(flowBackends), listed("; split ", split))
	r.check("backends received nothing but the client's traffic", len(stray) == 0, "%d packets%s", len(packets), listed("; unexpected ", stray))
	r.check("GUE outer source is the LB node, port 49152 + (flow hash & 0x3fff)", len(badOuter) == 0,
		"hash computed here with ctl/jhash%s", listed("; wrong ", badOuter))
	r.check("inner packets arrived intact (IPv4, UDP, TCP checksums)", len(badSum) == 0,
		"checked by the backends' own parser%s", listed("; bad ", badSum))

	// The kernel's own count must match the socket's, or the counters
	// were read from the wrong place and their zeros mean nothing.
	var delivered, csum, buf uint64
	for _, b := range r.Backends {
		delivered += b.Delivered
		csum += b.CsumErrors
		buf += b.BufferErrors
	}
	r.check("backend kernels verified and accepted every GUE datagram's outer UDP checksum",
		csum == 0 && buf == 0 && delivered == uint64(len(packets)),
		"InDatagrams %d, InCsumErrors %d, RcvbufErrors %d", delivered, csum, buf)

	tx, drop := r.Counters["tx"], r.Counters["drop"]
	r.check("every packet the LB transmitted reached a backend", tx == uint64(len(packets)) && drop == 0,
		"lb tx %d, drop %d, backends received %d", tx, drop, len(packets))

	// Consistency with the program's own answer. Lookup runs the
	// program on a probe, so it comes after the counters were read.
	var wrong []string
	keys := make([]flowKey, 0, len(flowBackends))
	for k := range flowBackends {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].proto != keys[j].proto {
			return keys[i].proto < keys[j].proto
		}
		return keys[i].src.Compare(keys[j].src) < 0
	})
	for _, k := range keys {
		v := lb.VIP{Addr: vipAddr, Port: vipUDPPort, Proto: lb.UDP}
		if k.proto == unix.IPPROTO_TCP {
			v = lb.VIP{Addr: vipAddr, Port: vipTCPPort, Proto: lb.TCP}
		}
		got, err := l.Lookup(v, k.src)
		if err != nil {
			return fmt.Errorf("lookup %v for %v: %w", v, k.src, err)
		}
		for b := range flowBackends[k] {
			if backendAddr(b) != got {
				note(&wrong, "%v %v: arrived at %v, Lookup says %v", v.Proto, k.src, backendAddr(b), got)
			}
		}
	}
	r.check("each flow's backend is the one lb.Lookup names", len(wrong) == 0, "%d flows%s", len(keys), listed("; differ ", wrong))

	total := len(flowBackends)
	for k, bs := range flowBackends {
		for b := range bs {
			if k.proto == unix.IPPROTO_TCP {
				r.Backends[b].TCPFlows++
			} else {
				r.Backends[b].UDPFlows++
			}
		}
	}
	for i := range r.Backends {
		if total > 0 {
			r.Backends[i].Share = float64(r.Backends[i].UDPFlows+r.Backends[i].TCPFlows) / float64(total)
		}
	}
	return nil
}

// guePortFor is the outer UDP source port DESIGN.md §4 prescribes for a
// flow: 49152 + (jhash of the inner 5-tuple & 0x3fff), computed with the
// control plane's Go jhash rather than taken from the program.
func guePortFor(in inner, seed uint32) uint16 {
	s, d := in.src.Addr().As4(), in.dst.Addr().As4()
	words := []uint32{
		binary.BigEndian.Uint32(s[:]),
		binary.BigEndian.Uint32(d[:]),
		uint32(in.src.Port())<<16 | uint32(in.dst.Port()),
	}
	return 49152 + uint16(jhash.Words(words, seed)&0x3fff)
}

func (r *Result) check(name string, ok bool, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
}

func listed(label string, items []string) string {
	if len(items) == 0 {
		return ""
	}
	return label + strings.Join(items, ", ")
}
