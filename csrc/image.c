/* image.c - compiled list images: build one flat buffer from a list's text,
 * write it to a file atomically, map it read-only, check it, look up in it.
 *
 * Layout (format 1; offsets from the start, every section 8-byte aligned,
 * integers in the compiling machine's byte order, padding zero):
 *
 *   0    header, 256 bytes (img_header_t): magic "GRAYIMG\n", format, kind,
 *        size of the whole file, the list's CAS, the body's checksum, the
 *        header's own checksum, a byte-order mark, the target-name table's
 *        place, what the compile counted (lines, bad line numbers, ...), and
 *        the sections of the kind;
 *   256  target names, '\n'-separated: the k-th (from 1) is target k;
 *   ids:    bucket index, (2^bits + 1) x 8 bytes (gray_id_bucket_t): the
 *           first entry whose hash's top bits are >= b, and a 32-bit filter
 *           (two bits per id of the bucket, from the hash's low bits);
 *           entries, n x 16 bytes (gray_id_entry_t): hash, pool offset,
 *           length, target; sorted by hash, then bytes; ids distinct;
 *           pool: the ids' bytes;
 *   ranges: IPv4 runs (n4 x 5 bytes) and IPv6 runs (n6 x 17 bytes) and
 *           their bucket indexes, exactly as gray_rangeset_t points to
 *           them, so gray_rangeset_find() runs on the mapped bytes.
 *
 * A handle is malloc'ed on open; it holds pointers into the mapping, the
 * image holds none. */
#define _GNU_SOURCE              /* MAP_ANONYMOUS, mremap */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gray.h"
#include "image_internal.h"
#include "internal.h"

#define HEADER_BYTES   256
#define IMAGE_MAGIC    "GRAYIMG\n"
#define BYTE_ORDER_MARK 0x01020304u
#define RANGE_BITS_MAX 18          /* ipset.c's INDEX_BITS_MAX */
#define RUN4_BYTES     5
#define RUN6_BYTES     17
#define ID_PREFETCH    16         /* entries ahead: the pool's reads of the text */

typedef struct img_header {
    char magic[8];
    uint32_t format;
    uint32_t kind;
    uint64_t size;              /* of the whole image: a shorter file is truncated */
    uint64_t cas;
    uint64_t body_sum;          /* gray_image_hash() of bytes [HEADER_BYTES, size) */
    uint64_t header_sum;        /* gray_image_hash() of the header with this field 0 */
    uint32_t byte_order;
    uint32_t ntargets;
    uint32_t names_off;
    uint32_t names_len;
    uint32_t lines, taken, entries, runs, bad, unknown;
    uint32_t bad_lines[GRAY_IMAGE_REPORT];
    uint32_t unknown_lines[GRAY_IMAGE_REPORT];
    /* ids */
    uint64_t id_index_off;
    uint64_t id_entries_off;
    uint64_t id_pool_off;
    uint64_t id_pool_len;
    uint32_t id_count;
    uint32_t id_bits;
    /* ranges */
    uint64_t v4_off;
    uint64_t v6_off;
    uint64_t v4_index_off;
    uint64_t v6_index_off;
    uint32_t n4;
    uint32_t n6;
    uint8_t v4_skip, v4_bits, v6_skip, v6_bits;
    uint32_t reserved[5];
} img_header_t;

_Static_assert(sizeof(img_header_t) == HEADER_BYTES, "the header is 256 bytes");
_Static_assert(sizeof(gray_id_entry_t) == 16, "an id entry is 16 bytes");
_Static_assert(sizeof(gray_run4_t) == RUN4_BYTES && sizeof(gray_run6_t) == RUN6_BYTES,
               "runs are packed");

struct gray_image {
    const uint8_t *base;
    size_t size;
    int mapped;                 /* 1: munmap on close; 2: gray_big_free (adopted) */
    img_header_t h;             /* a copy: read once */
    const char *names;
    /* ids */
    const gray_id_bucket_t *id_index;
    const gray_id_entry_t *ids;
    const uint8_t *pool;
    /* ranges */
    gray_rangeset_t set;
};

static inline uint64_t align8(uint64_t x)
{
    return (x + 7) & ~(uint64_t)7;
}

static uint64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int canceled(const atomic_int *cancel)
{
    return cancel != NULL && atomic_load(cancel) != 0;
}

/* ---- scratch memory -------------------------------------------------------------- */

#define BIG_HEADER 16   /* the mapping's size, keeping 16-byte alignment */

/* Under AddressSanitizer the scratch comes from calloc, so that its
 * redzones catch what a mapping's page slack would hide. */
#if defined(__SANITIZE_ADDRESS__)
#define BIG_FROM_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BIG_FROM_MALLOC 1
#endif
#endif

