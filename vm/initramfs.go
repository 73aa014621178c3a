package vm

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// BootModules are the modules the guest needs to reach the shared root:
// virtio over PCI and virtiofs. Kernels that build them in (6.12) need none.
var BootModules = []string{"virtio_pci", "virtiofs"}

// TestModules are the modules the tests use, loaded in the guest before the
// command runs when the kernel has them (the host kernel lacks FOU and the
// tunnels; a guest may lack some too, which the tests detect themselves).
// Others load on demand through the guest's modprobe.
var TestModules = []string{"veth", "fou", "fou6", "ipip", "ip6_tunnel", "sit", "cls_bpf", "sch_ingress"}

// ShareTag is the virtiofs tag of the host root.
const ShareTag = "hostroot"

// ResultMarker starts the line, written on the result port after the
// command's output, that carries the command's exit status.
const ResultMarker = "SLUICE-VM-EXIT "

// Initramfs describes a built initramfs.
type Initramfs struct {
	// Archive is the newc cpio, uncompressed; BuildInitramfs sets it.
	Archive []byte
	// Cached says that CachedInitramfs found the archive already built.
	Cached bool
	Loaded []string // module files, in load order
	Absent []string // requested test modules the kernel has neither as module nor built in
}

// initramfsPlan is what an initramfs for a kernel is made of, resolved
// without reading the modules themselves: enough to name it in the cache.
type initramfsPlan struct {
	kernel  Kernel
	order   []string // module files relative to kernel.Modules, in load order
	absent  []string
	modules []ModuleFile
}

// planInitramfs resolves the boot and test modules of k with the kernel's
// own modules.dep and modules.builtin.
func planInitramfs(k Kernel) (*initramfsPlan, error) {
	md, builtin, err := loadModuleTree(k.Modules)
	if err != nil {
		return nil, err
	}
	order, missing := md.Resolve(append(append([]string{}, BootModules...), TestModules...))
	p := &initramfsPlan{kernel: k, order: order}
	for _, m := range missing {
		if builtin[ModuleName(m)] {
			continue
		}
		for _, b := range BootModules {
			if ModuleName(b) == ModuleName(m) {
				return nil, fmt.Errorf("kernel %s has %s neither built in nor as a module: the guest cannot reach the shared root", k.Version, m)
			}
		}
		p.absent = append(p.absent, m)
	}
	for _, f := range order {
		st, err := os.Stat(filepath.Join(k.Modules, f))
		if err != nil {
			return nil, fmt.Errorf("kernel %s: module %w", k.Version, err)
		}
		p.modules = append(p.modules, ModuleFile{Path: f, Size: st.Size(), ModTime: st.ModTime().UnixNano()})
	}
	return p, nil
}

// BuildInitramfs builds the guest's initramfs for k: a static busybox, the
// boot and test modules with their dependencies (decompressed), /init and a
// /sbin/modprobe that forwards module requests into the shared root, where
// the kernel's whole module tree is. Nothing in it depends on the command
// to run: /init finds its script on the kernel command line (see
// InitScript), so one archive serves every run on k (see CachedInitramfs).
func BuildInitramfs(k Kernel, busybox string) (*Initramfs, error) {
	p, err := planInitramfs(k)
	if err != nil {
		return nil, err
	}
	bb, err := readBusybox(busybox)
	if err != nil {
		return nil, err
	}
	return p.build(bb)
}

// readBusybox reads the busybox binary after checking that it is static.
func readBusybox(busybox string) ([]byte, error) {
	if err := checkStatic(busybox); err != nil {
		return nil, err
	}
	return os.ReadFile(busybox)
}

