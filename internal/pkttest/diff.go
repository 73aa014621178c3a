package pkttest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// PcapDirEnv names the environment variable that sets where Expect writes
// the pcap of a mismatch. The default is a fixed directory under
// os.TempDir() rather than t.TempDir(), which the testing package deletes
// as soon as the test ends, before anyone could open the file.
const PcapDirEnv = "SLUICE_PCAP_DIR"

// entry is one layer of a packet as Diff sees it: gopacket's layers, with
// GUE payloads replaced by the layers of the packet inside, and a pseudo
// layer for bytes that follow the last header (Ethernet padding, or junk a
// program left behind).
type entry struct {
	label string         // "IPv4", "GUE/TCP", "trailer"
	num   int            // position in its own packet, from 1 as in gopacket's Dump
	layer gopacket.Layer // nil for a trailer
	raw   []byte         // the trailer's bytes
}

const trailer = "trailer"

func flatten(pkt gopacket.Packet, guePort uint16, prefix string, depth int) []entry {
	var out []entry
	covered := 0
	for i, l := range pkt.Layers() {
		covered += len(l.LayerContents())
		if ip6, ok := l.(*layers.IPv6); ok && ip6.HopByHop != nil {
			covered += len(ip6.HopByHop.Contents) // folded into the IPv6 layer
		}
		out = append(out, entry{label: prefix + l.LayerType().String(), num: i + 1, layer: l})
		udp, ok := l.(*layers.UDP)
		if !ok || depth >= maxTunnelDepth || uint16(udp.DstPort) != guePort {
			continue
		}
		if inner, _ := decodeIP(udp.Payload); inner != nil {
			// Whatever gopacket decoded after this UDP header came from
			// the GUE payload; the inner packet replaces it.
			out = append(out, flatten(inner, guePort, prefix+"GUE/", depth+1)...)
			covered += len(udp.Payload)
			break
		}
	}
	if data := pkt.Data(); covered < len(data) {
		out = append(out, entry{label: prefix + trailer, raw: data[covered:]})
	}
	return out
}

// Diff compares two packets layer by layer and field by field and returns
// one line per difference, naming the layer, its position (counted from 1
// within its packet, as gopacket's Dump numbers layers) and the field, with
// both values; it returns "" when they match. GUE payloads (see
// GUEPort) are compared as packets, with layer names prefixed "GUE/";
// IP-in-IP needs no help since gopacket decodes it as nested layers. Bytes
// after the last header are compared as a "trailer" layer.
//
// Without IgnoreFields, "" also guarantees that the frames are byte-for-byte
// equal: a difference in bits gopacket does not decode into a field is
// reported as a raw byte difference.
func Diff(want, got gopacket.Packet, opts ...Option) string {
	o := collect(opts)
	if want == nil || got == nil {
		if want == got {
			return ""
		}
		return fmt.Sprintf("packet: want %v, got %v", describe(want), describe(got))
	}
	we := flatten(want, o.guePort, "", 0)
	ge := flatten(got, o.guePort, "", 0)
	var d []string
	if labels(we) != labels(ge) {
		d = append(d, fmt.Sprintf("layers: want %s, got %s", labels(we), labels(ge)))
	}
	for i := range min(len(we), len(ge)) {
		if we[i].label != ge[i].label {
			break // the rest would compare unrelated layers
		}
		d = append(d, diffEntry(we[i], ge[i], o.ignore)...)
	}
	if len(d) == 0 && len(o.ignore) == 0 && !bytes.Equal(want.Data(), got.Data()) {
		d = append(d, "frame bytes outside the decoded fields: "+bytesDiff(want.Data(), got.Data()))
	}
	return strings.Join(d, "\n")
}

func describe(p gopacket.Packet) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprintf("%d-byte packet", len(p.Data()))
}

func labels(es []entry) string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.label
		if e.layer == nil {
			s[i] += fmt.Sprintf("(%d bytes)", len(e.raw))
		}
	}
	return "[" + strings.Join(s, " ") + "]"
}

func diffEntry(w, g entry, ignore map[string]bool) []string {
	if w.layer == nil {
		if bytes.Equal(w.raw, g.raw) || ignore[w.label] {
			return nil
		}
		return []string{fmt.Sprintf("%s: %s", w.label, bytesDiff(w.raw, g.raw))}
	}
	wf, gf := layerFields(w.layer), layerFields(g.layer)
	var d []string
	for k := range min(len(wf), len(gf)) {
		name := wf[k].name
		full := w.label
		if name != "" {
			full += "." + name
		}
		if ignore[name] || ignore[full] || equalValues(wf[k].v, gf[k].v) {
			continue
		}
		d = append(d, fmt.Sprintf("%s (layer %d): %s", full, w.num, valueDiff(name, wf[k].v, gf[k].v)))
	}
	return d
}

type field struct {
	name string
	v    reflect.Value
}

var baseLayerType = reflect.TypeFor[layers.BaseLayer]()

// layerFields lists the exported fields of a layer's struct, including
// those of embedded helper structs, but not BaseLayer's Contents and
// Payload: they repeat the fields (and the next layers) as raw bytes, and
// would turn every difference into three.
func layerFields(l gopacket.Layer) []field {
	v := reflect.ValueOf(l)
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return []field{{"", v}} // e.g. gopacket.Payload, a []byte
	}
	var out []field
	collectFields(v, &out)
	if len(out) == 0 { // e.g. gopacket.DecodeFailure: compare what it holds
		out = append(out, field{"Contents", reflect.ValueOf(l.LayerContents())})
	}
	return out
}

