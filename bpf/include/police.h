/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet parsing and TCP RST construction shared by the XDP policing
 * programs (connection rate limit, concurrent-connection limit).
 *
 * The parser finds the flow a packet belongs to: a plain TCP or UDP packet,
 * or the TCP or UDP packet inside the LB's encapsulation (GUE variant 1 or 0
 * on UDP port POLICE_GUE_PORT, IPIP, IP6IP6, IPv4-in-IPv6, IPv6-in-IPv4), as
 * a policing program sees it on a backend host in front of its local
 * services. One level of encapsulation is opened; a packet inside it is
 * policed as the inner flow.
 *
 * It differs from the LB's parser on purpose: the LB drops malformed packets
 * aimed at its VIPs and needs checksum sums of what it forwards; a policing
 * program only needs the flow and passes whatever it cannot parse. */
#ifndef SLUICE_POLICE_H
#define SLUICE_POLICE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "csum.h"

/* The GUE destination port (DESIGN.md: 6080). A program whose deployment
 * uses another port defines it before including this header. */
#ifndef POLICE_GUE_PORT
#define POLICE_GUE_PORT 6080
#endif

#define POLICE_TCP_FIN 0x01
#define POLICE_TCP_SYN 0x02
#define POLICE_TCP_RST 0x04
#define POLICE_TCP_ACK 0x10

/* TTL / hop limit of the RSTs we build: what Linux uses by default. */
#define POLICE_RST_TTL 64

/* Offsets are masked with this before pointer arithmetic so the verifier
 * can bound them; the deepest header we read (VLAN, outer IPv6, UDP, GUE
 * with 124 bytes of options, inner IPv4 with options) starts below it. */
#define POLICE_OFF_MASK 0x1ff

enum police_encap {
	POLICE_ENCAP_NONE = 0,
	POLICE_ENCAP_GUE = 1,
	POLICE_ENCAP_IPIP = 2,
};

/* Why police_parse gave up; all negative, so that 0 means "parsed". */
enum police_parse_err {
	/* Not IPv4 or IPv6 (ARP, LLDP...), or more than one VLAN tag. */
	POLICE_ERR_NOT_IP = -1,
	/* IP, but neither TCP nor UDP (ICMP, IPv6 extension headers...). */
	POLICE_ERR_PROTO = -2,
	/* A header extends past the packet or past its enclosing length. */
	POLICE_ERR_TRUNCATED = -3,
	/* A header that cannot be valid (version, IHL, lengths, TCP offset). */
	POLICE_ERR_BAD = -4,
	/* A fragment other than the first: it has no L4 header. */
	POLICE_ERR_FRAGMENT = -5,
};

struct police_pkt {
	__u8 family;     /* 4 or 6 */
	__u8 l4proto;    /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 tcp_flags;  /* the TCP flags byte (FIN..CWR), 0 for UDP */
	__u8 encap;      /* POLICE_ENCAP_NONE / _GUE / _IPIP: the flow was found
			    inside the LB's encapsulation */
	__u32 saddr[4], daddr[4]; /* network order; IPv4 in [0], rest 0 */
	__u16 sport, dport;       /* network order */
	__u16 l2_len;    /* Ethernet (+ one 802.1Q/802.1ad tag) header length */
	__u16 outer_len; /* bytes of outer encapsulation between l2 and the inner IP header */
	__u16 l3_off, l4_off;     /* offsets of the (inner) IP and L4 headers from data */
};

/* What police_parse_ip learned besides the police_pkt fields. */
struct police_l3 {
	__u32 l4_off;
	__u32 end;       /* end of the IP packet (IP length), from data */
	__u8 proto;
};

/* Parse the IP header at off of an IP packet that must fit in [off, end)
 * (end: the enclosing packet's end). Fills the addresses of p and l. */
