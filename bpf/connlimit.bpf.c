// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Sluice concurrent-connection limit.
 *
 * A tp_btf program on sock:inet_sock_set_state counts the established TCP
 * connections of each limited local port; an XDP program refuses the
 * connections that would exceed the limit. Both share the maps below.
 *
 * A connection is counted when a passive socket (the child of a listener,
 * whose local port is the listening port) goes SYN_RECV -> ESTABLISHED, and
 * uncounted when it reaches TCP_CLOSE, whatever the path (FIN, RST, the
 * handoff to a TIME_WAIT socket, abort). The record keyed by the socket's
 * cookie is what says a socket is counted: whoever inserts it adds one,
 * whoever deletes it subtracts one, so the count never drifts. The control
 * plane seeds sockets that existed before the tracepoint was attached
 * through cl_seed (see there for the race with a concurrent close).
 *
 * The XDP program refuses a SYN when the count has reached the limit (drop,
 * or a RST built in place and sent with XDP_TX). That alone would let
 * handshakes already under way when the count reaches the limit complete,
 * so the program also judges each handshake's final ACK: below the limit it
 * reserves the connection's place in the count atomically (cl_pending), at
 * the limit it refuses the ACK (drop, or a RST). Only ACKs the kernel would
 * accept reserve, so spoofed packets cannot hold places; the tracepoint
 * turns a reservation into a counted socket, and the control plane
 * releases the reservations of handshakes that died (cl_release). Telling a
 * final ACK from the other segments with ACK takes a socket lookup; the
 * segments of counted connections skip it through a cache of their flows
 * (estab). */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "police.h"
#include "chain.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define TCP_ESTABLISHED 1
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define E2BIG 7
#define EEXIST 17

/* Placeholder sizes; the control plane sets the real ones before loading. */
#define DEFAULT_MAX_PORTS 1024
#define DEFAULT_MAX_SOCKS 65536
#define DEFAULT_MAX_PENDING 4096
#define TOMBS 8192

/* The kernel's socket layout, only the fields read here. The CO-RE
 * relocations find them in the running kernel's BTF by name, so offsets and
 * the rest of the structs do not matter. */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

typedef struct {
	__s64 counter;
} atomic64_t;

