// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Sluice L4 load balancer: XDP on one NIC ("LB on a stick").
 *
 * A packet addressed to a VIP gets a backend from the per-CPU connection
 * table or, on a miss, from the VIP's Maglev ring; it is encapsulated (GUE
 * variant 1 or IPIP) toward that backend and bounced out of the same NIC
 * with XDP_TX. Everything else goes to the stack untouched. Malformed input
 * aimed at a VIP is dropped with a reason counter; malformed input that we
 * cannot attribute to a VIP is passed, since the stack validates it anyway. */

#include <linux/bpf.h>
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

#include "lb.h"
#include "csum.h"
#include "jhash.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ETH_P_8021Q_BE bpf_htons(0x8100)
#define ETH_P_8021AD_BE bpf_htons(0x88A8)
#define VLAN_HLEN 4
#define GUE_HLEN 8
#define IPV4_HLEN 20
#define IPV6_HLEN 40
#define IP_DF 0x4000
#define IP_MF_OFFSET 0x3fff
#define OUTER_TTL 64
#define GUE_SPORT_BASE 49152
#define GUE_SPORT_MASK 0x3fff

/* Placeholder sizes; the control plane sets the real ones before loading. */
#define DEFAULT_MAX_VIPS 512
#define DEFAULT_MAX_REALS 4096
#define DEFAULT_RING_SIZE 65537
#define DEFAULT_CONN_SIZE 65536
#define DEFAULT_MAX_CPUS 128

/* Types that appear only behind pointers in map-in-map templates, or only as
 * constants, get no complete BTF of their own; these unused globals give it
 * to them, for the map loader and for bpf2go -type. */
struct flow_key btf_anchor_flow_key __attribute__((unused));
struct flow_state btf_anchor_flow_state __attribute__((unused));
enum lb_stat btf_anchor_lb_stat __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, struct vip_meta);
} vips SEC(".maps");

struct ring {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_RING_SIZE);
	__type(key, __u32);
	__type(value, __u32);
};

/* One Maglev ring per VIP id. The control plane fills a new inner map and
 * swaps it in with one update, so a packet sees either the old ring or the
 * new one, never a mix. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__array(values, struct ring);
} rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DEFAULT_MAX_REALS);
	__type(key, __u32);
	__type(value, struct real_def);
} reals SEC(".maps");

struct conn_table {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DEFAULT_CONN_SIZE);
	__type(key, struct flow_key);
	__type(value, struct flow_state);
};

/* One connection table per CPU: with RSS a flow stays on one CPU, so tables
 * never contend and one CPU's flood cannot evict another CPU's flows. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, DEFAULT_MAX_CPUS);
	__type(key, __u32);
	__array(values, struct conn_table);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct lb_traffic);
} vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEFAULT_MAX_REALS);
	__type(key, __u32);
	__type(value, struct lb_traffic);
} real_stats SEC(".maps");

/* What the parser learned about a packet. Offsets are from the start of the
 * frame; addresses and ports stay in network byte order. */
struct pkt {
	__u32 l3_off;
	__u32 l4_off;
	__u32 ip_len;    /* IPv4 total length or 40 + IPv6 payload length */
	__u64 hdr_sum;   /* one's complement sum of the IP header, options included */
	__be32 src[4];
	__be32 dst[4];
	__be16 sport;
	__be16 dport;
	__be16 vlan_tci;
	__be16 vlan_proto; /* TPID of the tag, 802.1Q or 802.1ad, sent back as received */
	__u8 has_vlan;
	__u8 family;
	__u8 proto;
	__u8 tos;
	__u8 df;
	__u8 tcp_flags;
};

/* A backend choice. */
struct pick {
	struct real_def *real;
	__u32 real_id;
	__u32 hash;      /* 5-tuple hash: GUE source port, IPv6 flow label */
	/* The client side of the flow, for IPIP outer sources: for an ICMP
	 * error, the quoted flow's client, not the error's sender. */
	__be32 client_low;
	__be16 client_port;
};

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);

	if (v)
		*v += 1;
}

static __always_inline int drop(__u32 reason)
{
	count(reason);
	return XDP_DROP;
}

static __always_inline int pass(__u32 reason)
{
	count(reason);
	return XDP_PASS;
}

static __always_inline void count_traffic(void *map, __u32 idx, __u32 bytes)
{
	struct lb_traffic *t = bpf_map_lookup_elem(map, &idx);

	if (t) {
		t->packets += 1;
		t->bytes += bytes;
	}
}