static __always_inline int police_parse_ip(struct xdp_md *ctx, __u32 off, __u32 end, __u8 family,
					   struct police_pkt *p, struct police_l3 *l)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 avail = end > off ? end - off : 0;
	__u32 len;

	if (family == 4) {
		struct iphdr *ip = data + (off & POLICE_OFF_MASK);

		if ((void *)(ip + 1) > data_end || avail < sizeof(*ip))
			return POLICE_ERR_TRUNCATED;
		len = bpf_ntohs(ip->tot_len);
		if (ip->version != 4 || ip->ihl < 5 || len < ip->ihl * 4)
			return POLICE_ERR_BAD;
		if (len > avail)
			return POLICE_ERR_TRUNCATED;
		if (ip->frag_off & bpf_htons(0x1fff))
			return POLICE_ERR_FRAGMENT;
		p->family = 4;
		p->saddr[0] = ip->saddr;
		p->daddr[0] = ip->daddr;
		p->saddr[1] = p->saddr[2] = p->saddr[3] = 0;
		p->daddr[1] = p->daddr[2] = p->daddr[3] = 0;
		l->proto = ip->protocol;
		l->l4_off = off + ip->ihl * 4;
	} else {
		struct ipv6hdr *ip6 = data + (off & POLICE_OFF_MASK);

		if ((void *)(ip6 + 1) > data_end || avail < sizeof(*ip6))
			return POLICE_ERR_TRUNCATED;
		len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
		/* payload_len 0 is a jumbogram, which needs a hop-by-hop
		 * option we do not walk. */
		if (ip6->version != 6 || ip6->payload_len == 0)
			return POLICE_ERR_BAD;
		if (len > avail)
			return POLICE_ERR_TRUNCATED;
		p->family = 6;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		l->proto = ip6->nexthdr;
		if (l->proto == IPPROTO_FRAGMENT)
			return POLICE_ERR_FRAGMENT;
		l->l4_off = off + sizeof(*ip6);
	}
	l->end = off + len;
	return 0;
}

/* Parse the TCP or UDP header at l->l4_off into p. */
static __always_inline int police_parse_l4(struct xdp_md *ctx, const struct police_l3 *l,
					   struct police_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *l4 = data + (l->l4_off & POLICE_OFF_MASK);
	__u32 l4_len = l->end - l->l4_off;

	p->l4proto = l->proto;
	p->l4_off = l->l4_off;
	if (l->proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > data_end || l4_len < sizeof(*th))
			return POLICE_ERR_TRUNCATED;
		if (th->doff < 5 || th->doff * 4 > l4_len)
			return POLICE_ERR_BAD;
		p->sport = th->source;
		p->dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		return 0;
	}
	if (l->proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end || l4_len < sizeof(*uh))
			return POLICE_ERR_TRUNCATED;
		if (bpf_ntohs(uh->len) < sizeof(*uh) || bpf_ntohs(uh->len) > l4_len)
			return POLICE_ERR_BAD;
		p->sport = uh->source;
		p->dport = uh->dest;
		p->tcp_flags = 0;
		return 0;
	}
	return POLICE_ERR_PROTO;
}

/* police_parse returns 0 when the packet is TCP or UDP (possibly inside the
 * LB's encapsulation, then p->encap says which), a negative enum
 * police_parse_err otherwise. A GUE or IPIP packet whose inner packet is not
 * TCP or UDP is reported by the inner packet's error, not as the outer UDP
 * or IPIP packet: the flow the policing is about is the inner one. */
