/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Program chaining: the member side.
 *
 * A chain is a root program (bpf/chain.bpf.c) that tail-calls the configured
 * programs one after the other. A member includes this header and, where it
 * would let a packet through, returns chain_next(ctx, XDP_PASS) (TC:
 * TC_ACT_OK) instead. Any other return ends the chain with that verdict.
 *
 * The member is loaded with its chain_progs and chain_cursor replaced by the
 * chain's (see dataplane/chain, Chain.MemberMaps). Loaded on its own, its
 * copies of these maps stay empty: the tail call fails and chain_next returns
 * the verdict, so the program behaves exactly as without the chain. */
#ifndef SLUICE_CHAIN_H
#define SLUICE_CHAIN_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Programs per chain. */
#define CHAIN_SLOTS 8
/* Regions of chain_progs. A new chain is written into the next region and
 * switched to with one update of the root's active index, so a packet that
 * started in the old region finishes there. */
#define CHAIN_GENERATIONS 8

/* Where the running packet is in the chain: chain_progs[base + pos] is the
 * program running now. */
struct chain_cursor {
	__u32 base;
	__u32 pos;
};

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, CHAIN_SLOTS * CHAIN_GENERATIONS);
	__type(key, __u32);
	__type(value, __u32);
} chain_progs SEC(".maps");

/* Per-CPU and not per-packet, which is safe because an XDP or TC program,
 * with every program it tail-calls, runs to completion on one CPU with
 * preemption and bottom halves disabled: no other packet can run on this
 * CPU between the root writing the cursor and the next member reading it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct chain_cursor);
} chain_cursor SEC(".maps");

/* chain_next hands the packet to the next program of the chain. It returns
 * only when there is none (this program is the last one, or it runs
 * standalone), and then returns verdict, which is the chain's verdict. */
static __always_inline int chain_next(void *ctx, int verdict)
{
	__u32 zero = 0;
	struct chain_cursor *c = bpf_map_lookup_elem(&chain_cursor, &zero);

	if (!c)
		return verdict;
	/* The last slot of a region has no successor; without this check the
	 * tail call would run the first program of the next region. */
	if (c->pos + 1 >= CHAIN_SLOTS)
		return verdict;
	c->pos++;
	bpf_tail_call(ctx, &chain_progs, c->base + c->pos);
	return verdict;
}

#endif
