package topo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"syscall"
	"time"
)

// nsNameRE is a namespace name a Topology makes: run prefix, dash, node.
var nsNameRE = regexp.MustCompile(`^(sl[0-9a-f]{6})-[a-z0-9][a-z0-9-]*$`)

// Busy is a namespace Clean left alone because live processes hold it.
type Busy struct {
	// Name is the namespace's name under NetnsDir.
	Name string
	// PIDs are the processes with a thread inside it or a descriptor to it.
	PIDs []int
}

// Cleaned is what Clean or CleanAll did.
type Cleaned struct {
	// Removed are the namespaces deleted.
	Removed []string
	// Busy are matching namespaces that a running process still holds
	// open or runs in (a topology in use, maybe of another process), kept.
	Busy []Busy
}

// Clean deletes the namespaces of one run, given its prefix ("sl1a2b3c"),
// that no live process holds. It is for runs that died before Close.
func Clean(prefix string) (Cleaned, error) {
	if !prefixRE.MatchString(prefix) {
		return Cleaned{}, fmt.Errorf("clean %q: %w prefix: want sl and six hex digits", prefix, ErrInvalid)
	}
	return clean(func(name string) bool {
		m := nsNameRE.FindStringSubmatch(name)
		return m != nil && m[1] == prefix
	})
}

// CleanAll deletes every namespace named like a Topology's that no live
// process holds: the leftovers of killed runs. Namespaces of topologies in
// use, in this process or another, are kept and reported as busy, so it is
// safe to call while other runs are going on.
func CleanAll() (Cleaned, error) {
	return clean(nsNameRE.MatchString)
}

func clean(match func(string) bool) (Cleaned, error) {
	var res Cleaned
	entries, err := os.ReadDir(NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("clean: list %s: %w", NetnsDir, err)
	}
	nsfs, ok := statNs("/proc/self/ns/net")
	if !ok {
		return res, errors.New("clean: cannot stat /proc/self/ns/net")
	}
	inodes := map[nsID]string{}
	var names []string
	for _, e := range entries {
		if !match(e.Name()) {
			continue
		}
		path := filepath.Join(NetnsDir, e.Name())
		id, ok := statNs(path)
		if !ok {
			continue // gone meanwhile
		}
		if id.dev != nsfs.dev && recent(path) {
			// Not mounted yet: another run may be creating it right
			// now (file first, bind mount second). Only an old one is
			// a leftover.
			continue
		}
		names = append(names, e.Name())
		inodes[id] = e.Name()
	}
	if len(names) == 0 {
		return res, nil
	}
	holders := nsHolders(inodes)
	var errs []error
	for _, name := range names {
		if pids := holders[name]; len(pids) > 0 {
			res.Busy = append(res.Busy, Busy{Name: name, PIDs: pids})
			continue
		}
		if err := deleteNetns(name); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Removed = append(res.Removed, name)
	}
	return res, errors.Join(errs...)
}

// recent reports whether path was modified within the last minute.
func recent(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && time.Since(fi.ModTime()) < time.Minute
}

// nsID identifies a namespace: the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

// statNs returns the identity of what path refers to, following links, as
// /proc/<pid>/fd/<n> and /proc/<pid>/task/<tid>/ns/net do.
func statNs(path string) (nsID, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nsID{}, false
	}
	return nsID{uint64(st.Dev), st.Ino}, true
}

// nsHolders finds, for the given namespaces, the processes that keep them
// alive other than through their mount: a thread inside the namespace or
// an open file descriptor to it (a Topology holds one per node). A
// descriptor opened through the mount reads back as the mount's path, not
// as "net:[…]", so each one is compared by what it points to. Processes
// that vanish or cannot be read are skipped. Sockets also keep a
// namespace alive but do not name it in /proc, so a process holding only
// a socket is not found.
func nsHolders(inodes map[nsID]string) map[string][]int {
	holders := map[string][]int{}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return holders
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		seen := map[string]bool{}
		note := func(path string) {
			id, ok := statNs(path)
			if !ok {
				return
			}
			if name, ok := inodes[id]; ok && !seen[name] {
				seen[name] = true
				holders[name] = append(holders[name], pid)
			}
		}
		dir := filepath.Join("/proc", p.Name())
		if tasks, err := os.ReadDir(filepath.Join(dir, "task")); err == nil {
			for _, t := range tasks {
				note(filepath.Join(dir, "task", t.Name(), "ns", "net"))
			}
		}
		if fds, err := os.ReadDir(filepath.Join(dir, "fd")); err == nil {
			for _, fd := range fds {
				note(filepath.Join(dir, "fd", fd.Name()))
			}
		}
	}
	for _, pids := range holders {
		sort.Ints(pids)
	}
	return holders
}
