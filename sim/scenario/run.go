package scenario

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/sluice-dp/sluice/dataplane/attach"
	"github.com/sluice-dp/sluice/dataplane/lb"
	"github.com/sluice-dp/sluice/internal/pkttest"
	"github.com/sluice-dp/sluice/sim/topo"
	"github.com/sluice-dp/sluice/sim/traffic"
)

// Options configure a run.
type Options struct {
	// Mode is how the LB program is attached.
	Mode attach.Mode
	// PcapDir, if set, receives a pcap per capture point and step, for
	// every run. Without it pcaps are written only for failed steps, to
	// a directory under os.TempDir() named in the report.
	PcapDir string
	// Progress receives a line per stage; nil discards them.
	Progress io.Writer
}

// ErrPanic marks the error of a run that panicked; the panic's value and
// stack are in the message, and the run's topology was torn down.
var ErrPanic = errors.New("panic")

// defaultSettle bounds how long a step waits for its traffic to drain.
const defaultSettle = 2 * time.Second

// Run builds the scenario's topology, runs its steps and evaluates its
// assertions. An error means the scenario could not run to the end (setup
// failed, ctx cancelled); failed assertions are in the Result, which is
// filled as far as the run got either way. Every namespace, link and BPF
// object of the run is gone when Run returns, also after a panic: a panic
// in the goroutine of Run (in a step, an event, an assertion) is recovered
// after teardown and returned as an error wrapping ErrPanic, with the
// panic's value and stack. A panic in another goroutine is not caught.
func Run(ctx context.Context, sc *Scenario, opts Options) (res *Result, err error) {
	if opts.Mode != attach.Native && opts.Mode != attach.Generic {
		return nil, fmt.Errorf("run %s: %w: unknown xdp mode %v", sc.Name, ErrInvalid, opts.Mode)
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	start := time.Now()
	res = &Result{Scenario: sc.Name, File: sc.File, Mode: opts.Mode.String()}
	defer func() {
		res.Duration = time.Since(start)
		if err != nil {
			res.Error = err.Error()
		}
	}()
	// A panic inside the run (a bug of the engine or of what it drives)
	// is turned into the run's error, after the deferred teardown below
	// has deleted everything; a panic in another goroutine cannot be
	// caught here and ends the program.
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("run %s: %w: %v\n%s", sc.Name, ErrPanic, p, debug.Stack())
		}
	}()
	say := func(format string, args ...any) {
		fmt.Fprintf(progress, "[%s %s] %s\n", sc.Name, opts.Mode, fmt.Sprintf(format, args...))
	}

	t, err := topo.New()
	if err != nil {
		return res, err
	}
	res.Prefix = t.Prefix()
	w := &world{sc: sc, topo: t, nodes: map[string]*topo.Node{}, ends: map[Iface]topo.Endpoint{},
		peers: map[Iface]topo.Endpoint{}, backends: map[lb.VIP][]lb.Backend{}}
	defer func() {
		if testHooks.loaded != nil {
			objs, oerr := w.bpfObjects()
			if oerr != nil {
				slog.Warn("list bpf objects of run", "prefix", t.Prefix(), "err", oerr)
			}
			testHooks.loaded(objs)
		}
		if cerr := w.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	if err := w.build(opts.Mode); err != nil {
		return res, fmt.Errorf("build %s: %w", sc.Name, err)
	}
	say("topology %s: %d nodes, %d links; lb on %d node(s), %d chain(s), in %s mode", t.Prefix(), len(sc.Nodes), len(sc.Links), len(w.lbs), len(w.chains), opts.Mode)

	// Background loads (http: with until:) end with the run: cancelled
	// and waited for before the topology is deleted, on every path.
	ctx, cancel := context.WithCancel(ctx)
	r := &runner{w: w, opts: opts, say: say, steps: map[string]*stepData{}, pending: map[string][]chan bgLoad{},
		holds: map[string]*traffic.Held{}}
	defer func() {
		cancel()
		r.bg.Wait()
	}()
	if sc.LB != nil {
		r.model = newModel(sc.LB)
	}
	for i, st := range sc.Steps {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		say("step %d/%d %q", i+1, len(sc.Steps), st.Name)
		sr, err := r.step(ctx, st)
		res.Steps = append(res.Steps, sr)
		if err != nil {
			return res, fmt.Errorf("step %q: %w", st.Name, err)
		}
		for _, a := range sr.Assertions {
			mark := "ok  "
			if !a.Passed {
				mark = "FAIL"
			}
			say("  %s %s: %s", mark, a.Name, a.Observed)
		}
	}
	return res, nil
}