static __always_inline int is_vip_addr(struct pkt *p)
{
	struct vip_key k = {};

	__builtin_memcpy(k.addr, p->dst, sizeof(k.addr));
	k.family = p->family;
	return bpf_map_lookup_elem(&vips, &k) != NULL;
}

/* Drop a malformed packet aimed at a VIP with its reason; pass anything else
 * to the stack, which validates it on its own. */
static __always_inline int reject(struct pkt *p, __u32 reason)
{
	if (is_vip_addr(p))
		return drop(reason);
	return pass(LB_STAT_PASS_NOT_VIP);
}

static __always_inline __u32 flow_hash(struct pkt *p, __u32 seed)
{
	__u32 ports = ((__u32)bpf_ntohs(p->sport) << 16) | bpf_ntohs(p->dport);

	if (p->family == LB_FAMILY_V4)
		return jhash_3words(bpf_ntohl(p->src[0]), bpf_ntohl(p->dst[0]), ports, seed);

	__u32 k[9];
#pragma unroll
	for (int i = 0; i < 4; i++) {
		k[i] = bpf_ntohl(p->src[i]);
		k[4 + i] = bpf_ntohl(p->dst[i]);
	}
	k[8] = ports;
	return jhash_9words(k, seed);
}

static __always_inline __u32 src_hash(struct pkt *p, __u32 seed)
{
	if (p->family == LB_FAMILY_V4)
		return jhash_1word(bpf_ntohl(p->src[0]), seed);

	__u32 k[4];
#pragma unroll
	for (int i = 0; i < 4; i++)
		k[i] = bpf_ntohl(p->src[i]);
	return jhash_4words(k, seed);
}

/* Parse L2 and L3. Returns -1 when the packet is ours to balance or answer
 * (p filled in), otherwise the XDP verdict to return. */
static __always_inline int parse(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return pass(LB_STAT_PASS_SHORT);
	proto = eth->h_proto;
	p->l3_off = sizeof(*eth);
	if (proto == ETH_P_8021Q_BE || proto == ETH_P_8021AD_BE) {
		__be16 *tag = (void *)(eth + 1);

		if ((void *)(tag + 2) > data_end)
			return pass(LB_STAT_PASS_SHORT);
		p->has_vlan = 1;
		p->vlan_tci = tag[0];
		p->vlan_proto = proto;
		proto = tag[1];
		p->l3_off += VLAN_HLEN;
		if (proto == ETH_P_8021Q_BE || proto == ETH_P_8021AD_BE)
			return pass(LB_STAT_PASS_VLAN_STACK);
	}

	__u32 avail = (__u32)(data_end - data) - p->l3_off;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + p->l3_off;

		if ((void *)(ip + 1) > data_end)
			return pass(LB_STAT_PASS_SHORT);
		p->family = LB_FAMILY_V4;
		p->src[0] = ip->saddr;
		p->dst[0] = ip->daddr;
		p->proto = ip->protocol;
		p->tos = ip->tos;
		p->df = !!(ip->frag_off & bpf_htons(IP_DF));
		p->ip_len = bpf_ntohs(ip->tot_len);
		__u32 hlen = ip->ihl * 4;

		if (ip->version != 4 || hlen < IPV4_HLEN || p->ip_len < hlen)
			return reject(p, LB_STAT_DROP_BAD_HEADER);
		if (p->ip_len > avail)
			return reject(p, LB_STAT_DROP_TRUNCATED);
		if (ip->frag_off & bpf_htons(IP_MF_OFFSET))
			return reject(p, LB_STAT_DROP_FRAGMENT);
		p->l4_off = p->l3_off + hlen;
		p->hdr_sum = csum_words((__be32 *)ip, 5);
		if (csum_words_var((__be32 *)(ip + 1), data_end, (hlen - IPV4_HLEN) / 4, &p->hdr_sum))
			return reject(p, LB_STAT_DROP_TRUNCATED);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + p->l3_off;

		if ((void *)(ip6 + 1) > data_end)
			return pass(LB_STAT_PASS_SHORT);
		p->family = LB_FAMILY_V6;
		__builtin_memcpy(p->src, &ip6->saddr, 16);
		__builtin_memcpy(p->dst, &ip6->daddr, 16);
		p->proto = ip6->nexthdr;
		p->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
		p->df = 1;
		p->ip_len = IPV6_HLEN + bpf_ntohs(ip6->payload_len);
		if (ip6->version != 6 || ip6->payload_len == 0)
			return reject(p, LB_STAT_DROP_BAD_HEADER);
		if (p->ip_len > avail)
			return reject(p, LB_STAT_DROP_TRUNCATED);
		switch (p->proto) {
		case IPPROTO_TCP:
		case IPPROTO_UDP:
		case IPPROTO_ICMPV6:
			break;
		case IPPROTO_FRAGMENT:
			return reject(p, LB_STAT_DROP_FRAGMENT);
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
		case IPPROTO_AH:
		case IPPROTO_ESP:
		case IPPROTO_MH:
		case 139: /* HIP */
		case 140: /* shim6 */
		case 253:
		case 254: /* experimental */
			return reject(p, LB_STAT_DROP_IPV6_EXT);
		default:
			break;
		}
		p->l4_off = p->l3_off + IPV6_HLEN;
		p->hdr_sum = csum_words((__be32 *)ip6, 10);
	} else {
		return pass(LB_STAT_PASS_NOT_IP);
	}

	void *l4 = data + (p->l4_off & 0xff);
	__u32 l4_len = p->ip_len - (p->l4_off - p->l3_off);

	switch (p->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > data_end || l4_len < sizeof(*th))
			return reject(p, LB_STAT_DROP_TRUNCATED);
		if (th->doff < 5 || th->doff * 4 > l4_len)
			return reject(p, LB_STAT_DROP_BAD_HEADER);
		p->sport = th->source;
		p->dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end || l4_len < sizeof(*uh))
			return reject(p, LB_STAT_DROP_TRUNCATED);
		if (bpf_ntohs(uh->len) != l4_len)
			return reject(p, LB_STAT_DROP_BAD_HEADER);
		p->sport = uh->source;
		p->dport = uh->dest;
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if ((p->proto == IPPROTO_ICMP) != (p->family == LB_FAMILY_V4))
			return reject(p, LB_STAT_DROP_UNKNOWN_PROTO);
		if (l4 + 8 > data_end || l4_len < 8)
			return reject(p, LB_STAT_DROP_TRUNCATED);
		break;
	default:
		return reject(p, LB_STAT_DROP_UNKNOWN_PROTO);
	}
	return -1;
}

