package scenario

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluice-dp/sluice/dataplane/l4"
	"github.com/sluice-dp/sluice/dataplane/lb"
)

// ErrInvalid marks a rejected scenario file; every error of Load wraps it.
var ErrInvalid = errors.New("invalid scenario")

// Error is one problem of a scenario file, at a line and a field path
// ("steps[1].send[0].dst").
type Error struct {
	File string
	Line int
	Path string
	Msg  string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Path, e.Msg)
}

// Unwrap makes every Error match ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

// Load reads and validates a scenario file. It reports every problem it
// finds, each as an *Error, joined.
func Load(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	return Parse(path, data)
}

// Parse validates a scenario held in memory; name is used in errors as
// the file name.
func Parse(name string, data []byte) (*Scenario, error) {
	d := &decoder{file: name}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: name, Line: 1, Msg: "empty file, want a scenario mapping"}
		}
		return nil, syntaxError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &Error{File: name, Line: extra.Line, Msg: "more than one YAML document, want one scenario"}
	}
	sc := &Scenario{File: name}
	resolveAliases(&root)
	d.scenario(root.Content[0], sc)
	if len(d.errs) == 0 {
		validate(d, sc)
	}
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return sc, nil
}

// yamlLineRE finds the line in yaml.v3's syntax errors ("yaml: line 3: ...").
var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError reports a YAML syntax error in the same "file:line: ..."
// form as the other errors, so editors can jump to it.
func syntaxError(file string, err error) error {
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: file, Line: line, Msg: "YAML syntax: " + m[2]}
	}
	return fmt.Errorf("%s: %w: %w", file, ErrInvalid, err)
}

// resolveAliases replaces every alias ("*pool") by the node its anchor
// ("&pool") names, so that the decoders never see aliases. yaml.v3 has
// already rejected aliases to anchors that do not exist.
func resolveAliases(n *yaml.Node) {
	for i, c := range n.Content {
		for c.Kind == yaml.AliasNode && c.Alias != nil {
			c = c.Alias
		}
		n.Content[i] = c
		resolveAliases(c)
	}
}

// decoder walks the YAML tree by hand, rather than unmarshalling into
// tagged structs, so that every error names the line and the field path
// and every unknown key is caught.
type decoder struct {
	file string
	errs []error
	// lines remembers where things were written, for cross-reference
	// errors found after the walk.
	lines map[string]int
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) failAt(line int, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) mark(path string, n *yaml.Node) {
	if d.lines == nil {
		d.lines = map[string]int{}
	}
	d.lines[path] = n.Line
}

func (d *decoder) line(path string) int { return d.lines[path] }

// field is how one key of a mapping is decoded.
type field struct {
	required bool
	decode   func(n *yaml.Node, path string)
}

// mapping decodes a mapping node key by key: unknown keys and missing
// required keys are errors. It returns false if n is not a mapping.
func (d *decoder) mapping(n *yaml.Node, path string, fields map[string]field) bool {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping with keys %s", keyList(fields))
		return false
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		f, ok := fields[k.Value]
		if !ok {
			d.fail(k, p, "unknown key, want one of %s", keyList(fields))
			continue
		}
		if seen[k.Value] {
			d.fail(k, p, "key given twice")
			continue
		}
		seen[k.Value] = true
		d.mark(p, v)
		f.decode(v, p)
	}
	for _, name := range sortedKeys(fields) {
		if fields[name].required && !seen[name] {
			d.fail(n, join(path, name), "missing, required")
		}
	}
	return true
}

// oneOf decodes a mapping that must have exactly one of the given keys
// (an event or an assertion kind).
func (d *decoder) oneOf(n *yaml.Node, path, what string, fields map[string]field) {
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		d.fail(n, path, "want a mapping with exactly one key, the %s: one of %s", what, keyList(fields))
		return
	}
	d.mapping(n, path, fields)
}

func (d *decoder) seq(n *yaml.Node, path string, each func(n *yaml.Node, path string)) {
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "want a list")
		return
	}
	for i, c := range n.Content {
		each(c, fmt.Sprintf("%s[%d]", path, i))
	}
}

// seqOrOne accepts a list or a single scalar standing for a list of one.
func (d *decoder) seqOrOne(n *yaml.Node, path string, each func(n *yaml.Node, path string)) {
	if n.Kind == yaml.ScalarNode {
		each(n, path)
		return
	}
	d.seq(n, path, each)
}

func (d *decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.fail(n, path, "want %s", want)
		return "", false
	}
	return n.Value, true
}

func (d *decoder) str(n *yaml.Node, path string, dst *string) {
	if s, ok := d.scalar(n, path, "a string"); ok {
		*dst = s
	}
}

func (d *decoder) boolean(n *yaml.Node, path string, dst *bool) {
	s, ok := d.scalar(n, path, "true or false")
	if !ok {
		return
	}
	switch s {
	case "true":
		*dst = true
	case "false":
		*dst = false
	default:
		d.fail(n, path, "%q: want true or false", s)
	}
}

// uint decodes an unsigned integer (decimal or 0x hex) up to max.
func (d *decoder) uint(n *yaml.Node, path string, max uint64) (uint64, bool) {
	s, ok := d.scalar(n, path, "a number")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 0, 64)
	if err != nil || v > max {
		d.fail(n, path, "%q: want a whole number from 0 to %d", s, max)
		return 0, false
	}
	return v, true
}

func (d *decoder) intIn(n *yaml.Node, path string, lo, hi int, dst *int) {
	v, ok := d.uint(n, path, uint64(hi))
	if ok && int(v) < lo {
		d.fail(n, path, "%d: want a whole number from %d to %d", v, lo, hi)
		return
	}
	if ok {
		*dst = int(v)
	}
}

