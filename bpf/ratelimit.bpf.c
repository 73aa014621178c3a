// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Sluice connection rate limiter: XDP, in front of the load balancer.
 *
 * A new connection (TCP SYN without ACK; UDP packets when a rule counts
 * them) is matched to the most specific rule of its destination (address
 * and port, address, port, any) and must pass the rule's limits: the
 * aggregate one of the destination and the one of its source prefix. Each
 * limit is a sliding-window estimate:
 *
 *     estimate = prev × (1 − elapsed/window) + cur
 *
 * where prev and cur count the connections admitted in the previous and the
 * current window; a connection is refused when the estimate has reached
 * rate × window. Refused connections are dropped or answered with a TCP RST
 * built here and bounced with XDP_TX. Everything else continues down the
 * chain (or to the stack when the program runs alone).
 *
 * Counting is shared by all CPUs and exact. Per-CPU counts would give each
 * CPU only its share of the estimate, so the admitted rate would depend on
 * how RSS spreads the load. The window rollover (cur becomes prev, the
 * window advances) changes several fields together, which separate atomic
 * adds cannot do without losing or double-counting the connections racing
 * with it. So a scope's whole state is one __u64 (see enum rl_window_bits)
 * changed with one compare-and-swap. A bpf_spin_lock would do the same for
 * the aggregate (not in an LRU map), but costs about 70 ns per packet here
 * (the helper masks interrupts), on every refusal too; with the packed word
 * a refusal only reads the state, so a flood never writes the shared cache
 * line, and only admissions on different CPUs contend. */

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "ratelimit.h"
#include "police.h"
#include "chain.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Placeholder sizes; the Go side sets the real ones before loading. */
#define DEFAULT_MAX_RULES 1024
#define DEFAULT_MAX_IDS 2048
#define DEFAULT_MAX_SOURCES 65536

/* Types that appear only as constants or behind map-in-map templates get
 * no BTF of their own; these unused globals give it to them. */
enum rl_stat btf_anchor_rl_stat __attribute__((unused));
enum rl_kind btf_anchor_rl_kind __attribute__((unused));
enum rl_action btf_anchor_rl_action __attribute__((unused));
enum rl_window_bits btf_anchor_rl_window_bits __attribute__((unused));
struct rl_rule_key btf_anchor_rl_rule_key __attribute__((unused));
struct rl_rule btf_anchor_rl_rule __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rl_config);
} config SEC(".maps");

struct rule_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_RULES);
	__type(key, struct rl_rule_key);
	__type(value, struct rl_rule);
};

/* The active rule set: one inner map, replaced by the Go side with one
 * update, so a packet sees the old set or the new one, never a mix. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct rule_table);
} rules SEC(".maps");

/* Aggregate window state of each rule, indexed by rule id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_MAX_IDS);
	__type(key, __u32);
	__type(value, __u64);
} aggregate SEC(".maps");

/* Per-source state. LRU: a flood from spoofed sources evicts the sources
 * seen least recently instead of filling the table. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DEFAULT_MAX_SOURCES);
	__type(key, struct rl_src_key);
	__type(value, __u64);
} sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEFAULT_MAX_IDS);
	__type(key, __u32);
	__type(value, struct rl_rule_stats);
} rule_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RL_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);

	if (v)
		*v += 1;
}

static __always_inline int pass(__u32 reason)
{
	count(reason);
	return XDP_PASS;
}

#define WIN_COUNT_MASK ((1ULL << RL_WINDOW_COUNT_BITS) - 1)
#define WIN_IDX_MASK ((1ULL << RL_WINDOW_IDX_BITS) - 1)
#define WIN_PREV_SHIFT RL_WINDOW_COUNT_BITS
#define WIN_IDX_SHIFT (2 * RL_WINDOW_COUNT_BITS)
/* CAS attempts before giving up: each failure means another CPU wrote the
 * same state in between (an admission or a rollover), so this bounds a
 * scope busy on many CPUs at once, not the normal case. */
#define WIN_CAS_TRIES 8

/* Admit one connection into the window state if the sliding-window
 * estimate is below limit. With e the time since the state's window began
 * (0 ≤ e < window) the test
 *     prev × (window − e) / window + cur < limit
 * is evaluated as prev × (window − e) < (limit − cur) × window, exactly:
 * the Go side bounds limit and window so that the products fit in 64 bits.
 * A refusal writes nothing (a rollover it computed is written by the next
 * admission). Returns 1 (admitted, *taken = the state written), 0 (refused
 * by the limit) or -1 (refused: the state kept changing under us). */
