// Package interop checks Sluice's wire formats against independent
// implementations run as real peers. Its tests are the package: there is no
// API.
//
// The Linux kernel's own decapsulation is the reference for the load
// balancer's output: a backend namespace decapsulates GUE with `fou`
// (`ip fou add port 6080 gue`) and IPIP, IP6IP6 and IPv4-in-IPv6 with
// ipip/ip6tnl devices, and an ordinary application there must receive the
// clients' traffic and answer them directly. The development host's kernel
// has neither FOU nor IP tunnels, so these tests skip there, naming what
// is missing; they run in the kernel matrix (`make vm-test`, see
// docs/kernels.md), whose Debian kernels have both.
package interop
