package bench

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named namespaces are bind-mounted, as ip-netns(8) and
// netns.NewNamed do it.
const netnsDir = "/var/run/netns"

// CleanupStale deletes the namespaces that labs of processes no longer
// running left behind, and returns their names. A lab deletes its namespace
// on Close, even on error or panic, but a process killed outright cannot;
// the CLI calls this before it starts. Namespaces of live processes,
// including this one, are left alone.
func CleanupStale() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", netnsDir, err)
	}
	var deleted []string
	var errs []error
	for _, e := range entries {
		pid, ok := labPID(e.Name())
		if !ok || pid == os.Getpid() || processExists(pid) {
			continue
		}
		if err := netns.DeleteNamed(e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("delete stale netns %s: %w", e.Name(), err))
			continue
		}
		deleted = append(deleted, e.Name())
	}
	return deleted, errors.Join(errs...)
}

// labPID returns the pid in a name NewLab made: NamePrefix, the pid, a dash
// and eight hex digits. Anything else is not ours.
func labPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, NamePrefix)
	if !ok {
		return 0, false
	}
	pidStr, suffix, ok := strings.Cut(rest, "-")
	if !ok || len(suffix) != 8 {
		return 0, false
	}
	if _, err := strconv.ParseUint(suffix, 16, 32); err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// processExists reports whether pid is a running process. A pid reused by
// another program counts as running: keeping a stale namespace is the safe
// mistake.
func processExists(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