void *gray_big_alloc(size_t size)
{
    if (size > SIZE_MAX - BIG_HEADER)
        return NULL;
    size_t total = size + BIG_HEADER;
#ifdef BIG_FROM_MALLOC
    void *p = calloc(1, total);
    if (p == NULL)
        return NULL;
#else
    void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#endif
    memcpy(p, &total, sizeof total);
    return (char *)p + BIG_HEADER;
}

void *gray_big_grow(void *p, size_t old, size_t size)
{
    if (p == NULL)
        return gray_big_alloc(size);
    if (size <= old)
        return p;
    if (size > SIZE_MAX - BIG_HEADER)
        return NULL;
    char *base = (char *)p - BIG_HEADER;
    size_t total = size + BIG_HEADER;
#ifdef BIG_FROM_MALLOC
    char *q = realloc(base, total);
    if (q == NULL)
        return NULL;
    memset(q + BIG_HEADER + old, 0, size - old);
#else
    size_t was;
    memcpy(&was, base, sizeof was);
    char *q = mremap(base, was, total, MREMAP_MAYMOVE);
    if (q == MAP_FAILED)
        return NULL;
#endif
    memcpy(q, &total, sizeof total);
    return q + BIG_HEADER;
}

/* The pages of [p, p + len) inside a gray_big_alloc() block, made at once
 * (one call) for a region the compile writes whole: cheaper than a page
 * fault each. A hint: nothing happens where the kernel has no
 * MADV_POPULATE_WRITE (before 5.14), nor under ASan (calloc'ed). */
void gray_big_populate(void *p, size_t len)
{
#if !defined(BIG_FROM_MALLOC) && defined(MADV_POPULATE_WRITE)
    static size_t page;
    if (page == 0) {
        long ps = sysconf(_SC_PAGESIZE);
        page = ps > 0 ? (size_t)ps : 4096;
    }
    if (len < page)
        return;
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(page - 1), b = (uintptr_t)p + len;
    (void)madvise((void *)a, (size_t)(b - a), MADV_POPULATE_WRITE);
#else
    (void)p;
    (void)len;
#endif
}

/* The deferral list of the calling thread (a compile job's), or NULL. */
static _Thread_local gray_big_defer_t *big_defer;

void gray_big_defer(gray_big_defer_t *d)
{
    big_defer = d;
}

void gray_big_free(void *p)
{
    if (p == NULL)
        return;
    char *base = (char *)p - BIG_HEADER;
#ifdef BIG_FROM_MALLOC
    free(base);
#else
    size_t total;
    memcpy(&total, base, sizeof total);
    gray_big_defer_t *d = big_defer;
    if (d != NULL && d->n < GRAY_BIG_DEFER_MAX) {
        /* the pages go back now (MADV_DONTNEED takes the mapping's own
         * lock, not the process's mmap_lock on this kernel line); the
         * munmap, which holds mmap_lock while it runs, is left to the
         * caller of gray_big_defer_release(): a low-priority thread
         * preempted inside it would stall every thread of the process
         * that maps memory (a worker's event loop: 100-500 ms measured) */
        (void)madvise(base, total, MADV_DONTNEED);
        d->base[d->n] = base;
        d->len[d->n] = total;
        d->n++;
        return;
    }
    munmap(base, total);
#endif
}

void gray_big_defer_release(gray_big_defer_t *d)
{
    for (size_t i = 0; i < d->n; i++)
        munmap(d->base[i], d->len[i]);
    d->n = 0;
}

/* ---- building ------------------------------------------------------------------ */

/* The parts as one text: borrowed when there is one part, else copied with
 * a '\n' after each non-empty part that lacks one. */
static int join_parts(const gray_image_part_t *parts, size_t nparts, const char **text,
                      size_t *len, char **owned)
{
    *owned = NULL;
    *text = NULL;
    *len = 0;
    if (nparts > GRAY_JOB_PIECES_MAX || (parts == NULL && nparts > 0))
        return GRAY_EINVAL;
    uint64_t total = 0;
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].buf == NULL && parts[i].len > 0)
            return GRAY_EINVAL;
        total += parts[i].len;
        if (parts[i].len > 0 && parts[i].buf[parts[i].len - 1] != '\n')
            total++;
        if (total > (uint64_t)GRAY_RANGES_TEXT_MAX + 1)
            return GRAY_EINVAL;
    }
    if (nparts == 1) {
        *text = parts[0].buf;
        *len = parts[0].len;
        return GRAY_OK;
    }
    if (total == 0)
        return GRAY_OK;
    char *buf = gray_big_alloc((size_t)total);
    if (buf == NULL)
        return GRAY_ENOMEM;
    size_t at = 0;
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].len == 0)
            continue;
        memcpy(buf + at, parts[i].buf, parts[i].len);
        at += parts[i].len;
        if (parts[i].buf[parts[i].len - 1] != '\n')
            buf[at++] = '\n';
    }
    if (at > GRAY_RANGES_TEXT_MAX) {   /* only the last line end may pass it */
        if (buf[at - 1] == '\n' && at - 1 <= GRAY_RANGES_TEXT_MAX) {
            at--;
        } else {
            gray_big_free(buf);
            return GRAY_EINVAL;
        }
    }
    *text = buf;
    *len = at;
    *owned = buf;
    return GRAY_OK;
}

