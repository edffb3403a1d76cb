/* ipset.c - CIDR parsing and sorted, merged range sets with O(log n) lookup. */
#include <stdlib.h>
#include <string.h>

#include "gray.h"
#include "internal.h"
#include "image_internal.h"

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

/* ---- valued range sets ---------------------------------------------------- */

/* Build-time ordering: by first address, then the wider range first, then
 * the stronger last (longer prefix, then later line), so that of ranges
 * with equal bounds the last one wins and an enclosing range comes before
 * what it holds. Entries are distinct: no two share a line and bounds. */
static gray_always_inline int rentry4_less(const void *pa, const void *pb)
{
    const gray_rentry4_t *a = pa, *b = pb;
    if (a->lo != b->lo)
        return a->lo < b->lo;
    if (a->hi != b->hi)
        return a->hi > b->hi;
    return a->line < b->line;
}

static gray_always_inline int rentry6_less(const void *pa, const void *pb)
{
    const gray_rentry6_t *a = pa, *b = pb;
    int c = ip_cmp(&a->lo, &b->lo);
    if (c != 0)
        return c < 0;
    c = ip_cmp(&a->hi, &b->hi);
    if (c != 0)
        return c > 0;
    if (a->prefix != b->prefix)
        return a->prefix < b->prefix;
    return a->line < b->line;
}

typedef int (*less_fn)(const void *, const void *);

#define SORT_ELEM_MAX 64        /* bytes: the largest entry sorted */
#define SORT_SMALL    16        /* runs this short are left for insertion sort */

static gray_always_inline void swap_elem(char *a, char *b, size_t size)
{
    char tmp[SORT_ELEM_MAX];
    memcpy(tmp, a, size);
    memcpy(a, b, size);
    memcpy(b, tmp, size);
}

/* The entry at root moved down the heap a[0 .. n) until no child is larger. */
static gray_always_inline void sift_down(char *a, size_t root, size_t n, size_t size,
                                         less_fn less)
{
    for (size_t child; (child = 2 * root + 1) < n; root = child) {
        if (child + 1 < n && less(a + child * size, a + (child + 1) * size))
            child++;
        if (!less(a + root * size, a + child * size))
            break;
        swap_elem(a + root * size, a + child * size, size);
    }
}

static gray_always_inline void heap_sort(char *a, size_t n, size_t size, less_fn less)
{
    /* heapify */
    for (size_t start = n / 2; start-- > 0;)
        sift_down(a, start, n, size, less);
    /* move the largest to the end, one at a time */
    for (size_t last = n; last-- > 1;) {
        swap_elem(a, a + last * size, size);
        sift_down(a, 0, last, size, less);
    }
}

/* Introsort without recursion or allocation (qsort may allocate, and calls
 * its comparison through a pointer): median-of-three quicksort down to short
 * runs, heapsort where partitions keep coming out lopsided, then one
 * insertion sort pass. Always inlined so less() is inlined too. */
static gray_always_inline void sort_entries(void *base, size_t n, size_t size, less_fn less)
{
    char *a = base;
    char pivot[SORT_ELEM_MAX];
    struct { size_t lo, n; unsigned depth; } stack[64];
    size_t top = 0;
#ifdef GRAY_SORT_LEVELS
    unsigned depth = GRAY_SORT_LEVELS;   /* the ASan replay: heapsort runs too */
#else
    unsigned depth = 0;                  /* 2 log2(n) partition levels */
    for (size_t m = n; m > 1; m >>= 1)
        depth += 2;
#endif
    stack[top].lo = 0, stack[top].n = n, stack[top].depth = depth, top++;

    while (top > 0) {
        top--;
        size_t lo = stack[top].lo, cnt = stack[top].n;
        depth = stack[top].depth;
        while (cnt > SORT_SMALL) {
            char *p = a + lo * size;
            if (depth-- == 0) {
                heap_sort(p, cnt, size, less);
                break;
            }
            /* order first, middle, last: they guard both scans below */
            char *f = p, *m = p + cnt / 2 * size, *l = p + (cnt - 1) * size;
            if (less(m, f))
                swap_elem(m, f, size);
            if (less(l, m)) {
                swap_elem(l, m, size);
                if (less(m, f))
                    swap_elem(m, f, size);
            }
            memcpy(pivot, m, size);
            /* Hoare partition: [0, j] <= pivot <= [j + 1, cnt) */
            size_t i = 0, j = cnt - 1;
            for (;;) {
                while (less(p + i * size, pivot))
                    i++;
                while (less(pivot, p + j * size))
                    j--;
                if (i >= j)
                    break;
                swap_elem(p + i * size, p + j * size, size);
                i++;
                j--;
            }
            /* go on with the smaller side, keep the larger for later: the
             * stack never holds more than log2(n) entries */
            size_t left = j + 1, right = cnt - left;
            if (left < right) {
                stack[top].lo = lo + left, stack[top].n = right, stack[top].depth = depth, top++;
                cnt = left;
            } else {
                stack[top].lo = lo, stack[top].n = left, stack[top].depth = depth, top++;
                lo += left;
                cnt = right;
            }
        }
    }

    for (size_t i = 1; i < n; i++) {
        if (!less(a + i * size, a + (i - 1) * size))
            continue;
        memcpy(pivot, a + i * size, size);
        size_t k = i;
        do {
            memcpy(a + k * size, a + (k - 1) * size, size);
            k--;
        } while (k > 0 && less(pivot, a + (k - 1) * size));
        memcpy(a + k * size, pivot, size);
#ifdef GRAY_SORT_LEVELS
        /* the sorts above leave every element within its short run */
        if (i - k >= SORT_SMALL)
            __builtin_trap();
#endif
    }
}

