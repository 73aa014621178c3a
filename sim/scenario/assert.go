package scenario

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/sluice-dp/sluice/dataplane/lb"
	"github.com/sluice-dp/sluice/internal/pkttest"
)

// maxExamples bounds how many offenders an observation names.
const maxExamples = 3

// problems collects what is wrong, counted by kind, with a few examples.
type problems struct {
	order    []string
	count    map[string]int
	examples map[string][]string
}

func (p *problems) add(kind, format string, args ...any) {
	if p.count == nil {
		p.count, p.examples = map[string]int{}, map[string][]string{}
	}
	if p.count[kind] == 0 {
		p.order = append(p.order, kind)
	}
	p.count[kind]++
	if len(p.examples[kind]) < maxExamples {
		p.examples[kind] = append(p.examples[kind], fmt.Sprintf(format, args...))
	}
}

func (p *problems) none() bool { return len(p.order) == 0 }

func (p *problems) String() string {
	var parts []string
	for _, k := range p.order {
		parts = append(parts, fmt.Sprintf("%d %s (e.g. %s)", p.count[k], k, strings.Join(p.examples[k], "; ")))
	}
	return strings.Join(parts, "; ")
}

// evaluate checks one assertion against a step's data and earlier steps.
func (r *runner) evaluate(a Assertion, data *stepData) (AssertionResult, error) {
	res := AssertionResult{Line: a.Line}
	switch {
	case a.Encapsulation != nil:
		res.Kind = "encapsulation"
		r.encapsulation(a.Encapsulation, data, &res)
	case a.Distribution != nil:
		res.Kind = "distribution"
		r.distribution(a.Distribution, data, &res)
	case a.Consistency != nil:
		res.Kind = "consistency"
		r.consistency(a.Consistency, data, &res)
	case a.Disruption != nil:
		res.Kind = "disruption"
		r.disruption(a.Disruption, data, &res)
	case a.Counters != nil:
		res.Kind = "counters"
		if err := r.counters(a.Counters, &res); err != nil {
			return res, err
		}
	case a.Delivery != nil:
		res.Kind = "delivery"
		delivery(a.Delivery, data, &res)
	case a.NoReplies != nil:
		res.Kind = "no_replies"
		r.noReplies(a.NoReplies, data, &res)
	case a.RepliesFrom != nil:
		res.Kind = "replies_from_vip"
		r.repliesFromVIP(a.RepliesFrom, data, &res)
	case a.Unbroken != nil:
		res.Kind = "unbroken"
		r.unbroken(a.Unbroken, data, &res)
	case a.TooBig != nil:
		res.Kind = "too_big"
		r.tooBig(a.TooBig, data, &res)
	case a.AdmittedRate != nil:
		res.Kind = "admitted_rate"
		admittedRate(a.AdmittedRate, data, &res)
	case a.Connections != nil:
		res.Kind = "connections"
		connections(a.Connections, data, &res)
	case a.ChainIntact != nil:
		res.Kind = "chain_intact"
		if err := r.chainIntact(a.ChainIntact, &res); err != nil {
			return res, err
		}
	default:
		return res, fmt.Errorf("%w: empty assertion at line %d", ErrInvalid, a.Line)
	}
	return res, nil
}