#define TCP_FLAG_RST 0x04
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10

static __always_inline struct real_def *ring_pick(struct lb_config *cfg, __u32 vip_id,
						  __u32 hash, __u32 *real_id)
{
	void *ring = bpf_map_lookup_elem(&rings, &vip_id);

	if (!ring)
		return NULL;
	__u32 slot = hash % cfg->ring_size;
	__u32 *id = bpf_map_lookup_elem(ring, &slot);

	if (!id)
		return NULL;
	struct real_def *r = bpf_map_lookup_elem(&reals, id);

	if (!r || !(r->flags & LB_REAL_UP))
		return NULL;
	*real_id = *id;
	return r;
}

/* Choose the backend of a flow. insert says whether a miss may create a
 * connection-table entry (never for RSTs or ICMP errors). */
static __always_inline int choose(struct lb_config *cfg, struct pkt *p, struct vip_meta *vip,
				  struct pick *out, int insert)
{
	__u32 seed = (__u32)cfg->hash_seed;
	__u32 h5 = flow_hash(p, seed);
	__u32 hring = (vip->flags & LB_VIP_SRC_HASH) ? src_hash(p, seed) : h5;
	int is_tcp = p->proto == IPPROTO_TCP;
	int syn = is_tcp && (p->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
	int rst = is_tcp && (p->tcp_flags & TCP_FLAG_RST);

	out->hash = h5;
	out->client_low = p->src[p->family == LB_FAMILY_V4 ? 0 : 3];
	out->client_port = p->sport;
	if (vip->flags & LB_VIP_STATELESS) {
		out->real = ring_pick(cfg, vip->id, hring, &out->real_id);
		return out->real ? 0 : -1;
	}

	__u32 cpu = bpf_get_smp_processor_id();
	void *table = bpf_map_lookup_elem(&conns, &cpu);
	struct flow_state *st = NULL;
	struct flow_key key = {};
	__u64 now = 0;

	__builtin_memcpy(key.src, p->src, sizeof(key.src));
	key.vip_id = vip->id;
	key.sport = p->sport;
	key.dport = p->dport;

	if (table)
		st = bpf_map_lookup_elem(table, &key);
	/* A SYN ignores its entry: a new connection on a reused 5-tuple follows
	 * the current ring. */
	if (st && !syn) {
		struct real_def *r = bpf_map_lookup_elem(&reals, &st->real);

		if (!r || !(r->flags & LB_REAL_UP) || r->gen != st->gen) {
			count(LB_STAT_CONN_STALE);
		} else if (p->proto == IPPROTO_UDP) {
			now = bpf_ktime_get_coarse_ns();
			if (now - st->atime > cfg->udp_idle_ns) {
				count(LB_STAT_CONN_UDP_EXPIRED);
			} else {
				st->atime = now;
				count(LB_STAT_CONN_HIT);
				out->real = r;
				out->real_id = st->real;
				return 0;
			}
		} else {
			count(LB_STAT_CONN_HIT);
			out->real = r;
			out->real_id = st->real;
			return 0;
		}
	}

	count(LB_STAT_CONN_MISS);
	count(syn ? LB_STAT_CONN_MISS_SYN : LB_STAT_CONN_MISS_NON_SYN);
	out->real = ring_pick(cfg, vip->id, hring, &out->real_id);
	if (!out->real)
		return -1;
	if (!table || !insert || rst)
		return 0;
	/* Only UDP entries expire: a TCP entry keeps atime 0 and the miss path
	 * spares a helper call (about 20 ns here). */
	if (!now && p->proto == IPPROTO_UDP)
		now = bpf_ktime_get_coarse_ns();
	if (st) {
		/* The table is this CPU's alone and XDP does not nest on a CPU,
		 * so rewriting in place is safe, and it spares the LRU an
		 * allocation and a free. */
		st->real = out->real_id;
		st->gen = out->real->gen;
		st->atime = now;
		return 0;
	}
	struct flow_state fresh = {
		.real = out->real_id,
		.gen = out->real->gen,
		.atime = now,
	};
	/* Linux 6.1's verifier loses the link between table and the combined
	 * condition above when clang merges it into one flag: test the map
	 * pointer again right where it is used. */
	asm volatile("" : "+r"(table));
	if (table)
		bpf_map_update_elem(table, &key, &fresh, BPF_ANY);
	return 0;
}

/* Sum of the inner IP packet [l3_off, l3_off + ip_len) in one's complement,
 * for the outer UDP checksum. The L4 part is derived from the inner
 * checksum where the protocol has one: a valid checksum makes the sum of the
 * segment equal to the negated pseudo-header sum (the trick Linux calls local
 * checksum offload), so the payload is never read. Only UDP without a
 * checksum makes us walk the payload. Returns -1 on failure. */
static __always_inline __s64 inner_sum(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 hlen = p->l4_off - p->l3_off;
	__u32 l4_len = p->ip_len - hlen;

	__u64 sum = p->hdr_sum;

	__u64 pseudo = p->family == LB_FAMILY_V4 ?
		csum_pseudo4(p->src[0], p->dst[0], p->proto, l4_len) :
		csum_pseudo6(p->src, p->dst, p->proto, l4_len);

	switch (p->proto) {
	case IPPROTO_ICMP:
		/* ICMPv4 has no pseudo-header: a valid message sums to zero. */
		return csum_fold64(sum);
	case IPPROTO_UDP: {
		struct udphdr *uh = data + (p->l4_off & 0xff);

		if ((void *)(uh + 1) > data_end)
			return -1;
		if (uh->check == 0) {
			__s64 s = csum_packet(ctx, p->l4_off, l4_len);

			if (s < 0)
				return -1;
			return csum_fold64(sum + s);
		}
		return csum_fold64(sum + csum_neg(pseudo));
	}
	default: /* TCP, ICMPv6 */
		return csum_fold64(sum + csum_neg(pseudo));
	}
}

/* Encapsulate the IP packet toward the chosen backend and bounce it out of
 * the receiving NIC toward the gateway. */
static __always_inline int encap(struct xdp_md *ctx, struct lb_config *cfg, struct pkt *p,
				 struct vip_meta *vip, struct pick *pk)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int gue = !(vip->flags & LB_VIP_IPIP);
	int out_v4 = pk->real->family == LB_FAMILY_V4;
	__u32 ip_hlen = out_v4 ? IPV4_HLEN : IPV6_HLEN;
	__u32 hdr_len = ip_hlen + (gue ? GUE_HLEN : 0);
	__u32 frame_len = data_end - data;
	__u8 our_mac[ETH_ALEN];
	__be16 vlan_tci = p->vlan_tci;
	__be16 vlan_proto = p->vlan_proto;
	__u8 has_vlan = p->has_vlan;