/* ---- the image compile's sorts: O(n) for IPv4, a counting pass for IPv6 ----
 * The order is rentry4_less's / rentry6_less's, a total one (no two entries
 * share a line and bounds): any sort that ends in it writes the same runs.
 * IPv4: a stable LSD radix sort on the first address, 11 bits a pass (a
 * digit all the entries share is skipped), then each stretch of equal first
 * addresses (mostly one entry) sorted by the whole order. IPv6: one counting
 * pass on the 16 bits after the prefix all first addresses share, then each
 * bucket by the whole order. Fewer than GRAY_RADIX_MIN entries, or no
 * scratch: sort_entries alone. The ASan replay lowers GRAY_RADIX_MIN so that
 * its small lists take both paths. */
#ifndef GRAY_RADIX_MIN
#define GRAY_RADIX_MIN 512
#endif
#ifndef RADIX_BITS
#define RADIX_BITS 11
#endif
#define RADIX_SIZE (1u << RADIX_BITS)
#define RADIX_DIGITS ((32 + RADIX_BITS - 1) / RADIX_BITS)
#define BUCKET6_BITS 16

static gray_always_inline uint32_t digit4(uint32_t lo, unsigned d)
{
    return lo >> (d * RADIX_BITS) & (RADIX_SIZE - 1);
}

void gray_rangeset_sort4(gray_rentry4_t *e, size_t n, gray_rentry4_t *scratch)
{
    if (scratch == NULL || n < GRAY_RADIX_MIN) {
        sort_entries(e, n, sizeof *e, rentry4_less);
        return;
    }
    uint32_t count[RADIX_DIGITS][RADIX_SIZE];
    memset(count, 0, sizeof count);
    for (size_t i = 0; i < n; i++) {
        uint32_t lo = e[i].lo;
        for (unsigned d = 0; d < RADIX_DIGITS; d++)
            count[d][digit4(lo, d)]++;
    }
    gray_rentry4_t *src = e, *dst = scratch;
    for (unsigned d = 0; d < RADIX_DIGITS; d++) {
        uint32_t *c = count[d];
        if (c[digit4(src[0].lo, d)] == n)
            continue;   /* every entry has this digit */
        uint32_t sum = 0;
        for (size_t b = 0; b < RADIX_SIZE; b++) {
            uint32_t k = c[b];
            c[b] = sum;
            sum += k;
        }
        for (size_t i = 0; i < n; i++)
            dst[c[digit4(src[i].lo, d)]++] = src[i];
        gray_rentry4_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != e)
        memcpy(e, src, n * sizeof *e);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && e[j].lo == e[i].lo)
            j++;
        if (j - i > 1)
            sort_entries(e + i, j - i, sizeof *e, rentry4_less);
        i = j;
    }
}

/* bits [skip, skip + bits) of the address (h, l) as a 128-bit number; the
 * compile's counting pass and the image's index share it */
static gray_always_inline uint32_t bucket6(uint64_t h, uint64_t l, unsigned skip, unsigned bits)
{
    if (bits == 0)
        return 0;
    uint64_t t = skip >= 64 ? l << (skip - 64) : skip == 0 ? h : h << skip | l >> (64 - skip);
    return (uint32_t)(t >> (64 - bits));
}

