package traffic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sluice-dp/sluice/sim/topo"
)

// ErrDropped marks a capture that lost frames because its socket buffer
// overflowed; Stop returns the frames it did record along with it, so an
// assertion about counts must not trust them.
var ErrDropped = errors.New("capture dropped frames")

// Capture defaults.
const (
	// DefaultDrain is how long Stop keeps reading before it ends, so that
	// frames still on their way through the topology (a reply, a frame
	// queued in a veth's backlog) are recorded.
	DefaultDrain = 100 * time.Millisecond
	// DefaultBuffer is the socket receive buffer. Generous, because the
	// reader is a goroutine that may not run for a while on a busy
	// 2-CPU machine, and each queued frame costs its whole skb (about
	// 1 KiB for a small frame) in buffer accounting.
	DefaultBuffer = 8 << 20
	// Snaplen is the most bytes of a frame a capture keeps: room for a
	// GSO frame of 64 KiB and more, the same length the pcap header
	// announces.
	Snaplen = 262144
)

// pollInterval is how often the reader checks whether Stop was called
// while no frame arrives.
const pollInterval = 10 * time.Millisecond

// Frame is one captured frame.
type Frame struct {
	// Time is when the kernel received or sent the frame (its software
	// timestamp), or when the reader saw it if the kernel gave none.
	// Frames are in the order the kernel delivered them to the capture,
	// which is not always the order of their times: a received frame is
	// stamped when it is queued, and a frame the node sends meanwhile
	// can be delivered first, a few microseconds out of order (tcpdump
	// shows the same).
	Time time.Time
	// Data is the frame from its Ethernet header on, at most Snaplen
	// bytes. A VLAN tag the kernel had moved out of the frame on receipt
	// is put back, so Data is what was on the wire.
	Data []byte
	// Len is the frame's length on the wire; more than len(Data) only
	// when the frame was longer than Snaplen.
	Len int
	// Outgoing is set for frames the node sent out of the interface and
	// clear for frames it received.
	Outgoing bool
}

// CaptureOption adjusts StartCapture.
type CaptureOption func(*captureOptions)

type captureOptions struct {
	drain  time.Duration
	buffer int
}

// Drain sets how long Stop keeps reading before it ends; see DefaultDrain.
func Drain(d time.Duration) CaptureOption {
	return func(o *captureOptions) { o.drain = max(d, 0) }
}

// Buffer sets the socket receive buffer in bytes; see DefaultBuffer.
func Buffer(bytes int) CaptureOption {
	return func(o *captureOptions) { o.buffer = bytes }
}

// Capture records every frame seen on one interface of one node, in both
// directions, from StartCapture until Stop.
//
// On a veth every frame shows up once: a frame the node sends (whether
// Inject wrote it or the stack did) is seen as outgoing on the sending end
// and as incoming on the peer's end, never twice on one interface. Only on
// a loopback interface does the kernel show each packet twice, once going
// out and once coming in; there the outgoing copies are dropped, as
// tcpdump does, so a count is a count of packets.
type Capture struct {
	node  *topo.Node
	iface string
	fd    int
	lo    bool
	opts  captureOptions

	stop chan struct{}
	done chan struct{}

	frames  []Frame // written by the reader only, read after done
	readErr error   // likewise

	stopOnce sync.Once
	result   []Frame
	err      error
}

// StartCapture starts recording every frame on iface in node. It returns
// once the socket is bound: from then on no frame is missed.
func StartCapture(node *topo.Node, iface string, opts ...CaptureOption) (*Capture, error) {
	o := captureOptions{drain: DefaultDrain, buffer: DefaultBuffer}
	for _, opt := range opts {
		opt(&o)
	}
	link, err := lookupLink(node, iface)
	if err != nil {
		return nil, fmt.Errorf("capture at %s/%s: %w", node.Name(), iface, err)
	}
	var fd int
	err = node.Do(func() error {
		fd, err = openCaptureSocket(link.index, o.buffer)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("capture at %s/%s: %w", node.Name(), iface, err)
	}
	c := &Capture{
		node: node, iface: iface, fd: fd, lo: link.loopback, opts: o,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go c.read()
	return c, nil
}

// openCaptureSocket opens a non-blocking AF_PACKET socket bound to ifindex
// for every protocol. It is created with protocol 0, which receives
// nothing, and gets ETH_P_ALL only when bound: created with ETH_P_ALL it
// would receive frames of every interface until the bind, and those
// would end up in the capture.
func openCaptureSocket(ifindex, buffer int) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("packet socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("packet socket: %s: %w", what, err)
	}
	// SO_RCVBUFFORCE lets root go beyond net.core.rmem_max, which is
	// a few hundred KiB by default; plain SO_RCVBUF is the fallback.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, buffer); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, buffer); err != nil {
			return fail("set receive buffer", err)
		}
	}
	// The kernel's timestamps tell when a frame passed, not when a
	// possibly delayed reader got to it.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fail("enable timestamps", err)
	}
	// Auxiliary data carries the VLAN tag that receive processing strips.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		return fail("enable auxdata", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		return fail(fmt.Sprintf("bind to ifindex %d", ifindex), err)
	}
	return fd, nil
}

