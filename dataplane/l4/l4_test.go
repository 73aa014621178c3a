package l4

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The constants are the kernel's protocol numbers, as the programs compare
// them with the IP header.
func TestProtoNumbers(t *testing.T) {
	if TCP != unix.IPPROTO_TCP || UDP != unix.IPPROTO_UDP {
		t.Errorf("TCP = %d, UDP = %d; want %d and %d", TCP, UDP, unix.IPPROTO_TCP, unix.IPPROTO_UDP)
	}
}

func TestParseProto(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Proto
		ok   bool
	}{
		{"tcp", TCP, true},
		{"udp", UDP, true},
		{"TCP", 0, false},
		{"icmp", 0, false},
		{"", 0, false},
	} {
		got, err := ParseProto(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseProto(%q) = %v, %v; want %v, ok %v", c.in, got, err, c.want, c.ok)
		}
		if c.ok && got.String() != c.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), c.in)
		}
	}
	if s := Proto(1).String(); s != "proto(1)" {
		t.Errorf("Proto(1).String() = %q, want proto(1)", s)
	}
}
