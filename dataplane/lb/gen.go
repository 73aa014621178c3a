package lb

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type vip_key -type vip_meta -type real_def -type lb_config -type lb_traffic lb ../../bpf/lb.bpf.c -- -I../../bpf/include
