package bench

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
)

// Mode says how the receiving end of the lab's veth pair runs XDP, which is
// where the frames a measured program sends with XDP_TX end up.
type Mode int

const (
	// Native attaches the receiving program in driver mode: veth hands it
	// the xdp_frame directly, with no skb.
	Native Mode = iota
	// Generic attaches the receiving program in skb mode. veth accepts
	// XDP_TX frames for a peer without a native program only when GRO is on
	// at the peer (the frames then go through veth's NAPI poll and become
	// skbs), so the lab turns GRO on there.
	Generic
)

// String names the mode as the kernel's XDP documentation and xdp-tools do,
// so reports use the words people search for.
func (m Mode) String() string {
	switch m {
	case Native:
		return "native"
	case Generic:
		return "generic"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// ParseMode is the inverse of [Mode.String], for command-line flags.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "native", "drv", "driver":
		return Native, nil
	case "generic", "skb":
		return Generic, nil
	}
	return 0, fmt.Errorf("xdp mode %q: want native or generic", s)
}

func (m Mode) xdpFlags() int {
	if m == Generic {
		return nl.XDP_FLAGS_SKB_MODE
	}
	return nl.XDP_FLAGS_DRV_MODE
}

// Names of the veth pair. Each lab has a namespace of its own, so the names
// need not be unique, only within IFNAMSIZ.
const (
	devName  = "bench0"
	peerName = "bench1"
)

// NamePrefix starts the name of every namespace a lab creates. The full name
// is NamePrefix + "<pid>-<random hex>", which tells whose it is in
// `ip netns list` and lets [CleanupStale] find the ones a killed process left.
const NamePrefix = "slb-"

// Lab is a network namespace holding a veth pair that programs are measured
// on. Programs run with live frames on the first device; what they transmit
// arrives at the second one, where an XDP program counts and drops it.
//
// A Lab is not safe for concurrent use: concurrent runs would share the
// receiving queue and the CPUs and disturb each other's numbers anyway.
type Lab struct {
	name    string
	mode    Mode
	ns      netns.NsHandle
	nl      *netlink.Handle
	ifindex int
	sink    *sink
	// named records that the name is ours to delete: a failed creation
	// must not unmount a namespace of the same name that someone else made.
	named bool

	closeOnce sync.Once
	closeErr  error
}

// NewLab creates a fresh namespace with a veth pair in it and the receiving
// program attached in the given mode. The caller must Close it; until then
// the namespace is visible in `ip netns list`.
func NewLab(mode Mode) (*Lab, error) {
	if mode != Native && mode != Generic {
		return nil, fmt.Errorf("new lab: unknown %v", mode)
	}
	l := &Lab{
		name: fmt.Sprintf("%s%d-%08x", NamePrefix, os.Getpid(), rand.Uint32()),
		mode: mode,
		ns:   netns.None(),
	}
	if err := l.setup(); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

// setup builds the lab; Close undoes whatever part of it was done.
func (l *Lab) setup() error {
	if err := createNamedNetns(l.name, &l.ns); err != nil {
		return err
	}
	l.named = true
	// A handle bound to the namespace lets every later netlink call run
	// from any goroutine, without switching the thread.
	var err error
	l.nl, err = netlink.NewHandleAt(l.ns)
	if err != nil {
		return fmt.Errorf("open netlink in netns %s: %w", l.name, err)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: devName}, PeerName: peerName}
	if err := l.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s/%s in netns %s: %w", devName, peerName, l.name, err)
	}
	dev, err := l.nl.LinkByName(devName)
	if err != nil {
		return fmt.Errorf("look up %s in netns %s: %w", devName, l.name, err)
	}
	peer, err := l.nl.LinkByName(peerName)
	if err != nil {
		return fmt.Errorf("look up %s in netns %s: %w", peerName, l.name, err)
	}
	l.ifindex = dev.Attrs().Index
	for _, link := range []netlink.Link{dev, peer} {
		if err := l.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up in netns %s: %w", link.Attrs().Name, l.name, err)
		}
	}

	l.sink, err = newSink()
	if err != nil {
		return err
	}
	if l.mode == Generic {
		if err := l.do(func() error { return setGRO(peerName, true) }); err != nil {
			return fmt.Errorf("enable gro on %s in netns %s: %w", peerName, l.name, err)
		}
	}
	// netlink's Handle has no XDP call; the package-level one works in the
	// calling thread's namespace.
	attach := func() error { return netlink.LinkSetXdpFdWithFlags(peer, l.sink.prog.FD(), l.mode.xdpFlags()) }
	if err := l.do(attach); err != nil {
		return fmt.Errorf("attach %s xdp sink to %s in netns %s: %w", l.mode, peerName, l.name, err)
	}
	return nil
}

