/* idlist.c - id lists: the text ("id [target]" per line) into 16-byte
 * entries sorted by a 64-bit hash, a bucket index on the hash's top bits,
 * and the lookup over those arrays; also the target-name table both list
 * kinds share. */
#include <stdlib.h>
#include <string.h>

#include "gray.h"
#include "image_internal.h"
#include "internal.h"

/* ---- the hash --------------------------------------------------------------- */

static inline uint64_t rotl64(uint64_t x, unsigned r)
{
    return x << r | x >> (64 - r);
}

static inline uint64_t load_le64(const unsigned char *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
#endif
}

#define HASH_C1   0x87c37b91114253d5ull   /* murmur3 x64's block constants */
#define HASH_C2   0x4cf5ad432745937full
#define HASH_SEED 0x6772617969647331ull   /* "grayids1": changes with the format */

static inline uint64_t hash_block(uint64_t k)
{
    k *= HASH_C1;
    k = rotl64(k, 31);
    return k * HASH_C2;
}

/* murmur3's 64-bit finalizer: every input bit reaches every output bit */
static inline uint64_t fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    return k ^ k >> 33;
}

/* One lane of murmur3 x64: 8 bytes a step, the tail as a last block. Only
 * the image format needs it to stay the same, not any other program. The
 * tail is read as 8 bytes and masked when 8 are readable before limit (a
 * list's part: its ids are mostly shorter than 8 bytes). */
static gray_always_inline uint64_t image_hash(const char *buf, size_t len, const char *limit)
{
    const unsigned char *p = (const unsigned char *)buf;
    uint64_t h = HASH_SEED ^ (uint64_t)len;
    size_t left = len;
    for (; left >= 8; p += 8, left -= 8) {
        h ^= hash_block(load_le64(p));
        h = rotl64(h, 27) * 5 + 0x52dce729u;
    }
    if (left > 0) {
        uint64_t k = 0;
        if ((size_t)((const unsigned char *)limit - p) >= 8) {
            k = load_le64(p) & (((uint64_t)1 << (8 * left)) - 1);
        } else {
            for (size_t i = left; i-- > 0;)
                k = k << 8 | p[i];
        }
        h ^= hash_block(k);
    }
    return fmix64(h);
}

uint64_t gray_image_hash(const char *buf, size_t len)
{
    return image_hash(buf, len, buf + len);
}

/* ---- target names ----------------------------------------------------------- */

#define NAME_SLOTS 512   /* open addressing for <= GRAY_TARGETS_MAX names */

typedef struct name_slot {
    const char *name;
    uint32_t len;
    uint32_t index;      /* 0: empty */
} name_slot_t;

typedef struct names_table {
    name_slot_t slot[NAME_SLOTS];
    uint32_t count;
} names_table_t;

static name_slot_t *name_slot(names_table_t *t, const char *name, size_t len)
{
    uint32_t i = gray_murmur3_32(name, len, 0) & (NAME_SLOTS - 1);
    for (;; i = (i + 1) & (NAME_SLOTS - 1)) {
        name_slot_t *s = &t->slot[i];
        if (s->index == 0 || (s->len == len && memcmp(s->name, name, len) == 0))
            return s;   /* never full: at most 255 of 512 slots are used */
    }
}

static uint32_t name_find(names_table_t *t, const char *name, size_t len)
{
    return len <= GRAY_TARGET_NAME_MAX ? name_slot(t, name, len)->index : 0;
}

/* Adds name as the next index; 0 when the table is full or the name too long. */
static uint32_t name_add(names_table_t *t, const char *name, size_t len)
{
    if (!gray_target_name_ok(name, len))
        return 0;
    name_slot_t *s = name_slot(t, name, len);
    if (s->index == 0) {
        if (t->count >= GRAY_TARGETS_MAX)
            return 0;
        s->name = name;
        s->len = (uint32_t)len;
        s->index = ++t->count;
    }
    return s->index;
}

uint32_t gray_names_check(const char *names, size_t len)
{
    if (names == NULL || len == 0)
        return 0;
    uint32_t k = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || names[i] == '\n') {
            if (!gray_target_name_ok(names + start, i - start) || ++k > GRAY_TARGETS_MAX)
                return 0;
            start = i + 1;
        }
    }
    return k;
}

/* The table of a checked name list; a name written twice keeps its first index. */
static void names_load(names_table_t *t, const char *names, size_t len)
{
    memset(t, 0, sizeof *t);
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || names[i] == '\n') {
            name_slot_t *s = name_slot(t, names + start, i - start);
            t->count++;
            if (s->index == 0) {
                s->name = names + start;
                s->len = (uint32_t)(i - start);
                s->index = t->count;
            }
            start = i + 1;
        }
    }
}

