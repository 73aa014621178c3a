package traffic

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
)

// pcapMagicNano is the magic number of a classic pcap file whose record
// timestamps are in nanoseconds (libpcap 1.5 and later, Wireshark 1.8 and
// later); a capture's kernel timestamps have that resolution.
const pcapMagicNano = 0xa1b23c4d

// linkTypeEthernet is LINKTYPE_ETHERNET.
const linkTypeEthernet = 1

// WritePcap writes frames to a classic pcap file at path, replacing it,
// with each frame's own time as its timestamp. The format is written here,
// as internal/pkttest does, rather than with gopacket's pcapgo, so that the
// module needs nothing more; unlike pkttest's, it keeps real times in
// nanoseconds instead of spacing frames a microsecond apart.
func WritePcap(path string, frames []Frame) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write pcap: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write pcap %s: %w", path, cerr)
		}
	}()
	w := bufio.NewWriter(f)
	le := binary.LittleEndian
	h := le.AppendUint32(nil, pcapMagicNano)
	h = le.AppendUint16(h, 2) // version 2.4
	h = le.AppendUint16(h, 4)
	h = le.AppendUint32(h, 0) // thiszone: UTC
	h = le.AppendUint32(h, 0) // sigfigs
	h = le.AppendUint32(h, Snaplen)
	h = le.AppendUint32(h, linkTypeEthernet)
	w.Write(h)
	var rec [16]byte
	for _, fr := range frames {
		data := fr.Data[:min(len(fr.Data), Snaplen)]
		le.PutUint32(rec[0:], uint32(fr.Time.Unix()))
		le.PutUint32(rec[4:], uint32(fr.Time.Nanosecond()))
		le.PutUint32(rec[8:], uint32(len(data)))
		le.PutUint32(rec[12:], uint32(max(fr.Len, len(fr.Data))))
		w.Write(rec[:])
		w.Write(data)
	}
	// bufio.Writer keeps its first error and Flush returns it.
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write pcap %s: %w", path, err)
	}
	return nil
}