/* The target names to compile with: the caller's (checked) or those the
 * list uses. */
static int pick_names(const char *names, size_t names_len, const char *text, size_t len, int ids,
                      char *scratch, const char **out, size_t *out_len)
{
    if (names == NULL || names_len == 0) {
        *out_len = gray_names_collect(text, len, ids, scratch, GRAY_NAMES_BYTES_MAX);
        if (*out_len == 0)
            return GRAY_ENOMEM;
        *out = scratch;
        return GRAY_OK;
    }
    if (gray_names_check(names, names_len) == 0)
        return GRAY_EINVAL;
    *out = names;
    *out_len = names_len;
    return GRAY_OK;
}

static void header_start(img_header_t *h, int kind, uint64_t cas, const char *names,
                         size_t names_len, const gray_image_stats_t *st)
{
    memset(h, 0, sizeof *h);
    memcpy(h->magic, IMAGE_MAGIC, 8);
    h->format = GRAY_IMAGE_FORMAT;
    h->kind = (uint32_t)kind;
    h->cas = cas;
    h->byte_order = BYTE_ORDER_MARK;
    h->ntargets = gray_names_check(names, names_len);
    h->names_off = HEADER_BYTES;
    h->names_len = (uint32_t)names_len;
    h->lines = st->lines;
    h->taken = st->taken;
    h->entries = st->entries;
    h->runs = st->runs;
    h->bad = st->bad;
    h->unknown = st->unknown;
    memcpy(h->bad_lines, st->bad_lines, sizeof h->bad_lines);
    memcpy(h->unknown_lines, st->unknown_lines, sizeof h->unknown_lines);
}

static uint64_t header_sum(const img_header_t *h)
{
    img_header_t copy = *h;
    copy.header_sum = 0;
    return gray_image_hash((const char *)&copy, sizeof copy);
}

/* Sums and places the header at the start of buf. */
static void header_finish(img_header_t *h, uint8_t *buf, size_t size)
{
    h->size = size;
    h->body_sum = gray_image_hash((const char *)buf + HEADER_BYTES, size - HEADER_BYTES);
    h->header_sum = header_sum(h);
    memcpy(buf, h, sizeof *h);
}

/* The parts as the compile reads them, in place: checked as join_parts()
 * checks them, each part's offset in the joined text in start (malloc'ed). */
static int plan_parts(const gray_image_part_t *parts, size_t nparts, gray_id_text_t *t,
                      uint64_t **start)
{
    *start = NULL;
    if (nparts > GRAY_JOB_PIECES_MAX || (parts == NULL && nparts > 0))
        return GRAY_EINVAL;
    uint64_t *at = malloc((nparts ? nparts : 1) * sizeof *at);
    if (at == NULL)
        return GRAY_ENOMEM;
    uint64_t total = 0;
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].buf == NULL && parts[i].len > 0) {
            free(at);
            return GRAY_EINVAL;
        }
        at[i] = total;
        total += parts[i].len;
        if (nparts > 1 && parts[i].len > 0 && parts[i].buf[parts[i].len - 1] != '\n')
            total++;   /* the line break the join adds */
    }
    /* one part: its bytes, the parser's limit; more: the join's, whose last
     * line break may pass it */
    if (total > (uint64_t)GRAY_RANGES_TEXT_MAX + (nparts > 1)) {
        free(at);
        return GRAY_EINVAL;
    }
    t->parts = parts;
    t->nparts = nparts;
    t->start = at;
    t->len = total;
    *start = at;
    return GRAY_OK;
}

