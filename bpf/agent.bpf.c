// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Sluice backend agent: two TC programs on the host end of a VM's interface
 * (a tap, or a veth in the simulator).
 *
 * agent_egress runs on packets the host sends to the VM. A GUE (variant 0 or
 * 1) or IP-in-IP packet addressed to one of this backend's addresses whose
 * inner destination is a configured VIP is decapsulated; in transparent mode
 * its destination is also rewritten to the application's address and the
 * connection is tracked. agent_ingress runs on packets the VM sends: replies
 * of tracked connections (and ICMP errors about them) get the VIP back as
 * their source. Everything else passes untouched.
 *
 * XDP cannot do the decapsulation: it runs on receive only, and the packets
 * toward the VM are transmitted by the host on this interface. */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "agent.h"
#include "csum.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ETH_HLEN_ 14
#define IPV4_HLEN 20
#define IPV6_HLEN 40
#define UDP_HLEN 8
#define GUE0_HLEN 4
#define IP_MF_OFFSET 0x3fff
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10
/* How much of a packet must be in the linear area for the parser: Ethernet,
 * the largest outer headers (IPv6, UDP, GUE with 124 bytes of options), and
 * an inner IPv6 header with a TCP header. */
#define PULL_LEN 320
/* Offsets are masked with this before pointer arithmetic, so the verifier
 * can bound them; no header this program reads lies beyond it. */
#define OFF_MASK 0x1ff

/* Placeholder sizes; the Go side sets the real ones before loading. */
#define DEFAULT_MAX_VIPS 512
#define DEFAULT_MAX_BACKEND_ADDRS 64
#define DEFAULT_CONN_SIZE 65536

/* Types that appear only as constants get no BTF of their own; these unused
 * globals give it to them, for the Go side and for bpf2go -type. */
enum agent_stat btf_anchor_agent_stat __attribute__((unused));
enum agent_mode btf_anchor_agent_mode __attribute__((unused));
enum agent_conn_state btf_anchor_agent_conn_state __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct agent_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_BACKEND_ADDRS);
	__type(key, struct backend_key);
	__type(value, __u8);
} backend_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__type(key, struct agent_vip_key);
	__type(value, struct agent_vip);
} vips SEC(".maps");

/* One table shared by all CPUs: a request and its reply are handled by
 * different programs that may run on different CPUs, so a per-CPU table
 * would miss. The LRU evicts the least recently used entry when full. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DEFAULT_CONN_SIZE);
	__type(key, struct conn_key);
	__type(value, struct conn_state);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, AGENT_STAT_MAX);
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
	count(AGENT_STAT_PASS);
	count(reason);
	return TC_ACT_OK;
}

static __always_inline int drop(__u32 reason)
{
	count(AGENT_STAT_DROP);
	count(reason);
	return TC_ACT_SHOT;
}

static __always_inline int reply_pass(__u32 reason)
{
	count(AGENT_STAT_REPLY_PASS);
	count(reason);
	return TC_ACT_OK;
}

/* Make sure the headers the parser reads are in the linear area: packets
 * built by the stack may keep them in fragments. */
static __always_inline void pull(struct __sk_buff *skb)
{
	__u32 want = skb->len < PULL_LEN ? skb->len : PULL_LEN;

	if ((__u32)(skb->data_end - skb->data) < want)
		bpf_skb_pull_data(skb, want);
}

/* A parsed IP packet with its transport header; offsets from the start of
 * the frame, addresses and ports in network byte order. */
struct l3 {
	__u32 off;
	__u32 l4_off;
	__u32 len;      /* IP total length */
	__be32 src[4];
	__be32 dst[4];
	__be16 sport;
	__be16 dport;
	__u8 family;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_err;  /* an ICMP error whose quote is parsed into q */
};