	if (p->ip_len + hdr_len > cfg->tunnel_mtu)
		return -2;

	__s64 isum = gue ? inner_sum(ctx, p) : 0;

	if (isum < 0)
		return drop(LB_STAT_DROP_BAD_HEADER);

	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return drop(LB_STAT_DROP_TRUNCATED);
	__builtin_memcpy(our_mac, eth->h_dest, ETH_ALEN);

	/* Ethernet padding would otherwise end up inside the tunnel. */
	if (frame_len > p->l3_off + p->ip_len) {
		if (bpf_xdp_adjust_tail(ctx, -(int)(frame_len - p->l3_off - p->ip_len)))
			return drop(LB_STAT_DROP_ADJUST);
	}
	if (bpf_xdp_adjust_head(ctx, -(int)hdr_len))
		return drop(LB_STAT_DROP_ADJUST);

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	__u32 l3 = has_vlan ? sizeof(*eth) + VLAN_HLEN : sizeof(*eth);

	if ((void *)(eth + 1) + VLAN_HLEN > data_end)
		return drop(LB_STAT_DROP_ADJUST);
	__builtin_memcpy(eth->h_dest, cfg->gw_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, our_mac, ETH_ALEN);
	__be16 ethertype = bpf_htons(out_v4 ? ETH_P_IP : ETH_P_IPV6);

