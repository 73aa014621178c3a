/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Internet checksum (RFC 1071) helpers. Every value is summed as it lies in
 * memory (network byte order loaded by the CPU), so sums of header fields and
 * sums returned by bpf_csum_diff() over packet bytes add up directly, and the
 * folded result is stored back without byte swapping. */
#ifndef SLUICE_CSUM_H
#define SLUICE_CSUM_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <linux/bpf.h>

/* Fold a 64-bit one's complement accumulator to 16 bits. */
static __always_inline __u16 csum_fold64(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* One's complement negation of a folded 16-bit sum, widened for adding. */
static __always_inline __u64 csum_neg(__u64 sum)
{
	return (__u16)~csum_fold64(sum);
}

/* Sum of n 32-bit words; n is a compile-time constant in every caller. */
static __always_inline __u64 csum_words(const __be32 *w, int n)
{
	__u64 sum = 0;

#pragma unroll
	for (int i = 0; i < n; i++)
		sum += w[i];
	return sum;
}

/* Sum of n (at most 17) 32-bit words of packet data, for short regions whose
 * length is only known at run time (IPv4 options, ICMP quotes): the verifier
 * accepts per-word bounds checks where a variable-size helper call would
 * need the largest size to fit. Returns -1 if the region leaves the packet. */
static __always_inline int csum_words_var(const __be32 *p, const void *data_end, __u32 n, __u64 *sum)
{
	for (int i = 0; i < 17; i++) {
		if (i >= n)
			break;
		if ((const void *)(p + 1) > data_end)
			return -1;
		*sum += *p;
		p++;
		/* Keep clang from turning the per-word checks into arithmetic on
		 * data_end, which the verifier forbids. */
		asm volatile("" : "+r"(p));
	}
	return 0;
}

/* Sum of an IPv4 or IPv6 pseudo-header, as TCP, UDP and ICMPv6 use it. */
static __always_inline __u64 csum_pseudo4(__be32 src, __be32 dst, __u8 proto, __u32 len)
{
	return (__u64)src + dst + bpf_htons((__u16)proto) + bpf_htons((__u16)len);
}

static __always_inline __u64 csum_pseudo6(const __be32 *src, const __be32 *dst, __u8 proto, __u32 len)
{
	return csum_words(src, 4) + csum_words(dst, 4) + bpf_htonl(len) + bpf_htonl((__u32)proto);
}

/* Final checksum field value from an accumulator. */
static __always_inline __u16 csum_finish(__u64 sum)
{
	return (__u16)~csum_fold64(sum);
}

/* Adjust a stored checksum when one 16-bit word changes from old to new
 * (RFC 1624 eq. 3: HC' = ~(~HC + ~m + m')). */
static __always_inline __u16 csum_replace2(__u16 check, __u16 old, __u16 new)
{
	__u64 sum = (__u16)~check;

	sum += (__u16)~old;
	sum += new;
	return csum_finish(sum);
}

/* Maximum length csum_packet() walks. */
#define CSUM_MAX_WALK 9216
#define CSUM_BLOCK 64

struct csum_walk {
	struct xdp_md *ctx;
	__u32 off;
	__u64 sum;
	int err;
};

/* One bpf_loop() step: sum the index-th CSUM_BLOCK-byte block (block mode)
 * or 4-byte word (word mode) after off. A callback is verified once, where
 * an open-coded loop would be verified once per iteration and path. */
static __always_inline long csum_walk_step(__u64 index, struct csum_walk *w, __u32 size)
{
	void *data = (void *)(long)w->ctx->data;
	void *data_end = (void *)(long)w->ctx->data_end;
	__u8 *p = data + (w->off & 0x3fff) + ((index * size) & 0x3fff);

	if ((void *)(p + size) > data_end) {
		w->err = 1;
		return 1;
	}
	if (size == 4) {
		w->sum += *(__u32 *)p;
		return 0;
	}
	__s64 s = bpf_csum_diff(0, 0, (__be32 *)p, CSUM_BLOCK, 0);

	if (s < 0) {
		w->err = 1;
		return 1;
	}
	w->sum += (__u32)s;
	return 0;
}

static long csum_walk_block(__u64 index, void *arg)
{
	return csum_walk_step(index, arg, CSUM_BLOCK);
}

static long csum_walk_word(__u64 index, void *arg)
{
	return csum_walk_step(index, arg, 4);
}

/* Sum len bytes of packet data starting at off: a slow path, taken only when
 * no checksum in the packet lets us derive the sum (UDP without checksum).
 * Returns the folded sum, or -1 when the range is not inside the packet. */
static __always_inline __s64 csum_packet(struct xdp_md *ctx, __u32 off, __u32 len)
{
	struct csum_walk w = { .ctx = ctx, .off = off };
	__u32 blocks = len / CSUM_BLOCK;
	__u32 words = (len % CSUM_BLOCK) / 4;

	if (len > CSUM_MAX_WALK)
		return -1;
	bpf_loop(blocks, csum_walk_block, &w, 0);
	w.off += blocks * CSUM_BLOCK;
	bpf_loop(words, csum_walk_word, &w, 0);
	w.off += words * 4;
	if (w.err)
		return -1;

	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *p = data + (w.off & 0x3fff);

	if (len & 2) {
		if ((void *)(p + 2) > data_end)
			return -1;
		w.sum += *(__u16 *)p;
		p += 2;
	}
	if (len & 1) {
		if ((void *)(p + 1) > data_end)
			return -1;
		/* The odd byte is the high-order byte of a zero-padded word. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
		w.sum += *p;
#else
		w.sum += (__u16)*p << 8;
#endif
	}
	return csum_fold64(w.sum);
}

#endif