/* bits [skip, skip + BUCKET6_BITS) of a, skip <= 112 */
static gray_always_inline uint32_t bucket6_of(const gray_ip_t *a, unsigned skip)
{
    return bucket6(load_be64(a->b), load_be64(a->b + 8), skip, BUCKET6_BITS);
}

void gray_rangeset_sort6(gray_rentry6_t *e, size_t n, gray_rentry6_t *scratch)
{
    uint32_t *start = scratch != NULL && n >= GRAY_RADIX_MIN
                          ? calloc((1u << BUCKET6_BITS) + 1, sizeof *start) : NULL;
    if (start == NULL) {
        sort_entries(e, n, sizeof *e, rentry6_less);
        return;
    }
    /* the prefix every first address shares */
    uint64_t h0 = load_be64(e[0].lo.b), l0 = load_be64(e[0].lo.b + 8), dh = 0, dl = 0;
    for (size_t i = 1; i < n; i++) {
        dh |= load_be64(e[i].lo.b) ^ h0;
        dl |= load_be64(e[i].lo.b + 8) ^ l0;
    }
    unsigned skip = dh ? (unsigned)__builtin_clzll(dh) : dl ? 64 + (unsigned)__builtin_clzll(dl) : 128;
    if (skip > 128 - BUCKET6_BITS)
        skip = 128 - BUCKET6_BITS;
    for (size_t i = 0; i < n; i++)
        start[bucket6_of(&e[i].lo, skip) + 1]++;
    for (size_t b = 1; b <= (1u << BUCKET6_BITS); b++)
        start[b] += start[b - 1];
    /* start[b]: where bucket b begins; filled through start[b] as it grows */
    for (size_t i = 0; i < n; i++)
        scratch[start[bucket6_of(&e[i].lo, skip)]++] = e[i];
    /* start[b] is now where bucket b ends */
    size_t lo = 0;
    for (size_t b = 0; b < (1u << BUCKET6_BITS); b++) {
        size_t hi = start[b];
        if (hi - lo > 1)
            sort_entries(scratch + lo, hi - lo, sizeof *scratch, rentry6_less);
        lo = hi;
    }
    memcpy(e, scratch, n * sizeof *e);
    free(start);
}

static gray_always_inline uint32_t load_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Appends a run: one starting at the same address replaces the last (the
 * later event there wins), one that changes nothing is dropped. */
static gray_always_inline void emit4(gray_run4_t *runs, size_t *m, uint32_t at, unsigned t)
{
    size_t k = *m;
    if (k > 0 && load_be32(runs[k - 1].start) == at)
        k--;
    if ((k > 0 ? runs[k - 1].target : 0) != t) {
        store_be32(runs[k].start, at);
        runs[k].target = (uint8_t)t;
        k++;
    }
    *m = k;
}

static gray_always_inline void emit6(gray_run6_t *runs, size_t *m, const gray_ip_t *at, unsigned t)
{
    size_t k = *m;
    if (k > 0 && ip_cmp(&runs[k - 1].start, at) == 0)
        k--;
    if ((k > 0 ? runs[k - 1].target : 0) != t) {
        runs[k].start = *at;
        runs[k].target = (uint8_t)t;
        k++;
    }
    *m = k;
}

#define NEST_MAX 160   /* CIDRs nest at most 33 (IPv4) or 129 (IPv6) deep */

/* a + 1; the caller knows a is not the last address */
static gray_ip_t ip_next(gray_ip_t a)
{
    for (int i = 15; i >= 0; i--) {
        if (++a.b[i] != 0)
            break;
    }
    return a;
}

static const gray_ip_t ip_last = {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};

/* The sorted entries into runs. An open range's run resumes after each
 * range nested in it ends; ranges with equal bounds are one, the last.
 * Each entry adds at most two runs: its start and its resumption. */
int gray_rangeset_sweep4(const gray_rentry4_t *e, size_t n, gray_run4_t *runs, size_t *nruns)
{
    struct { uint32_t hi; unsigned target; } open[NEST_MAX];
    size_t depth = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        while (i + 1 < n && e[i + 1].lo == e[i].lo && e[i + 1].hi == e[i].hi)
            i++;
        const gray_rentry4_t *r = &e[i];
        if (r->lo > r->hi || r->target < 1 || r->target > GRAY_TARGETS_MAX)
            return GRAY_EINVAL;
        while (depth > 0 && open[depth - 1].hi < r->lo) {
            uint32_t after = open[--depth].hi + 1;
            emit4(runs, &m, after, depth ? open[depth - 1].target : 0);
        }
        if (depth == NEST_MAX || (depth > 0 && r->hi > open[depth - 1].hi))
            return GRAY_EINVAL;
        emit4(runs, &m, r->lo, r->target);
        open[depth].hi = r->hi;
        open[depth].target = r->target;
        depth++;
    }
    while (depth > 0) {
        uint32_t hi = open[--depth].hi;
        if (hi == UINT32_MAX)
            break;   /* so do all that enclose it */
        emit4(runs, &m, hi + 1, depth ? open[depth - 1].target : 0);
    }
    *nruns = m;
    return GRAY_OK;
}