	if (has_vlan) {
		__be16 *tag = (void *)(eth + 1);

		eth->h_proto = vlan_proto;
		tag[0] = vlan_tci;
		tag[1] = ethertype;
	} else {
		eth->h_proto = ethertype;
	}

	__u8 inner_proto = p->family == LB_FAMILY_V4 ? IPPROTO_IPIP : IPPROTO_IPV6;
	__u8 out_proto = gue ? IPPROTO_UDP : inner_proto;
	__u32 payload_len = p->ip_len + (gue ? GUE_HLEN : 0);
	__be32 osrc[4] = {};

	if (gue) {
		if (out_v4)
			osrc[0] = cfg->src_v4;
		else
			__builtin_memcpy(osrc, cfg->src_v6, 16);
	} else if (out_v4) {
		/* Per-flow outer source inside the IPIP prefix, so that receivers
		 * hashing only outer addresses still spread flows. */
		__u32 host = bpf_ntohs(pk->client_port) ^ bpf_ntohl(pk->client_low);
		__u32 mask = cfg->ipip_v4_prefix_len >= 32 ? 0 : 0xffffffffu >> cfg->ipip_v4_prefix_len;

		osrc[0] = cfg->ipip_v4_prefix | bpf_htonl(host & mask);
	} else {
		osrc[0] = cfg->ipip_v6_prefix[0];
		osrc[1] = cfg->ipip_v6_prefix[1];
		osrc[2] = pk->client_low;
		osrc[3] = bpf_htonl(bpf_ntohs(pk->client_port));
	}

	__u64 usum = 0;

	if (out_v4) {
		struct iphdr *oh = data + l3;

		if ((void *)(oh + 1) > data_end)
			return drop(LB_STAT_DROP_ADJUST);
		oh->version = 4;
		oh->ihl = 5;
		oh->tos = p->tos;
		oh->tot_len = bpf_htons(IPV4_HLEN + payload_len);
		oh->id = 0;
		oh->frag_off = p->df ? bpf_htons(IP_DF) : 0;
		oh->ttl = OUTER_TTL;
		oh->protocol = out_proto;
		oh->check = 0;
		oh->saddr = osrc[0];
		oh->daddr = pk->real->addr[0];
		oh->check = csum_finish(csum_words((__be32 *)oh, 5));
		usum = csum_pseudo4(oh->saddr, oh->daddr, IPPROTO_UDP, payload_len);
	} else {
		struct ipv6hdr *oh = data + l3;

		if ((void *)(oh + 1) > data_end)
			return drop(LB_STAT_DROP_ADJUST);
		/* version 6, traffic class from the inner packet, flow label from the flow hash */
		*(__be32 *)oh = bpf_htonl((6u << 28) | ((__u32)p->tos << 20) | (pk->hash & 0xfffff));
		oh->payload_len = bpf_htons(payload_len);
		oh->nexthdr = out_proto;
		oh->hop_limit = OUTER_TTL;
		__builtin_memcpy(&oh->saddr, osrc, 16);
		__builtin_memcpy(&oh->daddr, pk->real->addr, 16);
		usum = csum_pseudo6(osrc, pk->real->addr, IPPROTO_UDP, payload_len);
	}