struct sock_common {
	union {
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
} __attribute__((preserve_access_index));

struct tcp_request_sock {
	__u32 snt_isn;
} __attribute__((preserve_access_index));

enum cl_action {
	CL_ACTION_DROP = 0,
	CL_ACTION_RST = 1,
};

/* A limited port's configuration (key: port in host order). */
struct cl_limit {
	__u32 max;
	__u32 action; /* enum cl_action */
};

/* A counted socket (key: socket cookie). */
struct cl_sock {
	__u16 port;
	__u16 pad;
};

/* A connection, as the XDP program sees its packets and the tracepoint its
 * socket: the remote (client) and local ends, addresses and ports in
 * network order, an IPv4 address in [0] (also for an IPv4 connection on a
 * dual-stack socket). */
struct cl_flow {
	__be32 raddr[4];
	__be32 laddr[4];
	__be16 rport;
	__be16 lport;
	__u8 family; /* 4 or 6 */
	__u8 pad[3];
};

/* A counted connection in the cache of established flows (key: its
 * cl_flow with lport 0): its local port. The tracepoint cannot read the
 * local port at TCP_CLOSE (the socket has left its bind bucket, which
 * zeroes it), so the port is the value, compared by the XDP program, and
 * the key is what the socket still has when it closes. */
struct cl_estab {
	__be16 lport;
	__u16 pad;
};

/* A reservation: the XDP program let a handshake's final ACK through and
 * counted the connection before the kernel created it. */
struct cl_pending {
	__u64 since; /* bpf_ktime_get_ns() when reserved */
	__u16 port;
	__u16 pad[3];
};

/* cl_seed's argument; it returns an enum cl_seed_result. flow is the
 * socket's, as sk_flow builds it, for the cache of established flows. */
struct cl_seed_arg {
	__u64 cookie;
	__u16 port;
	__u16 pad[3];
	struct cl_flow flow;
};

enum cl_seed_result {
	/* The socket is counted now. */
	CL_SEED_COUNTED = 0,
	/* Already counted (by the tracepoint or an earlier seed). */
	CL_SEED_KNOWN = 1,
	/* It closed while being seeded; it is not counted. */
	CL_SEED_CLOSED = 2,
	/* The port is not limited. */
	CL_SEED_UNLIMITED = 3,
	/* The socket table is full. */
	CL_SEED_FULL = 4,
};

enum cl_stat {
	/* Packets handed on (chain_next), whatever they were. */
	CL_STAT_PASS,
	/* ...of which not TCP or UDP, or malformed (see police_parse). */
	CL_STAT_PASS_UNPARSED,
	/* SYNs to a limited port below its limit. */
	CL_STAT_SYN_ADMITTED,
	/* SYNs refused: dropped (action drop). */
	CL_STAT_DROP_LIMIT,
	/* SYNs refused: answered with a RST (action rst). */
	CL_STAT_TX_RST,
	/* SYNs or final ACKs refused with action rst that could not be
	 * rewritten; dropped. */
	CL_STAT_DROP_RST_FAILED,
	/* Final ACKs of handshakes let through below the limit, each
	 * reserving its connection's place in the count. */
	CL_STAT_ACK_RESERVED,
	/* Final ACKs of handshakes refused at the limit (their SYN was
	 * admitted, but the count reached the limit since): dropped (action
	 * drop)... */
	CL_STAT_DROP_LIMIT_ACK,
	/* ...or answered with a RST (action rst). */
	CL_STAT_TX_RST_ACK,
	/* Final ACKs let through without a reservation: the table of
	 * reservations was full. */
	CL_STAT_PENDING_FULL,
	/* Segments with ACK of counted connections, let through on a hit in
	 * the cache of established flows, without a socket lookup. */
	CL_STAT_ACK_ESTABLISHED,
	/* Connections counted by the tracepoint. */
	CL_STAT_CONN_OPEN,
	/* Counted connections that closed. */
	CL_STAT_CONN_CLOSE,
	/* Connections not counted because the socket table was full. */
	CL_STAT_TRACK_FULL,
	CL_STAT_MAX,
};

struct cl_limit btf_anchor_cl_limit __attribute__((unused));
struct cl_sock btf_anchor_cl_sock __attribute__((unused));
struct cl_flow btf_anchor_cl_flow __attribute__((unused));
struct cl_pending btf_anchor_cl_pending __attribute__((unused));
struct cl_estab btf_anchor_cl_estab __attribute__((unused));
enum cl_action btf_anchor_cl_action __attribute__((unused));
enum cl_seed_result btf_anchor_cl_seed_result __attribute__((unused));
enum cl_stat btf_anchor_cl_stat __attribute__((unused));

/* The network namespace (its inode number) whose sockets are counted, set
 * at load time: with several namespaces on one kernel, each node or host
 * counts only its own. 0 counts every namespace. */
volatile const __u32 netns_ino = 0;

/* Set by the control plane while it seeds: closing sockets then leave a
 * tombstone (see cl_seed). */
volatile __u32 seeding = 0;

/* Written by the control plane only. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_PORTS);
	__type(key, __u16);
	__type(value, struct cl_limit);
} limits SEC(".maps");

/* Open connections per limited port. The control plane creates an entry
 * (0) before it adds the port to limits and deletes it after removing the
 * port; in between only atomic adds change it. Kept apart from limits so
 * that a limit update never overwrites a count. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_PORTS);
	__type(key, __u16);
	__type(value, __s64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_SOCKS);
	__type(key, __u64);
	__type(value, struct cl_sock);
} socks SEC(".maps");

/* The flows of counted connections, so that the XDP program tells their
 * segments from a handshake's final ACK with one lookup instead of a
 * socket lookup. Entries are added with the record of a counted connection
 * (by the tracepoint, or cl_seed) and deleted with it when the connection
 * closes; the control plane deletes a port's when it stops limiting it. An
 * entry therefore never outlives its connection, so a hit never lets an
 * unreserved final ACK through. A flow missing here (a full table, a flow
 * overwritten by another connection of the same client end) takes the
 * socket lookup, which is exact too. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_SOCKS);
	__type(key, struct cl_flow);
	__type(value, struct cl_estab);
} estab SEC(".maps");

/* Cookies of sockets that reached TCP_CLOSE while the control plane was
 * seeding: cl_seed checks them so that a socket that closes between the
 * dump and its seed is not counted forever. Only the most recent closes
 * matter (a seed follows its dump within milliseconds), hence LRU. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TOMBS);
	__type(key, __u64);
	__type(value, __u8);
} tombs SEC(".maps");

/* Reservations (see cl_flow_reserve). The tracepoint turns one into a
 * counted socket; the control plane releases those whose handshake died. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_PENDING);
	__type(key, struct cl_flow);
	__type(value, struct cl_pending);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CL_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);

	if (v)
		*v += 1;
}

static __always_inline int loopback4(__be32 a)
{
	return (bpf_ntohl(a) >> 24) == 127;
}

/* ::1, or an IPv4-mapped loopback address (a dual-stack listener's child
 * of an IPv4 connection). */
static __always_inline int loopback6(const __u32 w[4])
{
	if (w[0] || w[1])
		return 0;
	if (w[2] == 0 && w[3] == bpf_htonl(1))
		return 1;
	return w[2] == bpf_htonl(0xffff) && loopback4(w[3]);
}

static __always_inline int sk_loopback(const struct sock *sk, unsigned short family)
{
	__u32 l[4], r[4];

	if (family == AF_INET)
		return loopback4(BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr)) ||
		       loopback4(BPF_CORE_READ(sk, __sk_common.skc_daddr));
	BPF_CORE_READ_INTO(&l, sk, __sk_common.skc_v6_rcv_saddr);
	BPF_CORE_READ_INTO(&r, sk, __sk_common.skc_v6_daddr);
	return loopback6(l) || loopback6(r);
}