// encapsulation checks every packet captured at c.At against the wire
// format of docs/lb.md and against what was sent.
func (r *runner) encapsulation(c *EncapCheck, data *stepData, res *AssertionResult) {
	port := guePort(r.w.sc.LB)
	sources := r.w.lbSources()
	cfgMTU := r.w.sc.LB.TunnelMTU
	if cfgMTU == 0 {
		cfgMTU = 1500
	}
	want := map[string]int{} // normalised sent packet -> times it should arrive
	expected := 0
	for _, s := range data.sent {
		// Packets too big for the tunnel are answered with an ICMP
		// error instead (checked by too_big).
		if _, ok := r.model.vipOf(s.flow); ok && len(s.ip)+20 <= cfgMTU {
			want[normalized(s.ip)]++
			expected++
		}
	}
	res.Name = fmt.Sprintf("packets at %s are %v with the expected outer headers and carry what was sent", ifaceList(c.At), c.Encap)
	var p problems
	matched, total := 0, 0
	forwarded := r.w.vmBackends()
	for _, a := range data.arrivals {
		// Neighbour discovery and multicast listener reports are link
		// chatter of IPv6 interfaces, not traffic to a backend; tunnels
		// a backend host forwards to its VM are not for the host.
		if !slices.Contains(c.At, a.at) || linkChatter(a) || forwarded[a.at.Node][a.outerDst] {
			continue
		}
		total++
		if a.inner == nil {
			p.add("not encapsulated", "%s: %v", a.at, a.encapErr)
			continue
		}
		ip := innerIP(a)
		key := normalized(ip)
		if want[key] == 0 {
			p.add("not sent (or arrived twice)", "%s: %v", a.at, a.flow)
		} else {
			want[key]--
			matched++
		}
		if !r.w.nodeAddrs(a.at.Node)[a.outerDst] {
			p.add("outer destination not the capturing node", "%s: %v", a.at, a.outerDst)
		}
		v, ok := r.model.vipOf(a.flow)
		if !ok {
			p.add("inner packet to no VIP", "%v", a.flow)
			continue
		}
		if v.Options.Encap != c.Encap {
			p.add("VIP configured for another encapsulation", "%v is %v", v.VIP, v.Options.Encap)
		}
		r.checkOuter(c, a, ip, v, port, sources, &p)
		if errs := pkttest.Checksums(a.pkt, pkttest.GUEPort(port)); len(errs) > 0 {
			p.add("bad checksums", "%v: %v", a.flow, errs[0])
		}
	}
	if matched != expected {
		p.add("sent packets missing", "%d of %d arrived", matched, expected)
	}
	res.Passed = p.none() && total > 0
	res.Observed = fmt.Sprintf("%d packets captured, %d/%d sent packets arrived once with their inner packet intact", total, matched, expected)
	if c.OuterTTL != 0 {
		res.Observed += fmt.Sprintf(", outer TTL checked against %d", c.OuterTTL)
	}
	if !p.none() {
		res.Observed += "; " + p.String()
	}
}

// checkOuter checks the outer headers of one tunnelled packet.
func (r *runner) checkOuter(c *EncapCheck, a arrival, ip []byte, v VIPSpec, port uint16, sources map[netip.Addr]string, p *problems) {
	seed := r.w.sc.LB.Seed
	hash := tupleHash(a.flow, seed)
	var udp *layers.UDP
	if l, ok := a.pkt.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && uint16(l.DstPort) == port {
		udp = l
	}
	switch c.Encap {
	case lb.GUE:
		if udp == nil {
			p.add("not GUE", "%v", a.flow)
			return
		}
		if _, ok := sources[a.outerSrc]; !ok {
			p.add("outer source not an LB node", "%v: %v", a.flow, a.outerSrc)
		}
		if want := 49152 + uint16(hash&0x3fff); uint16(udp.SrcPort) != want && !v.Options.SourceHash {
			p.add("wrong outer source port", "%v: %d, want %d", a.flow, udp.SrcPort, want)
		}
	case lb.IPIP:
		if udp != nil {
			p.add("not IPIP", "%v", a.flow)
			return
		}
		if want := ipipSource(a.outerSrc.Is4(), a.flow.Src); a.outerSrc != want {
			p.add("wrong IPIP outer source", "%v: %v, want %v", a.flow, a.outerSrc, want)
		}
	}
	switch o := firstIP(a.pkt).(type) {
	case *layers.IPv4:
		innerDF := ip[0]>>4 == 6 || ip[6]&0x40 != 0
		innerTOS := ip[1]
		if ip[0]>>4 == 6 {
			innerTOS = ip[0]<<4 | ip[1]>>4
		}
		if o.Id != 0 || (o.Flags&layers.IPv4DontFragment != 0) != innerDF || o.TOS != innerTOS {
			p.add("wrong outer IPv4 id, DF or TOS", "%v: id %d DF %t TOS %#x", a.flow, o.Id, o.Flags&layers.IPv4DontFragment != 0, o.TOS)
		}
		if c.OuterTTL != 0 && o.TTL != c.OuterTTL {
			p.add("wrong outer TTL", "%v: %d", a.flow, o.TTL)
		}
	case *layers.IPv6:
		if c.Encap == lb.GUE && o.FlowLabel != hash&0xfffff {
			p.add("wrong outer flow label", "%v: %#x, want %#x", a.flow, o.FlowLabel, hash&0xfffff)
		}
		if c.OuterTTL != 0 && o.HopLimit != c.OuterTTL {
			p.add("wrong outer hop limit", "%v: %d", a.flow, o.HopLimit)
		}
	}
}

