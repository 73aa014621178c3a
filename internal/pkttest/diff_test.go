package pkttest

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDiffEqual(t *testing.T) {
	for name, fr := range validFrames() {
		if d := Diff(Decode(fr), Decode(append([]byte(nil), fr...))); d != "" {
			t.Errorf("%s: identical frames differ:\n%s", name, d)
		}
	}
}

func TestDiffNamesLayerAndField(t *testing.T) {
	want := TCP(flow4, SYN)
	got := TCP(Flow{Src: flow4.Src, Dst: flow4.Dst, TTL: 63}, SYN)
	d := Diff(Decode(want), Decode(got))
	lines := strings.Split(d, "\n")
	// TTL and, because of it, the header checksum; nothing else.
	if len(lines) != 2 {
		t.Fatalf("diff has %d lines, want 2:\n%s", len(lines), d)
	}
	if lines[0] != "IPv4.TTL (layer 2): want 64, got 63" {
		t.Errorf("first line %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], "IPv4.Checksum (layer 2): want 0x") {
		t.Errorf("second line %q", lines[1])
	}
	if d := Diff(Decode(want), Decode(got), IgnoreFields("IPv4.Checksum", "TTL")); d != "" {
		t.Errorf("with TTL and checksum ignored: %q", d)
	}
}

func TestDiffCases(t *testing.T) {
	inner := IPPacket(TCP(flow4, SYN))
	innerTTL := IPPacket(TCP(Flow{Src: flow4.Src, Dst: flow4.Dst, TTL: 1}, SYN))
	cases := []struct {
		name      string
		want, got []byte
		opts      []Option
		contains  []string // each must appear in the diff; none means equal
	}{
		{
			name: "GUE inner field",
			want: GUE(tunnel4, inner), got: GUE(tunnel4, innerTTL),
			// Not the outer UDP checksum: a valid IPv4 header sums to
			// 0xffff whatever its TTL, so the checksum over it is unchanged.
			contains: []string{"GUE/IPv4.TTL (layer 1): want 64, got 1", "GUE/IPv4.Checksum (layer 1)"},
		},
		{
			name: "GUE inner field ignored",
			want: GUE(tunnel4, inner), got: GUE(tunnel4, innerTTL),
			opts: []Option{IgnoreFields("GUE/IPv4.TTL", "Checksum")},
		},
		{
			name: "GUE inner field ignored outside only",
			want: GUE(tunnel4, inner), got: GUE(tunnel4, innerTTL),
			opts:     []Option{IgnoreFields("IPv4.TTL", "Checksum")},
			contains: []string{"GUE/IPv4.TTL"},
		},
		{
			name: "different transport",
			want: TCP(flow4, SYN), got: UDP(flow4),
			contains: []string{"layers: want [Ethernet IPv4 TCP], got [Ethernet IPv4 UDP]", "IPv4.Protocol (layer 2): want TCP, got UDP"},
		},
		{
			name: "padding",
			want: TCP(flow4, SYN), got: append(TCP(flow4, SYN), 0, 0, 0, 0, 0, 0),
			contains: []string{"got [Ethernet IPv4 TCP trailer(6 bytes)]"},
		},
		{
			name: "padding inside the tunnel",
			want: GUE(tunnel4, inner), got: GUE(tunnel4, append(append([]byte(nil), inner...), 0xee, 0xee)),
			contains: []string{"GUE/trailer(2 bytes)", "UDP.Length (layer 3): want 48, got 50"},
		},
		{
			name:     "payload",
			want:     UDP(Flow{Src: flow4.Src, Dst: flow4.Dst, Payload: []byte("hello")}),
			got:      UDP(Flow{Src: flow4.Src, Dst: flow4.Dst, Payload: []byte("hallo")}),
			contains: []string{"Payload (layer 4): want 5 bytes [68 65 6c 6c 6f], got 5 bytes [68 61 6c 6c 6f]; first difference at offset 1"},
		},
		{
			name: "MAC",
			want: TCP(flow4, SYN), got: TCP(Flow{Src: flow4.Src, Dst: flow4.Dst, DstMAC: DefaultSrcMAC}, SYN),
			contains: []string{"Ethernet.DstMAC (layer 1): want 02:00:00:00:00:02, got 02:00:00:00:00:01"},
		},
		{
			name: "address",
			want: TCP(flow6, SYN), got: TCP(Flow{Src: flow6.Src, Dst: tunnel6.Dst}, SYN),
			contains: []string{"IPv6.DstIP (layer 2): want 2001:db8:2::10, got fd00:1::5", "TCP.Checksum"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := Diff(Decode(tc.want), Decode(tc.got), tc.opts...)
			if len(tc.contains) == 0 && d != "" {
				t.Fatalf("want no difference, got:\n%s", d)
			}
			for _, s := range tc.contains {
				if !strings.Contains(d, s) {
					t.Errorf("diff lacks %q:\n%s", s, d)
				}
			}
		})
	}
}

// TestDiffRawFallback changes a bit gopacket does not decode into a field
// (the reserved bits of the TCP header); Diff must still see it.
func TestDiffRawFallback(t *testing.T) {
	want := TCP(flow4, SYN)
	got := append([]byte(nil), want...)
	got[34+12] |= 0x02 // a reserved bit next to NS
	d := Diff(Decode(want), Decode(got))
	if !strings.Contains(d, "outside the decoded fields") || !strings.Contains(d, "offset 46") {
		t.Errorf("diff %q", d)
	}
}

func TestDiffNil(t *testing.T) {
	if d := Diff(nil, nil); d != "" {
		t.Errorf("Diff(nil, nil) = %q", d)
	}
	if d := Diff(Decode(TCP(flow4, SYN)), nil); !strings.Contains(d, "got nil") {
		t.Errorf("Diff(packet, nil) = %q", d)
	}
}

func TestExpect(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(PcapDirEnv, dir)
	want := GUE(tunnel4, IPPacket(TCP(flow4, SYN)))
	got := GUE(tunnel4, IPPacket(TCP(Flow{Src: flow4.Src, Dst: flow4.Dst, TTL: 3}, SYN)))

	r := &recorder{name: "TestLB/hit case"}
	Expect(r, want, want)
	if len(r.errors) != 0 {
		t.Fatalf("equal frames reported: %v", r.errors)
	}
	Expect(r, want, got)
	Expect(r, want, got)
	if len(r.errors) != 2 || r.fatal {
		t.Fatalf("got %d reports (fatal %v), want 2 errors", len(r.errors), r.fatal)
	}
	msg := r.errors[0]
	for _, s := range []string{
		"GUE/IPv4.TTL (layer 1): want 64, got 3",
		"--- want (82 bytes)", "--- got (82 bytes)",
		"GUE inner packet:", // the decoded inner packets are shown
		filepath.Join(dir, "TestLB_hit_case.pcap"),
	} {
		if !strings.Contains(msg, s) {
			t.Errorf("report lacks %q:\n%s", s, msg)
		}
	}
	// A second failure in the same test must not overwrite the first pcap.
	if !strings.Contains(r.errors[1], filepath.Join(dir, "TestLB_hit_case-2.pcap")) {
		t.Errorf("second report names another file:\n%s", r.errors[1])
	}
	frames := readPcap(t, filepath.Join(dir, "TestLB_hit_case.pcap"))
	if len(frames) != 2 || !bytes.Equal(frames[0], want) || !bytes.Equal(frames[1], got) {
		t.Errorf("pcap holds %d frames, want [want got]", len(frames))
	}

	// Ignored fields make unequal bytes acceptable.
	r = &recorder{name: "TestIgnore"}
	Expect(r, want, got, IgnoreFields("GUE/IPv4.TTL", "Checksum"))
	if len(r.errors) != 0 {
		t.Errorf("ignored differences reported: %v", r.errors)
	}
}

// readPcap parses a classic little-endian pcap file, independently of the
// writer, following the libpcap file format description.
func readPcap(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if len(b) < 24 || le.Uint32(b) != 0xa1b2c3d4 || le.Uint16(b[4:]) != 2 || le.Uint16(b[6:]) != 4 || le.Uint32(b[20:]) != 1 {
		t.Fatalf("bad pcap header % x", b[:min(len(b), 24)])
	}
	var frames [][]byte
	var last time.Time
	for b = b[24:]; len(b) > 0; {
		if len(b) < 16 {
			t.Fatalf("truncated record header")
		}
		ts := time.Unix(int64(le.Uint32(b)), int64(le.Uint32(b[4:]))*1000)
		if !ts.After(last) {
			t.Errorf("timestamps not increasing: %v after %v", ts, last)
		}
		last = ts
		incl, orig := int(le.Uint32(b[8:])), int(le.Uint32(b[12:]))
		if incl != orig || len(b) < 16+incl {
			t.Fatalf("record lengths %d/%d with %d bytes left", incl, orig, len(b)-16)
		}
		frames = append(frames, b[16:16+incl])
		b = b[16+incl:]
	}
	return frames
}

func TestWritePcapError(t *testing.T) {
	err := WritePcap(filepath.Join(t.TempDir(), "missing", "x.pcap"), TCP(flow4, SYN))
	if err == nil || !strings.Contains(err.Error(), "write pcap") {
		t.Errorf("err %v", err)
	}
}