// runner carries a run's state from step to step.
type runner struct {
	w     *world
	opts  Options
	say   func(string, ...any)
	model *model
	steps map[string]*stepData
	// pending are the background loads to collect, by the step that
	// collects them.
	pending map[string][]chan bgLoad
	bg      sync.WaitGroup
	// holds are the held connections of hold: loads, by name.
	holds map[string]*traffic.Held
}

// bgLoad is the outcome of a background http: load.
type bgLoad struct {
	out httpOutcome
	err error
}

// step runs one step: events, captures, traffic, settling, assertions.
func (r *runner) step(ctx context.Context, st Step) (sr StepResult, err error) {
	start := time.Now()
	sr.Name = st.Name
	if testHooks.step != nil {
		testHooks.step(st.Name)
	}
	defer func() { sr.Duration = time.Since(start) }()
	for _, e := range st.Events {
		desc, err := r.event(e)
		if err != nil {
			return sr, err
		}
		sr.Events = append(sr.Events, desc)
		r.say("  event: %s", desc)
	}

	data := &stepData{name: st.Name, captures: map[Iface][]traffic.Frame{}, landed: map[flowKey]*landing{},
		backends: map[lb.VIP][]lb.Backend{}}
	maps.Copy(data.backends, r.w.backends)
	caps := make([]*traffic.Capture, 0, len(st.Capture))
	stopAll := func() error {
		var errs []error
		for i, c := range caps {
			frames, err := c.Stop()
			errs = append(errs, err)
			data.captures[st.Capture[i]] = frames
		}
		caps = nil
		return errors.Join(errs...)
	}
	defer stopAll() // after an error; the normal path stops them below
	for _, at := range st.Capture {
		c, err := traffic.StartCapture(r.w.nodes[at.Node], at.Name)
		if err != nil {
			return sr, fmt.Errorf("capture on %s: %w", at, err)
		}
		caps = append(caps, c)
	}

	for _, s := range st.Send {
		n, err := r.send(s, data)
		sr.Sent += n
		if err != nil {
			return sr, err
		}
	}
	if len(st.Send) > 0 {
		r.say("  sent %d packets in %d flows", sr.Sent, len(data.flows))
	}
	for _, h := range st.Hold {
		out, err := r.hold(ctx, h)
		if err != nil {
			return sr, err
		}
		data.conns = append(data.conns, out)
	}
	if len(st.Connect) > 0 {
		outs, err := r.connects(ctx, st.Connect)
		if err != nil {
			return sr, err
		}
		data.conns = append(data.conns, outs...)
	}
	for _, c := range data.conns {
		sr.Sent += c.res.Attempts
		sr.Received += c.res.OK
	}
	for _, h := range st.HTTP {
		if h.Until != "" {
			ch := make(chan bgLoad, 1)
			r.pending[h.Until] = append(r.pending[h.Until], ch)
			r.bg.Add(1)
			go func() {
				defer r.bg.Done()
				out, err := r.http(ctx, h)
				out.started = st.Name
				ch <- bgLoad{out, err}
			}()
			r.say("  http %s from %s started in the background until step %q", h.URL, h.From, h.Until)
			continue
		}
		out, err := r.http(ctx, h)
		if err != nil {
			return sr, err
		}
		data.http = append(data.http, out)
		sr.Sent += out.res.OK + out.res.Failed
		sr.Received += out.res.OK
	}
	for _, u := range st.UDP {
		out, err := r.udp(ctx, u)
		if err != nil {
			return sr, err
		}
		data.udp = append(data.udp, out)
		sr.Sent += out.res.Sent
		sr.Received += out.res.Answered
	}
	for _, ch := range r.pending[st.Name] {
		var bg bgLoad
		select {
		case bg = <-ch:
		case <-ctx.Done():
			return sr, ctx.Err()
		}
		if bg.err != nil {
			return sr, bg.err
		}
		data.http = append(data.http, bg.out)
		sr.Sent += bg.out.res.OK + bg.out.res.Failed
		sr.Received += bg.out.res.OK
	}
	delete(r.pending, st.Name)
	settle := st.Settle
	if settle == 0 {
		settle = defaultSettle
	}
	if err := r.settle(ctx, settle); err != nil {
		return sr, err
	}
	if err := stopAll(); err != nil {
		return sr, fmt.Errorf("stop captures: %w", err)
	}
	r.analyse(data)
	sr.Placement = placement(data)
	sr.Received += len(data.arrivals)
	r.steps[st.Name] = data

	for _, a := range st.Expect {
		ar, err := r.evaluate(a, data)
		if err != nil {
			return sr, err
		}
		sr.Assertions = append(sr.Assertions, ar)
	}
	failed := slices.ContainsFunc(sr.Assertions, func(a AssertionResult) bool { return !a.Passed })
	if r.opts.PcapDir != "" || (failed && len(st.Capture) > 0) {
		dir := r.opts.PcapDir
		if dir == "" {
			dir = filepath.Join(os.TempDir(), "sluice-scenarios", r.w.topo.Prefix())
		}
		files, err := writePcaps(dir, r.w.sc.Name, r.opts.Mode, st, data)
		if err != nil {
			return sr, err
		}
		sr.Pcaps = files
	}
	return sr, nil
}

