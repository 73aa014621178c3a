#!/usr/bin/env bash
# Mounts the BPF filesystem at /sys/fs/bpf if it is not mounted yet (the
# host kernel does not mount it by default; pinning maps and links needs it).
set -euo pipefail
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
