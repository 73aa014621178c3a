package chain

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel chain ../../bpf/chain.bpf.c -- -I../../bpf/include
//go:generate go tool bpf2go -output-dir internal/testprog -go-package testprog -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel Members ../../bpf/testdata/chain_members.bpf.c -- -I../../bpf/include
