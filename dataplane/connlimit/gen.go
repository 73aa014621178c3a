package connlimit

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type cl_limit -type cl_sock -type cl_seed_arg -type cl_flow -type cl_pending connlimit ../../bpf/connlimit.bpf.c -- -I../../bpf/include