/* The IP packet quoted by an ICMP error, as far as it is present. */
struct quote {
	__u32 off;
	__u32 l4_off;
	__u32 avail;    /* bytes of the quote from off to the packet's end */
	__be32 src[4];
	__be32 dst[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
};

static __always_inline int is_icmp_error(__u8 family, __u8 type)
{
	if (family == AGENT_FAMILY_V4)
		return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED ||
		       type == ICMP_PARAMETERPROB;
	return type == ICMPV6_DEST_UNREACH || type == ICMPV6_PKT_TOOBIG ||
	       type == ICMPV6_TIME_EXCEED || type == ICMPV6_PARAMPROB;
}

/* Parse the IP packet an ICMP error quotes: its IP header and the first 4
 * bytes of its transport header (the ports), which every error carries.
 * Returns 0 on success. */
static __always_inline int parse_quote(struct __sk_buff *skb, __u8 family, __u32 off, __u32 end,
				       struct quote *q)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	q->off = off;
	q->avail = end > off ? end - off : 0;
	if (family == AGENT_FAMILY_V4) {
		struct iphdr *ip = data + (off & OFF_MASK);

		if ((void *)(ip + 1) > data_end || q->avail < IPV4_HLEN)
			return -1;
		if (ip->version != 4 || ip->ihl < 5 || (ip->frag_off & bpf_htons(IP_MF_OFFSET)))
			return -1;
		q->src[0] = ip->saddr;
		q->dst[0] = ip->daddr;
		q->proto = ip->protocol;
		q->l4_off = off + ip->ihl * 4;
	} else {
		struct ipv6hdr *ip6 = data + (off & OFF_MASK);

		if ((void *)(ip6 + 1) > data_end || q->avail < IPV6_HLEN)
			return -1;
		if (ip6->version != 6)
			return -1;
		__builtin_memcpy(q->src, &ip6->saddr, 16);
		__builtin_memcpy(q->dst, &ip6->daddr, 16);
		q->proto = ip6->nexthdr;
		q->l4_off = off + IPV6_HLEN;
	}
	if (q->proto != IPPROTO_TCP && q->proto != IPPROTO_UDP)
		return -1;
	__be16 *ports = data + (q->l4_off & OFF_MASK);

	if ((void *)(ports + 2) > data_end || q->l4_off + 4 > end)
		return -1;
	q->sport = ports[0];
	q->dport = ports[1];
	return 0;
}

enum parse_err {
	PARSE_OK = 0,
	PARSE_TRUNCATED,
	PARSE_BAD,
	PARSE_FRAGMENT,
	PARSE_PROTO,
};

/* Parse the IP packet at off, which must end exactly at end (the end of the
 * enclosing packet: the outer payload, or the frame's IP length). family is
 * the version the enclosing header announced. */
static __always_inline int parse_ip(struct __sk_buff *skb, __u32 off, __u32 end, __u8 family,
				    struct l3 *p, struct quote *q)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 avail = end > off ? end - off : 0;

	p->off = off;
	p->family = family;
	if (family == AGENT_FAMILY_V4) {
		struct iphdr *ip = data + (off & OFF_MASK);

		if ((void *)(ip + 1) > data_end || avail < IPV4_HLEN)
			return PARSE_TRUNCATED;
		p->len = bpf_ntohs(ip->tot_len);
		if (ip->version != 4 || ip->ihl < 5 || p->len < ip->ihl * 4)
			return PARSE_BAD;
		if (p->len > avail)
			return PARSE_TRUNCATED;
		if (p->len < avail)
			return PARSE_BAD;
		if (ip->frag_off & bpf_htons(IP_MF_OFFSET))
			return PARSE_FRAGMENT;
		p->src[0] = ip->saddr;
		p->dst[0] = ip->daddr;
		p->proto = ip->protocol;
		p->l4_off = off + ip->ihl * 4;
	} else {
		struct ipv6hdr *ip6 = data + (off & OFF_MASK);

		if ((void *)(ip6 + 1) > data_end || avail < IPV6_HLEN)
			return PARSE_TRUNCATED;
		p->len = IPV6_HLEN + bpf_ntohs(ip6->payload_len);
		if (ip6->version != 6 || ip6->payload_len == 0)
			return PARSE_BAD;
		if (p->len > avail)
			return PARSE_TRUNCATED;
		if (p->len < avail)
			return PARSE_BAD;
		__builtin_memcpy(p->src, &ip6->saddr, 16);
		__builtin_memcpy(p->dst, &ip6->daddr, 16);
		p->proto = ip6->nexthdr;
		if (p->proto == IPPROTO_FRAGMENT)
			return PARSE_FRAGMENT;
		p->l4_off = off + IPV6_HLEN;
	}

	void *l4 = data + (p->l4_off & OFF_MASK);
	__u32 l4_len = end - p->l4_off;

	switch (p->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > data_end || l4_len < sizeof(*th))
			return PARSE_TRUNCATED;
		if (th->doff < 5 || th->doff * 4 > l4_len)
			return PARSE_BAD;
		p->sport = th->source;
		p->dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		return PARSE_OK;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end || l4_len < sizeof(*uh))
			return PARSE_TRUNCATED;
		if (bpf_ntohs(uh->len) != l4_len)
			return PARSE_BAD;
		p->sport = uh->source;
		p->dport = uh->dest;
		return PARSE_OK;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 *ic = l4;

		if ((p->proto == IPPROTO_ICMP) != (family == AGENT_FAMILY_V4))
			return PARSE_PROTO;
		if ((void *)(ic + 8) > data_end || l4_len < 8)
			return PARSE_TRUNCATED;
		if (!is_icmp_error(family, ic[0]))
			return PARSE_PROTO;
		if (parse_quote(skb, family, p->l4_off + 8, end, q))
			return PARSE_BAD;
		p->icmp_err = 1;
		return PARSE_OK;
	}
	}
	return PARSE_PROTO;
}