	if (gue) {
		struct udphdr *uh = data + l3 + ip_hlen;

		if ((void *)(uh + 1) > data_end)
			return drop(LB_STAT_DROP_ADJUST);
		uh->source = bpf_htons(GUE_SPORT_BASE + (pk->hash & GUE_SPORT_MASK));
		uh->dest = cfg->gue_port;
		uh->len = bpf_htons(payload_len);
		uh->check = 0;
		usum += (__u32)uh->source + uh->dest + uh->len + (__u64)isum;
		__u16 c = csum_finish(usum);

		uh->check = c ? c : 0xffff;
		count(LB_STAT_ENCAP_GUE);
	} else {
		count(LB_STAT_ENCAP_IPIP);
	}
	count_traffic(&vip_stats, vip->id, p->ip_len);
	count_traffic(&real_stats, pk->real_id, p->ip_len);
	return XDP_TX;
}

/* Turn the packet into an ICMP "fragmentation needed" (IPv4) or "packet too
 * big" (IPv6) sent back to the client from the VIP, quoting the original IP
 * header and the first 8 bytes of its payload. */
static __always_inline int send_too_big(struct xdp_md *ctx, struct pkt *p, __u32 mtu)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 macs[2 * ETH_ALEN];
	__u32 l3 = p->l3_off;
	__u32 quote = (p->l4_off - p->l3_off) + 8;
	__u32 frame_len = data_end - data;
	int v4 = p->family == LB_FAMILY_V4;
	__u32 hdr_len = v4 ? IPV4_HLEN + 8 : IPV6_HLEN + 8;

	if ((void *)(eth + 1) > data_end)
		return drop(LB_STAT_DROP_TRUNCATED);
	__builtin_memcpy(macs, eth->h_source, ETH_ALEN);
	__builtin_memcpy(macs + ETH_ALEN, eth->h_dest, ETH_ALEN);

	if (bpf_xdp_adjust_tail(ctx, -(int)(frame_len - l3 - quote)))
		return drop(LB_STAT_DROP_ADJUST);
	if (bpf_xdp_adjust_head(ctx, -(int)hdr_len))
		return drop(LB_STAT_DROP_ADJUST);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return drop(LB_STAT_DROP_ADJUST);
	/* The Ethernet header (and VLAN tag) moves to the new front; addresses swap. */
	__builtin_memcpy(eth->h_dest, macs, ETH_ALEN);
	__builtin_memcpy(eth->h_source, macs + ETH_ALEN, ETH_ALEN);
	if (p->has_vlan) {
		__be16 *tag = (void *)(eth + 1);

		if ((void *)(tag + 2) > data_end)
			return drop(LB_STAT_DROP_ADJUST);
		eth->h_proto = p->vlan_proto;
		tag[0] = p->vlan_tci;
		tag[1] = bpf_htons(v4 ? ETH_P_IP : ETH_P_IPV6);
	} else {
		eth->h_proto = bpf_htons(v4 ? ETH_P_IP : ETH_P_IPV6);
	}

	if (v4) {
		struct iphdr *ip = data + (l3 & 0xff);
		struct icmphdr *ic = (void *)(ip + 1);
		__be32 *q = (void *)(ic + 1);

		if ((void *)(ic + 1) > data_end)
			return drop(LB_STAT_DROP_ADJUST);
		ip->version = 4;
		ip->ihl = 5;
		ip->tos = 0;
		ip->tot_len = bpf_htons(IPV4_HLEN + 8 + quote);
		ip->id = 0;
		ip->frag_off = 0;
		ip->ttl = OUTER_TTL;
		ip->protocol = IPPROTO_ICMP;
		ip->check = 0;
		ip->saddr = p->dst[0];
		ip->daddr = p->src[0];
		ip->check = csum_finish(csum_words((__be32 *)ip, 5));
		ic->type = ICMP_DEST_UNREACH;
		ic->code = ICMP_FRAG_NEEDED;
		ic->checksum = 0;
		ic->un.frag.__unused = 0;
		ic->un.frag.mtu = bpf_htons(mtu);
		__u64 sum = csum_words((__be32 *)ic, 2);

		if (csum_words_var(q, data_end, quote / 4, &sum))
			return drop(LB_STAT_DROP_ADJUST);
		ic->checksum = csum_finish(sum);
	} else {
		struct ipv6hdr *ip6 = data + (l3 & 0xff);
		struct icmp6hdr *ic = (void *)(ip6 + 1);
		__be32 *q = (void *)(ic + 1);

		if ((void *)q + IPV6_HLEN + 8 > data_end)
			return drop(LB_STAT_DROP_ADJUST);
		*(__be32 *)ip6 = bpf_htonl(6u << 28);
		ip6->payload_len = bpf_htons(8 + IPV6_HLEN + 8);
		ip6->nexthdr = IPPROTO_ICMPV6;
		ip6->hop_limit = OUTER_TTL;
		__builtin_memcpy(&ip6->saddr, p->dst, 16);
		__builtin_memcpy(&ip6->daddr, p->src, 16);
		ic->icmp6_type = ICMPV6_PKT_TOOBIG;
		ic->icmp6_code = 0;
		ic->icmp6_cksum = 0;
		ic->icmp6_mtu = bpf_htonl(mtu);
		__s64 s = bpf_csum_diff(0, 0, q, IPV6_HLEN + 8, 0);

		if (s < 0)
			return drop(LB_STAT_DROP_ADJUST);
		__u64 sum = csum_pseudo6(p->dst, p->src, IPPROTO_ICMPV6, 8 + IPV6_HLEN + 8);

		ic->icmp6_cksum = csum_finish(sum + csum_words((__be32 *)ic, 2) + (__u32)s);
	}
	count(LB_STAT_PTB_SENT);
	return XDP_TX;
}