static __always_inline int police_parse(struct xdp_md *ctx, struct police_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct police_l3 l = {};
	__be16 proto;
	__u8 family;
	int err;

	__builtin_memset(p, 0, sizeof(*p));
	if ((void *)(eth + 1) > data_end)
		return POLICE_ERR_TRUNCATED;
	proto = eth->h_proto;
	p->l2_len = sizeof(*eth);
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		__be16 *tag = (void *)(eth + 1);

		if ((void *)(tag + 2) > data_end)
			return POLICE_ERR_TRUNCATED;
		proto = tag[1];
		p->l2_len += 4;
	}
	if (proto == bpf_htons(ETH_P_IP))
		family = 4;
	else if (proto == bpf_htons(ETH_P_IPV6))
		family = 6;
	else
		return POLICE_ERR_NOT_IP;

	__u32 frame_len = data_end - data;

	err = police_parse_ip(ctx, p->l2_len, frame_len, family, p, &l);
	if (err)
		return err;

	__u32 inner = 0;
	__u8 inner_family = 0;

	if (l.proto == IPPROTO_IPIP || l.proto == IPPROTO_IPV6) {
		inner = l.l4_off;
		inner_family = l.proto == IPPROTO_IPIP ? 4 : 6;
		p->encap = POLICE_ENCAP_IPIP;
	} else if (l.proto == IPPROTO_UDP) {
		struct udphdr *uh = data + (l.l4_off & POLICE_OFF_MASK);
		__u8 *gue = (void *)(uh + 1);

		if ((void *)(uh + 1) > data_end || l.l4_off + sizeof(*uh) > l.end)
			return POLICE_ERR_TRUNCATED;
		if (uh->dest == bpf_htons(POLICE_GUE_PORT)) {
			inner = l.l4_off + sizeof(*uh);
			if ((void *)(gue + 4) > data_end || inner + 4 > l.end)
				return POLICE_ERR_TRUNCATED;
			switch (gue[0] >> 6) {
			case 1: /* variant 1: a bare IPv4 or IPv6 packet */
				inner_family = gue[0] >> 4;
				break;
			case 0: /* variant 0: header with hlen words of options */
				if (gue[0] & 0x20) /* control message */
					return POLICE_ERR_PROTO;
				if (gue[1] == IPPROTO_IPIP)
					inner_family = 4;
				else if (gue[1] == IPPROTO_IPV6)
					inner_family = 6;
				inner += 4 + (gue[0] & 0x1f) * 4;
				break;
			}
			if (inner_family != 4 && inner_family != 6)
				return POLICE_ERR_PROTO;
			p->encap = POLICE_ENCAP_GUE;
		}
	}
	if (p->encap != POLICE_ENCAP_NONE) {
		__u32 outer_end = l.end;

		p->outer_len = inner - p->l2_len;
		err = police_parse_ip(ctx, inner, outer_end, inner_family, p, &l);
		if (err)
			return err;
	}
	p->l3_off = p->l2_len + p->outer_len;
	return police_parse_l4(ctx, &l, p);
}

/* police_rst rewrites a parsed TCP packet into the reset the host's TCP
 * would answer it with (RFC 9293 3.10.7.1): to a segment without ACK (a
 * SYN) a RST|ACK with seq 0 and ack = its seq + its length, SYN and FIN
 * counting one each; to a segment with ACK (a handshake's final ACK) a RST
 * whose seq is that ACK's acknowledgement number, the one sequence number
 * the peer is sure to accept, and no ACK. MACs swapped, addresses and
 * ports swapped, no options, no payload, the encapsulation removed (the RST
 * goes from the inner destination, the VIP, straight to the client), the
 * VLAN tag kept, TTL / hop limit 64, IPv4 id 0 without DF as Linux's reset
 * socket sends it, window 0, IPv4 and TCP checksums computed in full.
 * Returns XDP_TX, or XDP_DROP when the packet cannot be rewritten (the
 * caller counts it). */
