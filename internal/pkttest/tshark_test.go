package pkttest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-dp/sluice/internal/testenv"
)

// TestTsharkAgrees has Wireshark's dissectors judge the frames this package
// builds and the checksums it verifies: tshark must decode GUE to the same
// inner protocols (it has no GUE dissector; port 6080 is mapped to IP, as
// the project's tests do everywhere), find every checksum of the valid
// frames good, and find a bad one wherever Checksums does.
func TestTsharkAgrees(t *testing.T) {
	_, err := exec.LookPath("tshark")
	testenv.SkipUnless(t, err == nil, "tshark not installed")

	valid := validFrames()
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range valid {
			if !yield(n) {
				return
			}
		}
	})
	type frame struct {
		name string
		b    []byte
		bad  bool
	}
	var frames []frame
	for _, n := range names {
		frames = append(frames, frame{n, valid[n], false})
	}
	flip := func(name string, off int) {
		b := append([]byte(nil), valid[name]...)
		b[off] ^= 0x01
		frames = append(frames, frame{fmt.Sprintf("%s corrupted at %d", name, off), b, true})
	}
	flip("GUE4 TCP4", 42+20+14) // inner TCP window
	flip("GUE6 UDP6", 62+40+1)  // inner UDP port
	flip("TCP6", 54+14)
	flip("ICMPv6 echo", 54+6)
	flip("UDP4 odd payload", 42+1)

	var bs [][]byte
	for _, f := range frames {
		bs = append(bs, f.b)
	}
	path := filepath.Join(t.TempDir(), "frames.pcap")
	if err := WritePcap(path, bs...); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tshark", "-r", path, "-d", "udp.port==6080,ip",
		"-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
		"-T", "fields", "-E", "separator=|",
		"-e", "frame.protocols",
		"-e", "ip.checksum.status", "-e", "udp.checksum.status", "-e", "tcp.checksum.status",
		"-e", "icmp.checksum.status", "-e", "icmpv6.checksum.status").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(frames) {
		t.Fatalf("tshark printed %d lines for %d frames:\n%s", len(lines), len(frames), out)
	}
	for i, f := range frames {
		cols := strings.Split(lines[i], "|")
		protocols := cols[0]
		// Status 0 is "bad", 1 "good" (2, "unverified", does not occur
		// with checking enabled).
		statuses := strings.Join(cols[1:], ",")
		tsharkBad := strings.Contains(","+statuses+",", ",0,")
		if !strings.Contains(statuses, "1") && !tsharkBad {
			t.Errorf("%s: tshark verified no checksum (%s)", f.name, lines[i])
		}
		ours := Checksums(Decode(f.b))
		if tsharkBad != f.bad || (len(ours) != 0) != f.bad {
			t.Errorf("%s: want bad=%v; tshark statuses %q, Checksums %v", f.name, f.bad, statuses, ours)
		}
		if strings.HasPrefix(f.name, "GUE") && !strings.Contains(protocols, ":udp:ip") {
			t.Errorf("%s: tshark did not find IP inside UDP: %s", f.name, protocols)
		}
		if strings.HasPrefix(f.name, "GUE") {
			inner, err := InnerPacket(Decode(f.b), DefaultGUEPort)
			if err != nil {
				t.Errorf("%s: %v", f.name, err)
				continue
			}
			// tshark names the inner protocols after "udp:ip"; ours must
			// be the same transport.
			last := protocols[strings.LastIndex(protocols, ":")+1:]
			if last == "data" {
				rest := strings.TrimSuffix(protocols, ":data")
				last = rest[strings.LastIndex(rest, ":")+1:]
			}
			if inner.TransportLayer() == nil || !strings.EqualFold(inner.TransportLayer().LayerType().String(), last) {
				t.Errorf("%s: inner transport %v, tshark says %s", f.name, inner.TransportLayer(), protocols)
			}
		}
	}
}
