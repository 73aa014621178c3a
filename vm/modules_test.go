package vm

import (
	"slices"
	"strings"
	"testing"
)

// A slice of a real 6.12 modules.dep (Debian 6.12.117 cloud): fou depends on
// ip_tunnel and the UDP tunnel helpers, fou6 on fou and ip6_tunnel.
const sampleDep = `kernel/drivers/net/veth.ko.xz:
kernel/net/ipv4/ip_tunnel.ko.xz:
kernel/net/ipv4/ipip.ko.xz: kernel/net/ipv4/tunnel4.ko.xz kernel/net/ipv4/ip_tunnel.ko.xz
kernel/net/ipv4/fou.ko.xz: kernel/net/ipv4/ip_tunnel.ko.xz kernel/net/ipv6/ip6_udp_tunnel.ko.xz kernel/net/ipv4/udp_tunnel.ko.xz
kernel/net/ipv4/udp_tunnel.ko.xz:
kernel/net/ipv4/tunnel4.ko.xz:
kernel/net/ipv6/tunnel6.ko.xz:
kernel/net/ipv6/ip6_tunnel.ko.xz: kernel/net/ipv6/tunnel6.ko.xz
kernel/net/ipv6/fou6.ko.xz: kernel/net/ipv4/fou.ko.xz kernel/net/ipv6/ip6_tunnel.ko.xz kernel/net/ipv6/tunnel6.ko.xz kernel/net/ipv4/ip_tunnel.ko.xz kernel/net/ipv6/ip6_udp_tunnel.ko.xz kernel/net/ipv4/udp_tunnel.ko.xz
kernel/net/ipv6/ip6_udp_tunnel.ko.xz:
kernel/net/sched/cls_bpf.ko.xz:
kernel/drivers/net/some-thing.ko:
`

func TestResolveOrder(t *testing.T) {
	md, err := ParseModulesDep(strings.NewReader(sampleDep))
	if err != nil {
		t.Fatal(err)
	}
	order, missing := md.Resolve([]string{"fou6", "veth", "ipip", "virtiofs", "sch_ingress"})
	if want := []string{"virtiofs", "sch_ingress"}; !slices.Equal(missing, want) {
		t.Errorf("missing = %v, want %v", missing, want)
	}
	// Every module once, and every dependency (per the sample above) before
	// the modules that need it.
	pos := map[string]int{}
	for i, f := range order {
		if _, dup := pos[f]; dup {
			t.Errorf("%s listed twice in %v", f, order)
		}
		pos[f] = i
	}
	wantSet := []string{
		"kernel/net/ipv4/fou.ko.xz", "kernel/net/ipv4/ip_tunnel.ko.xz", "kernel/net/ipv4/udp_tunnel.ko.xz",
		"kernel/net/ipv6/ip6_udp_tunnel.ko.xz", "kernel/net/ipv6/ip6_tunnel.ko.xz", "kernel/net/ipv6/tunnel6.ko.xz",
		"kernel/net/ipv6/fou6.ko.xz", "kernel/drivers/net/veth.ko.xz", "kernel/net/ipv4/ipip.ko.xz",
		"kernel/net/ipv4/tunnel4.ko.xz",
	}
	if len(order) != len(wantSet) {
		t.Errorf("order has %d files, want %d: %v", len(order), len(wantSet), order)
	}
	for _, f := range wantSet {
		if _, ok := pos[f]; !ok {
			t.Errorf("%s not in %v", f, order)
		}
	}
	before := [][2]string{
		{"ip_tunnel", "fou"}, {"udp_tunnel", "fou"}, {"ip6_udp_tunnel", "fou"},
		{"fou", "fou6"}, {"ip6_tunnel", "fou6"}, {"tunnel6", "ip6_tunnel"},
		{"tunnel4", "ipip"}, {"ip_tunnel", "ipip"},
	}
	for _, b := range before {
		dep, _ := md.File(b[0])
		mod, _ := md.File(b[1])
		if pos[dep] >= pos[mod] {
			t.Errorf("%s loads at %d, after %s at %d", b[0], pos[dep], b[1], pos[mod])
		}
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/net/ipv4/fou.ko.xz":     "fou",
		"kernel/drivers/net/veth.ko":    "veth",
		"kernel/x/some-thing.ko.zst":    "some_thing",
		"cls-bpf":                       "cls_bpf",
		"kernel/fs/fuse/virtiofs.ko.gz": "virtiofs",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
	md, err := ParseModulesDep(strings.NewReader(sampleDep))
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := md.File("some_thing"); !ok || f != "kernel/drivers/net/some-thing.ko" {
		t.Errorf("File(some_thing) = %q, %v", f, ok)
	}
}

func TestParseModulesDepRejectsGarbage(t *testing.T) {
	if _, err := ParseModulesDep(strings.NewReader("kernel/a.ko:\nno colon here\n")); err == nil {
		t.Fatal("no error for a line without ':'")
	}
}

func TestParseModulesBuiltin(t *testing.T) {
	set, err := ParseModulesBuiltin(strings.NewReader("kernel/fs/fuse/virtiofs.ko\nkernel/drivers/virtio/virtio_pci.ko\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !set["virtiofs"] || !set["virtio_pci"] || set["veth"] {
		t.Errorf("builtin set = %v", set)
	}
}

func TestMatchSeriesAndNewest(t *testing.T) {
	for _, c := range []struct {
		series, v string
		want      bool
	}{
		{"6.1", "6.1.0-56-cloud-amd64", true},
		{"6.1", "6.12.117+deb12-cloud-amd64", false},
		{"6.12", "6.12.117+deb12-cloud-amd64", true},
		{"6.12", "6.1.0-56-cloud-amd64", false},
		{"6.1.0-56", "6.1.0-56-cloud-amd64", true},
		{"6.1.0-5", "6.1.0-56-cloud-amd64", false},
		{"", "6.1.0", false},
	} {
		if got := MatchSeries(c.series, c.v); got != c.want {
			t.Errorf("MatchSeries(%q, %q) = %v, want %v", c.series, c.v, got, c.want)
		}
	}
	vs := []string{"6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64", "6.1.0-10-cloud-amd64"}
	slices.SortFunc(vs, compareVersions)
	if vs[2] != "6.1.0-56-cloud-amd64" || vs[0] != "6.1.0-9-cloud-amd64" {
		t.Errorf("version order %v", vs)
	}
}