static __always_inline __u32 csum_field_off(__u8 proto, __u32 l4_off)
{
	switch (proto) {
	case IPPROTO_TCP:
		return l4_off + 16;
	case IPPROTO_UDP:
		return l4_off + 6;
	}
	return l4_off + 2; /* ICMP, ICMPv6 */
}

/* Rewrite one address and the port next to it (source or destination) of a
 * TCP/UDP packet, fixing the IPv4 header checksum and the transport checksum
 * incrementally. The kernel helpers keep skb->csum and partial checksums
 * right too, which matters for replies the VM hands over with checksum
 * offload. A zero UDP checksum over IPv4 means "none" and stays zero.
 * Returns 0 on success. */
static __always_inline int nat_l4(struct __sk_buff *skb, struct l3 *p, int src,
				  const __be32 *new_addr, __be16 new_port)
{
	__u32 csum_off = csum_field_off(p->proto, p->l4_off);
	__u64 mangled = p->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__be16 old_port = src ? p->sport : p->dport;
	__be32 *old = src ? p->src : p->dst;

	if (p->family == AGENT_FAMILY_V4) {
		__u32 off = p->off + (src ? offsetof(struct iphdr, saddr) : offsetof(struct iphdr, daddr));

		if (bpf_l4_csum_replace(skb, csum_off, old[0], new_addr[0], BPF_F_PSEUDO_HDR | mangled | 4))
			return -1;
		if (bpf_l3_csum_replace(skb, p->off + offsetof(struct iphdr, check), old[0], new_addr[0], 4))
			return -1;
		if (bpf_skb_store_bytes(skb, off, new_addr, 4, 0))
			return -1;
	} else {
		__u32 off = p->off + (src ? offsetof(struct ipv6hdr, saddr) : offsetof(struct ipv6hdr, daddr));
		__s64 diff = bpf_csum_diff((__be32 *)old, 16, (__be32 *)new_addr, 16, 0);

		if (diff < 0)
			return -1;
		if (bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | mangled))
			return -1;
		if (bpf_skb_store_bytes(skb, off, new_addr, 16, 0))
			return -1;
	}
	if (new_port != old_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | 2))
			return -1;
		if (bpf_skb_store_bytes(skb, p->l4_off + (src ? 0 : 2), &new_port, 2, 0))
			return -1;
	}
	return 0;
}

/* Replace 4 bytes at off (inside an ICMP message), adding the change to
 * *diff for the ICMP checksum. */
static __always_inline int icmp_put4(struct __sk_buff *skb, __u32 off, __be32 old, __be32 new, __s64 *diff)
{
	*diff = bpf_csum_diff(&old, 4, &new, 4, (__u32)*diff);
	if (*diff < 0)
		return -1;
	return bpf_skb_store_bytes(skb, off, &new, 4, 0) ? -1 : 0;
}

/* The 16-bit word at byte 'half' (0 or 2) of a 32-bit value loaded from
 * the packet, and the value with that word replaced. Arithmetic rather than
 * indexing, so that no pointer depends on a run-time offset. */