// send crafts one traffic spec's frames and injects them.
func (r *runner) send(s Send, data *stepData) (int, error) {
	end, peer := r.w.ends[s.At], r.w.peers[s.At]
	spec := traffic.FlowSpec{
		Kind: traffic.Kind(s.Kind), Src: s.Src, SrcPorts: s.SrcPorts, Dst: s.Dst, Flows: s.Flows,
		PacketsPerFlow: s.PacketsPerFlow, Payload: s.Payload, DF: s.DF, TTL: s.TTL, Seed: s.Seed,
	}
	_, frames, err := traffic.Craft(spec, end.MAC, peer.MAC)
	if err != nil {
		return 0, fmt.Errorf("craft %s traffic to %v: %w", s.Kind, s.Dst, err)
	}
	seen := map[flowKey]bool{}
	for _, f := range data.flows {
		seen[f] = true
	}
	// Flows are read back from the frames themselves rather than taken
	// from Craft's list, so that what is checked later is what was sent.
	for _, fr := range frames {
		ip := pkttest.IPPacket(fr)
		fk, ok := decodeFlow(pkttest.Decode(fr))
		if !ok {
			return 0, fmt.Errorf("craft %s traffic: a frame without IP", s.Kind)
		}
		data.sent = append(data.sent, sentPacket{flow: fk, ip: ip})
		if !seen[fk] {
			seen[fk] = true
			data.flows = append(data.flows, fk)
		}
	}
	n, err := traffic.Inject(r.w.nodes[s.At.Node], s.At.Name, frames)
	if err != nil {
		return n, fmt.Errorf("inject at %s: %w", s.At, err)
	}
	if n != len(frames) {
		return n, fmt.Errorf("inject at %s: sent %d of %d frames", s.At, n, len(frames))
	}
	return n, nil
}

