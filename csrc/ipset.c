/* ipset.c - CIDR parsing and sorted, merged range sets with O(log n) lookup. */
#include <stdlib.h>
#include <string.h>

#include "gray.h"
#include "internal.h"

/* The 8 bytes at p as a big-endian number: two of them order addresses
 * as memcmp() would, without a call per comparison (lookups sit on every
 * request's path). */
static inline uint64_t load_be64(const uint8_t *p)
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
#else
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
#endif
}

static gray_always_inline int ip_cmp(const gray_ip_t *a, const gray_ip_t *b)
{
    uint64_t x = load_be64(a->b), y = load_be64(b->b);
    if (x != y)
        return x < y ? -1 : 1;
    x = load_be64(a->b + 8);
    y = load_be64(b->b + 8);
    return x < y ? -1 : x > y;
}

/* the IPv4-mapped block ::ffff:0:0/96 and its neighbours */
static const gray_ip_t mapped_lo = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0}};
static const gray_ip_t mapped_hi = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
static const gray_ip_t below_mapped = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0xff, 0xff, 0xff, 0xff}};
static const gray_ip_t above_mapped = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}};

int gray_cidr_parse(const char *s, size_t len, gray_range_t *out, size_t *n)
{
    *n = 0;
    if (s == NULL || len == 0)
        return GRAY_EADDR;

    const char *slash = memchr(s, '/', len);
    size_t alen = slash ? (size_t)(slash - s) : len;
    gray_ip_t ip;
    if (gray_ip_parse(s, alen, &ip) != GRAY_OK)
        return GRAY_EADDR;

    int v4 = gray_ip_is_v4(&ip) && memchr(s, ':', alen) == NULL;
    unsigned bits = v4 ? 32 : 128;
    unsigned prefix = bits;
    if (slash) {
        const char *d = slash + 1;
        size_t dlen = len - alen - 1;
        /* 1..3 digits, no leading zero, at most the address width */
        if (dlen == 0 || dlen > 3 || (dlen > 1 && d[0] == '0'))
            return GRAY_EPREFIX;
        prefix = 0;
        for (size_t i = 0; i < dlen; i++) {
            if (!gray_is_digit(d[i]))
                return GRAY_EPREFIX;
            prefix = prefix * 10 + (unsigned)(d[i] - '0');
        }
        if (prefix > bits)
            return GRAY_EPREFIX;
    }
    if (v4)
        prefix += 96;   /* the IPv4 prefix inside ::ffff:0:0/96 */

    int host_bits_set = 0;
    for (unsigned i = 0; i < 16; i++) {
        unsigned first = i * 8;
        uint8_t mask;
        if (first + 8 <= prefix)
            mask = 0xff;
        else if (first >= prefix)
            mask = 0;
        else
            mask = (uint8_t)(0xff00u >> (prefix - first));
        if (ip.b[i] & (uint8_t)~mask)
            host_bits_set = 1;
        out->lo.b[i] = ip.b[i] & mask;
        out->hi.b[i] = ip.b[i] | (uint8_t)~mask;
    }
    *n = 1;

    /* nginx maps an IPv4-mapped peer to AF_INET before matching and never
     * matches across families, so an IPv6-written CIDR covers no IPv4 peer:
     * the mapped block is cut out of it. CIDRs are aligned blocks, so the
     * block is either inside the CIDR (up to two ranges remain), holds the
     * whole CIDR (none remains) or lies apart (unchanged). */
    if (!v4 && ip_cmp(&out->lo, &mapped_hi) <= 0 && ip_cmp(&out->hi, &mapped_lo) >= 0) {
        gray_range_t whole = *out;
        *n = 0;
        if (ip_cmp(&whole.lo, &mapped_lo) < 0) {
            out[*n].lo = whole.lo;
            out[*n].hi = below_mapped;
            (*n)++;
        }
        if (ip_cmp(&whole.hi, &mapped_hi) > 0) {
            out[*n].lo = above_mapped;
            out[*n].hi = whole.hi;
            (*n)++;
        }
    }
    return host_bits_set ? 1 : GRAY_OK;
}

static int range_cmp(const void *a, const void *b)
{
    const gray_range_t *x = a, *y = b;
    int c = ip_cmp(&x->lo, &y->lo);
    return c != 0 ? c : ip_cmp(&x->hi, &y->hi);
}

/* 1 when b directly follows a (a + 1 == b), 0 also when a is the last address. */
static int ip_adjacent(const gray_ip_t *a, const gray_ip_t *b)
{
    gray_ip_t next = *a;
    for (int i = 15; i >= 0; i--) {
        if (++next.b[i] != 0)
            return ip_cmp(&next, b) == 0;
    }
    return 0;
}

size_t gray_ipset_build(gray_range_t *ranges, size_t n)
{
    if (n < 2)
        return n;
    qsort(ranges, n, sizeof *ranges, range_cmp);
    size_t out = 0;
    for (size_t i = 1; i < n; i++) {
        gray_range_t *cur = &ranges[out];
        const gray_range_t *r = &ranges[i];
        if (ip_cmp(&r->lo, &cur->hi) <= 0 || ip_adjacent(&cur->hi, &r->lo)) {
            if (ip_cmp(&r->hi, &cur->hi) > 0)
                cur->hi = r->hi;
        } else {
            ranges[++out] = *r;
        }
    }
    return out + 1;
}

int gray_ipset_contains(const gray_range_t *ranges, size_t n, const gray_ip_t *ip)
{
    /* find the last range whose lo <= ip */
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ip_cmp(&ranges[mid].lo, ip) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > 0 && ip_cmp(ip, &ranges[lo - 1].hi) <= 0;
}
