package agent

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type backend_key -type agent_vip_key -type agent_vip -type conn_key -type conn_state -type agent_config agent ../../bpf/agent.bpf.c -- -I../../bpf/include
