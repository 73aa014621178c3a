// Package dataplane holds one Go package per BPF program (dataplane/lb,
// dataplane/agent, ...). Each has a gen.go whose //go:generate line runs
// bpf2go on the program's C source under bpf/, the committed bpf2go output,
// and a typed API to load the program, configure its maps, attach it and read
// its counters. Their APIs share dataplane/attach (attaching to
// interfaces), dataplane/l4 (transport protocols) and dataplane/police
// (policing actions). This package itself only carries the test that checks
// the committed bpf2go output is fresh.
package dataplane
