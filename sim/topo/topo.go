package topo

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are bind-mounted, the
// directory ip-netns(8) uses, so `ip netns exec` works on ours while
// debugging.
const NetnsDir = "/run/netns"

// Sentinel errors, checked with errors.Is.
var (
	// ErrClosed marks a call on a Topology after Close.
	ErrClosed = errors.New("topology closed")
	// ErrInvalid marks a rejected name, address or argument; the message
	// says what was expected.
	ErrInvalid = errors.New("invalid")
)

// prefixRE is a run prefix: "sl" and six hex digits. The bench package's
// labs ("slb-<pid>-…") cannot match it, because its fourth character is a
// dash.
var prefixRE = regexp.MustCompile(`^sl[0-9a-f]{6}$`)

// nodeNameRE keeps node names usable both in namespace names and, by
// default, as interface names on the peer node.
var nodeNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// Topology is one run's set of nodes and links. It is safe for concurrent
// use.
type Topology struct {
	prefix string

	mu     sync.Mutex
	nodes  []*Node
	byName map[string]*Node
	links  int // links added, for picking interface indexes
	closed bool
	err    error // Close's result, returned again by later calls
}

// New starts an empty topology with a fresh random prefix. Defer Close
// right away: namespaces outlive the process that created them.
func New() (*Topology, error) {
	// Six hex digits collide rarely, but leftovers of crashed runs sit in
	// the same directory, so a prefix already in use is skipped.
	for range 8 {
		var b [3]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("new topology: random prefix: %w", err)
		}
		prefix := "sl" + hex.EncodeToString(b[:])
		used, err := prefixUsed(prefix)
		if err != nil {
			return nil, fmt.Errorf("new topology: %w", err)
		}
		if !used {
			return &Topology{prefix: prefix, byName: map[string]*Node{}}, nil
		}
	}
	return nil, fmt.Errorf("new topology: no unused prefix found in %s", NetnsDir)
}

func prefixUsed(prefix string) (bool, error) {
	entries, err := os.ReadDir(NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("list %s: %w", NetnsDir, err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			return true, nil
		}
	}
	return false, nil
}

// Prefix returns the run prefix that starts every namespace name of the
// topology; `sluice sim clean` and Clean take it.
func (t *Topology) Prefix() string { return t.prefix }

// Node returns the node called name, or nil.
func (t *Topology) Node(name string) *Node {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byName[name]
}

// Nodes returns the nodes in the order they were added.
func (t *Topology) Nodes() []*Node {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]*Node(nil), t.nodes...)
}

// AddNode creates a node: a namespace named "<prefix>-<name>" with its
// loopback up. Names are lower-case letters, digits and dashes, at most 32.
func (t *Topology) AddNode(name string) (n *Node, err error) {
	if !nodeNameRE.MatchString(name) {
		return nil, fmt.Errorf("add node %q: %w name: want 1-32 of a-z, 0-9 and '-', starting with a letter or digit", name, ErrInvalid)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, fmt.Errorf("add node %s: %w", name, ErrClosed)
	}
	if t.byName[name] != nil {
		return nil, fmt.Errorf("add node %s: %w: name already used", name, ErrInvalid)
	}
	n = &Node{name: name, netns: t.prefix + "-" + name, ns: netns.None()}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.close())
		}
	}()
	if n.ns, err = createNetns(n.netns); err != nil {
		return nil, fmt.Errorf("add node %s: %w", name, err)
	}
	n.mounted = true
	// A handle bound to the namespace runs netlink requests there from
	// any thread, so link and route setup need no thread switching.
	if n.nl, err = netlink.NewHandleAt(n.ns); err != nil {
		return nil, fmt.Errorf("add node %s: open netlink in netns %s: %w", name, n.netns, err)
	}
	lo, err := n.nl.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("add node %s: find lo: %w", name, err)
	}
	if err := n.nl.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("add node %s: set lo up: %w", name, err)
	}
	if err := n.setSysctls(nodeSysctls); err != nil {
		return nil, fmt.Errorf("add node %s: %w", name, err)
	}
	t.nodes = append(t.nodes, n)
	t.byName[name] = n
	return n, nil
}

// nodeSysctls are set in every new node. A new namespace copies the IPv4
// settings of the host's (net.core.devconf_inherit_init_net=0), so a host
// that forwards or filters by reverse path would make the same scenario
// behave differently from one machine to the next; nodes start from the
// kernel's defaults instead. IPv6 is off on interfaces created later
// ("default"); AddLink turns it back on for an interface given an IPv6
// address.
var nodeSysctls = [][2]string{
	{"net.ipv4.ip_forward", "0"},
	{"net.ipv4.conf.all.rp_filter", "0"},
	{"net.ipv4.conf.default.rp_filter", "0"},
	{"net.ipv6.conf.default.disable_ipv6", "1"},
}

// Close deletes every namespace of the topology, and with them their
// links and the programs attached there. It tries all of them even when
// one fails, and later calls return the first call's result. No Node.Do
// may be running or start during Close.
func (t *Topology) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return t.err
	}
	t.closed = true
	var errs []error
	for i := len(t.nodes) - 1; i >= 0; i-- {
		errs = append(errs, t.nodes[i].close())
	}
	t.err = errors.Join(errs...)
	return t.err
}

// createNetns makes a named namespace the way `ip netns add` does: a new
// namespace bind-mounted on a file under NetnsDir, which keeps it alive
// without any process in it.
func createNetns(name string) (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// unshare moves this thread into the new namespace for good. The
		// thread stays locked to this goroutine, so the runtime destroys it
		// when the goroutine returns instead of reusing it for other
		// goroutines, which would then run in the wrong namespace.
		runtime.LockOSThread()
		ns, err := mountNewNetns(name)
		ch <- result{ns, err}
	}()
	r := <-ch
	return r.ns, r.err
}

func mountNewNetns(name string) (netns.NsHandle, error) {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return netns.None(), fmt.Errorf("create netns %s: %w", name, err)
	}
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return netns.None(), fmt.Errorf("create netns %s: unshare: %w", name, err)
	}
	path := filepath.Join(NetnsDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return netns.None(), fmt.Errorf("create netns %s: %w", name, err)
	}
	f.Close()
	self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
	if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return netns.None(), fmt.Errorf("create netns %s: bind-mount on %s: %w", name, path, err)
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		err = fmt.Errorf("create netns %s: open: %w", name, err)
		return netns.None(), errors.Join(err, deleteNetns(name))
	}
	return ns, nil
}

// deleteNetns removes a named namespace's mount and file. A file that is
// not a mount point (a creation interrupted between the two steps) is
// removed too, and a name that is already gone is not an error, so that
// cleanup can always be repeated.
func deleteNetns(name string) error {
	path := filepath.Join(NetnsDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %s: unmount: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}
