package traffic

import (
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/sim/topo"
)

// injectRetries bounds how often Inject resends a frame the kernel refused
// for lack of buffer space (ENOBUFS), a transient state when the receiving
// side is briefly behind; persisting beyond this means the frames are not
// being taken at all.
const injectRetries = 50

// Inject sends frames out of iface in node through an AF_PACKET socket
// bound to the interface, in order, and returns how many were sent. The
// frames leave as they are: no header is added and no checksum is filled
// in, so they must be complete Ethernet frames whose destination MAC is the
// next hop's. On a veth, a frame larger than the MTU plus the Ethernet
// header is refused with EMSGSIZE; frames shorter than 60 bytes are sent
// unpadded (veth does not pad).
func Inject(node *topo.Node, iface string, frames [][]byte) (int, error) {
	link, err := lookupLink(node, iface)
	if err != nil {
		return 0, fmt.Errorf("inject at %s/%s: %w", node.Name(), iface, err)
	}
	var fd int
	err = node.Do(func() error {
		// Protocol 0: a socket that only sends, so the kernel does not
		// queue every frame on the interface to it as well.
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: link.index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to ifindex %d: %w", link.index, err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("inject at %s/%s: %w", node.Name(), iface, err)
	}
	defer unix.Close(fd)

	for i, fr := range frames {
		if err := send(fd, fr); err != nil {
			return i, fmt.Errorf("inject frame %d of %d (%d bytes) at %s/%s: %w", i, len(frames), len(fr), node.Name(), iface, err)
		}
	}
	return len(frames), nil
}

// send writes one frame, retrying while the kernel reports ENOBUFS.
func send(fd int, frame []byte) error {
	wait := 100 * time.Microsecond
	for try := 0; ; try++ {
		_, err := unix.Write(fd, frame)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOBUFS) && try < injectRetries:
			time.Sleep(wait)
			wait = min(2*wait, 10*time.Millisecond)
			continue
		}
		return err
	}
}

// linkInfo is what the AF_PACKET code needs to know about an interface.
type linkInfo struct {
	index    int
	loopback bool
}

// lookupLink finds iface in node's namespace. It uses the node's netlink
// handle, which works from any thread, so no Do is needed.
func lookupLink(node *topo.Node, iface string) (linkInfo, error) {
	l, err := node.Netlink().LinkByName(iface)
	if err != nil {
		return linkInfo{}, fmt.Errorf("find interface %s: %w", iface, err)
	}
	a := l.Attrs()
	return linkInfo{index: a.Index, loopback: a.Flags&net.FlagLoopback != 0}, nil
}
