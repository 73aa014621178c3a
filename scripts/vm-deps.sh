#!/usr/bin/env bash
# Installs what the kernel-matrix runner (vm/) needs on Debian 12: qemu,
# busybox-static, a virtiofs daemon, xz and zstd (6.12's modules are .ko.xz),
# iproute2 (the interop test configures fou with `ip`), and the newest Debian
# cloud kernel of each series in the matrix (6.1 and 6.12, both from
# bookworm-security on Debian 12). Idempotent: when everything is present it
# only looks and prints "vm-deps: all present". On a machine without the
# kernels it installs them, which also runs their initramfs hooks.
#
# The kernels are installed for booting under qemu only. Nothing here runs
# update-grub itself, but the packages' own hooks run as for any kernel
# package: initramfs-tools and, where grub is installed, zz-update-grub, which
# lists the new kernels in the boot menu (on Debian the newest becomes the
# default at the next reboot; set GRUB_DEFAULT on a machine where that matters).
#
# Usage: scripts/vm-deps.sh [series...]   (default: 6.1 6.12)
# VM_DEPS_UPGRADE=1 installs the newest kernel of a series even when an older
# one of that series is already installed.
set -euo pipefail

series=("$@")
((${#series[@]})) || series=(6.1 6.12)

is_installed() {
	local s
	s=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)
	[[ $s == "install ok installed" ]]
}

# Regex of the package names of a kernel series, e.g. 6.1 ->
# linux-image-6.1.0-NN-cloud-amd64, 6.12 -> linux-image-6.12.NN+deb12-cloud-amd64.
series_regex() {
	local v=${1//./\\.}
	case $1 in
	*.*.*) echo "^linux-image-${v}[-+.].*-cloud-amd64$" ;;
	*) echo "^linux-image-${v}\.[0-9][^ ]*-cloud-amd64$" ;;
	esac
}

missing=()
for p in qemu-system-x86 busybox-static xz-utils zstd iproute2; do
	is_installed "$p" || missing+=("$p")
done

# virtiofsd: a package of its own on newer Debian; on Debian 12 (qemu 7.2) the
# C daemon ships in qemu-system-common as /usr/lib/qemu/virtiofsd.
find_virtiofsd() {
	local c
	for c in /usr/libexec/virtiofsd /usr/lib/qemu/virtiofsd /usr/bin/virtiofsd; do
		[[ -x $c ]] && { echo "$c"; return 0; }
	done
	return 1
}

need_update=1
apt_update() {
	if ((need_update)); then
		apt-get update -qq </dev/null >/dev/null
		need_update=0
	fi
}

kernels=()
declare -A have_series=()
for s in "${series[@]}"; do
	re=$(series_regex "$s")
	inst=$(dpkg-query -W -f='${Status} ${Package}\n' 'linux-image-*' 2>/dev/null |
		awk '$1=="install" && $3=="installed" {print $4}' | grep -E "$re" | sort -V | tail -n1 || true)
	if [[ -n $inst && ${VM_DEPS_UPGRADE:-0} != 1 ]]; then
		have_series[$s]=$inst
		continue
	fi
	kernels+=("$s")
done

if ((${#missing[@]} == 0 && ${#kernels[@]} == 0)) && find_virtiofsd >/dev/null; then
	echo "vm-deps: all present"
	for s in "${series[@]}"; do echo "vm-deps: $s -> ${have_series[$s]}"; done
	echo "vm-deps: virtiofsd -> $(find_virtiofsd)"
	exit 0
fi

if ((EUID != 0)); then
	echo "vm-deps: missing packages or kernels (${missing[*]} ${kernels[*]}); run as root" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive

if ! find_virtiofsd >/dev/null; then
	apt_update
	if apt-cache show virtiofsd >/dev/null 2>&1; then
		missing+=(virtiofsd)
	else
		missing+=(qemu-system-common)
	fi
fi

for s in "${kernels[@]}"; do
	apt_update
	re=$(series_regex "$s")
	pkg=$(apt-cache search --names-only "$re" | awk '{print $1}' | grep -E "$re" | sort -V | tail -n1 || true)
	if [[ -z $pkg ]]; then
		echo "vm-deps: no linux-image-$s*-cloud-amd64 in this machine's apt sources; skipping $s" >&2
		continue
	fi
	is_installed "$pkg" || missing+=("$pkg")
	have_series[$s]=$pkg
done

if ((${#missing[@]})); then
	apt_update
	apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
	for p in "${missing[@]}"; do echo "vm-deps: installed $p"; done
fi

if ! v=$(find_virtiofsd); then
	echo "vm-deps: no virtiofsd found after installing" >&2
	exit 1
fi
for s in "${series[@]}"; do echo "vm-deps: $s -> ${have_series[$s]:-(not available)}"; done
echo "vm-deps: virtiofsd -> $v"
