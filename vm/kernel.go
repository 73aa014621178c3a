package vm

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Kernel is an installed kernel the runner can boot.
type Kernel struct {
	Version string // uname -r, e.g. "6.1.0-56-cloud-amd64"
	Image   string // /boot/vmlinuz-<Version>
	Modules string // /lib/modules/<Version>
}

// FindKernel returns the newest installed kernel whose version starts with
// series as whole numbers: "6.1" matches 6.1.0-56-cloud-amd64 but not
// 6.12.117+deb12-cloud-amd64. It needs both the image in bootDir and the
// module tree in modulesDir (normally /boot and /lib/modules).
func FindKernel(series, bootDir, modulesDir string) (Kernel, error) {
	images, err := filepath.Glob(filepath.Join(bootDir, "vmlinuz-*"))
	if err != nil {
		return Kernel{}, err
	}
	var found []string
	for _, img := range images {
		v := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		if !MatchSeries(series, v) {
			continue
		}
		if st, err := os.Stat(filepath.Join(modulesDir, v, "modules.dep")); err != nil || !st.Mode().IsRegular() {
			continue
		}
		found = append(found, v)
	}
	if len(found) == 0 {
		return Kernel{}, fmt.Errorf("no kernel %s installed (need %s/vmlinuz-%s* and %s/<version>/modules.dep; run scripts/vm-deps.sh)",
			series, bootDir, series, modulesDir)
	}
	slices.SortFunc(found, compareVersions)
	v := found[len(found)-1]
	return Kernel{
		Version: v,
		Image:   filepath.Join(bootDir, "vmlinuz-"+v),
		Modules: filepath.Join(modulesDir, v),
	}, nil
}

// MatchSeries reports whether kernel version v belongs to series, compared
// number by number: the series' last number must not be a prefix of a longer
// number in v.
func MatchSeries(series, v string) bool {
	if series == "" || !strings.HasPrefix(v, series) {
		return false
	}
	rest := v[len(series):]
	return rest == "" || rest[0] < '0' || rest[0] > '9'
}

// compareVersions orders kernel versions the way `sort -V` does for the
// shapes Debian uses: runs of digits compare as numbers, other runs as text.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		ra, na := versionRun(a)
		rb, nb := versionRun(b)
		a, b = a[len(ra):], b[len(rb):]
		if na && nb {
			x, _ := strconv.ParseUint(ra, 10, 64)
			y, _ := strconv.ParseUint(rb, 10, 64)
			if x != y {
				if x < y {
					return -1
				}
				return 1
			}
			continue
		}
		if c := strings.Compare(ra, rb); c != 0 {
			return c
		}
	}
	return strings.Compare(a, b)
}

func versionRun(s string) (string, bool) {
	digit := s[0] >= '0' && s[0] <= '9'
	i := 1
	for i < len(s) && (s[i] >= '0' && s[i] <= '9') == digit {
		i++
	}
	return s[:i], digit
}