func (d *decoder) fraction(n *yaml.Node, path string, dst *float64) {
	s, ok := d.scalar(n, path, "a fraction")
	if !ok {
		return
	}
	pct := strings.HasSuffix(s, "%")
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if pct {
		v /= 100
	}
	if err != nil || math.IsNaN(v) || v < 0 || v > 1 {
		d.fail(n, path, "%q: want a fraction from 0 to 1 (0.05) or a percentage (5%%)", s)
		return
	}
	*dst = v
}

func (d *decoder) duration(n *yaml.Node, path string, dst *time.Duration) {
	s, ok := d.scalar(n, path, "a duration")
	if !ok {
		return
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		d.fail(n, path, "%q: want a positive duration such as 200ms or 2s", s)
		return
	}
	*dst = v
}

func (d *decoder) addr(n *yaml.Node, path string) (netip.Addr, bool) {
	s, ok := d.scalar(n, path, "an IP address")
	if !ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4In6() {
		d.fail(n, path, "%q: want an IPv4 or IPv6 address without zone (10.0.0.1, fd00::1)", s)
		return netip.Addr{}, false
	}
	return a, true
}

func (d *decoder) prefix(n *yaml.Node, path string) (netip.Prefix, bool) {
	s, ok := d.scalar(n, path, "an address with prefix length")
	if !ok {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		d.fail(n, path, "%q: want an address with prefix length (10.0.0.1/24, fd00::1/64)", s)
		return netip.Prefix{}, false
	}
	return p, true
}

func (d *decoder) addrPort(n *yaml.Node, path string) (netip.AddrPort, bool) {
	s, ok := d.scalar(n, path, "an address and port")
	if !ok {
		return netip.AddrPort{}, false
	}
	a, err := netip.ParseAddrPort(s)
	if err != nil || a.Addr().Zone() != "" || a.Addr().Is4In6() {
		d.fail(n, path, "%q: want address:port (192.0.2.10:80, [2001:db8::10]:80)", s)
		return netip.AddrPort{}, false
	}
	return a, true
}

func (d *decoder) mac(n *yaml.Node, path string, dst *net.HardwareAddr) {
	s, ok := d.scalar(n, path, "a MAC address")
	if !ok {
		return
	}
	m, err := net.ParseMAC(s)
	if err != nil || len(m) != 6 || m[0]&1 != 0 {
		d.fail(n, path, "%q: want a unicast Ethernet address (02:00:00:00:00:01)", s)
		return
	}
	*dst = m
}

func (d *decoder) iface(n *yaml.Node, path string) (Iface, bool) {
	s, ok := d.scalar(n, path, "an interface as node/iface")
	if !ok {
		return Iface{}, false
	}
	node, name, found := strings.Cut(s, "/")
	if !found || node == "" || name == "" || strings.Contains(name, "/") {
		d.fail(n, path, "%q: want an interface as node/iface (router/lb1)", s)
		return Iface{}, false
	}
	d.mark(path, n)
	return Iface{Node: node, Name: name}, true
}

func (d *decoder) ifaces(n *yaml.Node, path string, dst *[]Iface) {
	d.seqOrOne(n, path, func(n *yaml.Node, p string) {
		if i, ok := d.iface(n, p); ok {
			*dst = append(*dst, i)
		}
	})
}

// vip decodes "addr:port/proto" ("192.0.2.10:80/tcp").
func (d *decoder) vip(n *yaml.Node, path string) (lb.VIP, bool) {
	s, ok := d.scalar(n, path, "a VIP")
	if !ok {
		return lb.VIP{}, false
	}
	ap, name, found := strings.Cut(s, "/")
	a, err := netip.ParseAddrPort(ap)
	proto, perr := l4.ParseProto(name)
	v := lb.VIP{Addr: a.Addr(), Port: a.Port(), Proto: proto}
	if !found || err != nil || perr != nil || a.Addr().Zone() != "" || a.Addr().Is4In6() {
		d.fail(n, path, "%q: want address:port/proto with proto tcp or udp (192.0.2.10:80/tcp, [2001:db8::10]:0/udp)", s)
		return lb.VIP{}, false
	}
	d.mark(path, n)
	return v, true
}

// backends decodes a backend list; an entry is an address or a mapping
// with addr, weight and down.
func (d *decoder) backends(n *yaml.Node, path string, dst *[]lb.Backend) {
	d.seq(n, path, func(n *yaml.Node, p string) {
		b := lb.Backend{Weight: 1}
		if n.Kind == yaml.ScalarNode {
			a, ok := d.addr(n, p)
			b.Addr = a
			if ok {
				*dst = append(*dst, b)
			}
			return
		}
		ok := d.mapping(n, p, map[string]field{
			"addr": {true, func(n *yaml.Node, p string) { b.Addr, _ = d.addr(n, p) }},
			"weight": {false, func(n *yaml.Node, p string) {
				if v, ok := d.uint(n, p, math.MaxUint32); ok {
					if v == 0 {
						d.fail(n, p, "0: want a weight of at least 1 (remove a backend, or set down: true, to drain it)")
					}
					b.Weight = uint32(v)
				}
			}},
			"down": {false, func(n *yaml.Node, p string) { d.boolean(n, p, &b.Down) }},
		})
		if ok && b.Addr.IsValid() {
			*dst = append(*dst, b)
		}
	})
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func keyList(fields map[string]field) string {
	return strings.Join(sortedKeys(fields), ", ")
}

func sortedKeys(fields map[string]field) []string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
