// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Sluice chain root: runs the configured programs of one hook in order.
 *
 * chain_progs holds CHAIN_GENERATIONS regions of CHAIN_SLOTS programs. The
 * control plane writes a new chain into a region nobody runs and switches to
 * it by writing the region's index into chain_active, one map update. The
 * root reads that index once per packet and sends the packet through that
 * region only: each member continues with chain_next (chain.h), which stays
 * inside the region the root chose. A packet therefore runs either the whole
 * old chain or the whole new one, and never skips a program that both hold.
 *
 * One object holds the XDP and the TC root; a chain loads only the root of
 * its hook, because a program array serves programs of one type only. */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "chain.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Counters of the root, beside the per-region packet counts. */
enum chain_stat {
	CHAIN_STAT_EMPTY,            /* passed: the active chain has no program */
	CHAIN_STAT_TAIL_CALL_FAILED, /* passed: the first program of a non-empty chain was missing */
	CHAIN_STAT_BAD_REGION,       /* passed: chain_active names no region */
	CHAIN_STAT_MAX,
};

enum chain_stat btf_anchor_chain_stat __attribute__((unused));

/* The index of the region that new packets run: the one map update that
 * switches chains. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} chain_active SEC(".maps");

/* The number of programs in each region, written before the region becomes
 * active, so that the root tells an empty chain from a failed tail call. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CHAIN_GENERATIONS);
	__type(key, __u32);
	__type(value, __u32);
} chain_lens SEC(".maps");

/* Packets that entered the root, per region they ran in. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CHAIN_GENERATIONS);
	__type(key, __u32);
	__type(value, __u64);
} chain_region_packets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CHAIN_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} chain_stats SEC(".maps");

static __always_inline void count(void *map, __u32 key)
{
	__u64 *v = bpf_map_lookup_elem(map, &key);

	if (v)
		(*v)++;
}

static __always_inline int chain_root(void *ctx, int pass)
{
	__u32 zero = 0;
	__u32 *active = bpf_map_lookup_elem(&chain_active, &zero);
	struct chain_cursor *cur;
	__u32 region, *len;

	if (!active)
		return pass;
	/* Read once: the control plane may switch between two reads. */
	region = *(volatile __u32 *)active;
	if (region >= CHAIN_GENERATIONS) {
		count(&chain_stats, CHAIN_STAT_BAD_REGION);
		return pass;
	}
	count(&chain_region_packets, region);
	len = bpf_map_lookup_elem(&chain_lens, &region);
	if (!len || *len == 0) {
		count(&chain_stats, CHAIN_STAT_EMPTY);
		return pass;
	}
	cur = bpf_map_lookup_elem(&chain_cursor, &zero);
	if (!cur)
		return pass;
	cur->base = region * CHAIN_SLOTS;
	cur->pos = 0;
	bpf_tail_call(ctx, &chain_progs, cur->base);
	count(&chain_stats, CHAIN_STAT_TAIL_CALL_FAILED);
	return pass;
}

SEC("xdp")
int chain_xdp(struct xdp_md *ctx)
{
	return chain_root(ctx, XDP_PASS);
}

SEC("tc")
int chain_tc(struct __sk_buff *skb)
{
	return chain_root(skb, TC_ACT_OK);
}
