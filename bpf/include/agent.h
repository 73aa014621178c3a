/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Structures shared between bpf/agent.bpf.c and dataplane/agent (exported to
 * Go with bpf2go -type). Never re-declare these by hand in Go. */
#ifndef SLUICE_AGENT_H
#define SLUICE_AGENT_H

#include <linux/types.h>

/* Address families as stored in keys and values (the numbers the LB uses). */
enum agent_family {
	AGENT_FAMILY_V4 = 4,
	AGENT_FAMILY_V6 = 6,
};

/* How a VIP's packets reach the application. */
enum agent_mode {
	/* The VIP is configured on the VM: deliver the inner packet as is. */
	AGENT_MODE_LOCAL = 1,
	/* The application listens on its own address: DNAT to it, track the
	 * connection and SNAT its replies back to the VIP. */
	AGENT_MODE_TRANSPARENT = 2,
};

/* Connection states (conn_state.state). */
enum agent_conn_state {
	AGENT_CONN_OPEN = 1,
	/* A FIN or RST was seen: the entry lives on for the grace time only. */
	AGENT_CONN_CLOSING = 2,
};

/* Key of the backend_addrs map: an address of this backend (the outer
 * destination of the tunnels it accepts). IPv4 uses addr[0]. */
struct backend_key {
	__be32 addr[4];
	__u8 family;
	__u8 pad[3];
};

/* Key of the vips map, laid out like the LB's: port 0 is the all-ports
 * entry of that address and protocol. */
struct agent_vip_key {
	__be32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 family;
};

struct agent_vip {
	/* enum agent_mode. */
	__u32 mode;
	/* Transparent mode: where the application listens. A port of 0 keeps
	 * the packet's destination port. */
	__be32 app_addr[4];
	__be16 app_port;
	__u16 pad;
};

/* Connection-table key, in the direction of the replies: the application
 * side is the source, the client the destination. */
struct conn_key {
	__be32 app[4];
	__be32 client[4];
	__be16 app_port;
	__be16 client_port;
	__u8 proto;
	__u8 family;
	__u16 pad;
};

struct conn_state {
	/* What the reply's source is rewritten to. */
	__be32 vip[4];
	__be16 vip_port;
	/* enum agent_conn_state. */
	__u8 state;
	__u8 pad;
	__u32 pad2;
	/* bpf_ktime_get_coarse_ns() of the last packet in either direction;
	 * for a closing entry, of the first FIN or RST. */
	__u64 last_seen;
};

/* Global configuration, one entry of the config array map. */
struct agent_config {
	__u64 tcp_idle_ns;
	/* Grace time of a TCP entry after a FIN or RST. */
	__u64 tcp_closing_ns;
	__u64 udp_idle_ns;
	/* GUE destination port. */
	__be16 gue_port;
	__u16 pad;
	__u32 configured;
};

/* Per-CPU counters, indexed by this enum. The verdict counters (pass,
 * deliver_local, deliver_transparent and drop on egress; reply_pass,
 * reply_rewritten and reply_drop on ingress) count every packet once; the
 * others count events and reasons. */
enum agent_stat {
	/* Egress (toward the VM): verdicts. */
	AGENT_STAT_PASS,
	AGENT_STAT_DELIVER_LOCAL,
	AGENT_STAT_DELIVER_TRANSPARENT,
	AGENT_STAT_DROP,

	/* Egress: why a packet passed untouched. */
	AGENT_STAT_PASS_NOT_IP,         /* not IPv4/IPv6 */
	AGENT_STAT_PASS_SHORT,          /* too short to read the outer IP addresses */
	AGENT_STAT_PASS_VLAN,           /* VLAN tag in the frame */
	AGENT_STAT_PASS_NOT_BACKEND,    /* outer destination not a backend address */
	AGENT_STAT_PASS_NOT_ENCAP,      /* for a backend address, not a tunnel */
	AGENT_STAT_PASS_FRAGMENT,       /* outer IPv4 fragment: cannot be decapsulated */
	AGENT_STAT_PASS_NO_CONFIG,      /* loaded but not configured */

	/* Egress: events. */
	AGENT_STAT_DECAP_GUE,           /* GUE variant 1 */
	AGENT_STAT_DECAP_GUE0,          /* GUE variant 0 */
	AGENT_STAT_DECAP_IPIP,          /* IPIP, IP6IP6, IPv4-in-IPv6, IPv6-in-IPv4 */
	AGENT_STAT_CONN_INSERT,         /* new connection-table entry */
	AGENT_STAT_CONN_EXPIRED,        /* expired entry seen (and replaced or deleted) */
	AGENT_STAT_CONN_INSERT_FAILED,

	/* Egress drop reasons: each drop counts AGENT_STAT_DROP and one of these. */
	AGENT_STAT_DROP_OUTER_TRUNCATED, /* outer IP/UDP/GUE header cut short */
	AGENT_STAT_DROP_OUTER_BAD,       /* outer length fields that lie */
	AGENT_STAT_DROP_GUE_BAD,         /* GUE version 2/3, variant 1 not IP */
	AGENT_STAT_DROP_GUE_CONTROL,     /* GUE variant 0 control message (C bit) */
	AGENT_STAT_DROP_GUE_PROTO,       /* GUE variant 0 carrying neither IPv4 nor IPv6 */
	AGENT_STAT_DROP_INNER_TRUNCATED, /* inner IP or transport header cut short */
	AGENT_STAT_DROP_INNER_BAD,       /* bad inner version/IHL/lengths */
	AGENT_STAT_DROP_INNER_FRAGMENT,  /* inner fragment */
	AGENT_STAT_DROP_INNER_PROTO,     /* inner protocol neither TCP, UDP nor ICMP */
	AGENT_STAT_DROP_UNKNOWN_VIP,     /* inner destination not a configured VIP */
	AGENT_STAT_DROP_ADJUST,          /* the kernel refused to remove the outer headers */

	/* Ingress (from the VM): verdicts. */
	AGENT_STAT_REPLY_PASS,
	AGENT_STAT_REPLY_REWRITTEN,
	AGENT_STAT_REPLY_DROP,

	/* Ingress: details. */
	AGENT_STAT_REPLY_UNTRACKED,      /* TCP/UDP/ICMP error of no tracked flow */
	AGENT_STAT_REPLY_OTHER,          /* not IP, other protocols, fragments, short */
	AGENT_STAT_REPLY_ICMP_REWRITTEN, /* ICMP error about a tracked flow */
	AGENT_STAT_REPLY_EXPIRED,        /* reply for an expired entry (entry deleted) */
	AGENT_STAT_REPLY_DROP_STORE,     /* a rewrite helper failed */

	AGENT_STAT_MAX,
};

#endif
