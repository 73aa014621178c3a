package quickstart

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/sim/topo"
)

// udpPayloadPrefix starts every datagram the client sends; the rest is the
// datagram's number, which lets the backends' side tell each one apart.
const udpPayloadPrefix = "sluice quickstart #"

// clientTraffic is what the client sent, and the sockets it keeps open
// until the traffic has been counted: an open socket keeps its port, so
// every flow has a port of its own.
type clientTraffic struct {
	udp      []netip.AddrPort // source of datagram i
	tcp      []netip.AddrPort // source of connection attempt i
	udpConns []*net.UDPConn
	tcpFDs   []int
}

// close releases the client's sockets. A TCP socket still in SYN-SENT is
// closed without sending anything, so this ends the SYN retransmissions.
func (c *clientTraffic) close() {
	for _, u := range c.udpConns {
		u.Close()
	}
	c.udpConns = nil
	for _, fd := range c.tcpFDs {
		unix.Close(fd)
	}
	c.tcpFDs = nil
}

// sendUDP sends n datagrams to the VIP's UDP port, each from a socket of
// its own and so from its own source port the kernel picks: n flows.
func (c *clientTraffic) sendUDP(client *topo.Node, n int) error {
	to := &net.UDPAddr{IP: vipAddr.AsSlice(), Port: int(vipUDPPort)}
	return client.Do(func() error {
		for i := range n {
			conn, err := net.DialUDP("udp4", nil, to)
			if err != nil {
				return fmt.Errorf("udp socket %d to %v: %w", i, to, err)
			}
			c.udpConns = append(c.udpConns, conn)
			c.udp = append(c.udp, conn.LocalAddr().(*net.UDPAddr).AddrPort())
			if _, err := conn.Write([]byte(udpPayloadPrefix + strconv.Itoa(i))); err != nil {
				return fmt.Errorf("send udp datagram %d to %v: %w", i, to, err)
			}
		}
		return nil
	})
}

// sendSYN starts n TCP connections to the VIP's TCP port without waiting
// for them: a non-blocking connect sends the SYN and returns. Nobody
// answers (the backends only count), so each stays in SYN-SENT until
// close.
func (c *clientTraffic) sendSYN(client *topo.Node, n int) error {
	to := &unix.SockaddrInet4{Port: int(vipTCPPort), Addr: vipAddr.As4()}
	return client.Do(func() error {
		for i := range n {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("tcp socket %d: %w", i, err)
			}
			c.tcpFDs = append(c.tcpFDs, fd)
			if err := unix.Connect(fd, to); !errors.Is(err, unix.EINPROGRESS) {
				return fmt.Errorf("connect %d to %v:%d: %v, want EINPROGRESS", i, vipAddr, vipTCPPort, err)
			}
			sa, err := unix.Getsockname(fd)
			if err != nil {
				return fmt.Errorf("tcp socket %d: local address: %w", i, err)
			}
			in4, ok := sa.(*unix.SockaddrInet4)
			if !ok {
				return fmt.Errorf("tcp socket %d: local address %T", i, sa)
			}
			c.tcp = append(c.tcp, netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)))
		}
		return nil
	})
}

// datagramNumber returns the number a client datagram carries, or -1.
func datagramNumber(payload []byte) int {
	s, ok := strings.CutPrefix(string(payload), udpPayloadPrefix)
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return -1
	}
	return n
}