static int build_ids(const gray_id_text_t *text, const char *names, size_t names_len,
                     uint32_t unknown, uint64_t cas, void **out, size_t *out_len,
                     gray_image_stats_t *st, const atomic_int *cancel)
{
    gray_id_entry_t *e = NULL;
    size_t cap = 0;
    long parsed = gray_ids_parse(text, names, names_len, unknown, &e, &cap, st);
    if (parsed < 0 || canceled(cancel)) {
        gray_big_free(e);
        return parsed < 0 ? (int)parsed : GRAY_ECANCELED;
    }
    /* the image, laid out for all the parsed ids (no fewer bucket bits than
     * the distinct ones need, a pool no longer than the text): the sort
     * writes the entries in place, then they move down if the index shrank */
    uint64_t index_off = align8(HEADER_BYTES + names_len);
    unsigned bits_max = gray_ids_index_bits((size_t)parsed);
    uint64_t at_max = index_off + (((uint64_t)1 << bits_max) + 1) * sizeof(gray_id_bucket_t);
    uint64_t room = at_max + (uint64_t)parsed * sizeof *e + text->len + 32;
    uint8_t *buf = room <= SIZE_MAX ? gray_big_alloc((size_t)room) : NULL;
    if (buf == NULL) {
        gray_big_free(e);
        return GRAY_ENOMEM;
    }
    gray_big_populate(buf + index_off, (size_t)(at_max - index_off) + (size_t)parsed * sizeof *e);
    gray_id_entry_t *dst = (gray_id_entry_t *)(void *)(buf + at_max);
    long n = gray_ids_sort(e, (size_t)parsed, dst, text, cancel);
    gray_big_free(e);
    if (n < 0) {
        gray_big_free(buf);
        return (int)n;
    }
    st->entries = (uint32_t)n;
    unsigned bits = gray_ids_index_bits((size_t)n);

    img_header_t h;
    header_start(&h, GRAY_IMAGE_IDS, cas, names, names_len, st);
    h.id_index_off = index_off;
    h.id_entries_off = h.id_index_off + (((uint64_t)1 << bits) + 1) * sizeof(gray_id_bucket_t);
    h.id_pool_off = h.id_entries_off + (uint64_t)n * sizeof *e;
    h.id_count = (uint32_t)n;
    h.id_bits = bits;
    if (h.id_entries_off != at_max) {
        memmove(buf + h.id_entries_off, dst, (size_t)n * sizeof *e);
        dst = (gray_id_entry_t *)(void *)(buf + h.id_entries_off);
    }
    memcpy(buf + HEADER_BYTES, names, names_len);
    gray_ids_index(dst, (size_t)n, bits, (gray_id_bucket_t *)(void *)(buf + h.id_index_off));
    /* the pool, in the entries' order: an id of up to 16 bytes goes as 16
     * (the next one writes over the rest; the last's, past the pool, is
     * cleared below) when its part has them */
    uint8_t *pool = buf + h.id_pool_off;
    uint32_t at = 0;
    for (long i = 0; i < n; i++) {
        gray_id_entry_t *x = &dst[i];
        if (i + ID_PREFETCH < n)   /* the text is read in hash order: at random */
            __builtin_prefetch(gray_id_bytes(text, &dst[i + ID_PREFETCH]));
        const gray_image_part_t *part = &text->parts[x->reserved];
        const char *src = gray_id_bytes(text, x);
        if (x->len <= 16 && (size_t)(part->buf + part->len - src) >= 16)
            memcpy(pool + at, src, 16);
        else
            memcpy(pool + at, src, x->len);
        x->off = at;
        x->reserved = 0;
        at += x->len;
    }
    h.id_pool_len = at;
    uint64_t size = align8(h.id_pool_off + at);
    memset(pool + at, 0, (size_t)(size - h.id_pool_off - at));
    header_finish(&h, buf, (size_t)size);
    *out = buf;
    *out_len = (size_t)size;
    st->bytes = size;
    return GRAY_OK;
}

/* zero from the end of what was written to the next section: the sort's
 * scratch was there */
static void clear_gap(uint8_t *buf, uint64_t from, uint64_t to)
{
    memset(buf + from, 0, (size_t)(to - from));
}

