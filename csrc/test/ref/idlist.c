/* The reference: csrc/idlist.c as main had it before compile6 (43bf080), verbatim but for
 * rename.h and the include paths; image_diff.c compares its images with today's. */
#include "rename.h"
/* idlist.c - id lists: the text ("id [target]" per line) into 16-byte
 * entries sorted by a 64-bit hash, a bucket index on the hash's top bits,
 * and the lookup over those arrays; also the target-name table both list
 * kinds share. */
#include <stdlib.h>
#include <string.h>

#include "../../gray.h"
#include "image_internal.h"
#include "../../internal.h"

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
 * the image format needs it to stay the same, not any other program. */
uint64_t gray_image_hash(const char *buf, size_t len)
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
        for (size_t i = left; i-- > 0;)
            k = k << 8 | p[i];
        h ^= hash_block(k);
    }
    return fmix64(h);
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

size_t gray_ids_room(const char *text, size_t len)
{
    size_t n = 0;
    const char *p = text, *end = text ? text + len : NULL;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        n++;
        p = nl ? nl + 1 : end;
    }
    return n;
}

static void note(uint32_t *count, uint32_t *lines, uint32_t line)
{
    if (*count < GRAY_IMAGE_REPORT)
        lines[*count] = line;
    (*count)++;
}

int gray_ids_parse(const char *text, size_t len, const char *names, size_t names_len,
                   uint32_t unknown, gray_id_entry_t *e, size_t cap, gray_image_stats_t *st)
{
    if (len > GRAY_RANGES_TEXT_MAX || (text == NULL && len > 0) ||
        unknown > GRAY_TARGETS_MAX || gray_names_check(names, names_len) == 0)
        return GRAY_EINVAL;
    names_table_t *t = malloc(sizeof *t);
    if (t == NULL)
        return GRAY_ENOMEM;
    names_load(t, names, names_len);

    size_t n = 0;
    const char *p = text, *end = text ? text + len : NULL;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        uint32_t line = ++st->lines;
        fields_t fl;
        split(p, eol, 1, &fl);
        p = nl ? nl + 1 : end;
        if (fl.n == 0)
            continue;   /* blank or comment */
        if (fl.n == 3 || fl.len[0] > GRAY_ID_MAX ||
            (fl.n == 2 && !gray_target_name_ok(fl.f[1], fl.len[1]))) {
            note(&st->bad, st->bad_lines, line);
            continue;
        }
        uint32_t target = fl.n == 2 ? name_find(t, fl.f[1], fl.len[1]) : 1;
        if (target == 0) {
            note(&st->unknown, st->unknown_lines, line);
            if (unknown == 0)
                continue;
            target = unknown;
        }
        st->taken++;
        if (n == cap) {
            free(t);
            return GRAY_ESPACE;
        }
        gray_id_entry_t *x = &e[n++];
        x->hash = gray_image_hash(fl.f[0], fl.len[0]);
        x->off = (uint32_t)(fl.f[0] - text);
        x->len = (uint8_t)fl.len[0];
        x->target = (uint8_t)target;
        x->reserved = 0;
    }
    free(t);
    return (int)n;   /* < len / 2 <= GRAY_RANGES_TEXT_MAX / 2 */
}

/* ---- sorting ----------------------------------------------------------------- */

#define SMALL_BUCKET 24   /* buckets up to this size get an insertion sort */

static _Thread_local const char *sort_text;

/* hash, then the bytes (length first), then the line (off grows with it) */
static inline int id_cmp(const gray_id_entry_t *a, const gray_id_entry_t *b, const char *text)
{
    if (a->hash != b->hash)
        return a->hash < b->hash ? -1 : 1;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    int c = memcmp(text + a->off, text + b->off, a->len);
    if (c != 0)
        return c;
    return a->off < b->off ? -1 : a->off > b->off;
}

static int id_qcmp(const void *a, const void *b)
{
    return id_cmp(a, b, sort_text);
}

static inline int same_id(const gray_id_entry_t *a, const gray_id_entry_t *b, const char *text)
{
    return a->hash == b->hash && a->len == b->len &&
           memcmp(text + a->off, text + b->off, a->len) == 0;
}

static inline uint32_t bucket_of(uint64_t hash, unsigned bits)
{
    return bits ? (uint32_t)(hash >> (64 - bits)) : 0;
}

/* A counting sort on the hash's top bits (stable, O(n)), then each bucket
 * sorted: a few entries by insertion, a crowded one (many equal ids) by
 * qsort. */
long gray_ids_sort(gray_id_entry_t *e, size_t n, const char *text, const atomic_int *cancel)
{
    if (n < 2)
        return (long)n;
    unsigned bits = 0;
    while (bits < GRAY_ID_INDEX_BITS_MAX && ((size_t)2 << bits) <= n)
        bits++;
    size_t nb = (size_t)1 << bits;
    uint32_t *end_at = gray_big_alloc((nb + 1) * sizeof *end_at);
    gray_id_entry_t *tmp = gray_big_alloc(n * sizeof *tmp);
    if (end_at == NULL || tmp == NULL) {
        gray_big_free(end_at);
        gray_big_free(tmp);
        return GRAY_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        end_at[bucket_of(e[i].hash, bits)]++;
    uint32_t sum = 0;
    for (size_t b = 0; b < nb; b++) {
        sum += end_at[b];
        end_at[b] = sum;
    }
    end_at[nb] = (uint32_t)n;
    for (size_t i = n; i-- > 0;)
        tmp[--end_at[bucket_of(e[i].hash, bits)]] = e[i];
    /* end_at[b] is now where bucket b starts */
    if (cancel && atomic_load(cancel)) {
        gray_big_free(end_at);
        gray_big_free(tmp);
        return GRAY_ECANCELED;
    }

    size_t out = 0;
    for (size_t b = 0; b < nb; b++) {
        size_t lo = end_at[b], hi = end_at[b + 1];
        gray_id_entry_t *a = tmp + lo;
        size_t cnt = hi - lo;
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
            e[out++] = a[i];
        }
    }
    gray_big_free(end_at);
    gray_big_free(tmp);
    return (long)out;
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