int gray_rangeset_sweep6(const gray_rentry6_t *e, size_t n, gray_run6_t *runs, size_t *nruns)
{
    struct { gray_ip_t hi; unsigned target; } open[NEST_MAX];
    size_t depth = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        while (i + 1 < n && ip_cmp(&e[i + 1].lo, &e[i].lo) == 0 &&
               ip_cmp(&e[i + 1].hi, &e[i].hi) == 0)
            i++;
        const gray_rentry6_t *r = &e[i];
        if (ip_cmp(&r->lo, &r->hi) > 0 || r->target < 1 || r->target > GRAY_TARGETS_MAX)
            return GRAY_EINVAL;
        while (depth > 0 && ip_cmp(&open[depth - 1].hi, &r->lo) < 0) {
            gray_ip_t after = ip_next(open[--depth].hi);
            emit6(runs, &m, &after, depth ? open[depth - 1].target : 0);
        }
        if (depth == NEST_MAX || (depth > 0 && ip_cmp(&r->hi, &open[depth - 1].hi) > 0))
            return GRAY_EINVAL;
        emit6(runs, &m, &r->lo, r->target);
        open[depth].hi = r->hi;
        open[depth].target = r->target;
        depth++;
    }
    while (depth > 0) {
        gray_ip_t hi = open[--depth].hi;
        if (ip_cmp(&hi, &ip_last) == 0)
            break;
        gray_ip_t after = ip_next(hi);
        emit6(runs, &m, &after, depth ? open[depth - 1].target : 0);
    }
    *nruns = m;
    return GRAY_OK;
}

/* ---- the bucket index ------------------------------------------------------
 * A plain binary search over a million runs misses the cache at nearly
 * every step. So each family also has an index of 2^bits buckets on the
 * bits that follow the prefix all its runs share ("skip" bits long): bucket
 * b says where its runs begin, and a lookup searches one bucket: 4 to 7
 * runs (more past 2^INDEX_BITS_MAX buckets), a cache line or two. The
 * index costs at most a byte per run. A skewed list makes some buckets
 * larger, never the search worse than O(log n). */

#define INDEX_BITS_MAX 18

/* The bits of an index for runs runs, at most room: the bits an address
 * has past the ones all the runs share. */
static unsigned index_bits(size_t runs, unsigned room)
{
    unsigned bits = 0;
    while (bits < INDEX_BITS_MAX && bits < room && ((size_t)8 << bits) <= runs)
        bits++;
    return bits;
}

size_t gray_rangeset_index_len(size_t runs)
{
    return ((size_t)1 << index_bits(runs, INDEX_BITS_MAX)) + 1;
}

static unsigned common_bits64(uint64_t a, uint64_t b)
{
    unsigned n = 0;
    for (uint64_t bit = (uint64_t)1 << 63; bit != 0 && (a & bit) == (b & bit); bit >>= 1)
        n++;
    return n;
}

static gray_always_inline uint32_t bucket4(uint32_t x, unsigned skip, unsigned bits)
{
    return bits ? (x << skip) >> (32 - bits) : 0;   /* bits > 0: skip < 32 */
}

void gray_rangeset_index4(gray_rangeset_t *set)
{
    const gray_run4_t *r = set->v4;
    size_t m = set->n4;
    unsigned skip = 32, bits = 0;
    if (m >= 2) {
        skip = common_bits64((uint64_t)load_be32(r[0].start) << 32,
                             (uint64_t)load_be32(r[m - 1].start) << 32);
        bits = index_bits(m, 32 - skip);
    }
    set->v4_skip = (uint8_t)skip;
    set->v4_bits = (uint8_t)bits;
    size_t i = 0;
    for (uint32_t b = 0; b <= (1u << bits); b++) {
        while (i < m && bucket4(load_be32(r[i].start), skip, bits) < b)
            i++;
        set->v4_index[b] = (uint32_t)i;
    }
}