// settle waits until the counters of the LB nodes and chains have not
// moved for a while, which means the step's traffic has drained through
// them, and then a little longer for the last packets to cross the
// router; at most max.
func (r *runner) settle(ctx context.Context, max time.Duration) error {
	const quiet = 100 * time.Millisecond
	deadline := time.Now().Add(max)
	last, still := uint64(0), time.Duration(0)
	for time.Now().Before(deadline) && still < quiet {
		var total uint64
		for _, n := range r.w.lbs {
			c, err := n.lb.Counters()
			if err != nil {
				return fmt.Errorf("read counters of lb on %s: %w", n.node, err)
			}
			total += c.Stats["pass"] + c.Stats["tx"] + c.Stats["drop"]
		}
		for _, n := range r.w.chains {
			c, err := n.chain.Counters()
			if err != nil {
				return fmt.Errorf("read counters of chain on %s: %w", n.at, err)
			}
			total += c.Packets()
		}
		if total == last {
			still += 20 * time.Millisecond
		} else {
			last, still = total, 0
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	time.Sleep(50 * time.Millisecond)
	return nil
}

// analyse decodes the step's captures and records where each flow landed.
func (r *runner) analyse(data *stepData) {
	port := guePort(r.w.sc.LB)
	sources := r.w.lbSources()
	roles := map[string]Role{}
	for _, n := range r.w.sc.Nodes {
		roles[n.Name] = n.Role
	}
	// Only crafted flows have a landing: real traffic takes ephemeral
	// ports, which would make placements differ from run to run.
	crafted := map[flowKey]bool{}
	for _, f := range data.flows {
		crafted[f] = true
	}
	for _, at := range slices.SortedFunc(maps.Keys(data.captures), func(a, b Iface) int {
		return cmpStr(a.String(), b.String())
	}) {
		for _, f := range data.captures[at] {
			// Assertions are about what reaches a point, not about what
			// the node itself sends there.
			if f.Outgoing {
				continue
			}
			a := decodeArrival(at, f, port)
			data.arrivals = append(data.arrivals, a)
			if a.inner == nil || roles[at.Node] != RoleBackend || !crafted[a.flow] {
				continue
			}
			l := data.landed[a.flow]
			if l == nil {
				l = &landing{backends: map[netip.Addr]int{}, lbNodes: map[string]int{}}
				data.landed[a.flow] = l
			}
			l.backends[a.outerDst]++
			// IPIP's outer source is crafted per flow, so it does not
			// name the LB node; GUE's does.
			if node, ok := sources[a.outerSrc]; ok {
				l.lbNodes[node]++
			}
		}
	}
	slog.Debug("analysed step", "step", data.name, "arrivals", len(data.arrivals), "flows", len(data.landed))
}

// placement digests where each flow of a step landed.
func placement(data *stepData) string {
	var lines []string
	for f, l := range data.landed {
		bs := slices.SortedFunc(maps.Keys(l.backends), netip.Addr.Compare)
		lines = append(lines, fmt.Sprintf("%v %v", f, bs))
	}
	if len(lines) == 0 {
		return ""
	}
	slices.Sort(lines)
	h := sha256.New()
	for _, l := range lines {
		io.WriteString(h, l+"\n")
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// event applies one event and describes it.
func (r *runner) event(e Event) (string, error) {
	switch {
	case e.SetBackends != nil:
		sb := e.SetBackends
		for _, n := range r.w.lbs {
			if err := n.lb.SetBackends(sb.VIP, sb.Backends); err != nil {
				return "", fmt.Errorf("set backends of %v on %s: %w", sb.VIP, n.node, err)
			}
		}
		r.w.backends[sb.VIP] = append([]lb.Backend(nil), sb.Backends...)
		return fmt.Sprintf("backends of %v set to %s on %d LB node(s)", sb.VIP, backendList(sb.Backends), len(r.w.lbs)), nil
	case e.Link != nil:
		if err := r.w.nodes[e.Link.Iface.Node].SetLinkUp(e.Link.Iface.Name, e.Link.Up); err != nil {
			return "", err
		}
		return fmt.Sprintf("link %s %s", e.Link.Iface, upDown(e.Link.Up)), nil
	case e.Node != nil:
		var n int
		for i, end := range r.w.ends {
			if i.Node == e.Node.Node {
				if err := end.Node.SetLinkUp(end.Iface, e.Node.Up); err != nil {
					return "", err
				}
				n++
			}
		}
		return fmt.Sprintf("node %s %s (%d interfaces)", e.Node.Node, upDown(e.Node.Up), n), nil
	case e.Chain != nil:
		i := slices.IndexFunc(r.w.chains, func(n *chainNode) bool { return n.at == e.Chain.Attach })
		if i < 0 {
			return "", fmt.Errorf("%w: no chain on %s", ErrInvalid, e.Chain.Attach)
		}
		n := r.w.chains[i]
		was := n.programs
		if err := n.set(e.Chain.Programs); err != nil {
			return "", err
		}
		return fmt.Sprintf("chain on %s set from %v to %v", n.at, was, n.programs), nil
	case e.Close != nil:
		h := r.holds[e.Close.Hold]
		if h == nil {
			return "", fmt.Errorf("%w: no hold named %q", ErrInvalid, e.Close.Hold)
		}
		want := e.Close.Count
		if want == 0 {
			want = h.Open()
		}
		k, err := h.Close(want)
		if err != nil {
			return "", err
		}
		if k < want {
			return "", fmt.Errorf("close %d connections of hold %s: only %d were open", want, e.Close.Hold, k)
		}
		return fmt.Sprintf("closed %d connection(s) of hold %s, %d still open", k, e.Close.Hold, h.Open()), nil
	}
	return "", fmt.Errorf("%w: empty event", ErrInvalid)
}

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

func backendList(bs []lb.Backend) string {
	s := "["
	for i, b := range bs {
		if i > 0 {
			s += " "
		}
		s += b.Addr.String()
		if b.Weight != 1 {
			s += fmt.Sprintf("×%d", b.Weight)
		}
		if b.Down {
			s += "(down)"
		}
	}
	return s + "]"
}

// writePcaps writes one pcap per capture point of a step.
func writePcaps(dir, scenario string, mode attach.Mode, st Step, data *stepData) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("pcap directory: %w", err)
	}
	var files []string
	for _, at := range st.Capture {
		name := fmt.Sprintf("%s-%s-%s-%s-%s.pcap", scenario, mode, fileSafe(st.Name), at.Node, at.Name)
		path := filepath.Join(dir, name)
		if err := traffic.WritePcap(path, data.captures[at]); err != nil {
			return files, fmt.Errorf("write pcap of %s: %w", at, err)
		}
		files = append(files, path)
	}
	return files, nil
}

func fileSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '-'
		}
	}
	return string(b)
}
