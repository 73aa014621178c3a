/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bob Jenkins' lookup3 hashword(), the function the Linux kernel calls
 * jhash2(). It is the flow hash of every Sluice program: the control plane
 * recomputes it in Go (ctl/jhash) to predict where a flow goes, so any change
 * here is a change of the cross-node contract. */
#ifndef SLUICE_JHASH_H
#define SLUICE_JHASH_H

#include <linux/types.h>

#define JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 jh_rol32(__u32 v, int s)
{
	return (v << s) | (v >> (32 - s));
}

#define jh_mix(a, b, c)                                                   \
	do {                                                              \
		a -= c; a ^= jh_rol32(c, 4);  c += b;                     \
		b -= a; b ^= jh_rol32(a, 6);  a += c;                     \
		c -= b; c ^= jh_rol32(b, 8);  b += a;                     \
		a -= c; a ^= jh_rol32(c, 16); c += b;                     \
		b -= a; b ^= jh_rol32(a, 19); a += c;                     \
		c -= b; c ^= jh_rol32(b, 4);  b += a;                     \
	} while (0)

#define jh_final(a, b, c)                                                 \
	do {                                                              \
		c ^= b; c -= jh_rol32(b, 14);                             \
		a ^= c; a -= jh_rol32(c, 11);                             \
		b ^= a; b -= jh_rol32(a, 25);                             \
		c ^= b; c -= jh_rol32(b, 16);                             \
		a ^= c; a -= jh_rol32(c, 4);                              \
		b ^= a; b -= jh_rol32(a, 14);                             \
		c ^= b; c -= jh_rol32(b, 24);                             \
	} while (0)

/* jhash_1word hashes a single word (client-affinity hash of an IPv4 source). */
static __always_inline __u32 jhash_1word(__u32 w, __u32 initval)
{
	__u32 a, b, c;

	a = b = c = JHASH_INITVAL + (1 << 2) + initval;
	a += w;
	jh_final(a, b, c);
	return c;
}

/* jhash_3words hashes an IPv4 flow: source, destination, ports. */
static __always_inline __u32 jhash_3words(__u32 w0, __u32 w1, __u32 w2, __u32 initval)
{
	__u32 a, b, c;

	a = b = c = JHASH_INITVAL + (3 << 2) + initval;
	c += w2;
	b += w1;
	a += w0;
	jh_final(a, b, c);
	return c;
}

/* jhash_4words hashes an IPv6 address (client-affinity hash). */
static __always_inline __u32 jhash_4words(const __u32 *k, __u32 initval)
{
	__u32 a, b, c;

	a = b = c = JHASH_INITVAL + (4 << 2) + initval;
	a += k[0];
	b += k[1];
	c += k[2];
	jh_mix(a, b, c);
	a += k[3];
	jh_final(a, b, c);
	return c;
}

/* jhash_9words hashes an IPv6 flow: source (4), destination (4), ports. */
static __always_inline __u32 jhash_9words(const __u32 *k, __u32 initval)
{
	__u32 a, b, c;

	a = b = c = JHASH_INITVAL + (9 << 2) + initval;
	a += k[0];
	b += k[1];
	c += k[2];
	jh_mix(a, b, c);
	a += k[3];
	b += k[4];
	c += k[5];
	jh_mix(a, b, c);
	a += k[6];
	b += k[7];
	c += k[8];
	jh_final(a, b, c);
	return c;
}

#endif