/* Answer an echo request to a VIP address in place. */
static __always_inline int echo_reply(struct xdp_md *ctx, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 mac[ETH_ALEN];

	if ((void *)(eth + 1) > data_end)
		return drop(LB_STAT_DROP_TRUNCATED);
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);

	if (p->family == LB_FAMILY_V4) {
		struct iphdr *ip = data + (p->l3_off & 0xff);
		struct icmphdr *ic = data + (p->l4_off & 0xff);

		if ((void *)(ip + 1) > data_end || (void *)(ic + 1) > data_end)
			return drop(LB_STAT_DROP_TRUNCATED);
		ip->saddr = p->dst[0];
		ip->daddr = p->src[0];
		ip->check = csum_replace2(ip->check, bpf_htons((__u16)ip->ttl << 8 | ip->protocol),
					  bpf_htons((__u16)OUTER_TTL << 8 | ip->protocol));
		ip->ttl = OUTER_TTL;
		ic->type = ICMP_ECHOREPLY;
		ic->checksum = csum_replace2(ic->checksum, bpf_htons(ICMP_ECHO << 8),
					     bpf_htons(ICMP_ECHOREPLY << 8));
	} else {
		struct ipv6hdr *ip6 = data + (p->l3_off & 0xff);
		struct icmp6hdr *ic = data + (p->l4_off & 0xff);

		if ((void *)(ip6 + 1) > data_end || (void *)(ic + 1) > data_end)
			return drop(LB_STAT_DROP_TRUNCATED);
		__builtin_memcpy(&ip6->saddr, p->dst, 16);
		__builtin_memcpy(&ip6->daddr, p->src, 16);
		ip6->hop_limit = OUTER_TTL;
		ic->icmp6_type = ICMPV6_ECHO_REPLY;
		ic->icmp6_cksum = csum_replace2(ic->icmp6_cksum, bpf_htons(ICMPV6_ECHO_REQUEST << 8),
						bpf_htons(ICMPV6_ECHO_REPLY << 8));
	}
	count(LB_STAT_ICMP_ECHO_REPLY);
	return XDP_TX;
}

/* An ICMP error about a packet a backend sent from a VIP: route it to the
 * backend of the flow it quotes. Fills p->sport/dport and a flow view q
 * (client side as source) for hashing. Returns the VIP entry or NULL. */
static __always_inline struct vip_meta *quoted_flow(struct xdp_md *ctx, struct pkt *p, struct pkt *q)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 qoff = p->l4_off + 8;
	struct vip_key k = {};
	__be16 *ports;

	if (p->family == LB_FAMILY_V4) {
		struct iphdr *qip = data + (qoff & 0xff);

		if ((void *)(qip + 1) > data_end || qip->ihl < 5)
			return NULL;
		ports = (void *)qip + (qip->ihl & 0xf) * 4;
		q->src[0] = qip->daddr;
		q->dst[0] = qip->saddr;
		q->proto = qip->protocol;
	} else {
		struct ipv6hdr *qip = data + (qoff & 0xff);

		if ((void *)(qip + 1) > data_end)
			return NULL;
		ports = (void *)(qip + 1);
		__builtin_memcpy(q->src, &qip->daddr, 16);
		__builtin_memcpy(q->dst, &qip->saddr, 16);
		q->proto = qip->nexthdr;
	}
	if ((void *)(ports + 2) > data_end)
		return NULL;
	if (q->proto != IPPROTO_TCP && q->proto != IPPROTO_UDP)
		return NULL;
	q->family = p->family;
	q->sport = ports[1];
	q->dport = ports[0];
	/* The quoted packet was sent by the VIP: its source must be the very
	 * address this error is addressed to. */
	if ((q->dst[0] ^ p->dst[0]) | (q->dst[1] ^ p->dst[1]) |
	    (q->dst[2] ^ p->dst[2]) | (q->dst[3] ^ p->dst[3]))
		return NULL;

	__builtin_memcpy(k.addr, q->dst, 16);
	k.port = q->dport;
	k.proto = q->proto;
	k.family = q->family;
	struct vip_meta *vip = bpf_map_lookup_elem(&vips, &k);

	if (!vip) {
		k.port = 0;
		vip = bpf_map_lookup_elem(&vips, &k);
	}
	return vip;
}