// createNamedNetns makes a new named namespace without leaving any thread
// in it: netns.NewNamed moves the thread it runs on, and onThread moves it
// back.
func createNamedNetns(name string, ns *netns.NsHandle) error {
	return onThread(netns.None(), func() error {
		var err error
		*ns, err = netns.NewNamed(name)
		if err != nil {
			// NewNamed can fail after creating the mount point file,
			// which is then ours; a name that was taken is not.
			if !errors.Is(err, os.ErrExist) {
				_ = os.Remove(netnsDir + "/" + name)
			}
			return fmt.Errorf("create netns %s: %w", name, err)
		}
		if err := quietIPv6(name); err != nil {
			return errors.Join(err, ns.Close(), netns.DeleteNamed(name))
		}
		return nil
	})
}

// Name returns the namespace's name, for `ip netns exec` while debugging.
func (l *Lab) Name() string { return l.name }

// Mode returns how the receiving program is attached.
func (l *Lab) Mode() Mode { return l.mode }

// Ifindex returns the index of the device programs run on, in the lab's
// namespace; it means nothing outside it.
func (l *Lab) Ifindex() int { return l.ifindex }

// Delivered returns how many frames have reached the receiving program since
// the lab was created: the proof that a run really transmitted.
func (l *Lab) Delivered() (uint64, error) {
	if !l.ns.IsOpen() {
		return 0, ErrClosed
	}
	return l.sink.received()
}

// Close deletes the namespace, and with it the veth pair and the programs
// attached to it. It is safe to call more than once; later calls return the
// first call's result.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		var errs []error
		// The namespace disappears only once nothing holds it, so the
		// handles go before the name.
		if l.nl != nil {
			l.nl.Close()
		}
		if l.ns.IsOpen() {
			if err := l.ns.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close netns %s handle: %w", l.name, err))
			}
			// The descriptor's number may be reused for anything now;
			// do() must never enter it.
			l.ns = netns.None()
		}
		if l.named {
			if err := netns.DeleteNamed(l.name); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("delete netns %s: %w", l.name, err))
			}
		}
		if l.sink != nil {
			l.sink.close()
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// do runs fn on an OS thread that is in the lab's namespace. Test runs need
// that: the kernel looks up the ingress device in the calling thread's
// namespace.
//
// It refuses to run once the lab is closed. Falling back to the caller's
// namespace would be worse than failing: the lab's ifindex may name a real
// device there, and a live-frames run would send out of it.
func (l *Lab) do(fn func() error) error {
	if !l.ns.IsOpen() {
		return ErrClosed
	}
	return onThread(l.ns, fn)
}

// ErrClosed is returned by a Lab's methods after Close.
var ErrClosed = errors.New("lab closed")

// panicError carries a panic out of onThread's goroutine so that it is
// raised again in the caller, whose deferred Close still runs.
type panicError struct{ value any }

// onThread runs fn on a goroutine locked to its OS thread, in namespace
// target unless that is netns.None(). Whatever fn does, even panicking or
// switching namespaces itself, the thread is put back in the namespace it
// came from before the runtime may use it for anything else. A thread that
// cannot be put back stays locked: the runtime then ends it with the
// goroutine, except the process's main thread, which it parks forever.
func onThread(target netns.NsHandle, fn func() error) error {
	done := make(chan any, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("get current netns: %w", err)
			return
		}
		var result any
		defer func() {
			if v := recover(); v != nil {
				result = panicError{v}
			}
			if err := netns.Set(orig); err != nil {
				err = fmt.Errorf("return thread to its original netns: %w", err)
				if prev, ok := result.(error); ok {
					err = errors.Join(prev, err)
				}
				if _, panicked := result.(panicError); !panicked {
					result = err
				}
			} else {
				runtime.UnlockOSThread()
			}
			orig.Close()
			done <- result
		}()
		if target.IsOpen() {
			if err := netns.Set(target); err != nil {
				result = fmt.Errorf("enter netns: %w", err)
				return
			}
		}
		if err := fn(); err != nil {
			result = err
		}
	}()
	switch v := (<-done).(type) {
	case panicError:
		panic(v.value)
	case error:
		return v
	default:
		return nil
	}
}

// quietIPv6 turns IPv6 off for the devices the calling thread's namespace
// will get. Otherwise the stack sends router solicitations and MLD reports
// out of a veth as soon as it is up, and the receiving program would count
// frames that no test run sent. Kernels without IPv6 have nothing to quiet.
func quietIPv6(name string) error {
	// /proc/sys/net resolves to the namespace of the thread that opens it.
	const path = "/proc/sys/net/ipv6/conf/default/disable_ipv6"
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable ipv6 in netns %s: %w", name, err)
	}
	return nil
}
