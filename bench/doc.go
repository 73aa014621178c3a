// Package bench measures the per-packet cost of XDP and TC programs, and the
// request rate of the direct server return path.
//
// Every number it reports is relative: a program is timed with BPF_PROG_RUN in
// live-frames mode on a veth inside a throw-away network namespace, interleaved
// batch by batch with an empty program that returns the same verdict, and the
// report gives the difference and the ratio of the two. Absolute timings on the
// shared, virtualised machines this project runs on drift too much to compare
// across runs; drift inside one run hits both sides of a pair alike.
//
// TC programs have no live-frames mode: [CompareTC] runs them once per
// syscall and averages the kernel's duration over many calls, alternating
// with an empty TC program. [CompareDSR] compares HTTP requests per second
// through the load balancer and the backend agent with the same client and
// server talking directly.
//
// The entry points are [Compare] (numbers only) and [Run] (numbers, progress
// lines and the files under an output directory), and [RunSuite] for XDP, TC
// and DSR measurements in one report. [Lab] and [Lab.Measure] are the
// building blocks for callers that want a single program timed.
package bench
