package vm

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestInitramfsKey(t *testing.T) {
	base := func() KeyInput {
		return KeyInput{
			Version:   "6.1.0-56-cloud-amd64",
			Requested: []string{"virtio_pci", "virtiofs", "fou"},
			Modules: []ModuleFile{
				{Path: "kernel/fs/fuse/fuse.ko", Size: 100, ModTime: 1},
				{Path: "kernel/fs/fuse/virtiofs.ko", Size: 200, ModTime: 2},
			},
			Absent:        []string{"sit"},
			BusyboxSHA256: sha256.Sum256([]byte("busybox")),
			Init:          "#!/bin/sh\n",
			Modprobe:      "#!/bin/sh\nexec x\n",
		}
	}
	k0 := InitramfsKey(base())
	if k1 := InitramfsKey(base()); k1 != k0 {
		t.Fatalf("same input, different keys %s and %s", k0, k1)
	}
	if !isHexKey(k0) {
		t.Errorf("key %q is not 32 hex digits", k0)
	}
	changes := map[string]func(*KeyInput){
		"version":             func(in *KeyInput) { in.Version = "6.1.0-57-cloud-amd64" },
		"requested module":    func(in *KeyInput) { in.Requested = append(in.Requested, "veth") },
		"module file":         func(in *KeyInput) { in.Modules[0].Path = "kernel/fs/fuse/fuse2.ko" },
		"module size":         func(in *KeyInput) { in.Modules[1].Size++ },
		"module time":         func(in *KeyInput) { in.Modules[1].ModTime++ },
		"module order":        func(in *KeyInput) { in.Modules[0], in.Modules[1] = in.Modules[1], in.Modules[0] },
		"absent module":       func(in *KeyInput) { in.Absent = nil },
		"busybox":             func(in *KeyInput) { in.BusyboxSHA256[0] ^= 1 },
		"init script":         func(in *KeyInput) { in.Init += "echo\n" },
		"modprobe script":     func(in *KeyInput) { in.Modprobe += "\n" },
		"field boundary":      func(in *KeyInput) { in.Requested = []string{"virtio_pcivirtiofs", "fou"} },
		"requested to absent": func(in *KeyInput) { in.Requested, in.Absent = in.Requested[:2], []string{"fou", "sit"} },
	}
	seen := map[string]string{k0: "base"}
	for name, change := range changes {
		in := base()
		change(&in)
		k := InitramfsKey(in)
		if prev, dup := seen[k]; dup {
			t.Errorf("%s: key %s equals the key of %s", name, k, prev)
		}
		seen[k] = name
	}
}

