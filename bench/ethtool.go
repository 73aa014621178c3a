package bench

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolSGRO is ETHTOOL_SGRO from include/uapi/linux/ethtool.h. Netlink has
// no attribute for GRO (it is an ethtool feature), and the legacy ioctl is
// simpler than ethtool's generic-netlink family and works on every kernel
// the project supports.
const (
	ethtoolGGRO = 0x0000002b
	ethtoolSGRO = 0x0000002c
)

// ethtoolValue is struct ethtool_value.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with the ifr_data member of the union. The
// pointer is an unsafe.Pointer so the garbage collector sees it.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtool issues one SIOCETHTOOL request on dev in the calling thread's
// network namespace.
func ethtool(dev string, v *ethtoolValue) error {
	if len(dev) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q too long", dev)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	ifr := &ifreqData{data: unsafe.Pointer(v)}
	copy(ifr.name[:], dev)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(ifr))); errno != 0 {
		return errno
	}
	return nil
}

// setGRO turns GRO on or off on dev, like `ethtool -K dev gro on|off`, and
// reads it back: the kernel may silently keep a feature off when the device
// cannot have it.
func setGRO(dev string, on bool) error {
	v := &ethtoolValue{cmd: ethtoolSGRO}
	if on {
		v.data = 1
	}
	if err := ethtool(dev, v); err != nil {
		return fmt.Errorf("ethtool set gro on %s: %w", dev, err)
	}
	got, err := gro(dev)
	if err != nil {
		return err
	}
	if got != on {
		return fmt.Errorf("ethtool set gro on %s: still %t after setting %t", dev, got, on)
	}
	return nil
}

// gro reports whether GRO is on for dev.
func gro(dev string) (bool, error) {
	v := &ethtoolValue{cmd: ethtoolGGRO}
	if err := ethtool(dev, v); err != nil {
		return false, fmt.Errorf("ethtool get gro on %s: %w", dev, err)
	}
	return v.data != 0, nil
}