/* Add one to a port's count for the socket with cookie, unless it is
 * counted already. Returns 0 when counted now. */
static __always_inline int track(__u64 cookie, __u16 port, __s64 *cnt)
{
	struct cl_sock rec = { .port = port };
	long err = bpf_map_update_elem(&socks, &cookie, &rec, BPF_NOEXIST);

	if (err)
		return err;
	__sync_fetch_and_add(cnt, 1);
	return 0;
}

/* Remove a socket's record; whoever deletes it subtracts the one its
 * inserter added. Returns the socket's port when this call did, else 0
 * (no limited port is 0). */
static __always_inline __u16 untrack(__u64 cookie)
{
	struct cl_sock *rec = bpf_map_lookup_elem(&socks, &cookie);
	__u16 port;
	__s64 *cnt;

	if (!rec)
		return 0;
	port = rec->port;
	if (bpf_map_delete_elem(&socks, &cookie))
		return 0;
	cnt = bpf_map_lookup_elem(&counts, &port);
	if (cnt)
		__sync_fetch_and_add(cnt, -1);
	return port;
}

static __always_inline int mapped4(const __u32 w[4])
{
	return !w[0] && !w[1] && w[2] == bpf_htonl(0xffff);
}

/* The flow of an established socket, keyed like the XDP program keys its
 * packets. */
static __always_inline void sk_flow(const struct sock *sk, unsigned short family, struct cl_flow *f)
{
	__builtin_memset(f, 0, sizeof(*f));
	f->rport = BPF_CORE_READ(sk, __sk_common.skc_dport);
	f->lport = bpf_htons(BPF_CORE_READ(sk, __sk_common.skc_num));
	if (family == AF_INET) {
		f->family = 4;
		f->raddr[0] = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		f->laddr[0] = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		return;
	}
	BPF_CORE_READ_INTO(&f->raddr, sk, __sk_common.skc_v6_daddr);
	BPF_CORE_READ_INTO(&f->laddr, sk, __sk_common.skc_v6_rcv_saddr);
	f->family = 6;
	if (mapped4(f->raddr) && mapped4(f->laddr)) {
		f->family = 4;
		f->raddr[0] = f->raddr[3];
		f->laddr[0] = f->laddr[3];
		f->raddr[1] = f->raddr[2] = f->raddr[3] = 0;
		f->laddr[1] = f->laddr[2] = f->laddr[3] = 0;
	}
}

/* remember_estab puts a counted connection's flow (f, as sk_flow made it)
 * into the cache of established flows. A full cache only costs the
 * connection's segments a socket lookup each. */