func collectFields(v reflect.Value, out *[]field) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if sf.Anonymous {
			if sf.Type != baseLayerType && sf.Type.Kind() == reflect.Struct {
				collectFields(v.Field(i), out)
			}
			continue
		}
		if sf.IsExported() {
			*out = append(*out, field{sf.Name, v.Field(i)})
		}
	}
}

func equalValues(a, b reflect.Value) bool {
	if a.Kind() == reflect.Slice && a.Len() == 0 && b.Len() == 0 {
		return true // gopacket leaves some slices nil or empty depending on the path
	}
	if a.CanInterface() && b.CanInterface() {
		return reflect.DeepEqual(a.Interface(), b.Interface())
	}
	return fmt.Sprintf("%#v", a) == fmt.Sprintf("%#v", b)
}

func isBytes(v reflect.Value) bool {
	return v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8
}

func valueDiff(name string, w, g reflect.Value) string {
	if isBytes(w) && w.Type() != ipType && w.Type() != macType {
		return bytesDiff(w.Bytes(), g.Bytes())
	}
	ws, gs := formatValue(name, w), formatValue(name, g)
	if ws == gs { // a String method hid the difference
		ws, gs = fmt.Sprintf("%#v", w), fmt.Sprintf("%#v", g)
	}
	return fmt.Sprintf("want %s, got %s", ws, gs)
}

// ipType and macType are byte slices better shown by their String method
// than as bytes.
var (
	ipType  = reflect.TypeFor[net.IP]()
	macType = reflect.TypeFor[net.HardwareAddr]()
)

func formatValue(name string, v reflect.Value) string {
	if strings.Contains(name, "Checksum") && v.CanUint() {
		return fmt.Sprintf("%#04x", v.Uint())
	}
	if v.CanInterface() {
		return fmt.Sprintf("%v", v.Interface())
	}
	return fmt.Sprintf("%v", v)
}

// bytesDiff describes two byte strings by their lengths, their bytes when
// short, and the first offset where they differ.
func bytesDiff(w, g []byte) string {
	show := func(b []byte) string {
		if len(b) <= 32 {
			return fmt.Sprintf("%d bytes [% x]", len(b), b)
		}
		return fmt.Sprintf("%d bytes", len(b))
	}
	s := fmt.Sprintf("want %s, got %s", show(w), show(g))
	for i := range min(len(w), len(g)) {
		if w[i] != g[i] {
			return s + fmt.Sprintf("; first difference at offset %d: want %#02x, got %#02x", i, w[i], g[i])
		}
	}
	if len(w) != len(g) {
		return s + fmt.Sprintf("; equal for the first %d bytes", min(len(w), len(g)))
	}
	return s
}

// Expect reports with t.Errorf when got is not the frame the test wanted.
// The report has the field-by-field Diff, both frames decoded with
// gopacket (and their GUE inner packets), and the path of a pcap holding
// want then got, for a closer look in Wireshark or tshark. It uses Errorf,
// not Fatalf, so a table-driven test reports every failing case.
func Expect(t testing.TB, want, got []byte, opts ...Option) {
	t.Helper()
	o := collect(opts)
	if len(o.ignore) == 0 && bytes.Equal(want, got) {
		return
	}
	wp, gp := Decode(want), Decode(got)
	diff := Diff(wp, gp, opts...)
	if diff == "" {
		return // only differences in ignored fields
	}
	var b strings.Builder
	fmt.Fprintf(&b, "frame differs from the expected one:\n%s\n", indent(diff))
	fmt.Fprintf(&b, "\n--- want (%d bytes):\n%s", len(want), dump(wp, o.guePort))
	fmt.Fprintf(&b, "\n--- got (%d bytes):\n%s", len(got), dump(gp, o.guePort))
	if path, err := failurePcap(t.Name(), want, got); err != nil {
		fmt.Fprintf(&b, "\n(no pcap: %v)", err)
	} else {
		fmt.Fprintf(&b, "\nwant and got (in that order) written to %s", path)
	}
	t.Errorf("%s", b.String())
}

func indent(s string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		b.WriteString("    " + sc.Text() + "\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func dump(p gopacket.Packet, guePort uint16) string {
	s := p.Dump()
	if _, kind, err := tunnelled(p, guePort); err == nil && kind == "GUE" {
		if inner, _ := InnerPacket(p, guePort); inner != nil {
			s += "GUE inner packet:\n" + inner.Dump()
		}
	}
	return s
}

// pcapNames counts the pcaps written per test name, so that a test with
// several failing Expect calls keeps every one.
var pcapNames = struct {
	sync.Mutex
	n map[string]int
}{n: map[string]int{}}

func failurePcap(testName string, frames ...[]byte) (string, error) {
	dir := os.Getenv(PcapDirEnv)
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "sluice-pkttest")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		}
		return '_'
	}, testName)
	pcapNames.Lock()
	pcapNames.n[name]++
	if n := pcapNames.n[name]; n > 1 {
		name += fmt.Sprintf("-%d", n)
	}
	pcapNames.Unlock()
	path := filepath.Join(dir, name+".pcap")
	return path, WritePcap(path, frames...)
}
