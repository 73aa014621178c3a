/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Structures shared between bpf/lb.bpf.c and dataplane/lb (exported to Go
 * with bpf2go -type). Changing a layout here changes the Go side on the next
 * `make generate`; never re-declare these by hand in Go. */
#ifndef SLUICE_LB_H
#define SLUICE_LB_H

#include <linux/types.h>

/* Address families as stored in keys and values. */
enum lb_family {
	LB_FAMILY_V4 = 4,
	LB_FAMILY_V6 = 6,
};

/* VIP flags (vip_meta.flags). */
enum lb_vip_flag {
	/* Hash on the client address only, so that every connection of a
	 * client reaches the same backend. */
	LB_VIP_SRC_HASH = 1 << 0,
	/* Never read or write the connection table: every packet takes the
	 * Maglev ring. */
	LB_VIP_STATELESS = 1 << 1,
	/* Encapsulate with IPIP / IP6IP6 / IPv4-in-IPv6 instead of GUE. */
	LB_VIP_IPIP = 1 << 2,
	/* Marker entry (port 0, proto 0) saying "this address is a VIP": used to
	 * answer echo requests and to drop malformed packets aimed at a VIP. */
	LB_VIP_ADDR = 1 << 3,
};

/* Real (backend) flags (real_def.flags). */
enum lb_real_flag {
	LB_REAL_UP = 1 << 0,
};

/* Key of the vips map. IPv4 addresses use addr[0], the rest is zero. A port
 * of 0 is the all-ports entry of that address and protocol. */
struct vip_key {
	__be32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 family;
};

struct vip_meta {
	/* Index into the rings outer map and the vip_stats array. */
	__u32 id;
	__u32 flags;
};

/* One backend of one VIP. Reals are indexed by a u32 allocated by the control
 * plane; gen changes whenever an index is given to a different backend, so
 * that connection-table entries made for the old one are not used. */
struct real_def {
	__be32 addr[4];
	__u32 gen;
	__u8 family;
	__u8 flags;
	__u16 pad;
};

/* Connection-table key: the client side of the flow and the VIP it reached.
 * The protocol and VIP address are implied by vip_id, which keeps the key at
 * 24 bytes for both families. */
struct flow_key {
	__be32 src[4];
	__u32 vip_id;
	__be16 sport;
	__be16 dport;
};

struct flow_state {
	__u32 real;
	__u32 gen;
	/* bpf_ktime_get_coarse_ns() of the last packet, for UDP idle expiry;
	 * always 0 for TCP, whose entries never expire by age. */
	__u64 atime;
};

/* Global configuration, one entry of the config array map. */
struct lb_config {
	__u64 hash_seed;
	/* Idle time after which a UDP connection-table entry is ignored. */
	__u64 udp_idle_ns;
	/* Maglev ring size (slots); must equal the inner maps' max_entries. */
	__u32 ring_size;
	/* Largest encapsulated packet (outer IP header included). */
	__u32 tunnel_mtu;
	/* Outer source addresses of this LB node. */
	__be32 src_v4;
	__be32 src_v6[4];
	/* Prefixes from which IPIP outer source addresses are crafted. */
	__be32 ipip_v4_prefix;
	__be32 ipip_v6_prefix[2];
	__u8 ipip_v4_prefix_len;
	__u8 pad1;
	/* GUE destination port. */
	__be16 gue_port;
	__u8 gw_mac[6];
	__u16 pad2;
};

/* Per-VIP and per-real counters (per-CPU arrays). */
struct lb_traffic {
	__u64 packets;
	__u64 bytes;
};

/* Global per-CPU counters, indexed by this enum. Verdict counters count every
 * packet once; the others count events and reasons. */
enum lb_stat {
	LB_STAT_PASS,
	LB_STAT_TX,
	LB_STAT_DROP,

	/* Why a packet was passed to the stack without being balanced. */
	LB_STAT_PASS_NOT_IP,       /* not IPv4/IPv6 (ARP, LLDP, ...) */
	LB_STAT_PASS_NOT_VIP,      /* IP traffic not addressed to a VIP */
	LB_STAT_PASS_SHORT,        /* too short to tell whether it is for a VIP */
	LB_STAT_PASS_VLAN_STACK,   /* more than one VLAN tag */

	/* Balancing. */
	LB_STAT_ENCAP_GUE,
	LB_STAT_ENCAP_IPIP,
	LB_STAT_CONN_HIT,
	LB_STAT_CONN_MISS,
	LB_STAT_CONN_MISS_SYN,
	LB_STAT_CONN_MISS_NON_SYN,
	LB_STAT_CONN_STALE,        /* entry pointed at a removed/down real */
	LB_STAT_CONN_UDP_EXPIRED,
	LB_STAT_ICMP_ECHO_REPLY,
	LB_STAT_ICMP_ERR_FORWARD,  /* ICMP error quoting a VIP flow, sent to its backend */
	LB_STAT_PTB_SENT,          /* frag-needed / packet-too-big generated */

	/* Drop reasons (each drop counts LB_STAT_DROP and exactly one of these). */
	LB_STAT_DROP_TRUNCATED,    /* VIP address, header cut short */
	LB_STAT_DROP_BAD_HEADER,   /* bad IHL, bad version, length fields that lie */
	LB_STAT_DROP_FRAGMENT,     /* fragment addressed to a VIP */
	LB_STAT_DROP_IPV6_EXT,     /* IPv6 extension header, VIP address */
	LB_STAT_DROP_UNKNOWN_PROTO,/* VIP address, protocol not balanced */
	LB_STAT_DROP_NO_BACKEND,   /* VIP without an up backend */
	LB_STAT_DROP_TOO_BIG,      /* over tunnel MTU, IPv4 without DF */
	LB_STAT_DROP_ICMP,         /* ICMP to a VIP that is neither echo nor a usable error */
	LB_STAT_DROP_NO_CONFIG,    /* program loaded but not configured */
	LB_STAT_DROP_ADJUST,       /* bpf_xdp_adjust_head/tail refused */

	LB_STAT_MAX,
};

#endif