static __always_inline int window_take(__u64 *state, __u64 now, const struct rl_rule *r, __u32 limit,
				       __u64 *taken)
{
	__u64 window = r->window_ns;
	__u64 since = now > r->epoch_ns ? now - r->epoch_ns : 0;
	__u64 now_idx = (since / window) & WIN_IDX_MASK;
	__u64 now_el = since % window;

	for (int i = 0; i < WIN_CAS_TRIES; i++) {
		__u64 old = *(volatile __u64 *)state;
		__u64 oidx = old >> WIN_IDX_SHIFT;
		__u64 prev = (old >> WIN_PREV_SHIFT) & WIN_COUNT_MASK;
		__u64 cur = old & WIN_COUNT_MASK;
		__u64 idx = now_idx;
		__u64 el = now_el;

		if (oidx == ((idx + 1) & WIN_IDX_MASK)) {
			/* Another CPU that read the clock later has moved the
			 * state into the next window: count there, at its start. */
			idx = oidx;
			el = 0;
		} else if (oidx != idx) {
			prev = ((oidx + 1) & WIN_IDX_MASK) == idx ? cur : 0;
			cur = 0;
		}
		if (cur >= limit || prev * (window - el) >= (limit - cur) * window)
			return 0;
		__u64 new = idx << WIN_IDX_SHIFT | prev << WIN_PREV_SHIFT | (cur + 1);

		if (__sync_val_compare_and_swap(state, old, new) == old) {
			*taken = new;
			return 1;
		}
	}
	return -1;
}

/* Take back the connection window_take counted in state taken, after a
 * later limit refused it. If the window has rolled over meanwhile, the
 * connection is in prev. */
static __always_inline void window_refund(__u64 *state, __u64 taken)
{
	__u64 tidx = taken >> WIN_IDX_SHIFT;

	for (int i = 0; i < WIN_CAS_TRIES; i++) {
		__u64 old = *(volatile __u64 *)state;
		__u64 oidx = old >> WIN_IDX_SHIFT;
		__u64 new;

		if (oidx == tidx && (old & WIN_COUNT_MASK))
			new = old - 1;
		else if (oidx == ((tidx + 1) & WIN_IDX_MASK) && ((old >> WIN_PREV_SHIFT) & WIN_COUNT_MASK))
			new = old - (1ULL << WIN_PREV_SHIFT);
		else
			return;
		if (__sync_val_compare_and_swap(state, old, new) == old)
			return;
	}
}

static __always_inline struct rl_rule *match(struct rl_config *cfg, void *table, struct police_pkt *p)
{
	struct rl_rule_key k = {};
	struct rl_rule *r;

	k.proto = p->l4proto;
	if (cfg->kinds & (RL_KIND_ADDR_PORT | RL_KIND_ADDR)) {
		__builtin_memcpy(k.addr, p->daddr, sizeof(k.addr));
		k.family = p->family;
		if (cfg->kinds & RL_KIND_ADDR_PORT) {
			k.port = p->dport;
			r = bpf_map_lookup_elem(table, &k);
			if (r)
				return r;
		}
		if (cfg->kinds & RL_KIND_ADDR) {
			k.port = 0;
			r = bpf_map_lookup_elem(table, &k);
			if (r)
				return r;
		}
		__builtin_memset(k.addr, 0, sizeof(k.addr));
		k.family = 0;
	}
	if (cfg->kinds & RL_KIND_PORT) {
		k.port = p->dport;
		r = bpf_map_lookup_elem(table, &k);
		if (r)
			return r;
	}
	if (cfg->kinds & RL_KIND_ANY) {
		k.port = 0;
		return bpf_map_lookup_elem(table, &k);
	}
	return NULL;
}

/* The source scope's state of rule r for p, created on first use. */
static __always_inline __u64 *source_state(struct rl_rule *r, struct police_pkt *p)
{
	struct rl_src_key k = {};
	__u64 *w;

	k.gen = r->gen;
	k.family = p->family;
	if (p->family == 4) {
		k.addr[0] = p->saddr[0] & r->src_mask4;
	} else {
#pragma unroll
		for (int i = 0; i < 4; i++)
			k.addr[i] = p->saddr[i] & r->src_mask6[i];
	}
	w = bpf_map_lookup_elem(&sources, &k);
	if (w)
		return w;

	__u64 fresh = 0;

	/* NOEXIST: another CPU may have created it meanwhile; then we use
	 * that one. */
	bpf_map_update_elem(&sources, &k, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&sources, &k);
}