/* ---- lines ------------------------------------------------------------------- */

static inline int blank_id(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static inline int blank_range(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

typedef struct fields {
    const char *f[3];
    size_t len[3];
    int n;
} fields_t;

/* Splits [p, eol) up to the first '#' into at most three fields. */
static void split(const char *p, const char *eol, int ids, fields_t *fl)
{
    const char *hash = memchr(p, '#', (size_t)(eol - p));
    const char *stop = hash ? hash : eol;
    fl->n = 0;
    while (fl->n < 3) {
        if (ids)
            while (p < stop && blank_id(*p))
                p++;
        else
            while (p < stop && blank_range(*p))
                p++;
        if (p == stop)
            break;
        const char *f = p;
        if (ids)
            while (p < stop && !blank_id(*p))
                p++;
        else
            while (p < stop && !blank_range(*p))
                p++;
        fl->f[fl->n] = f;
        fl->len[fl->n] = (size_t)(p - f);
        fl->n++;
    }
}

size_t gray_names_collect(const char *text, size_t len, int ids, char *out, size_t cap)
{
    static names_table_t zero;
    names_table_t *t = malloc(sizeof *t);
    if (t == NULL || cap < GRAY_NAMES_BYTES_MAX) {
        free(t);
        return 0;
    }
    *t = zero;
    name_add(t, "1", 1);
    out[0] = '1';
    size_t used = 1;
    const char *p = text, *end = text ? text + len : NULL;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        fields_t fl;
        split(p, eol, ids, &fl);
        p = nl ? nl + 1 : end;
        if (fl.n != 2 || !gray_target_name_ok(fl.f[1], fl.len[1]))
            continue;
        uint32_t before = t->count;
        if (name_add(t, fl.f[1], fl.len[1]) > before) {
            out[used++] = '\n';
            memcpy(out + used, fl.f[1], fl.len[1]);
            used += fl.len[1];
        }
    }
    free(t);
    return used;
}

static void note(uint32_t *count, uint32_t *lines, uint32_t line)
{
    if (*count < GRAY_IMAGE_REPORT)
        lines[*count] = line;
    (*count)++;
}

/* Byte classes of an id line (split()'s, in one table): a field ends at a
 * blank or a stop; '\n' ends the line, '#' what is read of it. */
#define C_FIELD 0
#define C_BLANK 1
#define C_STOP  2
static const uint8_t id_class[256] = {
    [' '] = C_BLANK, ['\t'] = C_BLANK, ['\r'] = C_BLANK, ['\v'] = C_BLANK, ['\f'] = C_BLANK,
    ['\n'] = C_STOP, ['#'] = C_STOP,
};

long gray_ids_parse(const gray_id_text_t *text, const char *names, size_t names_len,
                    uint32_t unknown, gray_id_entry_t **entries, size_t *cap,
                    gray_image_stats_t *st)
{
    if (unknown > GRAY_TARGETS_MAX || gray_names_check(names, names_len) == 0)
        return GRAY_EINVAL;
    names_table_t *t = malloc(sizeof *t);
    if (t == NULL)
        return GRAY_ENOMEM;
    names_load(t, names, names_len);

    size_t n = 0;
    gray_id_entry_t *e = *entries;
    const char *last = NULL;
    size_t last_len = 0;
    uint32_t last_index = 0;
    for (size_t k = 0; k < text->nparts; k++) {
        const char *base = text->parts[k].buf;
        const char *p = base, *end = base + text->parts[k].len;
        while (p < end) {
            uint32_t line = ++st->lines;
            fields_t fl;
            fl.n = 0;
            const char *q = p;
            while (fl.n < 3) {
                while (q < end && id_class[(unsigned char)*q] == C_BLANK)
                    q++;
                if (q == end || id_class[(unsigned char)*q] == C_STOP)
                    break;
                fl.f[fl.n] = q;
                while (q < end && id_class[(unsigned char)*q] == C_FIELD)
                    q++;
                fl.len[fl.n] = (size_t)(q - fl.f[fl.n]);
                fl.n++;
            }
            if (q < end && *q == '\n') {
                p = q + 1;
            } else {
                const char *nl = q < end ? memchr(q, '\n', (size_t)(end - q)) : NULL;
                p = nl ? nl + 1 : end;
            }
            if (fl.n == 0)
                continue;   /* blank or comment */
            if (fl.n == 3 || fl.len[0] > GRAY_ID_MAX ||
                (fl.n == 2 && !gray_target_name_ok(fl.f[1], fl.len[1]))) {
                note(&st->bad, st->bad_lines, line);
                continue;
            }
            uint32_t target = 1;
            if (fl.n == 2) {   /* the last line's name again: its index again */
                if (last == NULL || fl.len[1] != last_len ||
                    memcmp(fl.f[1], last, last_len) != 0) {
                    last = fl.f[1];
                    last_len = fl.len[1];
                    last_index = name_find(t, fl.f[1], fl.len[1]);
                }
                target = last_index;
            }
            if (target == 0) {
                note(&st->unknown, st->unknown_lines, line);
                if (unknown == 0)
                    continue;
                target = unknown;
            }
            st->taken++;
            if (n == *cap) {
                size_t more = *cap ? 2 * *cap : 4096;
                gray_id_entry_t *g = gray_big_grow(e, *cap * sizeof *e, more * sizeof *e);
                if (g == NULL) {
                    free(t);
                    return GRAY_ENOMEM;
                }
                *entries = e = g;
                *cap = more;
            }
            gray_id_entry_t *x = &e[n++];
            x->hash = image_hash(fl.f[0], fl.len[0], end);
            x->off = (uint32_t)(text->start[k] + (uint64_t)(fl.f[0] - base));
            x->len = (uint8_t)fl.len[0];
            x->target = (uint8_t)target;
            x->reserved = (uint16_t)k;
        }
    }
    free(t);
    return (long)n;   /* < len / 2 <= GRAY_RANGES_TEXT_MAX / 2 */
}

/* ---- sorting ----------------------------------------------------------------- */

#define SMALL_BUCKET 24   /* buckets up to this size get an insertion sort */

static _Thread_local const gray_id_text_t *sort_text;

/* hash, then the bytes (length first), then the line (off grows with it) */
static inline int id_cmp(const gray_id_entry_t *a, const gray_id_entry_t *b,
                         const gray_id_text_t *text)
{
    if (a->hash != b->hash)
        return a->hash < b->hash ? -1 : 1;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    int c = memcmp(gray_id_bytes(text, a), gray_id_bytes(text, b), a->len);
    if (c != 0)
        return c;
    return a->off < b->off ? -1 : a->off > b->off;
}

static int id_qcmp(const void *a, const void *b)
{
    return id_cmp(a, b, sort_text);
}

static inline int same_id(const gray_id_entry_t *a, const gray_id_entry_t *b,
                          const gray_id_text_t *text)
{
    return a->hash == b->hash && a->len == b->len &&
           memcmp(gray_id_bytes(text, a), gray_id_bytes(text, b), a->len) == 0;
}

static inline uint32_t bucket_of(uint64_t hash, unsigned bits)
{
    return bits ? (uint32_t)(hash >> (64 - bits)) : 0;
}

/* Sorts a bucket's few entries by insertion, a crowded one (many equal
 * ids) by qsort, then appends it to out at *kept without the equal ids
 * but the last line's (kept never passes a's place when a is in out). */
static void sort_bucket(gray_id_entry_t *a, size_t cnt, gray_id_entry_t *out, size_t *kept,
                        const gray_id_text_t *text)
{
    if (cnt > SMALL_BUCKET) {
        sort_text = text;
        qsort(a, cnt, sizeof *a, id_qcmp);
    } else {
        for (size_t i = 1; i < cnt; i++) {
            gray_id_entry_t x = a[i];
            size_t k = i;
            while (k > 0 && id_cmp(&x, &a[k - 1], text) < 0) {
                a[k] = a[k - 1];
                k--;
            }
            a[k] = x;
        }
    }
    /* of equal ids, the last line (the largest offset) wins */
    for (size_t i = 0; i < cnt; i++) {
        if (i + 1 < cnt && same_id(&a[i], &a[i + 1], text))
            continue;
        out[(*kept)++] = a[i];
    }
}

#define TOP_BITS 8   /* the first pass's buckets: 256 write streams */

/* Buckets on the hash's top bits (about 2 ids each), in two counting
 * passes: the top TOP_BITS from e into out (few streams: the writes stay
 * in the TLB and the cache's lines), then each such bucket's next bits
 * into tmp (a bucket of 1M / 256 ids stays in the L2 cache), where each
 * small bucket is sorted and written back to out. O(n); the order is the
 * whole of id_cmp's, so the buckets' bounds change nothing. */
long gray_ids_sort(const gray_id_entry_t *e, size_t n, gray_id_entry_t *out,
                   const gray_id_text_t *text, const atomic_int *cancel)
{
    if (n < 2) {
        if (n == 1)
            out[0] = e[0];
        return (long)n;
    }
    unsigned bits = 0;
    while (bits < GRAY_ID_INDEX_BITS_MAX && ((size_t)2 << bits) <= n)
        bits++;
    unsigned top = bits < TOP_BITS ? bits : TOP_BITS, low = bits - top;
    size_t ntop = (size_t)1 << top, nlow = (size_t)1 << low;
    size_t start[(1u << TOP_BITS) + 1];
    memset(start, 0, sizeof start);
    for (size_t i = 0; i < n; i++)
        start[bucket_of(e[i].hash, top) + 1]++;
    size_t widest = 0;
    for (size_t b = 1; b <= ntop; b++) {
        widest = start[b] > widest ? start[b] : widest;
        start[b] += start[b - 1];
    }
    uint32_t *at = gray_big_alloc((nlow + 1) * sizeof *at);
    gray_id_entry_t *tmp = gray_big_alloc(widest * sizeof *tmp);
    if (at == NULL || tmp == NULL) {
        gray_big_free(at);
        gray_big_free(tmp);
        return GRAY_ENOMEM;
    }
    size_t fill[1u << TOP_BITS];
    memcpy(fill, start, ntop * sizeof fill[0]);
    for (size_t i = 0; i < n; i++)
        out[fill[bucket_of(e[i].hash, top)]++] = e[i];
    if (cancel && atomic_load(cancel)) {
        gray_big_free(at);
        gray_big_free(tmp);
        return GRAY_ECANCELED;
    }

    size_t kept = 0;
    for (size_t t = 0; t < ntop; t++) {
        const gray_id_entry_t *a = out + start[t];
        size_t m = start[t + 1] - start[t];
        if (m < 2) {
            if (m == 1)
                out[kept++] = a[0];
            continue;
        }
        /* the next low bits: where each sub-bucket starts in tmp */
        memset(at, 0, (nlow + 1) * sizeof *at);
        for (size_t i = 0; i < m; i++)
            at[(bucket_of(a[i].hash, bits) & (nlow - 1)) + 1]++;
        for (size_t b = 1; b <= nlow; b++)
            at[b] += at[b - 1];
        for (size_t i = 0; i < m; i++)
            tmp[at[bucket_of(a[i].hash, bits) & (nlow - 1)]++] = a[i];
        /* at[b] is now where sub-bucket b ends */
        size_t lo = 0;
        for (size_t b = 0; b < nlow; b++) {
            size_t hi = at[b];
            if (hi > lo)
                sort_bucket(tmp + lo, hi - lo, out, &kept, text);
            lo = hi;
        }
    }
    gray_big_free(at);
    gray_big_free(tmp);
    return (long)kept;
}

unsigned gray_ids_index_bits(size_t n)
{
    /* 2 to 4 ids a bucket (<= 4 bytes of index an id, 2 for n near 2^k): a
     * filter of 32 bits then lets through about 5% of the ids not listed */
    unsigned bits = 0;
    while (bits < GRAY_ID_INDEX_BITS_MAX && ((size_t)4 << bits) <= n)
        bits++;
    return bits;
}

/* Two of the filter's 32 bits, from hash bits the bucket does not use. */
static inline uint32_t filter_of(uint64_t hash)
{
    return (uint32_t)1 << (hash & 31) | (uint32_t)1 << ((hash >> 5) & 31);
}

void gray_ids_index(const gray_id_entry_t *e, size_t n, unsigned bits, gray_id_bucket_t *index)
{
    size_t i = 0;
    for (size_t b = 0; b <= ((size_t)1 << bits); b++) {
        index[b].start = (uint32_t)i;
        index[b].filter = 0;
        for (; i < n && bucket_of(e[i].hash, bits) == b; i++)
            index[b].filter |= filter_of(e[i].hash);
    }
}

int gray_ids_find(const gray_id_bucket_t *index, unsigned bits, const gray_id_entry_t *e,
                  uint32_t n, const uint8_t *pool, uint64_t pool_len, const char *id, size_t len)
{
    if (gray_unlikely(len == 0 || len > GRAY_ID_MAX))
        return 0;
    uint64_t h = gray_image_hash(id, len);
    const gray_id_bucket_t *ix = &index[bucket_of(h, bits)];
    uint32_t f = filter_of(h);
    if ((ix->filter & f) != f)
        return 0;   /* no id of this bucket has both bits: not listed */
    size_t lo = ix[0].start, hi = ix[1].start;
    if (gray_unlikely(hi > n || lo > hi))
        return 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (e[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < n && e[lo].hash == h; lo++) {
        const gray_id_entry_t *x = &e[lo];
        if (x->len == len && (uint64_t)x->off + len <= pool_len &&
            memcmp(pool + x->off, id, len) == 0)
            return x->target;
    }
    return 0;
}