func (p *initramfsPlan) build(bb []byte) (*Initramfs, error) {
	k := p.kernel
	entries := []CPIOEntry{
		{Name: "bin", Mode: ModeDir | 0o755},
		{Name: "sbin", Mode: ModeDir | 0o755},
		{Name: "dev", Mode: ModeDir | 0o755},
		{Name: "dev/console", Mode: ModeCharDev | 0o600, RdevMajor: 5, RdevMinor: 1},
		{Name: "proc", Mode: ModeDir | 0o755},
		{Name: "sys", Mode: ModeDir | 0o755},
		{Name: "newroot", Mode: ModeDir | 0o755},
		{Name: "bin/busybox", Mode: ModeRegular | 0o755, Data: bb},
		{Name: "bin/sh", Mode: ModeSymlink | 0o777, Data: []byte("busybox")},
		{Name: "init", Mode: ModeRegular | 0o755, Data: []byte(InitScript(k.Version, p.order))},
		{Name: "sbin/modprobe", Mode: ModeRegular | 0o755, Data: []byte(modprobeScript)},
	}
	dirs := map[string]bool{}
	var mods []CPIOEntry
	for _, f := range p.order {
		dst := path.Join("lib/modules", k.Version, strings.TrimSuffix(strings.TrimSuffix(f, ".xz"), ".zst"))
		dst = strings.TrimSuffix(dst, ".gz")
		for d := path.Dir(dst); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
		data, err := readModule(filepath.Join(k.Modules, f))
		if err != nil {
			return nil, err
		}
		mods = append(mods, CPIOEntry{Name: dst, Mode: ModeRegular | 0o644, Data: data})
	}
	// Parent directories first: the kernel does not create them.
	var dirEntries []CPIOEntry
	for d := range dirs {
		dirEntries = append(dirEntries, CPIOEntry{Name: d, Mode: ModeDir | 0o755})
	}
	sortEntries(dirEntries)
	entries = append(entries, dirEntries...)
	entries = append(entries, mods...)

	var buf bytes.Buffer
	if err := WriteCPIO(&buf, entries); err != nil {
		return nil, err
	}
	return &Initramfs{Archive: buf.Bytes(), Loaded: p.order, Absent: p.absent}, nil
}

func sortEntries(es []CPIOEntry) {
	// Shorter paths first puts every parent before its children.
	for i := 1; i < len(es); i++ {
		for j := i; j > 0 && (len(es[j].Name) < len(es[j-1].Name) ||
			len(es[j].Name) == len(es[j-1].Name) && es[j].Name < es[j-1].Name); j-- {
			es[j], es[j-1] = es[j-1], es[j]
		}
	}
}

func loadModuleTree(dir string) (*ModuleDeps, map[string]bool, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	md, err := ParseModulesDep(f)
	if err != nil {
		return nil, nil, err
	}
	builtin := map[string]bool{}
	if bf, err := os.Open(filepath.Join(dir, "modules.builtin")); err == nil {
		defer bf.Close()
		if builtin, err = ParseModulesBuiltin(bf); err != nil {
			return nil, nil, err
		}
	}
	return md, builtin, nil
}

// readModule returns a module file's contents, decompressed: busybox's
// insmod loads plain ELF only (6.12's modules are .ko.xz).
func readModule(p string) ([]byte, error) {
	switch {
	case strings.HasSuffix(p, ".xz"):
		return runDecompressor(p, "xz")
	case strings.HasSuffix(p, ".zst"):
		return runDecompressor(p, "zstd")
	case strings.HasSuffix(p, ".gz"):
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		return io.ReadAll(zr)
	default:
		return os.ReadFile(p)
	}
}

func runDecompressor(p, tool string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(tool, "-dc", p)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("decompress %s with %s: %v: %s", p, tool, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// checkStatic refuses a dynamically linked busybox: the initramfs has no
// libc. (Debian's busybox package is dynamic, busybox-static is not.)
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("busybox %s: %w (install busybox-static)", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New("busybox " + p + " is dynamically linked; install busybox-static")
		}
	}
	return nil
}

// modprobeScript is the initramfs's /sbin/modprobe, which the kernel runs to
// autoload a module (from its own root, the initramfs): it runs the shared
// root's modprobe, which sees the kernel's full module tree.
const modprobeScript = `#!/bin/sh
exec /bin/busybox chroot /newroot /sbin/modprobe "$@"
`