// ipipSource is the outer source docs/lb.md gives an IPIP packet of a
// flow from client, with the default prefixes.
func ipipSource(v4 bool, client netip.AddrPort) netip.Addr {
	a := client.Addr().As16()
	low := binary.BigEndian.Uint32(a[12:])
	port := uint32(client.Port())
	if v4 {
		p := lb.DefaultIPIPPrefixV4.Masked().Addr().As4()
		host := (port ^ low) & (1<<(32-lb.DefaultIPIPPrefixV4.Bits()) - 1)
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(p[:])|host)
		return netip.AddrFrom4(b)
	}
	b := lb.DefaultIPIPPrefixV6.Masked().Addr().As16()
	binary.BigEndian.PutUint32(b[8:], low)
	binary.BigEndian.PutUint32(b[12:], port)
	return netip.AddrFrom16(b)
}

// distribution compares each backend's share of the step's flows to the
// VIP with its share of the weights.
func (r *runner) distribution(c *DistributionCheck, data *stepData, res *AssertionResult) {
	res.Name = fmt.Sprintf("flows to %v spread over its backends by weight, within %.1f%%", c.VIP, 100*c.Tolerance)
	var sum uint32
	for _, b := range data.backends[c.VIP] {
		if !b.Down {
			sum += b.Weight
		}
	}
	count := map[netip.Addr]int{}
	total, missing := 0, 0
	for _, f := range data.flows {
		if v, ok := r.model.vipOf(f); !ok || v.VIP != c.VIP {
			continue
		}
		l := data.landed[f]
		if l == nil {
			missing++
			continue
		}
		for b := range l.backends {
			count[b]++
		}
		total++
	}
	ok := total > 0 && missing == 0
	var parts []string
	for _, b := range data.backends[c.VIP] {
		if b.Down {
			continue
		}
		share := float64(count[b.Addr]) / float64(max(total, 1))
		want := float64(b.Weight) / float64(sum)
		mark := ""
		if diff := share - want; diff > c.Tolerance || -diff > c.Tolerance {
			ok, mark = false, " ✗"
		}
		parts = append(parts, fmt.Sprintf("%v %.1f%% (weight %.1f%%)%s", b.Addr, 100*share, 100*want, mark))
	}
	res.Passed = ok
	res.Observed = fmt.Sprintf("%d flows: %s", total, strings.Join(parts, ", "))
	if missing > 0 {
		res.Observed += fmt.Sprintf("; %d flows reached no backend", missing)
	}
}

// consistency checks that each flow reached one backend in this step and
// the steps named, whatever LB node handled it, and that it is the backend
// the Maglev model predicts.
func (r *runner) consistency(c *ConsistencyCheck, data *stepData, res *AssertionResult) {
	steps := []*stepData{data}
	for _, w := range c.With {
		steps = append(steps, r.steps[w])
	}
	names := []string{data.name}
	names = append(names, c.With...)
	res.Name = fmt.Sprintf("each flow reaches the same backend, the one Maglev predicts, whichever LB node handles it (%s)", strings.Join(names, ", "))
	var p problems
	backend := map[flowKey]netip.Addr{}
	lbNodes := map[flowKey]map[string]bool{}
	allLB := map[string]bool{}
	flows := 0
	for _, st := range steps {
		for _, f := range st.flows {
			v, ok := r.model.vipOf(f)
			if !ok {
				continue
			}
			flows++
			l := st.landed[f]
			if l == nil {
				p.add("flows that reached no backend", "%v in %q", f, st.name)
				continue
			}
			got, one := l.only()
			if !one {
				p.add("flows split over backends", "%v in %q", f, st.name)
				continue
			}
			if prev, seen := backend[f]; seen && prev != got {
				p.add("flows that changed backend", "%v: %v then %v", f, prev, got)
			}
			backend[f] = got
			want, err := r.model.ring(v, st.backends[v.VIP], f)
			if err != nil || want != got {
				p.add("flows not on the predicted backend", "%v: %v, Maglev says %v", f, got, want)
			}
			if lbNodes[f] == nil {
				lbNodes[f] = map[string]bool{}
			}
			for n := range l.lbNodes {
				lbNodes[f][n] = true
				allLB[n] = true
			}
		}
	}
	crossed := 0
	for _, ns := range lbNodes {
		if len(ns) > 1 {
			crossed++
		}
	}
	if len(allLB) < c.MinLBNodes {
		p.add("too few LB nodes", "%d handled the flows, want %d", len(allLB), c.MinLBNodes)
	}
	res.Passed = p.none() && flows > 0
	nodes := slices.Sorted(maps.Keys(allLB))
	res.Observed = fmt.Sprintf("%d flows on %d backends via LB nodes %v, %d flows seen through more than one LB node, all on the predicted backend",
		len(backend), countDistinct(backend), nodes, crossed)
	if !p.none() {
		res.Observed = fmt.Sprintf("%d flows via LB nodes %v: %s", len(backend), nodes, p.String())
	}
}