static int build_ranges(const gray_id_text_t *text, const char *names, size_t names_len,
                        uint32_t unknown, uint64_t cas, void **out, size_t *out_len,
                        gray_image_stats_t *st, const atomic_int *cancel)
{
    gray_ranges_out_t o = { NULL, 0, NULL, 0, 1 };
    gray_ranges_stats_t rs;
    memset(&rs, 0, sizeof rs);
    uint8_t *buf = NULL;
    int rc = gray_names_check(names, names_len) == 0 ? GRAY_EINVAL : GRAY_OK;
    for (size_t k = 0; k < text->nparts && rc == GRAY_OK; k++)
        rc = gray_ranges_parse_more(text->parts[k].buf, text->parts[k].len, names, names_len,
                                    unknown, &o, &rs);
    if (rc != GRAY_OK)
        goto done;
    st->lines = rs.lines;
    st->taken = rs.taken;
    st->entries = rs.taken;
    st->bad = rs.bad;
    st->unknown = rs.unknown;
    memcpy(st->bad_lines, rs.bad_lines, sizeof st->bad_lines);
    memcpy(st->unknown_lines, rs.unknown_lines, sizeof st->unknown_lines);
    if (canceled(cancel)) {
        rc = GRAY_ECANCELED;
        goto done;
    }
    size_t n4 = rs.n4, n6 = rs.n6;
    if (n4 > UINT32_MAX / 2 || n6 > UINT32_MAX / 2) {
        rc = GRAY_EINVAL;
        goto done;
    }

    /* The image in one buffer: each family's runs (2 per entry at most)
     * where that family's sort had its scratch (an entry's size each). */
    img_header_t h;
    header_start(&h, GRAY_IMAGE_RANGES, cas, names, names_len, st);
    uint64_t ilen_max = ((uint64_t)1 << RANGE_BITS_MAX) + 1;
    h.v4_off = align8(HEADER_BYTES + names_len);
    uint64_t room = h.v4_off + (uint64_t)n4 * sizeof(gray_rentry4_t) + 8 +
                    (uint64_t)n6 * sizeof(gray_rentry6_t) + 8 + 2 * (ilen_max * 4 + 8);
    buf = room <= SIZE_MAX ? gray_big_alloc((size_t)room) : NULL;
    if (buf == NULL) {
        rc = GRAY_ENOMEM;
        goto done;
    }
    memcpy(buf + HEADER_BYTES, names, names_len);
    gray_rangeset_t set;
    memset(&set, 0, sizeof set);
    size_t m4 = 0, m6 = 0;
    gray_big_populate(buf + h.v4_off, n4 * sizeof(gray_rentry4_t));
    gray_rangeset_sort4(o.e4, n4, (gray_rentry4_t *)(void *)(buf + h.v4_off));
    set.v4 = (gray_run4_t *)(void *)(buf + h.v4_off);
    rc = gray_rangeset_sweep4(o.e4, n4, set.v4, &m4);
    if (rc != GRAY_OK)
        goto done;
    h.v6_off = align8(h.v4_off + (uint64_t)m4 * RUN4_BYTES);
    clear_gap(buf, h.v4_off + (uint64_t)m4 * RUN4_BYTES, h.v6_off);
    gray_big_populate(buf + h.v6_off, n6 * sizeof(gray_rentry6_t));
    gray_rangeset_sort6(o.e6, n6, (gray_rentry6_t *)(void *)(buf + h.v6_off));
    set.v6 = (gray_run6_t *)(void *)(buf + h.v6_off);
    rc = gray_rangeset_sweep6(o.e6, n6, set.v6, &m6);
    if (rc != GRAY_OK)
        goto done;
    set.n4 = (uint32_t)m4;
    set.n6 = (uint32_t)m6;
    st->runs = set.n4 + set.n6;
    h.v4_index_off = align8(h.v6_off + (uint64_t)m6 * RUN6_BYTES);
    clear_gap(buf, h.v6_off + (uint64_t)m6 * RUN6_BYTES, h.v4_index_off);
    set.v4_index = (uint32_t *)(void *)(buf + h.v4_index_off);
    gray_rangeset_index4(&set);
    uint64_t ilen4 = (((uint64_t)1 << set.v4_bits) + 1) * 4;
    h.v6_index_off = align8(h.v4_index_off + ilen4);   /* 4 x an odd count: align again */
    clear_gap(buf, h.v4_index_off + ilen4, h.v6_index_off);
    set.v6_index = (uint32_t *)(void *)(buf + h.v6_index_off);
    gray_rangeset_index6(&set);
    uint64_t ilen6 = (((uint64_t)1 << set.v6_bits) + 1) * 4;
    uint64_t size = align8(h.v6_index_off + ilen6);
    clear_gap(buf, h.v6_index_off + ilen6, size);
    h.runs = st->runs;
    h.n4 = set.n4;
    h.n6 = set.n6;
    h.v4_skip = set.v4_skip;
    h.v4_bits = set.v4_bits;
    h.v6_skip = set.v6_skip;
    h.v6_bits = set.v6_bits;
    header_finish(&h, buf, (size_t)size);
    *out = buf;
    *out_len = (size_t)size;
    st->bytes = size;
    buf = NULL;
    rc = GRAY_OK;
done:
    gray_big_free(buf);
    gray_big_free(o.e4);
    gray_big_free(o.e6);
    return rc;
}

int gray_image_build_c(int kind, const gray_image_part_t *parts, size_t nparts,
                       const char *names, size_t names_len, uint32_t unknown, uint64_t cas,
                       void **out, size_t *out_len, gray_image_stats_t *st,
                       const atomic_int *cancel)
{
    memset(st, 0, sizeof *st);
    *out = NULL;
    *out_len = 0;
    if ((kind != GRAY_IMAGE_IDS && kind != GRAY_IMAGE_RANGES) || unknown > GRAY_TARGETS_MAX)
        return GRAY_EINVAL;
    if (names != NULL && names_len > 0 && gray_names_check(names, names_len) == 0)
        return GRAY_EINVAL;
    /* The names a list uses are collected from its text joined; given names
     * (the routers') let the parts be read where they are. */
    const char *text = NULL;
    size_t len = 0;
    char *owned = NULL;
    gray_image_part_t joined;
    int collect = names == NULL || names_len == 0;
    if (collect && nparts > 1) {
        int rc = join_parts(parts, nparts, &text, &len, &owned);
        if (rc != GRAY_OK)
            return rc;
        joined.buf = text;
        joined.len = len;
        parts = &joined;
        nparts = 1;
    }
    gray_id_text_t t;
    uint64_t *start;
    int rc = plan_parts(parts, nparts, &t, &start);
    if (rc != GRAY_OK) {
        gray_big_free(owned);
        return rc;
    }
    char *scratch = malloc(GRAY_NAMES_BYTES_MAX);
    const char *use_names = NULL;
    size_t use_len = 0;
    rc = scratch ? pick_names(names, names_len, nparts ? parts[0].buf : NULL,
                              nparts ? parts[0].len : 0, kind == GRAY_IMAGE_IDS, scratch,
                              &use_names, &use_len)
                 : GRAY_ENOMEM;
    if (rc == GRAY_OK) {
        st->ntargets = gray_names_check(use_names, use_len);
        rc = kind == GRAY_IMAGE_IDS
                 ? build_ids(&t, use_names, use_len, unknown, cas, out, out_len, st, cancel)
                 : build_ranges(&t, use_names, use_len, unknown, cas, out, out_len, st,
                                cancel);
    }
    free(scratch);
    free(start);
    gray_big_free(owned);
    return rc;
}