static __always_inline int refuse(struct xdp_md *ctx, struct rl_rule *r, struct rl_rule_stats *st,
				  struct police_pkt *p)
{
	if (st)
		st->rule.refused++;
	count(RL_STAT_REFUSED);
	if (r->action == RL_ACTION_RST && p->l4proto == IPPROTO_TCP) {
		int act = police_rst(ctx, p);

		count(act == XDP_TX ? RL_STAT_RST_SENT : RL_STAT_RST_FAILED);
		return act;
	}
	return XDP_DROP;
}

static __always_inline int process(struct xdp_md *ctx)
{
	struct police_pkt p;
	int err = police_parse(ctx, &p);

	switch (err) {
	case 0:
		break;
	case POLICE_ERR_NOT_IP:
		return pass(RL_STAT_PASS_NOT_IP);
	case POLICE_ERR_PROTO:
		return pass(RL_STAT_PASS_NOT_TCP_UDP);
	case POLICE_ERR_FRAGMENT:
		return pass(RL_STAT_PASS_FRAGMENT);
	case POLICE_ERR_TRUNCATED:
		return pass(RL_STAT_PASS_TRUNCATED);
	default:
		return pass(RL_STAT_PASS_BAD_HEADER);
	}
	if (p.l4proto == IPPROTO_TCP &&
	    (p.tcp_flags & (POLICE_TCP_SYN | POLICE_TCP_ACK | POLICE_TCP_RST)) != POLICE_TCP_SYN)
		return pass(RL_STAT_PASS_NOT_NEW);

	__u32 zero = 0;
	struct rl_config *cfg = bpf_map_lookup_elem(&config, &zero);
	void *table = bpf_map_lookup_elem(&rules, &zero);

	if (!cfg || !table)
		return pass(RL_STAT_PASS_NO_CONFIG);
	if (p.l4proto == IPPROTO_UDP && !cfg->udp)
		return pass(RL_STAT_PASS_UDP_OFF);
	if (p.encap)
		count(RL_STAT_ENCAP);

	struct rl_rule *r = match(cfg, table, &p);

	if (!r)
		return pass(RL_STAT_PASS_NO_RULE);

	__u32 id = r->id;
	struct rl_rule_stats *st = bpf_map_lookup_elem(&rule_stats, &id);
	__u64 now = bpf_ktime_get_ns();
	__u64 *src = NULL;
	__u64 src_taken = 0;

	if (st)
		st->rule.seen++;
	if (r->src_limit) {
		src = source_state(r, &p);
		if (!src) {
			count(RL_STAT_SRC_TABLE_FULL);
		} else {
			if (st)
				st->source.seen++;
			int ok = window_take(src, now, r, r->src_limit, &src_taken);

			if (ok <= 0) {
				if (ok < 0)
					count(RL_STAT_CONTENDED);
				if (st)
					st->source.refused++;
				return refuse(ctx, r, st, &p);
			}
			if (st)
				st->source.admitted++;
		}
	}
	if (r->limit) {
		__u64 *agg = bpf_map_lookup_elem(&aggregate, &id);
		__u64 agg_taken;

		if (agg) {
			if (st)
				st->aggregate.seen++;
			int ok = window_take(agg, now, r, r->limit, &agg_taken);

			if (ok <= 0) {
				if (ok < 0)
					count(RL_STAT_CONTENDED);
				if (st)
					st->aggregate.refused++;
				/* The source did not get this connection. */
				if (src)
					window_refund(src, src_taken);
				return refuse(ctx, r, st, &p);
			}
			if (st)
				st->aggregate.admitted++;
		}
	}
	if (st)
		st->rule.admitted++;
	count(RL_STAT_ADMITTED);
	return XDP_PASS;
}

SEC("xdp")
int ratelimit_xdp(struct xdp_md *ctx)
{
	count(RL_STAT_PACKETS);

	int act = process(ctx);

	switch (act) {
	case XDP_PASS:
		count(RL_STAT_PASS);
		return chain_next(ctx, XDP_PASS);
	case XDP_TX:
		count(RL_STAT_TX);
		return XDP_TX;
	default:
		count(RL_STAT_DROP);
		return XDP_DROP;
	}
}