static __always_inline int is_icmp_error(struct pkt *p, __u8 type)
{
	if (p->family == LB_FAMILY_V4)
		return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED ||
		       type == ICMP_PARAMETERPROB;
	return type == ICMPV6_DEST_UNREACH || type == ICMPV6_PKT_TOOBIG ||
	       type == ICMPV6_TIME_EXCEED || type == ICMPV6_PARAMPROB;
}

static __always_inline int handle_icmp(struct xdp_md *ctx, struct lb_config *cfg, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *icmp = data + (p->l4_off & 0xff);

	if ((void *)(icmp + 8) > data_end)
		return drop(LB_STAT_DROP_TRUNCATED);
	if (!is_vip_addr(p))
		return pass(LB_STAT_PASS_NOT_VIP);

	__u8 type = icmp[0];

	if ((p->family == LB_FAMILY_V4 && type == ICMP_ECHO) ||
	    (p->family == LB_FAMILY_V6 && type == ICMPV6_ECHO_REQUEST))
		return echo_reply(ctx, p);
	if (!is_icmp_error(p, type))
		return drop(LB_STAT_DROP_ICMP);

	struct pkt q = {};
	struct vip_meta *vip = quoted_flow(ctx, p, &q);
	struct pick pk = {};

	if (!vip)
		return drop(LB_STAT_DROP_ICMP);
	if (choose(cfg, &q, vip, &pk, 0))
		return drop(LB_STAT_DROP_NO_BACKEND);
	int act = encap(ctx, cfg, p, vip, &pk);

	/* Never answer an ICMP error with another one. */
	if (act == -2)
		return drop(LB_STAT_DROP_TOO_BIG);
	/* Counted once the error is on its way, not when encap dropped it. */
	if (act == XDP_TX)
		count(LB_STAT_ICMP_ERR_FORWARD);
	return act;
}

static __always_inline int process(struct xdp_md *ctx)
{
	struct pkt p = {};
	int act = parse(ctx, &p);

	if (act >= 0)
		return act;

	__u32 zero = 0;
	struct lb_config *cfg = bpf_map_lookup_elem(&config, &zero);

	if (!cfg || cfg->ring_size == 0)
		return reject(&p, LB_STAT_DROP_NO_CONFIG);

	if (p.proto == IPPROTO_ICMP || p.proto == IPPROTO_ICMPV6)
		return handle_icmp(ctx, cfg, &p);

	struct vip_key k = {};

	__builtin_memcpy(k.addr, p.dst, sizeof(k.addr));
	k.port = p.dport;
	k.proto = p.proto;
	k.family = p.family;
	struct vip_meta *vip = bpf_map_lookup_elem(&vips, &k);

	if (!vip) {
		k.port = 0;
		vip = bpf_map_lookup_elem(&vips, &k);
		if (!vip)
			return pass(LB_STAT_PASS_NOT_VIP);
	}

	struct pick pk = {};

	if (choose(cfg, &p, vip, &pk, 1))
		return drop(LB_STAT_DROP_NO_BACKEND);

	act = encap(ctx, cfg, &p, vip, &pk);
	if (act != -2)
		return act;

	__u32 overhead = (pk.real->family == LB_FAMILY_V4 ? IPV4_HLEN : IPV6_HLEN) +
			 ((vip->flags & LB_VIP_IPIP) ? 0 : GUE_HLEN);

	if (p.family == LB_FAMILY_V4 && !p.df)
		return drop(LB_STAT_DROP_TOO_BIG);
	return send_too_big(ctx, &p, cfg->tunnel_mtu - overhead);
}

SEC("xdp")
int lb_xdp(struct xdp_md *ctx)
{
	int act = process(ctx);

	switch (act) {
	case XDP_PASS:
		count(LB_STAT_PASS);
		break;
	case XDP_TX:
		count(LB_STAT_TX);
		break;
	default:
		act = XDP_DROP;
		count(LB_STAT_DROP);
		break;
	}
	return act;
}