int gray_image_build(int kind, const gray_image_part_t *parts, size_t nparts,
                     const char *names, size_t names_len, uint32_t unknown, uint64_t cas,
                     void **out, size_t *out_len, gray_image_stats_t *st)
{
    if (nparts > GRAY_IMAGE_PARTS_MAX) {
        memset(st, 0, sizeof *st);
        *out = NULL;
        *out_len = 0;
        return GRAY_EINVAL;
    }
    return gray_image_build_c(kind, parts, nparts, names, names_len, unknown, cas, out,
                              out_len, st, NULL);
}

void gray_image_free_buf(void *buf)
{
    gray_big_free(buf);
}

/* ---- files --------------------------------------------------------------------- */

static atomic_uint tmp_seq;

int gray_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int gray_image_tmp_name(char *out, size_t cap, const char *path, long pid, long seq)
{
    return seq < 0 ? snprintf(out, cap, "%s.tmp.%ld.h", path, pid)
                   : snprintf(out, cap, "%s.tmp.%ld.%ld", path, pid, seq);
}

/* buf into "<path>.tmp.<pid>.<n>", then renamed onto path: a reader maps
 * the old image or the new one, never a part. No fsync: the images live
 * on a tmpfs and are rebuilt from memcached after a crash. */
static int write_file(const char *path, const void *buf, size_t len, int32_t *err)
{
    char tmp[GRAY_IMAGE_PATH_MAX + 48];
    size_t plen = path ? strlen(path) : 0;
    if (plen == 0 || plen > GRAY_IMAGE_PATH_MAX)
        return GRAY_EINVAL;
    gray_image_tmp_name(tmp, sizeof tmp, path, (long)getpid(),
                        (long)atomic_fetch_add(&tmp_seq, 1u));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        *err = errno;
        return GRAY_EIO;
    }
    int werr = gray_write_all(fd, buf, len);
    if (werr != 0) {
        *err = werr;
        close(fd);
        unlink(tmp);
        return GRAY_EIO;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        *err = errno;
        unlink(tmp);
        return GRAY_EIO;
    }
    return GRAY_OK;
}

int gray_image_compile_c(int kind, const gray_image_part_t *parts, size_t nparts,
                         const char *names, size_t names_len, uint32_t unknown, uint64_t cas,
                         const char *path, gray_image_stats_t *st, const atomic_int *cancel)
{
    uint64_t wall0 = now_ns(CLOCK_MONOTONIC), cpu0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    if (path == NULL || strlen(path) == 0 || strlen(path) > GRAY_IMAGE_PATH_MAX) {
        memset(st, 0, sizeof *st);
        return GRAY_EINVAL;
    }
    void *buf;
    size_t len;
    int rc = gray_image_build_c(kind, parts, nparts, names, names_len, unknown, cas, &buf, &len,
                                st, cancel);
    if (rc == GRAY_OK && canceled(cancel))
        rc = GRAY_ECANCELED;
    if (rc == GRAY_OK)
        rc = write_file(path, buf, len, &st->sys_errno);
    gray_big_free(buf);
    st->wall_ns = now_ns(CLOCK_MONOTONIC) - wall0;
    st->cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    return rc;
}

int gray_image_compile(int kind, const gray_image_part_t *parts, size_t nparts,
                       const char *names, size_t names_len, uint32_t unknown, uint64_t cas,
                       const char *path, gray_image_stats_t *st)
{
    if (nparts > GRAY_IMAGE_PARTS_MAX) {
        memset(st, 0, sizeof *st);
        return GRAY_EINVAL;
    }
    return gray_image_compile_c(kind, parts, nparts, names, names_len, unknown, cas, path, st,
                                NULL);
}

/* ---- checking and mapping ------------------------------------------------------ */

/* A section [off, off + len) inside the body, 8-byte aligned. */
static int section_ok(uint64_t off, uint64_t len, uint64_t size)
{
    return off % 8 == 0 && off >= HEADER_BYTES && off <= size && len <= size - off;
}