static __always_inline __u16 get16(__be32 word, int half)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return half ? word >> 16 : word & 0xffff;
#else
	return half ? word & 0xffff : word >> 16;
#endif
}

static __always_inline __be32 set16(__be32 word, int half, __u16 v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return half ? (word & 0xffff) | ((__u32)v << 16) : (word & 0xffff0000) | v;
#else
	return half ? (word & 0xffff0000) | v : (word & 0xffff) | ((__u32)v << 16);
#endif
}

/* Update the 16-bit checksum at byte 'half' of a 32-bit value by a one's
 * complement difference (RFC 1624). */
static __always_inline __be32 fix_check_word(__be32 word, int half, __u32 delta)
{
	__u64 s = (__u16)~get16(word, half);

	s += delta;
	return set16(word, half, csum_finish(s));
}

/* Rewrite an ICMP error consistently with a NAT of the flow it quotes: the
 * quoted packet's source (address and port) becomes new_addr:new_port, and
 * the outer address at outer_addr_off (the error's source on the reply
 * path, its destination toward the VM) becomes new_addr too. The quoted IPv4
 * header checksum and the quoted transport checksum (when the quote holds
 * it and it is in use) are fixed, then the ICMP checksum. Returns 0 on
 * success. */
static __always_inline int nat_icmp(struct __sk_buff *skb, struct l3 *p, struct quote *q,
				    int outer_src, const __be32 *new_addr, __be16 new_port)
{
	__u32 icmp_csum = p->l4_off + 2;
	__s64 diff = 0;
	__u32 addr_delta;
	__be32 *outer_old = outer_src ? p->src : p->dst;
	__be32 word;
	int i;

	/* The quoted source address, and the change its pseudo-header makes
	 * to the quoted transport checksum. */
	__s64 d = bpf_csum_diff(q->src, p->family == AGENT_FAMILY_V4 ? 4 : 16,
				(__be32 *)new_addr, p->family == AGENT_FAMILY_V4 ? 4 : 16, 0);
	if (d < 0)
		return -1;
	addr_delta = (__u32)d;
	if (p->family == AGENT_FAMILY_V4) {
		if (icmp_put4(skb, q->off + 12, q->src[0], new_addr[0], &diff))
			return -1;
		/* ttl, protocol, header checksum */
		if (bpf_skb_load_bytes(skb, q->off + 8, &word, 4))
			return -1;
		if (icmp_put4(skb, q->off + 8, word, fix_check_word(word, 2, addr_delta), &diff))
			return -1;
	} else {
#pragma unroll
		for (i = 0; i < 4; i++)
			if (icmp_put4(skb, q->off + 8 + 4 * i, q->src[i], new_addr[i], &diff))
				return -1;
	}

	/* The quoted ports. */
	__be32 ports_old, ports_new;

	if (bpf_skb_load_bytes(skb, q->l4_off, &ports_old, 4))
		return -1;
	ports_new = set16(ports_old, 0, new_port);
	if (icmp_put4(skb, q->l4_off, ports_old, ports_new, &diff))
		return -1;

	/* The quoted transport checksum, if the quote holds it. */
	__u32 qcsum = q->proto == IPPROTO_TCP ? q->l4_off + 16 : q->l4_off + 4;
	int half = q->proto == IPPROTO_TCP ? 0 : 2;

	if (qcsum + 4 <= p->off + p->len) {
		if (bpf_skb_load_bytes(skb, qcsum, &word, 4))
			return -1;
		__u16 check = get16(word, half);

		if (!(q->proto == IPPROTO_UDP && check == 0)) {
			__s64 pd = bpf_csum_diff(&ports_old, 4, &ports_new, 4, addr_delta);
			__be32 nw;

			if (pd < 0)
				return -1;
			nw = fix_check_word(word, half, (__u32)pd);
			if (q->proto == IPPROTO_UDP && get16(nw, half) == 0)
				nw = set16(nw, half, 0xffff);
			if (icmp_put4(skb, qcsum, word, nw, &diff))
				return -1;
		}
	}

	/* The ICMP checksum: the message's own changes, and for ICMPv6 the
	 * pseudo-header's address. Then the outer address itself. */
	if (bpf_l4_csum_replace(skb, icmp_csum, 0, (__u32)diff, 0))
		return -1;
	if (p->family == AGENT_FAMILY_V4) {
		__u32 off = p->off + (outer_src ? 12 : 16);

		if (outer_old[0] == q->src[0] || !outer_src) {
			if (bpf_l3_csum_replace(skb, p->off + 10, outer_old[0], new_addr[0], 4))
				return -1;
			if (bpf_skb_store_bytes(skb, off, new_addr, 4, 0))
				return -1;
		}
	} else {
		__u32 off = p->off + (outer_src ? 8 : 24);
		int same = 1;

#pragma unroll
		for (i = 0; i < 4; i++)
			same &= outer_old[i] == q->src[i];
		if (same || !outer_src) {
			__s64 od = bpf_csum_diff(outer_old, 16, (__be32 *)new_addr, 16, 0);

			if (od < 0)
				return -1;
			if (bpf_l4_csum_replace(skb, icmp_csum, 0, (__u32)od, BPF_F_PSEUDO_HDR))
				return -1;
			if (bpf_skb_store_bytes(skb, off, new_addr, 16, 0))
				return -1;
		}
	}
	return 0;
}