// disruption measures how many flows of an earlier step moved to another
// backend, and checks that each move is one the new ring explains.
func (r *runner) disruption(c *DisruptionCheck, data *stepData, res *AssertionResult) {
	before := r.steps[c.Before]
	res.Name = fmt.Sprintf("at most %.1f%% of the flows of %q move to another backend", 100*c.MaxMoved, c.Before)
	var p problems
	common, moved, forced := 0, 0, 0
	for _, f := range data.flows {
		was, now := before.landed[f], data.landed[f]
		if was == nil || now == nil {
			continue
		}
		old, ok1 := was.only()
		cur, ok2 := now.only()
		if !ok1 || !ok2 {
			p.add("flows split over backends", "%v", f)
			continue
		}
		common++
		v, _ := r.model.vipOf(f)
		want, err := r.model.ring(v, data.backends[v.VIP], f)
		survives := slices.ContainsFunc(data.backends[v.VIP], func(b lb.Backend) bool { return b.Addr == old && !b.Down })
		switch {
		case old == cur && !survives:
			p.add("flows still on a removed backend", "%v: %v", f, cur)
		case old != cur:
			moved++
			if !survives {
				forced++
			}
			// A flow moves only by taking the ring again.
			if err != nil || cur != want {
				p.add("flows moved to an unpredicted backend", "%v: %v, Maglev says %v", f, cur, want)
			}
		}
	}
	frac := float64(moved) / float64(max(common, 1))
	if frac > c.MaxMoved {
		p.add("too many moved", "%.2f%% > %.2f%%", 100*frac, 100*c.MaxMoved)
	}
	if common == 0 {
		p.add("no flow seen in both steps", "%q and %q", c.Before, data.name)
	}
	res.Passed = p.none()
	res.Observed = fmt.Sprintf("%d of %d flows moved (%.2f%%), %d of them because their backend left", moved, common, 100*frac, forced)
	if !p.none() {
		res.Observed += "; " + p.String()
	}
}

// counters compares counter totals over CPUs (and nodes): the LB's by
// their bare names, the chains' and their programs' as
// "<program>.<counter>" (see chainNode.counters).
func (r *runner) counters(c *CountersCheck, res *AssertionResult) error {
	where := "all LB nodes"
	if slices.ContainsFunc(c.Values, func(v CounterValue) bool { return strings.Contains(v.Name, ".") }) {
		where = "all nodes"
	}
	if c.Node != "" {
		where = c.Node
	}
	var want []string
	for _, v := range c.Values {
		want = append(want, v.String())
	}
	res.Name = fmt.Sprintf("counters of %s: %s", where, strings.Join(want, ", "))
	total := map[string]uint64{}
	for _, n := range r.w.lbs {
		if c.Node != "" && n.node != c.Node {
			continue
		}
		cs, err := n.lb.Counters()
		if err != nil {
			return fmt.Errorf("read counters of lb on %s: %w", n.node, err)
		}
		for k, v := range cs.Stats {
			total[k] += v
		}
	}
	for _, n := range r.w.chains {
		if c.Node != "" && n.at.Node != c.Node {
			continue
		}
		cs, err := n.counters()
		if err != nil {
			return err
		}
		for k, v := range cs {
			total[k] += v
		}
	}
	res.Passed = true
	var got []string
	for _, v := range c.Values {
		x, known := total[v.Name]
		if !known {
			res.Passed = false
			got = append(got, fmt.Sprintf("%s: no such counter (have %s)", v.Name, strings.Join(sameProgram(total, v.Name), " ")))
			continue
		}
		mark := ""
		if x < v.Min || x > v.Max {
			res.Passed, mark = false, " ✗"
		}
		got = append(got, fmt.Sprintf("%s %d%s", v.Name, x, mark))
	}
	res.Observed = strings.Join(got, ", ")
	return nil
}