static __always_inline void remember_estab(struct cl_flow *f)
{
	struct cl_estab v = { .lport = f->lport };

	f->lport = 0;
	bpf_map_update_elem(&estab, f, &v, BPF_ANY);
}

/* forget_flow deletes a flow (its lport 0) from the cache of established
 * flows unless the entry is another connection's: one from the same client
 * address and port to another local port, which overwrote it. */
static __always_inline void forget_flow(struct cl_flow *f, __u16 port)
{
	struct cl_estab *v = bpf_map_lookup_elem(&estab, f);

	if (v && v->lport == bpf_htons(port))
		bpf_map_delete_elem(&estab, f);
}

/* forget_estab deletes a closing connection's flow from the cache. */
static __always_inline void forget_estab(const struct sock *sk, unsigned short family, __u16 port)
{
	struct cl_flow f;

	sk_flow(sk, family, &f);
	f.lport = 0;
	forget_flow(&f, port);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(cl_state, const struct sock *sk, int oldstate, int newstate)
{
	unsigned short family;
	__u16 port;
	__s64 *cnt;
	struct cl_flow f;
	__u64 cookie;
	__u8 one = 1;

	if (newstate != TCP_CLOSE && !(oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED))
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (netns_ino && BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) != netns_ino)
		return 0;

	if (newstate == TCP_CLOSE) {
		/* The local port is gone by now (the socket left its bind
		 * bucket), so the record alone says whether it was counted.
		 * A socket without a cookie cannot have been counted: the test
		 * spares the lookup for most sockets. */
		if (!seeding && !BPF_CORE_READ(sk, __sk_common.skc_cookie.counter))
			return 0;
		cookie = bpf_get_socket_cookie((void *)sk);
		/* The tombstone goes in before the delete, and cl_seed inserts
		 * before it looks for a tombstone: whichever order the two run
		 * in, one of them sees the other and the seed is undone. */
		if (seeding)
			bpf_map_update_elem(&tombs, &cookie, &one, BPF_ANY);
		port = untrack(cookie);
		if (port) {
			count(CL_STAT_CONN_CLOSE);
			forget_estab(sk, family, port);
		}
		return 0;
	}
	port = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!bpf_map_lookup_elem(&limits, &port))
		return 0;
	cnt = bpf_map_lookup_elem(&counts, &port);
	if (!cnt || sk_loopback(sk, family))
		return 0;
	cookie = bpf_get_socket_cookie((void *)sk);
	sk_flow(sk, family, &f);
	if (!bpf_map_delete_elem(&pending, &f)) {
		/* Counted already, when the XDP program let its final ACK
		 * through; now the record takes over from the reservation. */
		struct cl_sock rec = { .port = port };
		long err = bpf_map_update_elem(&socks, &cookie, &rec, BPF_NOEXIST);

		if (!err) {
			count(CL_STAT_CONN_OPEN);
			remember_estab(&f);
			return 0;
		}
		__sync_fetch_and_add(cnt, -1);
		if (err == -E2BIG)
			count(CL_STAT_TRACK_FULL);
		return 0;
	}
	switch (track(cookie, port, cnt)) {
	case 0:
		count(CL_STAT_CONN_OPEN);
		remember_estab(&f);
		break;
	case -E2BIG:
		count(CL_STAT_TRACK_FULL);
		break;
	}
	return 0;
}

/* cl_seed counts a socket that the control plane found in a sock_diag dump
 * (run with BPF_PROG_RUN) and caches its flow. The socket may have closed
 * since the dump: then the tracepoint found no record to delete but left a
 * tombstone, which is looked for after the inserts, so that either this
 * program sees the tombstone or the tracepoint sees the record. On a
 * tombstone the flow is forgotten too, whether or not the tracepoint got
 * to it: a cached flow must not outlive its connection. */
