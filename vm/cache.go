package vm

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CacheDir holds the built initramfs archives, one per kernel and key, so
// that a guest boots without resolving and decompressing its modules again.
// It is under StateDir: runs hard-link an archive into their run directory,
// which needs the same file system.
const CacheDir = StateDir + "/cache"

// ModuleFile identifies one module file of an initramfs by what would change
// if the kernel package were reinstalled with other contents under the same
// version: its size and modification time.
type ModuleFile struct {
	Path    string // relative to the kernel's module directory
	Size    int64
	ModTime int64 // nanoseconds since the epoch
}

// KeyInput is everything an initramfs is built from.
type KeyInput struct {
	Version string
	// Requested are the module names asked for (BootModules and
	// TestModules); Modules are the files they resolved to, in load
	// order, and Absent the requested ones the kernel lacks.
	Requested []string
	Modules   []ModuleFile
	Absent    []string
	// BusyboxSHA256 is the digest of the busybox binary.
	BusyboxSHA256 [sha256.Size]byte
	// Init and Modprobe are the scripts written into the archive, so that
	// a change to the runner's own scripts never reuses a stale archive.
	Init, Modprobe string
}

// InitramfsKey names an initramfs in the cache: a digest of every input, in
// a length-prefixed encoding so that no two different inputs (moving a
// character from one field to the next, say) encode alike.
func InitramfsKey(in KeyInput) string {
	h := sha256.New()
	field := func(s string) {
		h.Write([]byte(strconv.Itoa(len(s)) + ":" + s + "\n"))
	}
	list := func(name string, xs []string) {
		field(name + " " + strconv.Itoa(len(xs)))
		for _, x := range xs {
			field(x)
		}
	}
	field("sluice-vm initramfs")
	field(in.Version)
	list("requested", in.Requested)
	field("modules " + strconv.Itoa(len(in.Modules)))
	for _, m := range in.Modules {
		field(m.Path)
		field(strconv.FormatInt(m.Size, 10) + " " + strconv.FormatInt(m.ModTime, 10))
	}
	list("absent", in.Absent)
	field(hex.EncodeToString(in.BusyboxSHA256[:]))
	field(in.Init)
	field(in.Modprobe)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// cacheName is the file name of a cached archive; all of a kernel's start
// with cachePrefix.
func cacheName(version, key string) string { return cachePrefix(version) + key + ".cpio" }

func cachePrefix(version string) string { return "initramfs-" + version + "-" }

// CachedInitramfs provides the initramfs of k at dst, a path on the same file
// system as dir (the cache, normally CacheDir): it hard-links the archive
// cached under its key, building and caching it first when there is none.
// Writing a new archive for k removes k's other archives, which older inputs
// (another kernel build, busybox or runner) made; runs that use one keep
// their own link to it.
func CachedInitramfs(k Kernel, busybox, dir, dst string) (*Initramfs, error) {
	p, err := planInitramfs(k)
	if err != nil {
		return nil, err
	}
	bb, err := readBusybox(busybox)
	if err != nil {
		return nil, err
	}
	key := InitramfsKey(KeyInput{
		Version:       k.Version,
		Requested:     append(append([]string{}, BootModules...), TestModules...),
		Modules:       p.modules,
		Absent:        p.absent,
		BusyboxSHA256: sha256.Sum256(bb),
		Init:          InitScript(k.Version, p.order),
		Modprobe:      modprobeScript,
	})
	cached := filepath.Join(dir, cacheName(k.Version, key))
	err = os.Link(cached, dst)
	if err == nil {
		return &Initramfs{Cached: true, Loaded: p.order, Absent: p.absent}, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("initramfs of %s from cache: %w", k.Version, err)
	}
	ir, err := p.build(bb)
	if err != nil {
		return nil, err
	}
	if err := writeCache(dir, cached, ir.Archive); err != nil {
		return nil, fmt.Errorf("cache initramfs of %s: %w", k.Version, err)
	}
	if err := os.Link(cached, dst); err != nil {
		return nil, fmt.Errorf("initramfs of %s from cache: %w", k.Version, err)
	}
	pruneCache(dir, k.Version, filepath.Base(cached))
	ir.Archive = nil
	return ir, nil
}

// writeCache writes an archive under its final name atomically: runs
// building the same archive at once each rename a complete file into place.
func writeCache(dir, name string, data []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Chmod(0o644), f.Close()); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), name); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

// pruneCache removes a kernel's archives other than keep. It is best effort:
// a leftover file costs disk space, not correctness.
func pruneCache(dir, version, keep string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	prefix := cachePrefix(version)
	for _, e := range ents {
		name := e.Name()
		// What follows the prefix must be a key alone: another version
		// that starts with this one and a dash ("6.1.0-5" and
		// "6.1.0-5-cloud-amd64") leaves more than that.
		if name == keep || !strings.HasPrefix(name, prefix) || !isHexKey(strings.TrimSuffix(name[len(prefix):], ".cpio")) {
			continue
		}
		os.Remove(filepath.Join(dir, name))
	}
}

func isHexKey(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}