static __always_inline int conn_expired(struct agent_config *cfg, struct conn_state *st, __u8 proto, __u64 now)
{
	__u64 limit = proto == IPPROTO_UDP ? cfg->udp_idle_ns :
		      st->state == AGENT_CONN_CLOSING ? cfg->tcp_closing_ns : cfg->tcp_idle_ns;

	return now > st->last_seen && now - st->last_seen > limit;
}

/* Note a packet of a tracked connection in either direction. A FIN or RST
 * starts the grace time; a SYN on a closing entry is a new connection on the
 * same 5-tuple and reopens it. A closing entry keeps the time of its first
 * FIN/RST, so that the grace time is not extended by the rest of the
 * close. */
static __always_inline void conn_touch(struct conn_state *st, __u8 proto, __u8 flags, __u64 now)
{
	if (proto == IPPROTO_TCP) {
		if ((flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN &&
		    st->state == AGENT_CONN_CLOSING) {
			st->state = AGENT_CONN_OPEN;
		} else if (flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) {
			if (st->state != AGENT_CONN_CLOSING) {
				st->state = AGENT_CONN_CLOSING;
				st->last_seen = now;
			}
			return;
		}
		if (st->state == AGENT_CONN_CLOSING)
			return;
	}
	st->last_seen = now;
}

static __always_inline void conn_track(struct agent_config *cfg, struct l3 *p, const __be32 *app,
				       __be16 app_port)
{
	struct conn_key k = {};
	__u64 now = bpf_ktime_get_coarse_ns();

	__builtin_memcpy(k.app, app, 16);
	__builtin_memcpy(k.client, p->src, 16);
	k.app_port = app_port;
	k.client_port = p->sport;
	k.proto = p->proto;
	k.family = p->family;

	struct conn_state *st = bpf_map_lookup_elem(&conns, &k);

	if (st) {
		if (!conn_expired(cfg, st, p->proto, now)) {
			conn_touch(st, p->proto, p->tcp_flags, now);
			return;
		}
		count(AGENT_STAT_CONN_EXPIRED);
	}

	struct conn_state fresh = {
		.vip_port = p->dport,
		.state = AGENT_CONN_OPEN,
		.last_seen = now,
	};

	__builtin_memcpy(fresh.vip, p->dst, 16);
	conn_touch(&fresh, p->proto, p->tcp_flags, now);
	if (bpf_map_update_elem(&conns, &k, &fresh, BPF_ANY))
		count(AGENT_STAT_CONN_INSERT_FAILED);
	else
		count(AGENT_STAT_CONN_INSERT);
}

/* Remove the len bytes of outer headers after the Ethernet header and make
 * the frame announce the inner family. bpf_skb_adjust_room() removes bytes
 * but keeps skb->protocol; the flags that change it
 * (BPF_F_ADJ_ROOM_DECAP_L3_*) are newer than Linux 6.1. So when the families
 * differ, bpf_skb_change_proto() does part of the work: it sets
 * skb->protocol and removes (6→4) or inserts (4→6) the 20 bytes by which
 * the IP headers differ, right after the Ethernet header, and
 * bpf_skb_adjust_room() removes the rest. Returns 0 on success. */
static __always_inline int decap(struct __sk_buff *skb, __u8 outer_family, __u8 inner_family, __u32 len)
{
	const __u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO;
	__be16 proto;

	if (outer_family == inner_family)
		return bpf_skb_adjust_room(skb, -(__s32)len, BPF_ADJ_ROOM_MAC, flags) ? -1 : 0;
	if (inner_family == AGENT_FAMILY_V4) {
		if (bpf_skb_adjust_room(skb, -(__s32)(len - (IPV6_HLEN - IPV4_HLEN)), BPF_ADJ_ROOM_MAC, flags))
			return -1;
		if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0))
			return -1;
		proto = bpf_htons(ETH_P_IP);
	} else {
		if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0))
			return -1;
		if (bpf_skb_adjust_room(skb, -(__s32)(len + (IPV6_HLEN - IPV4_HLEN)), BPF_ADJ_ROOM_MAC, flags))
			return -1;
		proto = bpf_htons(ETH_P_IPV6);
	}
	return bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, 2, 0) ? -1 : 0;
}