void gray_rangeset_index6(gray_rangeset_t *set)
{
    const gray_run6_t *r = set->v6;
    size_t m = set->n6;
    unsigned skip = 128, bits = 0;
    if (m >= 2) {
        uint64_t h0 = load_be64(r[0].start.b), l0 = load_be64(r[0].start.b + 8);
        uint64_t h1 = load_be64(r[m - 1].start.b), l1 = load_be64(r[m - 1].start.b + 8);
        skip = h0 != h1 ? common_bits64(h0, h1) : 64 + common_bits64(l0, l1);
        bits = index_bits(m, 128 - skip);
    }
    set->v6_skip = (uint8_t)skip;
    set->v6_bits = (uint8_t)bits;
    size_t i = 0;
    for (uint32_t b = 0; b <= (1u << bits); b++) {
        while (i < m && bucket6(load_be64(r[i].start.b), load_be64(r[i].start.b + 8), skip,
                                bits) < b)
            i++;
        set->v6_index[b] = (uint32_t)i;
    }
}

int gray_rangeset_build(gray_rangeset_t *set, gray_rentry4_t *e4, size_t n4,
                        gray_rentry6_t *e6, size_t n6)
{
    set->n4 = set->n6 = 0;
    if (n4 > UINT32_MAX / 2 || n6 > UINT32_MAX / 2)
        return GRAY_EINVAL;
    /* no scratch: this call allocates nothing (gray.h) */
    gray_rangeset_sort4(e4, n4, NULL);
    gray_rangeset_sort6(e6, n6, NULL);
    size_t m4, m6;
    int rc = gray_rangeset_sweep4(e4, n4, set->v4, &m4);
    if (rc == GRAY_OK)
        rc = gray_rangeset_sweep6(e6, n6, set->v6, &m6);
    if (rc != GRAY_OK)
        return rc;
    set->n4 = (uint32_t)m4;
    set->n6 = (uint32_t)m6;
    gray_rangeset_index4(set);
    gray_rangeset_index6(set);
    return GRAY_OK;
}

/* The target of the last run starting at or before x. Past the ends the
 * answer is known; in between, x shares the runs' common prefix, so its
 * bucket bounds the search: the run before the bucket starts below x. */
static int find4(const gray_rangeset_t *set, uint32_t x)
{
    const gray_run4_t *r = set->v4;
    size_t m = set->n4;
    if (m == 0 || x < load_be32(r[0].start))
        return 0;
    if (x >= load_be32(r[m - 1].start))
        return r[m - 1].target;
    uint32_t b = bucket4(x, set->v4_skip, set->v4_bits);
    size_t first = set->v4_index[b];
    size_t base = first > 0 ? first - 1 : 0, n = set->v4_index[b + 1] - base;
    while (n > 1) {
        size_t half = n / 2;
        base = load_be32(r[base + half].start) <= x ? base + half : base;
        n -= half;
    }
    return r[base].target;
}

static gray_always_inline int le128(const gray_ip_t *a, uint64_t xh, uint64_t xl)
{
    uint64_t h = load_be64(a->b), l = load_be64(a->b + 8);
    return (h < xh) | ((h == xh) & (l <= xl));
}

static int find6(const gray_rangeset_t *set, const gray_ip_t *ip)
{
    const gray_run6_t *r = set->v6;
    size_t m = set->n6;
    uint64_t xh = load_be64(ip->b), xl = load_be64(ip->b + 8);
    if (m == 0 || !le128(&r[0].start, xh, xl))
        return 0;
    if (le128(&r[m - 1].start, xh, xl))
        return r[m - 1].target;
    uint32_t b = bucket6(xh, xl, set->v6_skip, set->v6_bits);
    size_t first = set->v6_index[b];
    size_t base = first > 0 ? first - 1 : 0, n = set->v6_index[b + 1] - base;
    while (n > 1) {
        size_t half = n / 2;
        base = le128(&r[base + half].start, xh, xl) ? base + half : base;
        n -= half;
    }
    return r[base].target;
}

int gray_rangeset_find(const gray_rangeset_t *set, const gray_ip_t *ip)
{
    if (gray_ip_is_v4(ip))
        return find4(set, load_be32(ip->b + 12));
    return find6(set, ip);
}

int gray_rangeset_find_text(const gray_rangeset_t *set, const char *s, size_t len)
{
    gray_ip_t ip;
    if (gray_ip_parse_host(s, len, &ip) != GRAY_OK)
        return GRAY_EADDR;
    return gray_rangeset_find(set, &ip);
}