// Node returns the name of the node the capture is in.
func (c *Capture) Node() string { return c.node.Name() }

// Iface returns the name of the interface the capture records.
func (c *Capture) Iface() string { return c.iface }

// Stop waits for the drain time, ends the capture and returns the frames
// in the order the kernel delivered them. Later calls return the same
// frames and error. When the kernel dropped frames for lack of buffer
// space, the error wraps ErrDropped.
func (c *Capture) Stop() ([]Frame, error) {
	c.stopOnce.Do(func() {
		time.Sleep(c.opts.drain)
		close(c.stop)
		<-c.done
		c.result, c.err = c.frames, c.readErr
		if c.err == nil {
			c.err = c.dropped()
		}
		if err := unix.Close(c.fd); err != nil && c.err == nil {
			c.err = fmt.Errorf("capture at %s/%s: close: %w", c.Node(), c.iface, err)
		}
	})
	return c.result, c.err
}

// dropped reports the kernel's drop count as an error, nil if none.
func (c *Capture) dropped() error {
	st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return fmt.Errorf("capture at %s/%s: read statistics: %w", c.Node(), c.iface, err)
	}
	if st.Drops > 0 {
		return fmt.Errorf("capture at %s/%s: %w: %d lost, %d recorded", c.Node(), c.iface, ErrDropped, st.Drops, len(c.frames))
	}
	return nil
}

// read records frames until Stop is called, then empties the socket once
// more and returns. It polls with a timeout rather than blocking in read,
// so that it notices Stop without the socket being closed under it.
func (c *Capture) read() {
	defer close(c.done)
	buf := make([]byte, Snaplen)
	oob := make([]byte, 256)
	for {
		select {
		case <-c.stop:
			c.readErr = c.readAll(buf, oob)
			return
		default:
		}
		fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(pollInterval/time.Millisecond)); err != nil && !errors.Is(err, unix.EINTR) {
			c.readErr = fmt.Errorf("capture at %s/%s: poll: %w", c.Node(), c.iface, err)
			return
		}
		if err := c.readAll(buf, oob); err != nil {
			c.readErr = err
			return
		}
	}
}

// readAll records every frame queued on the socket.
func (c *Capture) readAll(buf, oob []byte) error {
	for {
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, unix.MSG_TRUNC)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return fmt.Errorf("capture at %s/%s: receive: %w", c.Node(), c.iface, err)
		}
		ll, _ := from.(*unix.SockaddrLinklayer)
		outgoing := ll != nil && ll.Pkttype == unix.PACKET_OUTGOING
		if outgoing && c.lo {
			continue
		}
		f := Frame{Len: n, Outgoing: outgoing}
		var aux *unix.TpacketAuxdata
		f.Time, aux = parseControl(oob[:oobn])
		data := buf[:min(n, len(buf))]
		if aux != nil && aux.Status&unix.TP_STATUS_VLAN_VALID != 0 && len(data) >= 12 {
			tpid := uint16(unix.ETH_P_8021Q)
			if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
				tpid = aux.Vlan_tpid
			}
			f.Data = make([]byte, 0, len(data)+4)
			f.Data = append(f.Data, data[:12]...)
			f.Data = binary.BigEndian.AppendUint16(f.Data, tpid)
			f.Data = binary.BigEndian.AppendUint16(f.Data, aux.Vlan_tci)
			f.Data = append(f.Data, data[12:]...)
			f.Len += 4
		} else {
			f.Data = append([]byte(nil), data...)
		}
		c.frames = append(c.frames, f)
	}
}

// parseControl returns the kernel timestamp and the packet auxdata of a
// received frame. A timestamp that is not plausibly wall-clock time is
// replaced by the current time: the kernel can hand over an skb's
// monotonic departure time instead (TCP's pacing stamps them), which read
// as a date in 1970.
func parseControl(oob []byte) (time.Time, *unix.TpacketAuxdata) {
	now := time.Now()
	ts := now
	var aux *unix.TpacketAuxdata
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return ts, nil
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16:
			// struct timespec: 64-bit seconds and nanoseconds.
			ne := binary.NativeEndian
			t := time.Unix(int64(ne.Uint64(m.Data)), int64(ne.Uint64(m.Data[8:])))
			if t.After(now.Add(-time.Minute)) && !t.After(now) {
				ts = t
			}
		case m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= 20: // struct tpacket_auxdata
			ne := binary.NativeEndian
			aux = &unix.TpacketAuxdata{
				Status:    ne.Uint32(m.Data[0:]),
				Len:       ne.Uint32(m.Data[4:]),
				Snaplen:   ne.Uint32(m.Data[8:]),
				Mac:       ne.Uint16(m.Data[12:]),
				Net:       ne.Uint16(m.Data[14:]),
				Vlan_tci:  ne.Uint16(m.Data[16:]),
				Vlan_tpid: ne.Uint16(m.Data[18:]),
			}
		}
	}
	return ts, aux
}

// htons converts a protocol number to the network byte order that
// sockaddr_ll wants.
func htons(v uint16) uint16 {
	return v<<8 | v>>8
}