static __always_inline struct agent_vip *find_vip(struct l3 *p, struct quote *q)
{
	struct agent_vip_key k = {};
	struct agent_vip *v;

	__builtin_memcpy(k.addr, p->dst, 16);
	k.family = p->family;
	if (p->icmp_err) {
		/* An error about a packet the VIP sent: the VIP's port is the
		 * quote's source port. */
		k.port = q->sport;
		k.proto = q->proto;
	} else {
		k.port = p->dport;
		k.proto = p->proto;
	}
	v = bpf_map_lookup_elem(&vips, &k);
	if (v)
		return v;
	k.port = 0;
	return bpf_map_lookup_elem(&vips, &k);
}

static __always_inline int inner_drop(int err)
{
	switch (err) {
	case PARSE_TRUNCATED:
		return drop(AGENT_STAT_DROP_INNER_TRUNCATED);
	case PARSE_FRAGMENT:
		return drop(AGENT_STAT_DROP_INNER_FRAGMENT);
	case PARSE_PROTO:
		return drop(AGENT_STAT_DROP_INNER_PROTO);
	}
	return drop(AGENT_STAT_DROP_INNER_BAD);
}

SEC("tc")
int agent_egress(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct agent_config *cfg = bpf_map_lookup_elem(&config, &zero);

	if (!cfg || !cfg->configured)
		return pass(AGENT_STAT_PASS_NO_CONFIG);
	pull(skb);

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct backend_key bk = {};
	__u32 off = ETH_HLEN_, end, l4_off;
	__u8 outer_family, proto;

	if ((void *)(eth + 1) > data_end)
		return pass(AGENT_STAT_PASS_SHORT);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return pass(AGENT_STAT_PASS_SHORT);
		bk.addr[0] = ip->daddr;
		bk.family = outer_family = AGENT_FAMILY_V4;
		if (!bpf_map_lookup_elem(&backend_addrs, &bk))
			return pass(AGENT_STAT_PASS_NOT_BACKEND);
		__u32 len = bpf_ntohs(ip->tot_len);

		if (ip->version != 4 || ip->ihl < 5 || len < ip->ihl * 4)
			return drop(AGENT_STAT_DROP_OUTER_BAD);
		if (off + len > skb->len)
			return drop(AGENT_STAT_DROP_OUTER_TRUNCATED);
		if (ip->frag_off & bpf_htons(IP_MF_OFFSET))
			return pass(AGENT_STAT_PASS_FRAGMENT);
		proto = ip->protocol;
		end = off + len;
		l4_off = off + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return pass(AGENT_STAT_PASS_SHORT);
		__builtin_memcpy(bk.addr, &ip6->daddr, 16);
		bk.family = outer_family = AGENT_FAMILY_V6;
		if (!bpf_map_lookup_elem(&backend_addrs, &bk))
			return pass(AGENT_STAT_PASS_NOT_BACKEND);
		__u32 len = IPV6_HLEN + bpf_ntohs(ip6->payload_len);

		if (ip6->version != 6 || ip6->payload_len == 0)
			return drop(AGENT_STAT_DROP_OUTER_BAD);
		if (off + len > skb->len)
			return drop(AGENT_STAT_DROP_OUTER_TRUNCATED);
		proto = ip6->nexthdr;
		end = off + len;
		l4_off = off + IPV6_HLEN;
	} else if (eth->h_proto == bpf_htons(ETH_P_8021Q) || eth->h_proto == bpf_htons(ETH_P_8021AD)) {
		return pass(AGENT_STAT_PASS_VLAN);
	} else {
		return pass(AGENT_STAT_PASS_NOT_IP);
	}

	__u32 inner_off;
	__u8 inner_family;
	__u32 decap_stat;

	switch (proto) {
	case IPPROTO_IPIP:
	case IPPROTO_IPV6:
		inner_off = l4_off;
		inner_family = proto == IPPROTO_IPIP ? AGENT_FAMILY_V4 : AGENT_FAMILY_V6;
		decap_stat = AGENT_STAT_DECAP_IPIP;
		break;
	case IPPROTO_UDP: {
		struct udphdr *uh = data + (l4_off & OFF_MASK);

		if ((void *)(uh + 1) > data_end || l4_off + UDP_HLEN > end)
			return drop(AGENT_STAT_DROP_OUTER_TRUNCATED);
		if (uh->dest != cfg->gue_port)
			return pass(AGENT_STAT_PASS_NOT_ENCAP);
		if (bpf_ntohs(uh->len) != end - l4_off)
			return drop(AGENT_STAT_DROP_OUTER_BAD);
		__u8 *gue = (void *)(uh + 1);

		inner_off = l4_off + UDP_HLEN;
		if ((void *)(gue + GUE0_HLEN) > data_end || inner_off + 1 > end)
			return drop(AGENT_STAT_DROP_OUTER_TRUNCATED);
		switch (gue[0] >> 6) {
		case 1: /* variant 1: a bare IPv4 or IPv6 packet */
			if (gue[0] >> 4 == 4)
				inner_family = AGENT_FAMILY_V4;
			else if (gue[0] >> 4 == 6)
				inner_family = AGENT_FAMILY_V6;
			else
				return drop(AGENT_STAT_DROP_GUE_BAD);
			decap_stat = AGENT_STAT_DECAP_GUE;
			break;
		case 0: /* variant 0: version 0, C bit, hlen (words), proto/ctype, flags */
			if (inner_off + GUE0_HLEN > end)
				return drop(AGENT_STAT_DROP_OUTER_TRUNCATED);
			if (gue[0] & 0x20)
				return drop(AGENT_STAT_DROP_GUE_CONTROL);
			if (gue[1] == IPPROTO_IPIP)
				inner_family = AGENT_FAMILY_V4;
			else if (gue[1] == IPPROTO_IPV6)
				inner_family = AGENT_FAMILY_V6;
			else
				return drop(AGENT_STAT_DROP_GUE_PROTO);
			/* Optional fields (hlen words) are skipped: nothing we
			 * accept carries any that change the inner packet. */
			inner_off += GUE0_HLEN + (gue[0] & 0x1f) * 4;
			if (inner_off > end)
				return drop(AGENT_STAT_DROP_OUTER_TRUNCATED);
			decap_stat = AGENT_STAT_DECAP_GUE0;
			break;
		default:
			return drop(AGENT_STAT_DROP_GUE_BAD);
		}
		break;
	}
	default:
		return pass(AGENT_STAT_PASS_NOT_ENCAP);
	}

	struct l3 p = {};
	struct quote q = {};
	int err = parse_ip(skb, inner_off, end, inner_family, &p, &q);

	if (err)
		return inner_drop(err);
	struct agent_vip *vip = find_vip(&p, &q);

	if (!vip)
		return drop(AGENT_STAT_DROP_UNKNOWN_VIP);
	__u32 mode = vip->mode;
	__be32 app[4];
	__be16 app_port = vip->app_port;

	__builtin_memcpy(app, vip->app_addr, 16);

	if (decap(skb, outer_family, inner_family, inner_off - ETH_HLEN_))
		return drop(AGENT_STAT_DROP_ADJUST);
	count(decap_stat);
	if (mode != AGENT_MODE_TRANSPARENT) {
		count(AGENT_STAT_DELIVER_LOCAL);
		return TC_ACT_OK;
	}

	/* The inner packet now starts after the Ethernet header. */
	__u32 shift = inner_off - ETH_HLEN_;

	p.off -= shift;
	p.l4_off -= shift;
	q.off -= shift;
	q.l4_off -= shift;
	if (p.icmp_err) {
		if (!app_port)
			app_port = q.sport;
		if (nat_icmp(skb, &p, &q, 0, app, app_port))
			return drop(AGENT_STAT_DROP_ADJUST);
	} else {
		if (!app_port)
			app_port = p.dport;
		if (nat_l4(skb, &p, 0, app, app_port))
			return drop(AGENT_STAT_DROP_ADJUST);
		conn_track(cfg, &p, app, app_port);
	}
	count(AGENT_STAT_DELIVER_TRANSPARENT);
	return TC_ACT_OK;
}