static __always_inline int police_rst(struct xdp_md *ctx, const struct police_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l2 = p->l2_len;
	__u32 l3 = p->l3_off;
	__u32 l4 = p->l4_off;
	int v4 = p->family == 4;
	__u32 ip_hlen = v4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
	__u32 new_len = l2 + ip_hlen + sizeof(struct tcphdr);
	__u8 macs[2 * ETH_ALEN];
	__be16 tag[2] = {};
	__u32 seg_len;

	if (p->l4proto != IPPROTO_TCP || (l2 != ETH_HLEN && l2 != ETH_HLEN + 4))
		return XDP_DROP;

	struct ethhdr *eth = data;
	struct tcphdr *th = data + (l4 & POLICE_OFF_MASK);

	if ((void *)(eth + 1) + 4 > data_end || (void *)(th + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(macs, eth->h_source, ETH_ALEN);
	__builtin_memcpy(macs + ETH_ALEN, eth->h_dest, ETH_ALEN);
	if (l2 != ETH_HLEN) {
		tag[0] = eth->h_proto;
		tag[1] = *(__be16 *)(eth + 1);
	}
	if (v4) {
		struct iphdr *ip = data + (l3 & POLICE_OFF_MASK);

		if ((void *)(ip + 1) > data_end)
			return XDP_DROP;
		seg_len = bpf_ntohs(ip->tot_len) - (l4 - l3);
	} else {
		struct ipv6hdr *ip6 = data + (l3 & POLICE_OFF_MASK);

		if ((void *)(ip6 + 1) > data_end)
			return XDP_DROP;
		seg_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len) - (l4 - l3);
	}
	seg_len -= th->doff * 4;
	if (p->tcp_flags & POLICE_TCP_SYN)
		seg_len++;
	if (p->tcp_flags & POLICE_TCP_FIN)
		seg_len++;
	__be32 seq = 0;
	__be32 ack = bpf_htonl(bpf_ntohl(th->seq) + seg_len);
	__u16 flags = POLICE_TCP_RST | POLICE_TCP_ACK;

	if (p->tcp_flags & POLICE_TCP_ACK) {
		seq = th->ack_seq;
		ack = 0;
		flags = POLICE_TCP_RST;
	}

	/* The new frame is never longer than the old one: drop the outer
	 * encapsulation at the front and the rest at the back, then write the
	 * new headers from the front. */
	__u32 old_len = data_end - data;
	__u32 cut = l3 - l2;

	if (old_len < cut + new_len)
		return XDP_DROP;
	if (cut && bpf_xdp_adjust_head(ctx, (int)cut))
		return XDP_DROP;
	if (old_len - cut > new_len && bpf_xdp_adjust_tail(ctx, -(int)(old_len - cut - new_len)))
		return XDP_DROP;

	/* The compiler knows l2 is 14 or 18 and would drop the masks below;
	 * the 6.1 verifier then cannot bound the offset. */
	asm volatile("" : "+r"(l2));
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, macs, 2 * ETH_ALEN);
	__be16 ethertype = bpf_htons(v4 ? ETH_P_IP : ETH_P_IPV6);

	if (l2 != ETH_HLEN) {
		__be16 *t = (void *)(eth + 1);

		if ((void *)(t + 2) > data_end)
			return XDP_DROP;
		eth->h_proto = tag[0];
		t[0] = tag[1];
		t[1] = ethertype;
	} else {
		eth->h_proto = ethertype;
	}

	__u64 sum;

	if (v4) {
		struct iphdr *ip = data + (l2 & 0x1f);

		th = (void *)(ip + 1);
		if ((void *)(th + 1) > data_end)
			return XDP_DROP;
		ip->version = 4;
		ip->ihl = 5;
		ip->tos = 0;
		ip->tot_len = bpf_htons(sizeof(*ip) + sizeof(*th));
		ip->id = 0;
		ip->frag_off = 0;
		ip->ttl = POLICE_RST_TTL;
		ip->protocol = IPPROTO_TCP;
		ip->check = 0;
		ip->saddr = p->daddr[0];
		ip->daddr = p->saddr[0];
		ip->check = csum_finish(csum_words((__be32 *)ip, 5));
		sum = csum_pseudo4(ip->saddr, ip->daddr, IPPROTO_TCP, sizeof(*th));
	} else {
		struct ipv6hdr *ip6 = data + (l2 & 0x1f);

		th = (void *)(ip6 + 1);
		if ((void *)(th + 1) > data_end)
			return XDP_DROP;
		*(__be32 *)ip6 = bpf_htonl(6u << 28);
		ip6->payload_len = bpf_htons(sizeof(*th));
		ip6->nexthdr = IPPROTO_TCP;
		ip6->hop_limit = POLICE_RST_TTL;
		__builtin_memcpy(&ip6->saddr, p->daddr, 16);
		__builtin_memcpy(&ip6->daddr, p->saddr, 16);
		sum = csum_pseudo6(p->daddr, p->saddr, IPPROTO_TCP, sizeof(*th));
	}
	th->source = p->dport;
	th->dest = p->sport;
	th->seq = seq;
	th->ack_seq = ack;
	/* data offset 5 words, then the flags */
	*((__be16 *)th + 6) = bpf_htons(5 << 12 | flags);
	th->window = 0;
	th->check = 0;
	th->urg_ptr = 0;
	th->check = csum_finish(sum + csum_words((__be32 *)th, 5));
	return XDP_TX;
}

#endif
