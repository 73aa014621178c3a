package topo

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Legacy ethtool commands from include/uapi/linux/ethtool.h. rtnetlink has
// no attribute for offload features, and the ioctl is far smaller than the
// ethtool generic-netlink family while working on every supported kernel.
const (
	ethtoolGTXCSUM = 0x16
	ethtoolSTXCSUM = 0x17
)

// ethtoolValue is struct ethtool_value.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreq is struct ifreq with its union used as ifr_data; the pointer stays
// an unsafe.Pointer so that the garbage collector keeps the value alive
// during the call.
type ifreq struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// SetTxChecksum turns transmit checksum offload of dev on or off, like
// `ethtool -K dev tx on|off`, and reads it back.
//
// With offload on (the veth default), packets a node sends stay
// CHECKSUM_PARTIAL: their L4 checksum field holds only the pseudo-header
// sum, and every receiver inside the host trusts it without checking. A
// node that should send what a real wire carries (complete checksums, which
// a program may have to preserve or a receiver will verify) turns it off.
func (n *Node) SetTxChecksum(dev string, on bool) error {
	if len(dev) >= unix.IFNAMSIZ {
		return fmt.Errorf("set tx checksum on %s in netns %s: %w: interface name too long", dev, n.netns, ErrInvalid)
	}
	var got bool
	err := n.Do(func() error {
		set := ethtoolValue{cmd: ethtoolSTXCSUM}
		if on {
			set.data = 1
		}
		if err := ethtool(dev, &set); err != nil {
			return err
		}
		get := ethtoolValue{cmd: ethtoolGTXCSUM}
		if err := ethtool(dev, &get); err != nil {
			return err
		}
		got = get.data != 0
		return nil
	})
	if err != nil {
		return fmt.Errorf("set tx checksum on %s in netns %s: %w", dev, n.netns, err)
	}
	if got != on {
		return fmt.Errorf("set tx checksum on %s in netns %s: still %t after setting %t", dev, n.netns, got, on)
	}
	return nil
}

// ethtool sends one SIOCETHTOOL request about dev in the calling thread's
// namespace.
func ethtool(dev string, v *ethtoolValue) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	req := ifreq{data: unsafe.Pointer(v)}
	copy(req.name[:], dev)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&req))); errno != 0 {
		return fmt.Errorf("ethtool command %#x: %w", v.cmd, errno)
	}
	return nil
}