SEC("tc")
int agent_ingress(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct agent_config *cfg = bpf_map_lookup_elem(&config, &zero);

	if (!cfg)
		return reply_pass(AGENT_STAT_REPLY_OTHER);
	pull(skb);

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 end;
	__u8 family;

	if ((void *)(eth + 1) > data_end)
		return reply_pass(AGENT_STAT_REPLY_OTHER);
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return reply_pass(AGENT_STAT_REPLY_OTHER);
		family = AGENT_FAMILY_V4;
		end = ETH_HLEN_ + bpf_ntohs(ip->tot_len);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return reply_pass(AGENT_STAT_REPLY_OTHER);
		family = AGENT_FAMILY_V6;
		end = ETH_HLEN_ + IPV6_HLEN + bpf_ntohs(ip6->payload_len);
	} else {
		return reply_pass(AGENT_STAT_REPLY_OTHER);
	}
	/* Ethernet padding after the IP packet is allowed; a packet longer
	 * than its frame is not ours to judge. */
	if (end > skb->len)
		return reply_pass(AGENT_STAT_REPLY_OTHER);

	struct l3 p = {};
	struct quote q = {};

	if (parse_ip(skb, ETH_HLEN_, end, family, &p, &q))
		return reply_pass(AGENT_STAT_REPLY_OTHER);

	struct conn_key k = {};

	k.family = family;
	if (p.icmp_err) {
		__builtin_memcpy(k.app, q.src, 16);
		__builtin_memcpy(k.client, q.dst, 16);
		k.app_port = q.sport;
		k.client_port = q.dport;
		k.proto = q.proto;
	} else {
		__builtin_memcpy(k.app, p.src, 16);
		__builtin_memcpy(k.client, p.dst, 16);
		k.app_port = p.sport;
		k.client_port = p.dport;
		k.proto = p.proto;
	}

	struct conn_state *st = bpf_map_lookup_elem(&conns, &k);

	if (!st)
		return reply_pass(AGENT_STAT_REPLY_UNTRACKED);
	__u64 now = bpf_ktime_get_coarse_ns();

	if (conn_expired(cfg, st, k.proto, now)) {
		bpf_map_delete_elem(&conns, &k);
		count(AGENT_STAT_CONN_EXPIRED);
		return reply_pass(AGENT_STAT_REPLY_EXPIRED);
	}

	__be32 vip[4];
	__be16 vip_port = st->vip_port;

	__builtin_memcpy(vip, st->vip, 16);
	if (p.icmp_err) {
		if (nat_icmp(skb, &p, &q, 1, vip, vip_port)) {
			count(AGENT_STAT_REPLY_DROP);
			count(AGENT_STAT_REPLY_DROP_STORE);
			return TC_ACT_SHOT;
		}
		count(AGENT_STAT_REPLY_ICMP_REWRITTEN);
	} else {
		conn_touch(st, p.proto, p.tcp_flags, now);
		if (nat_l4(skb, &p, 1, vip, vip_port)) {
			count(AGENT_STAT_REPLY_DROP);
			count(AGENT_STAT_REPLY_DROP_STORE);
			return TC_ACT_SHOT;
		}
	}
	count(AGENT_STAT_REPLY_REWRITTEN);
	return TC_ACT_OK;
}