/* An index of count entries that ascends from 0 to last. */
static int index_ok(const uint32_t *ix, uint64_t count, uint32_t last)
{
    if (ix[0] != 0 || ix[count - 1] != last)
        return 0;
    for (uint64_t i = 1; i < count; i++)
        if (ix[i] < ix[i - 1])
            return 0;
    return 1;
}

static int id_index_ok(const gray_id_bucket_t *ix, uint64_t count, uint32_t last)
{
    if (ix[0].start != 0 || ix[count - 1].start != last)
        return 0;
    for (uint64_t i = 1; i < count; i++)
        if (ix[i].start < ix[i - 1].start)
            return 0;
    return 1;
}

/* The header's own checks: what gray_image_peek() also needs. */
static int header_ok(const img_header_t *h)
{
    if (memcmp(h->magic, IMAGE_MAGIC, 8) != 0 || h->format != GRAY_IMAGE_FORMAT ||
        h->byte_order != BYTE_ORDER_MARK ||
        (h->kind != GRAY_IMAGE_IDS && h->kind != GRAY_IMAGE_RANGES))
        return GRAY_EIMAGE;
    if (h->header_sum != header_sum(h))
        return GRAY_ECORRUPT;
    return GRAY_OK;
}

static int check(gray_image_t *img, int flags)
{
    const img_header_t *h = &img->h;
    const uint8_t *b = img->base;
    uint64_t size = img->size;
    int rc = header_ok(h);
    if (rc != GRAY_OK)
        return rc;
    if (h->size != size)
        return GRAY_ECORRUPT;   /* truncated, or grown */
    if (h->names_off != HEADER_BYTES || !section_ok(h->names_off, h->names_len, size) ||
        h->ntargets == 0 ||
        gray_names_check((const char *)b + h->names_off, h->names_len) != h->ntargets)
        return GRAY_ECORRUPT;
    img->names = (const char *)b + h->names_off;

    if (h->kind == GRAY_IMAGE_IDS) {
        if (h->id_bits > GRAY_ID_INDEX_BITS_MAX)
            return GRAY_ECORRUPT;
        uint64_t count = ((uint64_t)1 << h->id_bits) + 1;
        if (!section_ok(h->id_index_off, count * sizeof(gray_id_bucket_t), size) ||
            !section_ok(h->id_entries_off, (uint64_t)h->id_count * sizeof(gray_id_entry_t),
                        size) ||
            h->id_pool_off < HEADER_BYTES || h->id_pool_off > size ||
            h->id_pool_len > size - h->id_pool_off)
            return GRAY_ECORRUPT;
        img->id_index = (const gray_id_bucket_t *)(const void *)(b + h->id_index_off);
        img->ids = (const gray_id_entry_t *)(const void *)(b + h->id_entries_off);
        img->pool = b + h->id_pool_off;
        if (!id_index_ok(img->id_index, count, h->id_count))
            return GRAY_ECORRUPT;
    } else {
        if (h->v4_bits > RANGE_BITS_MAX || h->v6_bits > RANGE_BITS_MAX ||
            h->v4_skip + h->v4_bits > 32 || h->v6_skip + h->v6_bits > 128)
            return GRAY_ECORRUPT;
        uint64_t c4 = ((uint64_t)1 << h->v4_bits) + 1, c6 = ((uint64_t)1 << h->v6_bits) + 1;
        if (!section_ok(h->v4_off, (uint64_t)h->n4 * RUN4_BYTES, size) ||
            !section_ok(h->v6_off, (uint64_t)h->n6 * RUN6_BYTES, size) ||
            !section_ok(h->v4_index_off, c4 * 4, size) ||
            !section_ok(h->v6_index_off, c6 * 4, size))
            return GRAY_ECORRUPT;
        gray_rangeset_t *s = &img->set;
        /* gray_rangeset_t's pointers are not const; nothing writes through them */
        s->v4 = (gray_run4_t *)(uintptr_t)(b + h->v4_off);
        s->v6 = (gray_run6_t *)(uintptr_t)(b + h->v6_off);
        s->v4_index = (uint32_t *)(uintptr_t)(b + h->v4_index_off);
        s->v6_index = (uint32_t *)(uintptr_t)(b + h->v6_index_off);
        s->n4 = h->n4;
        s->n6 = h->n6;
        s->v4_skip = h->v4_skip;
        s->v4_bits = h->v4_bits;
        s->v6_skip = h->v6_skip;
        s->v6_bits = h->v6_bits;
        if (!index_ok(s->v4_index, c4, h->n4) || !index_ok(s->v6_index, c6, h->n6))
            return GRAY_ECORRUPT;
    }
    if ((flags & GRAY_IMAGE_VERIFY) &&
        h->body_sum != gray_image_hash((const char *)b + HEADER_BYTES, size - HEADER_BYTES))
        return GRAY_ECORRUPT;
    return GRAY_OK;
}