// sameProgram lists the counter names of total that belong to the
// program name belongs to: the same "<program>." prefix, or none.
func sameProgram(total map[string]uint64, name string) []string {
	prog, _, _ := strings.Cut(name, ".")
	var out []string
	for _, k := range slices.Sorted(maps.Keys(total)) {
		p, _, _ := strings.Cut(k, ".")
		if p == prog || !strings.Contains(name, ".") && !strings.Contains(k, ".") {
			out = append(out, k)
		}
	}
	return out
}

func (v CounterValue) String() string {
	if v.Min == v.Max {
		return fmt.Sprintf("%s = %d", v.Name, v.Min)
	}
	return fmt.Sprintf("%s in [%d, %d]", v.Name, v.Min, v.Max)
}

// delivery checks the step's real requests: HTTP requests answered with a
// complete 2xx response and c.Status, UDP requests whose echo came back in
// time. Latency percentiles are over the answered requests of both.
func delivery(c *DeliveryCheck, data *stepData, res *AssertionResult) {
	res.Name = fmt.Sprintf("at least %d requests answered", c.MinOK)
	if len(data.http) > 0 {
		res.Name += fmt.Sprintf(" (http: status %d)", c.Status)
	}
	res.Name += fmt.Sprintf(", at most %d failed", c.MaxFailed)
	if c.MaxP99 > 0 {
		res.Name += fmt.Sprintf(", p99 ≤ %v", c.MaxP99)
	}
	ok, failed, status := 0, 0, 0
	var lat []time.Duration
	errs := map[string]int{}
	for _, h := range data.http {
		ok += h.res.OK
		failed += h.res.Failed
		status += h.res.Status[c.Status]
		lat = append(lat, h.res.Latencies...)
		for e, n := range h.res.Errors {
			errs[e] += n
		}
	}
	// A UDP request fails when it was not answered in time, also when it
	// could not even be sent.
	udpOK, udpFailed := 0, 0
	for _, u := range data.udp {
		udpOK += u.res.Answered
		udpFailed += u.spec.Requests - u.res.Answered
		lat = append(lat, u.res.Latencies...)
	}
	if udpFailed > 0 {
		errs["udp request unanswered"] += udpFailed
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		// Nearest rank: the smallest latency that at least p percent
		// of the requests did not exceed.
		rank := int(math.Ceil(p / 100 * float64(len(lat))))
		return lat[max(0, min(len(lat), rank)-1)]
	}
	// HTTP answers count only with the expected status, UDP answers
	// have none: both sums must reach MinOK.
	avoided := 0
	for _, h := range data.http {
		for _, n := range c.NotServedBy {
			avoided += h.res.ServedBy[n]
		}
	}
	for _, u := range data.udp {
		for _, n := range c.NotServedBy {
			avoided += u.res.AnsweredBy[n]
		}
	}
	if len(c.NotServedBy) > 0 {
		res.Name += fmt.Sprintf(", none answered by %s", strings.Join(c.NotServedBy, ", "))
	}
	res.Passed = ok+udpOK >= c.MinOK && status+udpOK >= c.MinOK && failed+udpFailed <= c.MaxFailed &&
		(c.MaxP99 == 0 || pct(99) <= c.MaxP99) && avoided == 0
	var parts []string
	if len(data.http) > 0 {
		parts = append(parts, fmt.Sprintf("http %d ok (%d with status %d), %d failed", ok, status, c.Status, failed))
	}
	if len(data.udp) > 0 {
		parts = append(parts, fmt.Sprintf("udp %d answered, %d unanswered", udpOK, udpFailed))
	}
	res.Observed = fmt.Sprintf("%s; latency p50 %v, p90 %v, p99 %v", strings.Join(parts, "; "),
		pct(50).Round(time.Microsecond), pct(90).Round(time.Microsecond), pct(99).Round(time.Microsecond))
	if len(c.NotServedBy) > 0 {
		res.Observed += fmt.Sprintf("; %d answered by %s", avoided, strings.Join(c.NotServedBy, ", "))
	}
	// The most frequent error, with ties broken by name so that reports
	// of equal runs read alike.
	if len(errs) > 0 {
		kinds := slices.Sorted(maps.Keys(errs))
		top := kinds[0]
		for _, k := range kinds {
			if errs[k] > errs[top] {
				top = k
			}
		}
		res.Observed += fmt.Sprintf("; %d× %s", errs[top], top)
	}
}

