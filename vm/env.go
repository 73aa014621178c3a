package vm

import (
	"strings"
	"time"
)

// GuestEnvVar is set to 1 in every guest, so that a test can tell it runs
// under emulation (the generated-code check, which rebuilds with clang,
// belongs on the host).
const GuestEnvVar = "SLUICE_GUEST"

// GuestEnv is the environment of a command run in the guest: a fixed base,
// the caller's SLUICE_* variables (not SLUICE_VM_*, which configure the
// runner), SLUICE_REQUIRE_PRIV=1 and GuestEnvVar=1, and extra, in that order
// of precedence (later wins). The guest's /tmp is a tmpfs and its root is read-only, so
// TMPDIR and GOCACHE point into /tmp.
func GuestEnv(host []string, extra []string) []string {
	vals := map[string]string{}
	var order []string
	set := func(kv string) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return
		}
		if _, seen := vals[k]; !seen {
			order = append(order, k)
		}
		vals[k] = v
	}
	for _, kv := range []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin",
		"HOME=/root",
		"TMPDIR=/tmp",
		"GOCACHE=/tmp/go-cache",
		"LANG=C.UTF-8",
		"TERM=dumb",
	} {
		set(kv)
	}
	for _, kv := range host {
		if strings.HasPrefix(kv, "SLUICE_") && !strings.HasPrefix(kv, "SLUICE_VM_") {
			set(kv)
		}
	}
	set("SLUICE_REQUIRE_PRIV=1")
	set(GuestEnvVar + "=1")
	for _, kv := range extra {
		set(kv)
	}
	env := make([]string, len(order))
	for i, k := range order {
		env[i] = k + "=" + vals[k]
	}
	return env
}

// TestTimeout returns the -test.timeout among a test binary's arguments plus
// margin (for booting and powering off), or def when there is none or it is
// 0 (no limit).
func TestTimeout(args []string, margin, def time.Duration) time.Duration {
	for i, a := range args {
		var v string
		switch {
		case strings.HasPrefix(a, "-test.timeout="):
			v = strings.TrimPrefix(a, "-test.timeout=")
		case a == "-test.timeout" && i+1 < len(args):
			v = args[i+1]
		default:
			continue
		}
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			return d + margin
		}
	}
	return def
}
