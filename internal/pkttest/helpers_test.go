package pkttest

import (
	"fmt"
	"net/netip"
	"testing"
)

// recorder is a testing.TB whose failures are collected instead of
// reported, so that tests can check what a helper would have said. Its
// Fatalf returns instead of stopping the goroutine; the helpers under test
// do nothing harmful after calling it.
type recorder struct {
	testing.TB
	name   string
	errors []string
	fatal  bool
}

func (r *recorder) Helper()      {}
func (r *recorder) Name() string { return r.name }
func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = true
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

var (
	flow4 = Flow{
		Src: netip.MustParseAddrPort("198.51.100.7:40000"),
		Dst: netip.MustParseAddrPort("192.0.2.10:443"),
	}
	flow6 = Flow{
		Src: netip.MustParseAddrPort("[2001:db8:1::7]:40000"),
		Dst: netip.MustParseAddrPort("[2001:db8:2::10]:443"),
	}
	// tunnel4 and tunnel6 are the outer headers of encapsulation tests.
	tunnel4 = Flow{
		Src: netip.MustParseAddrPort("10.0.0.2:49200"),
		Dst: netip.MustParseAddrPort("10.1.0.5:6080"),
	}
	tunnel6 = Flow{
		Src: netip.MustParseAddrPort("[fd00::2]:49200"),
		Dst: netip.MustParseAddrPort("[fd00:1::5]:6080"),
	}
)