// tooBig checks the ICMP errors the LB sent back for packets that did not
// fit the tunnel.
func (r *runner) tooBig(c *TooBigCheck, data *stepData, res *AssertionResult) {
	res.Name = fmt.Sprintf("%d ICMP fragmentation-needed / packet-too-big messages at %s advertising MTU %d", c.Count, c.At, c.MTU)
	sentFlows := map[flowKey]bool{}
	for _, f := range data.flows {
		sentFlows[f] = true
	}
	var p problems
	n := 0
	for _, a := range data.arrivals {
		if a.at != c.At {
			continue
		}
		var mtu int
		var quoted []byte
		if l, ok := a.pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok && l.TypeCode == layers.CreateICMPv4TypeCode(3, 4) {
			mtu, quoted = int(binary.BigEndian.Uint16(l.LayerContents()[6:8])), l.LayerPayload()
		} else if l, ok := a.pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok && l.TypeCode.Type() == layers.ICMPv6TypePacketTooBig {
			// gopacket leaves the MTU word at the start of the payload.
			if pl := l.LayerPayload(); len(pl) >= 4 {
				mtu, quoted = int(binary.BigEndian.Uint32(pl[:4])), pl[4:]
			}
		} else {
			continue
		}
		n++
		if mtu != c.MTU {
			p.add("wrong MTU", "%d", mtu)
		}
		if f, ok := quotedFlow(quoted); !ok || !sentFlows[f] {
			p.add("quoting no sent packet", "%v", f)
		} else if !r.isVIP(a.outerSrc) || a.outerSrc != f.Dst.Addr() {
			p.add("not from the VIP", "%v", a.outerSrc)
		}
		if errs := pkttest.Checksums(a.pkt); len(errs) > 0 {
			p.add("bad checksums", "%v", errs[0])
		}
	}
	if n != c.Count {
		p.add("wrong count", "%d, want %d", n, c.Count)
	}
	res.Passed = p.none()
	res.Observed = fmt.Sprintf("%d messages", n)
	if !p.none() {
		res.Observed += "; " + p.String()
	}
}

// quotedFlow reads the flow of the packet an ICMP error quotes: its IP
// header and the first 8 bytes after it, all that RFC 792 guarantees.
func quotedFlow(b []byte) (flowKey, bool) {
	var f flowKey
	var src, dst netip.Addr
	var l4 []byte
	switch {
	case len(b) >= 28 && b[0]>>4 == 4:
		ihl := int(b[0]&0xf) * 4
		if len(b) < ihl+4 {
			return f, false
		}
		src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		f.Proto, l4 = b[9], b[ihl:]
	case len(b) >= 44 && b[0]>>4 == 6:
		src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		f.Proto, l4 = b[6], b[40:]
	default:
		return f, false
	}
	f.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
	f.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	return f, true
}

func (r *runner) isVIP(a netip.Addr) bool {
	return slices.ContainsFunc(r.w.sc.LB.VIPs, func(v VIPSpec) bool { return v.VIP.Addr == a })
}

// linkChatter reports whether a frame is link-local control traffic:
// multicast, or from a link-local address (IPv6 ND, MLD, router
// solicitations).
func linkChatter(a arrival) bool {
	return a.outerDst.IsMulticast() || a.outerSrc.IsLinkLocalUnicast()
}

func ifaceList(is []Iface) string {
	s := make([]string, len(is))
	for i, x := range is {
		s[i] = x.String()
	}
	return strings.Join(s, ", ")
}

func countDistinct(m map[flowKey]netip.Addr) int {
	s := map[netip.Addr]bool{}
	for _, v := range m {
		s[v] = true
	}
	return len(s)
}