SEC("syscall")
int cl_seed(struct cl_seed_arg *a)
{
	__u64 cookie = a->cookie;
	__u16 port = a->port;
	struct cl_flow f = a->flow;
	__s64 *cnt;
	long err;

	if (!bpf_map_lookup_elem(&limits, &port))
		return CL_SEED_UNLIMITED;
	cnt = bpf_map_lookup_elem(&counts, &port);
	if (!cnt)
		return CL_SEED_UNLIMITED;
	err = track(cookie, port, cnt);
	if (err == -EEXIST)
		return CL_SEED_KNOWN;
	if (err)
		return CL_SEED_FULL;
	remember_estab(&f);
	if (bpf_map_lookup_elem(&tombs, &cookie)) {
		untrack(cookie);
		forget_flow(&f, port);
		return CL_SEED_CLOSED;
	}
	return CL_SEED_COUNTED;
}

/* cl_release gives up a reservation whose handshake died (the control
 * plane found no request socket for it any more). Returns 1 when it did,
 * 0 when the reservation was gone (turned into a connection, or released
 * already). */
SEC("syscall")
int cl_release(struct cl_flow *arg)
{
	struct cl_flow f = *arg;
	struct cl_pending *v = bpf_map_lookup_elem(&pending, &f);
	__u16 port;
	__s64 *cnt;

	if (!v)
		return 0;
	port = v->port;
	if (bpf_map_delete_elem(&pending, &f))
		return 0;
	cnt = bpf_map_lookup_elem(&counts, &port);
	if (cnt)
		__sync_fetch_and_add(cnt, -1);
	return 1;
}

/* ptr_value returns the address p holds as a plain number. The verifier
 * forbids arithmetic on socket pointers, and bpf_skc_to_tcp_request_sock
 * does not recognise request sockets on every kernel (6.18 returns NULL for
 * them), so the request socket's fields are read with
 * bpf_probe_read_kernel from its address: the lookup holds a reference to
 * it, so the memory stays valid while we read. */
static __always_inline __u64 ptr_value(const void *p)
{
	const void *slot = p;
	__u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), &slot);
	return v;
}

/* handshake_ack reports whether an ACK would complete a handshake: it
 * belongs to a request socket of this namespace and acknowledges its
 * SYN-ACK (what tcp_check_req accepts), or it carries a valid SYN cookie
 * for a listener. An ACK that merely names such a socket does not count,
 * so that a blind attacker cannot make reservations. */
static __always_inline int handshake_ack(struct xdp_md *ctx, const struct police_pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tcphdr *th = data + (p->l4_off & POLICE_OFF_MASK);
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 size;
	int ok = 0;

	if ((void *)(th + 1) > data_end)
		return 0;
	if (p->family == 4) {
		t.ipv4.saddr = p->saddr[0];
		t.ipv4.daddr = p->daddr[0];
		t.ipv4.sport = p->sport;
		t.ipv4.dport = p->dport;
		size = sizeof(t.ipv4);
	} else {
		__builtin_memcpy(t.ipv6.saddr, p->saddr, 16);
		__builtin_memcpy(t.ipv6.daddr, p->daddr, 16);
		t.ipv6.sport = p->sport;
		t.ipv6.dport = p->dport;
		size = sizeof(t.ipv6);
	}
	sk = bpf_skc_lookup_tcp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	if (sk->state == BPF_TCP_NEW_SYN_RECV) {
		struct tcp_request_sock *req = (void *)ptr_value(sk);

		ok = bpf_ntohl(th->ack_seq) == BPF_CORE_READ(req, snt_isn) + 1;
	} else if (sk->state == BPF_TCP_LISTEN) {
		void *ip = data + (p->l3_off & POLICE_OFF_MASK);
		__u32 ip_len = p->family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);

		/* Bounds the larger header length for the verifier; a TCP
		 * header follows either, so no valid packet fails it. */
		if (ip + sizeof(struct ipv6hdr) <= data_end)
			ok = bpf_tcp_check_syncookie(sk, ip, ip_len, th, sizeof(*th)) == 0;
	}
	bpf_sk_release(sk);
	return ok;
}

/* estab_hit reports whether a segment belongs to a counted connection,
 * from the cache of established flows. */
static __always_inline int estab_hit(const struct police_pkt *p)
{
	struct cl_flow f = {};
	struct cl_estab *v;

	f.family = p->family;
	__builtin_memcpy(f.raddr, p->saddr, 16);
	__builtin_memcpy(f.laddr, p->daddr, 16);
	f.rport = p->sport;
	v = bpf_map_lookup_elem(&estab, &f);
	return v && v->lport == p->dport;
}

