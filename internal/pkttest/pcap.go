package pkttest

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"
)

// pcapSnaplen is the capture length the pcap header announces; readers
// reject records longer than it, and GSO-sized test frames can exceed 64 KiB.
const pcapSnaplen = 262144

// linkTypeEthernet is LINKTYPE_ETHERNET in the pcap file header.
const linkTypeEthernet = 1

// WritePcap writes frames as Ethernet packets to a classic pcap file at
// path, replacing it. The timestamps are one microsecond apart so that
// readers keep the order.
//
// The format is written here rather than with gopacket's pcapgo, whose
// package also pulls in golang.org/x/net for live capture, a module this
// repository does not otherwise need.
func WritePcap(path string, frames ...[]byte) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write pcap: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write pcap %s: %w", path, cerr)
		}
	}()
	if _, err := f.Write(pcapFile(time.Now(), frames)); err != nil {
		return fmt.Errorf("write pcap %s: %w", path, err)
	}
	return nil
}

// pcapFile encodes a little-endian, microsecond-resolution pcap file
// (the format of libpcap 2.4 that every reader accepts).
func pcapFile(start time.Time, frames [][]byte) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, 0xa1b2c3d4) // magic: microsecond timestamps
	b = le.AppendUint16(b, 2)             // version 2.4
	b = le.AppendUint16(b, 4)
	b = le.AppendUint32(b, 0) // thiszone: UTC
	b = le.AppendUint32(b, 0) // sigfigs
	b = le.AppendUint32(b, pcapSnaplen)
	b = le.AppendUint32(b, linkTypeEthernet)
	for i, fr := range frames {
		ts := start.Add(time.Duration(i) * time.Microsecond)
		b = le.AppendUint32(b, uint32(ts.Unix()))
		b = le.AppendUint32(b, uint32(ts.Nanosecond()/1000))
		n := min(len(fr), pcapSnaplen)
		b = le.AppendUint32(b, uint32(n))       // captured length
		b = le.AppendUint32(b, uint32(len(fr))) // length on the wire
		b = append(b, fr[:n]...)
	}
	return b
}
