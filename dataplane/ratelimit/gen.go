package ratelimit

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type rl_config -type rl_src_key ratelimit ../../bpf/ratelimit.bpf.c -- -I../../bpf/include