/* admit_ack decides a handshake's final ACK to a limited port. Below the
 * limit it reserves the connection's place in the count, atomically, so
 * that ACKs racing on several CPUs or in one receive batch cannot all get
 * in: the count includes every connection let through, before the kernel
 * creates it. It returns 0 for an ACK to refuse. */
static __always_inline int admit_ack(struct xdp_md *ctx, const struct police_pkt *p, __u16 port,
				     const struct cl_limit *lim, __s64 *cnt)
{
	struct cl_pending v = { .port = port };
	struct cl_flow f = {};
	long err;

	f.family = p->family;
	__builtin_memcpy(f.raddr, p->saddr, 16);
	__builtin_memcpy(f.laddr, p->daddr, 16);
	f.rport = p->sport;
	f.lport = p->dport;
	if (!handshake_ack(ctx, p))
		return 1;
	/* A retransmitted final ACK (the kernel dropped the first, say for a
	 * full accept queue) holds its reservation already. */
	if (bpf_map_lookup_elem(&pending, &f))
		return 1;
	if (__sync_fetch_and_add(cnt, 1) >= (__s64)lim->max) {
		__sync_fetch_and_add(cnt, -1);
		return 0;
	}
	v.since = bpf_ktime_get_ns();
	err = bpf_map_update_elem(&pending, &f, &v, BPF_NOEXIST);
	if (err) {
		/* A twin ACK on another CPU reserved it, or the table is full:
		 * either way this one holds no place. */
		__sync_fetch_and_add(cnt, -1);
		if (err == -E2BIG)
			count(CL_STAT_PENDING_FULL);
		return 1;
	}
	count(CL_STAT_ACK_RESERVED);
	return 1;
}

SEC("xdp")
int cl_xdp(struct xdp_md *ctx)
{
	struct police_pkt p;
	struct cl_limit *lim;
	__s64 *cnt;
	__u16 port;
	__u8 flags;
	int ret;

	if (police_parse(ctx, &p)) {
		count(CL_STAT_PASS);
		count(CL_STAT_PASS_UNPARSED);
		return chain_next(ctx, XDP_PASS);
	}
	if (p.l4proto != IPPROTO_TCP)
		goto pass;
	/* A connection is refused at its first SYN, or, when the count
	 * reached the limit during its handshake, at its final ACK. Every
	 * other segment belongs to an admitted connection or is the stack's
	 * to answer. */
	flags = p.tcp_flags & (POLICE_TCP_SYN | POLICE_TCP_ACK | POLICE_TCP_RST);
	if (flags != POLICE_TCP_SYN && flags != POLICE_TCP_ACK)
		goto pass;
	port = bpf_ntohs(p.dport);
	lim = bpf_map_lookup_elem(&limits, &port);
	if (!lim)
		goto pass;
	/* The segments of counted connections, the bulk of the traffic to a
	 * limited port, need no more than the cache. */
	if (flags == POLICE_TCP_ACK && estab_hit(&p)) {
		count(CL_STAT_ACK_ESTABLISHED);
		goto pass;
	}
	cnt = bpf_map_lookup_elem(&counts, &port);
	if (!cnt)
		goto pass;
	if (flags == POLICE_TCP_ACK) {
		if (admit_ack(ctx, &p, port, lim, cnt))
			goto pass;
		if (lim->action != CL_ACTION_RST) {
			count(CL_STAT_DROP_LIMIT_ACK);
			return XDP_DROP;
		}
		ret = police_rst(ctx, &p);
		count(ret == XDP_TX ? CL_STAT_TX_RST_ACK : CL_STAT_DROP_RST_FAILED);
		return ret;
	}
	if (*(volatile __s64 *)cnt < (__s64)lim->max) {
		count(CL_STAT_SYN_ADMITTED);
		goto pass;
	}
	if (lim->action != CL_ACTION_RST) {
		count(CL_STAT_DROP_LIMIT);
		return XDP_DROP;
	}
	ret = police_rst(ctx, &p);
	count(ret == XDP_TX ? CL_STAT_TX_RST : CL_STAT_DROP_RST_FAILED);
	return ret;
pass:
	count(CL_STAT_PASS);
	return chain_next(ctx, XDP_PASS);
}
