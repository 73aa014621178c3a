package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// newReport fills in what makes a report comparable with another one: a
// different kernel or CPU model means different absolute numbers, and only
// the ratios may still be compared.
func newReport(opts Options) Report {
	return Report{
		Date:      time.Now().UTC().Truncate(time.Second),
		Kernel:    kernelRelease(),
		CPU:       cpuModel(),
		CPUs:      runtime.NumCPU(),
		GoVersion: runtime.Version(),
		Options:   opts,
	}
}

// kernelRelease returns what `uname -r` prints.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return string(bytes.TrimRight(u.Release[:], "\x00"))
}

// cpuModel returns the first CPU's model name from /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(key) == "model name" {
			return strings.TrimSpace(val)
		}
	}
	return "unknown"
}

// MarshalText writes the verdict by name, so the JSON report reads like
// bpftool output rather than bare action codes.
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText reads what MarshalText wrote, so reports can be loaded back
// to be compared.
func (v *Verdict) UnmarshalText(b []byte) error {
	for _, c := range []Verdict{Aborted, Drop, Pass, TX, Redirect} {
		if c.String() == string(b) {
			*v = c
			return nil
		}
	}
	return fmt.Errorf("xdp verdict %q: unknown", b)
}

// MarshalText writes the mode by name, for the same reason as
// [Verdict.MarshalText].
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText is [ParseMode] for encoding packages.
func (m *Mode) UnmarshalText(b []byte) error {
	p, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = p
	return nil
}
