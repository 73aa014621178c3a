package quickstart

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/sim/topo"
)

// guePort is where backends listen for GUE, Config.GUEPort's default.
const guePort = 6080

// packet is one GUE datagram as a backend received it.
type packet struct {
	backend int            // index into the backends
	outer   netip.AddrPort // the datagram's source: LB address, hashed port
	inner   inner
	err     error // the inner packet could not be parsed
}

// inner is the packet the client sent, decoded from the GUE payload.
type inner struct {
	proto    uint8
	src, dst netip.AddrPort
	syn      bool
	payload  []byte // UDP payload
	// badSum names each checksum of the inner packet that is wrong.
	badSum []string
}

// receiver collects what every backend's GUE socket receives. The sockets
// are ordinary UDP sockets, so the backend's kernel checks each datagram's
// outer UDP checksum and drops a wrong one before it reaches us: an
// independent check of the checksum the LB computed.
type receiver struct {
	mu      sync.Mutex
	packets []packet
	errs    []error
	conns   []*net.UDPConn
	wg      sync.WaitGroup
}

// listen opens a GUE socket in each backend node and starts reading.
func listen(backends []*topo.Node) (*receiver, error) {
	r := &receiver{}
	for i, b := range backends {
		var c *net.UDPConn
		err := b.Do(func() error {
			var err error
			c, err = net.ListenUDP("udp4", &net.UDPAddr{Port: guePort})
			if err != nil {
				return err
			}
			// The default buffer (rmem_default) holds only a couple of
			// hundred small datagrams; a burst beyond it would be lost
			// here and blamed on the LB. FORCE bypasses rmem_max.
			return control(c, func(fd int) error {
				return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
			})
		})
		if err != nil {
			if c != nil {
				c.Close()
			}
			r.close()
			return nil, fmt.Errorf("listen for gue on %s:%d: %w", b.Name(), guePort, err)
		}
		r.conns = append(r.conns, c)
		r.wg.Add(1)
		go r.read(i, c)
	}
	return r, nil
}

func control(c *net.UDPConn, fn func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// read runs until the socket is closed. A panic is turned into an error:
// it would otherwise end the process without deleting the namespaces.
func (r *receiver) read(backend int, c *net.UDPConn) {
	defer r.wg.Done()
	defer func() {
		if v := recover(); v != nil {
			r.fail(fmt.Errorf("backend %d reader panicked: %v", backend+1, v))
		}
	}()
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				r.fail(fmt.Errorf("backend %d: read gue: %w", backend+1, err))
			}
			return
		}
		p := packet{backend: backend, outer: netip.AddrPortFrom(from.Addr().Unmap(), from.Port())}
		p.inner, p.err = parseInner(buf[:n])
		r.mu.Lock()
		r.packets = append(r.packets, p)
		r.mu.Unlock()
	}
}

func (r *receiver) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

// snapshot returns what has been received so far.
func (r *receiver) snapshot() ([]packet, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]packet(nil), r.packets...), errors.Join(r.errs...)
}

// close stops the readers and waits for them.
func (r *receiver) close() {
	for _, c := range r.conns {
		c.Close()
	}
	r.wg.Wait()
}

// parseInner decodes the IPv4 packet a GUE variant 1 datagram carries and
// verifies its checksums. It is deliberately small and separate from the
// program's code and from gopacket: it is the backend's own view.
func parseInner(b []byte) (inner, error) {
	var in inner
	if len(b) < 20 || b[0]>>4 != 4 {
		return in, fmt.Errorf("inner packet: %d bytes, not IPv4", len(b))
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < 20 || total < ihl || total > len(b) {
		return in, fmt.Errorf("inner packet: header length %d, total length %d, %d bytes received", ihl, total, len(b))
	}
	if binary.BigEndian.Uint16(b[6:])&0x3fff != 0 {
		return in, errors.New("inner packet: a fragment")
	}
	if checksum(b[:ihl]) != 0 {
		in.badSum = append(in.badSum, "ipv4 header")
	}
	in.proto = b[9]
	src, _ := netip.AddrFromSlice(b[12:16])
	dst, _ := netip.AddrFromSlice(b[16:20])
	l4 := b[ihl:total]
	pseudo := make([]byte, 12)
	copy(pseudo, b[12:20])
	pseudo[9] = in.proto
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(l4)))
	switch in.proto {
	case unix.IPPROTO_UDP:
		if len(l4) < 8 {
			return in, fmt.Errorf("inner udp: %d bytes", len(l4))
		}
		in.payload = append([]byte(nil), l4[8:]...)
		if binary.BigEndian.Uint16(l4[6:]) != 0 && checksum(pseudo, l4) != 0 {
			in.badSum = append(in.badSum, "udp")
		}
	case unix.IPPROTO_TCP:
		if len(l4) < 20 {
			return in, fmt.Errorf("inner tcp: %d bytes", len(l4))
		}
		in.syn = l4[13]&0x02 != 0
		if checksum(pseudo, l4) != 0 {
			in.badSum = append(in.badSum, "tcp")
		}
	default:
		return in, fmt.Errorf("inner packet: protocol %d", in.proto)
	}
	in.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
	in.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	return in, nil
}

// checksum is the Internet checksum (RFC 1071) of the concatenated
// pieces; over data that holds its correct checksum it is 0.
func checksum(pieces ...[]byte) uint16 {
	var sum uint32
	odd := false
	for _, p := range pieces {
		for _, c := range p {
			if odd {
				sum += uint32(c)
			} else {
				sum += uint32(c) << 8
			}
			odd = !odd
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// udpStats are a node's kernel UDP counters (/proc/net/snmp, per
// namespace).
type udpStats struct {
	InDatagrams, InCsumErrors, RcvbufErrors uint64
}

// readUDPStats reads n's UDP counters. /proc/net is /proc/self/net, which
// shows the namespace of the process's main thread, whatever thread reads
// it; /proc/thread-self/net shows the reading thread's, hence Do.
func readUDPStats(n *topo.Node) (udpStats, error) {
	var s udpStats
	err := n.Do(func() error {
		f, err := os.Open("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		defer f.Close()
		var names []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 || fields[0] != "Udp:" {
				continue
			}
			if names == nil {
				names = fields // header line
				continue
			}
			for i := 1; i < len(fields) && i < len(names); i++ {
				v, err := strconv.ParseUint(fields[i], 10, 64)
				if err != nil {
					return fmt.Errorf("parse Udp %s: %w", names[i], err)
				}
				switch names[i] {
				case "InDatagrams":
					s.InDatagrams = v
				case "InCsumErrors":
					s.InCsumErrors = v
				case "RcvbufErrors":
					s.RcvbufErrors = v
				}
			}
			return nil
		}
		if err := sc.Err(); err != nil {
			return err
		}
		return errors.New("no Udp counters")
	})
	if err != nil {
		return s, fmt.Errorf("read udp counters of %s: %w", n.Name(), err)
	}
	return s, nil
}
