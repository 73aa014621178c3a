/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Structures shared between bpf/ratelimit.bpf.c and dataplane/ratelimit
 * (exported to Go with bpf2go -type). */
#ifndef SLUICE_RATELIMIT_H
#define SLUICE_RATELIMIT_H

#include <linux/types.h>

/* Kinds of rule keys present in the active rule set (rl_config.kinds): the
 * program skips the lookups of kinds no rule uses. */
enum rl_kind {
	RL_KIND_ADDR_PORT = 1 << 0,
	RL_KIND_ADDR = 1 << 1,
	RL_KIND_PORT = 1 << 2,
	RL_KIND_ANY = 1 << 3,
};

enum rl_action {
	RL_ACTION_DROP = 0,
	RL_ACTION_RST = 1,
};

/* Key of the rules map. A specific address has family 4 or 6 (IPv4 in
 * addr[0], rest zero); "any address" is all zero with family 0. Port 0 is
 * "any port". proto is IPPROTO_TCP or IPPROTO_UDP. */
struct rl_rule_key {
	__be32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 family;
};

struct rl_rule {
	__u64 window_ns;
	/* Windows of the rule (and of its sources) start at epoch_ns + k ×
	 * window_ns on the monotonic clock: the moment the rule was created. */
	__u64 epoch_ns;
	/* Index of the rule's aggregate state and counters. */
	__u32 id;
	/* Unique per rule instance: part of the per-source keys, so that
	 * entries left by a removed rule are never found by a later one that
	 * reuses its id. */
	__u32 gen;
	/* Connections (UDP: packets) admitted per window: rate × window.
	 * 0 = no such limit. */
	__u32 limit;
	__u32 src_limit;
	/* Masks applied to the source address for per-source state. */
	__be32 src_mask4;
	__be32 src_mask6[4];
	__u8 action;
	__u8 pad[3];
};

/* Global configuration, one entry of the config array map. */
struct rl_config {
	/* Union of rl_kind of the rules: a lookup kind no rule uses is skipped. */
	__u32 kinds;
	/* Non-zero when some rule counts UDP: otherwise UDP passes untouched. */
	__u32 udp;
};

/* Sliding-window state of one scope (a rule's aggregate, or one source of
 * a rule): one __u64, changed with compare-and-swap, that packs the index
 * of its window since the rule's epoch (modulo 2^RL_WINDOW_IDX_BITS) above
 * prev and cur (RL_WINDOW_COUNT_BITS each, cur lowest): the connections
 * admitted in the previous and in the current window. One CAS performs a
 * rollover and a count together. */
enum rl_window_bits {
	RL_WINDOW_COUNT_BITS = 22,
	RL_WINDOW_IDX_BITS = 20,
};

/* Per-source state key: the rule instance and the masked source. */
struct rl_src_key {
	__be32 addr[4];
	__u32 gen;
	__u8 family;
	__u8 pad[3];
};

struct rl_scope_stats {
	__u64 seen;
	__u64 admitted;
	__u64 refused;
};

/* Per-rule counters (per-CPU array indexed by rule id): the rule as a
 * whole, and each scope. A connection refused by its source's limit is
 * seen by the source scope only. */
struct rl_rule_stats {
	struct rl_scope_stats rule;
	struct rl_scope_stats aggregate;
	struct rl_scope_stats source;
};

/* Global per-CPU counters, indexed by this enum. */
enum rl_stat {
	RL_STAT_PACKETS,         /* every packet the program ran on */
	RL_STAT_PASS,            /* verdicts: every packet counts one */
	RL_STAT_DROP,
	RL_STAT_TX,

	/* Why a packet passed without being counted. */
	RL_STAT_PASS_NOT_NEW,    /* TCP other than SYN without ACK */
	RL_STAT_PASS_NOT_IP,
	RL_STAT_PASS_NOT_TCP_UDP,
	RL_STAT_PASS_UDP_OFF,    /* UDP while no rule counts UDP */
	RL_STAT_PASS_NO_RULE,    /* new connection no rule matches */
	RL_STAT_PASS_FRAGMENT,   /* non-first fragment */
	RL_STAT_PASS_TRUNCATED,  /* parse failure: header cut short */
	RL_STAT_PASS_BAD_HEADER, /* parse failure: impossible header */
	RL_STAT_PASS_NO_CONFIG,  /* program loaded but not configured */

	RL_STAT_ENCAP,           /* flow found inside GUE/IPIP */
	RL_STAT_ADMITTED,
	RL_STAT_REFUSED,
	RL_STAT_RST_SENT,
	RL_STAT_RST_FAILED,      /* RST asked but the packet could not be rewritten: dropped */
	RL_STAT_SRC_TABLE_FULL,  /* per-source entry could not be created: admitted by that scope */
	RL_STAT_CONTENDED,       /* window state changed by other CPUs at every try: refused */

	RL_STAT_MAX,
};

#endif
