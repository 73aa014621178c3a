#!/usr/bin/env bash
# Installs what building, testing and benchmarking Sluice needs on Debian 12,
# then fetches the Go modules. Idempotent: when everything is present it only
# looks and prints "deps: all present".
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

# clang/llvm/libbpf-dev/linux-libc-dev: building BPF (bpf2go needs clang and
# llvm-strip). The rest are real peers and tools used by tests and benchmarks.
packages=(
	clang llvm libbpf-dev linux-libc-dev
	iproute2 ethtool bpftool tcpdump tshark
	nfdump bird2
)

installed_any=0

missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	[[ $status == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
	if ((EUID != 0)); then
		echo "deps: missing Debian packages (${missing[*]}); run as root" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	# tshark: do not ask whether non-root users may capture.
	echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
	# Packages like bird2 and nfdump ship services; the tests start these
	# programs themselves inside namespaces, so keep apt from starting them.
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	apt-get update -qq </dev/null >/dev/null
	apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
	for p in "${missing[@]}"; do echo "deps: installed $p"; done
	installed_any=1
fi

if ! command -v go >/dev/null; then
	echo "deps: go not found (expected Go 1.26 at /usr/local/go/bin)" >&2
	exit 1
fi
# Offline first: succeeds without network when the module cache is complete.
if ! GOPROXY=off go mod download >/dev/null 2>&1; then
	go mod download
	echo "deps: downloaded go modules"
	installed_any=1
fi

if ((installed_any == 0)); then
	echo "deps: all present"
fi
