package vm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// CPIOEntry is one file of an initramfs in the "newc" cpio format, the
// format the kernel unpacks. Mode carries the file type bits (S_IFREG,
// S_IFDIR, S_IFLNK) and the permissions.
type CPIOEntry struct {
	Name string // without a leading "/"
	Mode uint32
	Data []byte // file contents, or the target of a symbolic link
	// RdevMajor and RdevMinor are the device numbers of a device node.
	RdevMajor, RdevMinor uint32
}

// File type bits of a cpio mode.
const (
	ModeDir     = 0o040000
	ModeRegular = 0o100000
	ModeSymlink = 0o120000
	ModeCharDev = 0o020000
	modeType    = 0o170000
)

const cpioMagic = "070701"

// WriteCPIO writes entries as a newc archive followed by the TRAILER!!!
// entry. Every entry gets a distinct inode number so that the kernel does not
// take two files for hard links of each other.
func WriteCPIO(w io.Writer, entries []CPIOEntry) error {
	bw := bufio.NewWriter(w)
	var off int64
	write := func(p []byte) {
		n, _ := bw.Write(p)
		off += int64(n)
	}
	pad := func() {
		if r := off % 4; r != 0 {
			write(make([]byte, 4-r))
		}
	}
	emit := func(ino int, e CPIOEntry) error {
		name := strings.TrimPrefix(e.Name, "/")
		if name == "" {
			return errors.New("cpio: empty file name")
		}
		nlink := 1
		if e.Mode&modeType == ModeDir {
			nlink = 2
		}
		fields := []uint32{
			uint32(ino), e.Mode, 0, 0, uint32(nlink), 0,
			uint32(len(e.Data)), 0, 0, e.RdevMajor, e.RdevMinor, uint32(len(name) + 1), 0,
		}
		var hdr strings.Builder
		hdr.WriteString(cpioMagic)
		for _, f := range fields {
			fmt.Fprintf(&hdr, "%08x", f)
		}
		write([]byte(hdr.String()))
		write([]byte(name))
		write([]byte{0})
		pad()
		write(e.Data)
		pad()
		return nil
	}
	for i, e := range entries {
		if e.Mode&modeType == 0 {
			return fmt.Errorf("cpio: %s: mode %o has no file type", e.Name, e.Mode)
		}
		if err := emit(i+1, e); err != nil {
			return err
		}
	}
	if err := emit(0, CPIOEntry{Name: "TRAILER!!!", Mode: ModeRegular}); err != nil {
		return err
	}
	return bw.Flush()
}

// ReadCPIO reads a newc archive written by WriteCPIO (or any uncompressed
// newc archive) up to its trailer.
func ReadCPIO(r io.Reader) ([]CPIOEntry, error) {
	br := bufio.NewReader(r)
	var off int64
	read := func(n int64) ([]byte, error) {
		b := make([]byte, n)
		m, err := io.ReadFull(br, b)
		off += int64(m)
		return b, err
	}
	skipPad := func() error {
		if rem := off % 4; rem != 0 {
			_, err := read(4 - rem)
			return err
		}
		return nil
	}
	var out []CPIOEntry
	for {
		hdr, err := read(110)
		if err != nil {
			return nil, fmt.Errorf("cpio: header at %d: %w", off, err)
		}
		if string(hdr[:6]) != cpioMagic {
			return nil, fmt.Errorf("cpio: bad magic %q at %d", hdr[:6], off-110)
		}
		var f [13]uint64
		for i := range f {
			f[i], err = strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("cpio: header field %d: %w", i, err)
			}
		}
		mode, size, namesize := uint32(f[1]), int64(f[6]), int64(f[11])
		if namesize < 1 {
			return nil, fmt.Errorf("cpio: name size %d", namesize)
		}
		name, err := read(namesize)
		if err != nil {
			return nil, fmt.Errorf("cpio: name: %w", err)
		}
		if err := skipPad(); err != nil {
			return nil, err
		}
		data, err := read(size)
		if err != nil {
			return nil, fmt.Errorf("cpio: data of %s: %w", name, err)
		}
		if err := skipPad(); err != nil {
			return nil, err
		}
		n := strings.TrimSuffix(string(name), "\x00")
		if n == "TRAILER!!!" {
			return out, nil
		}
		out = append(out, CPIOEntry{Name: n, Mode: mode, Data: data, RdevMajor: uint32(f[9]), RdevMinor: uint32(f[10])})
	}
}
