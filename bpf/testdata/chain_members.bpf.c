// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test members for the chain tests (dataplane/chain). Each member counts
 * itself in member_seen[id], per CPU, and, in a frame of the test Ethernet
 * type MARK_ETH_TYPE, records that it ran right after the Ethernet header:
 *
 *   payload[0..1]  bit (1 << id) set by member id (little endian)
 *   payload[2]     how many members wrote their id so far
 *   payload[3+n]   id + 1 of the n-th member that ran
 *
 * Other frames pass unchanged, so that a member can run in front of a real
 * program. Then the member continues, drops, or ends the chain, depending
 * on the member. Every member exists as an XDP and as a TC program; a test
 * loads the programs of one type only. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "chain.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define MARK_ETH_TYPE 0x88b5 /* IEEE local experimental */
#define MEMBER_IDS 16
#define MARK_ROOM (3 + MEMBER_IDS)

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MEMBER_IDS);
	__type(key, __u32);
	__type(value, __u64);
} member_seen SEC(".maps");

/* mark counts member id and records it in a test frame between data and
 * data_end. A frame too short to hold the record is left alone. */
static __always_inline void mark(__u32 id, void *data, void *data_end)
{
	struct ethhdr *eth = data;
	__u8 *p = (__u8 *)(eth + 1);
	__u32 key = id;
	__u64 *seen = bpf_map_lookup_elem(&member_seen, &key);
	__u16 bit = 1 << id;
	__u8 n, *slot;

	if (seen)
		(*seen)++;
	if ((void *)(p + MARK_ROOM) > data_end || eth->h_proto != bpf_htons(MARK_ETH_TYPE))
		return;
	p[0] |= bit & 0xff;
	p[1] |= bit >> 8;
	n = p[2];
	if (n >= MEMBER_IDS)
		return;
	/* A pointer with a variable offset needs a bounds check of its own. */
	slot = p + 3 + n;
	if ((void *)(slot + 1) > data_end)
		return;
	*slot = id + 1;
	p[2] = n + 1;
}

#define XDP_MEMBER(name, id, body)                                             \
	SEC("xdp") int xdp_##name(struct xdp_md *ctx)                           \
	{                                                                      \
		mark(id, (void *)(long)ctx->data, (void *)(long)ctx->data_end); \
		body;                                                          \
	}
#define TC_MEMBER(name, id, body)                                              \
	SEC("tc") int tc_##name(struct __sk_buff *ctx)                          \
	{                                                                      \
		mark(id, (void *)(long)ctx->data, (void *)(long)ctx->data_end); \
		body;                                                          \
	}

/* Members 0-7 pass and continue. */
XDP_MEMBER(m0, 0, return chain_next(ctx, XDP_PASS))
XDP_MEMBER(m1, 1, return chain_next(ctx, XDP_PASS))
XDP_MEMBER(m2, 2, return chain_next(ctx, XDP_PASS))
XDP_MEMBER(m3, 3, return chain_next(ctx, XDP_PASS))
XDP_MEMBER(m4, 4, return chain_next(ctx, XDP_PASS))
XDP_MEMBER(m5, 5, return chain_next(ctx, XDP_PASS))
XDP_MEMBER(m6, 6, return chain_next(ctx, XDP_PASS))
XDP_MEMBER(m7, 7, return chain_next(ctx, XDP_PASS))
/* Member 8 drops: the chain ends there. */
XDP_MEMBER(drop, 8, return XDP_DROP)
/* Member 9 passes without continuing: its verdict is final. */
XDP_MEMBER(final, 9, return XDP_PASS)
/* Member 10 would bounce the packet, unless a later member decides. */
XDP_MEMBER(tx, 10, return chain_next(ctx, XDP_TX))

TC_MEMBER(m0, 0, return chain_next(ctx, TC_ACT_OK))
TC_MEMBER(m1, 1, return chain_next(ctx, TC_ACT_OK))
TC_MEMBER(m2, 2, return chain_next(ctx, TC_ACT_OK))
TC_MEMBER(m3, 3, return chain_next(ctx, TC_ACT_OK))
TC_MEMBER(m4, 4, return chain_next(ctx, TC_ACT_OK))
TC_MEMBER(m5, 5, return chain_next(ctx, TC_ACT_OK))
TC_MEMBER(m6, 6, return chain_next(ctx, TC_ACT_OK))
TC_MEMBER(m7, 7, return chain_next(ctx, TC_ACT_OK))
TC_MEMBER(drop, 8, return TC_ACT_SHOT)
TC_MEMBER(final, 9, return TC_ACT_OK)
/* Member 10 would redirect the packet, unless a later member decides. */
TC_MEMBER(tx, 10, return chain_next(ctx, TC_ACT_REDIRECT))