static int open_over(const uint8_t *base, size_t size, int mapped, int flags,
                     gray_image_t **out)
{
    gray_image_t *img = calloc(1, sizeof *img);
    if (img == NULL)
        return GRAY_ENOMEM;
    img->base = base;
    img->size = size;
    img->mapped = mapped;
    memcpy(&img->h, base, HEADER_BYTES);
    int rc = check(img, flags);
    if (rc != GRAY_OK) {
        free(img);
        return rc;
    }
    *out = img;
    return GRAY_OK;
}

int gray_image_open_mem(const void *buf, size_t len, int flags, gray_image_t **out)
{
    *out = NULL;
    if (buf == NULL || (uintptr_t)buf % 8 != 0)
        return GRAY_EINVAL;
    if (len < HEADER_BYTES)
        return GRAY_ECORRUPT;
    return open_over(buf, len, 0, flags, out);
}

int gray_image_adopt(void *buf, size_t len, gray_image_t **out)
{
    *out = NULL;
    if (buf == NULL || (uintptr_t)buf % 8 != 0)
        return GRAY_EINVAL;
    if (len < HEADER_BYTES)
        return GRAY_ECORRUPT;
    return open_over(buf, len, 2, 0, out);
}

int gray_image_open(const char *path, int flags, gray_image_t **out)
{
    *out = NULL;
    if (path == NULL)
        return GRAY_EINVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return GRAY_EIO;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return GRAY_EIO;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size < HEADER_BYTES || (uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return S_ISREG(sb.st_mode) ? GRAY_ECORRUPT : GRAY_EIMAGE;
    }
    size_t size = (size_t)sb.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) {
        errno = e;
        return GRAY_EIO;
    }
    int rc = open_over(map, size, 1, flags, out);
    if (rc != GRAY_OK)
        munmap(map, size);
    return rc;
}

int gray_image_peek(const char *path, uint64_t *cas)
{
    if (path == NULL)
        return GRAY_EINVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return GRAY_EIO;
    img_header_t h;
    struct stat sb;
    ssize_t n = pread(fd, &h, sizeof h, 0);
    int st = fstat(fd, &sb);
    close(fd);
    if (n < 0 || st != 0)
        return GRAY_EIO;
    if (n < (ssize_t)sizeof h)
        return GRAY_ECORRUPT;
    int rc = header_ok(&h);
    if (rc != GRAY_OK)
        return rc;
    if ((uint64_t)sb.st_size != h.size)
        return GRAY_ECORRUPT;
    if (cas)
        *cas = h.cas;
    return (int)h.kind;
}

void gray_image_close(gray_image_t *img)
{
    if (img == NULL)
        return;
    if (img->mapped == 2)
        gray_big_free((void *)(uintptr_t)img->base);
    else if (img->mapped)
        munmap((void *)(uintptr_t)img->base, img->size);
    free(img);
}

/* ---- lookups --------------------------------------------------------------------- */

int gray_image_find_id(const gray_image_t *img, const char *id, size_t len)
{
    if (gray_unlikely(img->h.kind != GRAY_IMAGE_IDS))
        return GRAY_EINVAL;
    return gray_ids_find(img->id_index, img->h.id_bits, img->ids, img->h.id_count, img->pool,
                         img->h.id_pool_len, id, len);
}

int gray_image_find_ip(const gray_image_t *img, const gray_ip_t *ip)
{
    if (gray_unlikely(img->h.kind != GRAY_IMAGE_RANGES))
        return GRAY_EINVAL;
    return gray_rangeset_find(&img->set, ip);
}

int gray_image_find_text(const gray_image_t *img, const char *s, size_t len)
{
    if (gray_unlikely(img->h.kind != GRAY_IMAGE_RANGES))
        return GRAY_EINVAL;
    return gray_rangeset_find_text(&img->set, s, len);
}

uint64_t gray_image_version(const gray_image_t *img)
{
    return img->h.cas;
}

int gray_image_kind(const gray_image_t *img)
{
    return (int)img->h.kind;
}

void gray_image_info(const gray_image_t *img, gray_image_stats_t *st)
{
    const img_header_t *h = &img->h;
    memset(st, 0, sizeof *st);
    st->lines = h->lines;
    st->taken = h->taken;
    st->entries = h->entries;
    st->runs = h->runs;
    st->bad = h->bad;
    st->unknown = h->unknown;
    memcpy(st->bad_lines, h->bad_lines, sizeof st->bad_lines);
    memcpy(st->unknown_lines, h->unknown_lines, sizeof st->unknown_lines);
    st->ntargets = h->ntargets;
    st->bytes = h->size;
}

const char *gray_image_target(const gray_image_t *img, uint32_t k, size_t *len)
{
    if (k == 0 || k > img->h.ntargets)
        return NULL;
    const char *p = img->names, *end = img->names + img->h.names_len;
    for (uint32_t i = 1;; i++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        if (i == k) {
            *len = (size_t)(stop - p);
            return p;
        }
        if (nl == NULL)
            return NULL;
        p = nl + 1;
    }
}