// fakeKernel writes a module tree for version under root: the boot modules
// and veth, as plain .ko files whose contents name them.
func fakeKernel(t *testing.T, root, version string) Kernel {
	t.Helper()
	dir := filepath.Join(root, "lib/modules", version)
	dep := "kernel/drivers/virtio/virtio_pci.ko:\n" +
		"kernel/fs/fuse/fuse.ko:\n" +
		"kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko\n" +
		"kernel/drivers/net/veth.ko:\n"
	for _, line := range strings.Split(strings.TrimSpace(dep), "\n") {
		f, _, _ := strings.Cut(line, ":")
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("module "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	return Kernel{Version: version, Image: filepath.Join(root, "boot/vmlinuz-"+version), Modules: dir}
}

// fakeBusybox writes an ELF file without an interpreter, which is what the
// runner checks a static busybox by.
func fakeBusybox(t *testing.T, path string, tag byte) {
	t.Helper()
	var h elf.Header64
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	h.Type, h.Machine, h.Version = uint16(elf.ET_EXEC), uint16(elf.EM_X86_64), uint32(elf.EV_CURRENT)
	h.Ehsize = uint16(binary.Size(h))
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, &h); err != nil {
		t.Fatal(err)
	}
	b.WriteByte(tag)
	if err := os.WriteFile(path, b.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestCachedInitramfs checks that the first run builds the archive and
// caches it, that later runs link the same file instead of building again,
// that a change to a module or to busybox builds a new archive and removes
// the kernel's old one, and that another kernel's archives stay.
func TestCachedInitramfs(t *testing.T) {
	root := t.TempDir()
	cache := filepath.Join(root, "cache")
	k := fakeKernel(t, root, "6.1.0-5")
	other := fakeKernel(t, root, "6.1.0-5-cloud")
	bb := filepath.Join(root, "busybox")
	fakeBusybox(t, bb, 1)

	n := 0
	get := func(k Kernel) (*Initramfs, string) {
		t.Helper()
		n++
		dst := filepath.Join(root, "run"+string(rune('a'+n)), "initrd.cpio")
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		ir, err := CachedInitramfs(k, bb, cache, dst)
		if err != nil {
			t.Fatal(err)
		}
		return ir, dst
	}
	cached := func(k Kernel) []string {
		t.Helper()
		m, err := filepath.Glob(filepath.Join(cache, cachePrefix(k.Version)+"*.cpio"))
		if err != nil {
			t.Fatal(err)
		}
		var own []string
		for _, p := range m {
			if isHexKey(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), cachePrefix(k.Version)), ".cpio")) {
				own = append(own, p)
			}
		}
		return own
	}
	sameAsBuilt := func(dst string) {
		t.Helper()
		want, err := BuildInitramfs(k, bb)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Archive) {
			t.Errorf("%s: %d bytes differ from a fresh build (%d bytes)", dst, len(got), len(want.Archive))
		}
	}

	ir, dst1 := get(k)
	if ir.Cached {
		t.Errorf("first run: found in an empty cache")
	}
	if want := []string{"kernel/drivers/virtio/virtio_pci.ko", "kernel/fs/fuse/fuse.ko", "kernel/fs/fuse/virtiofs.ko", "kernel/drivers/net/veth.ko"}; strings.Join(ir.Loaded, " ") != strings.Join(want, " ") {
		t.Errorf("loaded %v, want %v", ir.Loaded, want)
	}
	sameAsBuilt(dst1)
	get(other)

	ir, dst2 := get(k)
	if !ir.Cached {
		t.Errorf("second run: built again")
	}
	entries := cached(k)
	if len(entries) != 1 {
		t.Fatalf("cache holds %v for %s, want one archive", entries, k.Version)
	}
	for _, dst := range []string{dst1, dst2} {
		if !sameFile(t, dst, entries[0]) {
			t.Errorf("%s is not a link to the cached %s", dst, entries[0])
		}
	}

	// Another build of the kernel package under the same version: a
	// module's size changes.
	mod := filepath.Join(k.Modules, "kernel/drivers/net/veth.ko")
	if err := os.WriteFile(mod, []byte("module veth, rebuilt"), 0o644); err != nil {
		t.Fatal(err)
	}
	ir, dst3 := get(k)
	if ir.Cached {
		t.Errorf("after a module changed: the old archive was used")
	}
	sameAsBuilt(dst3)
	if e := cached(k); len(e) != 1 || e[0] == entries[0] {
		t.Errorf("after a module changed the cache holds %v, want one archive other than %s", e, entries[0])
	}
	if b, err := os.ReadFile(dst1); err != nil || !bytes.Contains(b, []byte("module kernel/drivers/net/veth.ko")) {
		t.Errorf("an earlier run's link lost its archive: %v", err)
	}

	fakeBusybox(t, bb, 2)
	if ir, _ := get(k); ir.Cached {
		t.Errorf("after busybox changed: the old archive was used")
	}
	if e := cached(other); len(e) != 1 {
		t.Errorf("kernel %s's archives %v were touched by %s's", other.Version, e, k.Version)
	}
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	sa, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(sa, sb)
}

// TestInitFindsScript runs the part of /init that reads the script's path
// from the kernel command line in a real shell, with a file standing in for
// /proc/cmdline.
func TestInitFindsScript(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("a shell to run /init's parsing in: %v", err)
	}
	in := InitScript("6.12.1+deb12-cloud-amd64", nil)
	start, end := strings.Index(in, "script=\n"), strings.Index(in, "R=/newroot")
	if start < 0 || end < start {
		t.Fatalf("init has no command-line parsing:\n%s", in)
	}
	cmdline := filepath.Join(t.TempDir(), "cmdline")
	part := strings.ReplaceAll(in[start:end], "/proc/cmdline", cmdline)
	const path = "/var/tmp/sluice-vm/run-6.12.1+deb12-cloud-amd64-42/run.sh"
	for _, c := range []struct{ cmdline, want string }{
		{"console=ttyS0 panic=-1 " + ScriptParam + "=" + path + " random.trust_cpu=on\n", path + "\n"},
		{"console=ttyS0 " + ScriptParam + "=" + path + "\n", path + "\n"},
		{"console=ttyS0\n", "died: no " + ScriptParam + "= on the kernel command line\n"},
	} {
		if err := os.WriteFile(cmdline, []byte(c.cmdline), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sh, "-c", `die() { echo "died: $*"; exit 0; }`+"\n"+part+`echo "$script"`).CombinedOutput()
		if err != nil || string(out) != c.want {
			t.Errorf("command line %q: got %q (%v), want %q", c.cmdline, out, err, c.want)
		}
	}
}

func TestQEMUArgs(t *testing.T) {
	args, err := QEMUArgs("tcg", "/boot/vmlinuz", "/r/initrd.cpio", "/r/fs.sock", "/r/console.log", "/r/run.sh", 2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(args, " ")
	for _, want := range []string{"-accel tcg -cpu max", "-m 2048M", "size=2048M,share=on", "-initrd /r/initrd.cpio", "rdinit=/init random.trust_cpu=on " + ScriptParam + "=/r/run.sh"} {
		if !strings.Contains(joined, want) {
			t.Errorf("qemu arguments lack %q: %s", want, joined)
		}
	}
	for _, bad := range []string{"", "/r/run dir/run.sh", "/r/it's.sh"} {
		if _, err := QEMUArgs("tcg", "/boot/vmlinuz", "/r/i", "/r/s", "/r/c", bad, 2048, 2); err == nil {
			t.Errorf("script path %q accepted on the kernel command line", bad)
		}
	}
}
