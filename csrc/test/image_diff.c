/* image_diff.c - the list compile against its reference: csrc/test/ref/ is
 * main's compile before compile6 (43bf080: the join, the room pass, the
 * comparison sorts), linked under ref_ names. Both compile the same lists;
 * the images must be the same bytes, with the same stats and return codes,
 * and gray_ranges_parse() / gray_rangeset_build() (the Lua fallback's
 * calls) must give the same entries and runs.
 *   - fuzz_image_diff(): a fuzz target (the input is the list, its first
 *     byte the kind, names and unknown index, '|' cuts parts);
 *   - image_diff_check(rounds, max_lines): generated lists, random and
 *     hostile: duplicates with other targets, nested and equal CIDRs, IPv6
 *     (across ::ffff:0:0/96 too), mixed families, sorted, reversed and
 *     shuffled, clustered and spread, empty, one line, bad lines, comments,
 *     CRLF, parts cut anywhere (empty ones too). replay.c runs it (ASan,
 *     GRAY_RADIX_MIN lowered so that small lists take the radix paths);
 *     `make image-diff` runs it optimized, at the real thresholds, on lists
 *     up to 200,000 lines. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../gray.h"
#include "fuzz.h"

/* the reference (ref/rename.h's names) */
int ref_gray_image_build(int kind, const gray_image_part_t *parts, size_t nparts,
                         const char *names, size_t names_len, uint32_t unknown, uint64_t cas,
                         void **out, size_t *out_len, gray_image_stats_t *st);
void ref_gray_image_free_buf(void *buf);
int ref_gray_ranges_parse(const char *text, size_t len, const char *names, size_t names_len,
                          uint32_t unknown, gray_rentry4_t *e4, size_t cap4, gray_rentry6_t *e6,
                          size_t cap6, gray_ranges_stats_t *st);
int ref_gray_rangeset_build(gray_rangeset_t *set, gray_rentry4_t *e4, size_t n4,
                            gray_rentry6_t *e6, size_t n6);

void fuzz_image_diff(const char *s, size_t len);
void image_diff_check(int rounds, size_t max_lines);

#define DIFF_PARTS_MAX 64

static const char given_names[] = "1\nv2\nv3";

static void same_stats(const gray_image_stats_t *a, const gray_image_stats_t *b)
{
    CHECK(a->lines == b->lines && a->taken == b->taken && a->entries == b->entries &&
          a->runs == b->runs && a->bad == b->bad && a->unknown == b->unknown);
    CHECK(memcmp(a->bad_lines, b->bad_lines, sizeof a->bad_lines) == 0);
    CHECK(memcmp(a->unknown_lines, b->unknown_lines, sizeof a->unknown_lines) == 0);
    CHECK(a->ntargets == b->ntargets && a->bytes == b->bytes);
}

/* One list, both ways: kind, parts, given names or collected, unknown. */
static void diff_image(int kind, const gray_image_part_t *parts, size_t nparts, int collect,
                       uint32_t unknown)
{
    INVARIANT("an image compiles to the reference's bytes, stats and return code");
    void *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    gray_image_stats_t sa, sb;
    const char *nm = collect ? NULL : given_names;
    size_t nl = collect ? 0 : sizeof given_names - 1;
    int ra = gray_image_build(kind, parts, nparts, nm, nl, unknown, 7, &a, &alen, &sa);
    int rb = ref_gray_image_build(kind, parts, nparts, nm, nl, unknown, 7, &b, &blen, &sb);
    CHECK(ra == rb);
    if (ra == GRAY_OK) {
        same_stats(&sa, &sb);
        CHECK(alen == blen && memcmp(a, b, alen) == 0);
    }
    gray_image_free_buf(a);
    ref_gray_image_free_buf(b);
}

/* The Lua fallback's calls on the parts joined: the same entries and runs. */
static void diff_rangeset(const char *text, size_t len, uint32_t unknown)
{
    INVARIANT("gray_ranges_parse() and gray_rangeset_build() give the reference's entries "
              "and runs");
    gray_ranges_stats_t sa, sb;
    const char *nm = given_names;
    size_t nl = sizeof given_names - 1;
    int ra = gray_ranges_parse(text, len, nm, nl, unknown, NULL, 0, NULL, 0, &sa);
    int rb = ref_gray_ranges_parse(text, len, nm, nl, unknown, NULL, 0, NULL, 0, &sb);
    CHECK(ra == rb && memcmp(&sa, &sb, sizeof sa) == 0);
    if (ra != GRAY_OK && ra != GRAY_ESPACE)
        return;
    size_t n4 = sa.n4, n6 = sa.n6;
    gray_rentry4_t *a4 = calloc(n4 + 1, sizeof *a4), *b4 = calloc(n4 + 1, sizeof *b4);
    gray_rentry6_t *a6 = calloc(n6 + 1, sizeof *a6), *b6 = calloc(n6 + 1, sizeof *b6);
    CHECK(a4 && b4 && a6 && b6);
    ra = gray_ranges_parse(text, len, nm, nl, unknown, a4, n4, a6, n6, &sa);
    rb = ref_gray_ranges_parse(text, len, nm, nl, unknown, b4, n4, b6, n6, &sb);
    CHECK(ra == GRAY_OK && rb == GRAY_OK && memcmp(&sa, &sb, sizeof sa) == 0);
    CHECK(memcmp(a4, b4, n4 * sizeof *a4) == 0 && memcmp(a6, b6, n6 * sizeof *a6) == 0);
    gray_rangeset_t x, y;
    memset(&x, 0, sizeof x);
    memset(&y, 0, sizeof y);
    size_t ix4 = gray_rangeset_index_len(2 * n4), ix6 = gray_rangeset_index_len(2 * n6);
    x.v4 = calloc(2 * n4 + 1, sizeof *x.v4);
    y.v4 = calloc(2 * n4 + 1, sizeof *y.v4);
    x.v6 = calloc(2 * n6 + 1, sizeof *x.v6);
    y.v6 = calloc(2 * n6 + 1, sizeof *y.v6);
    x.v4_index = calloc(ix4, 4);
    y.v4_index = calloc(ix4, 4);
    x.v6_index = calloc(ix6, 4);
    y.v6_index = calloc(ix6, 4);
    CHECK(x.v4 && y.v4 && x.v6 && y.v6 && x.v4_index && y.v4_index && x.v6_index && y.v6_index);
    ra = gray_rangeset_build(&x, a4, n4, a6, n6);
    rb = ref_gray_rangeset_build(&y, b4, n4, b6, n6);
    CHECK(ra == rb);
    if (ra == GRAY_OK) {
        CHECK(x.n4 == y.n4 && x.n6 == y.n6 && x.v4_skip == y.v4_skip && x.v4_bits == y.v4_bits &&
              x.v6_skip == y.v6_skip && x.v6_bits == y.v6_bits);
        CHECK(memcmp(x.v4, y.v4, x.n4 * sizeof *x.v4) == 0);
        CHECK(memcmp(x.v6, y.v6, x.n6 * sizeof *x.v6) == 0);
        CHECK(memcmp(x.v4_index, y.v4_index, ((1u << x.v4_bits) + 1) * 4) == 0);
        CHECK(memcmp(x.v6_index, y.v6_index, ((1u << x.v6_bits) + 1) * 4) == 0);
    }
    free(a4), free(b4), free(a6), free(b6);
    free(x.v4), free(y.v4), free(x.v6), free(y.v6);
    free(x.v4_index), free(y.v4_index), free(x.v6_index), free(y.v6_index);
}

static char *join(const gray_image_part_t *parts, size_t nparts, size_t *len)
{
    size_t cap = 1;
    for (size_t i = 0; i < nparts; i++)
        cap += parts[i].len + 1;
    char *t = malloc(cap);
    CHECK(t != NULL);
    size_t n = 0;
    for (size_t i = 0; i < nparts; i++) {
        memcpy(t + n, parts[i].buf, parts[i].len);
        n += parts[i].len;
        if (nparts > 1 && parts[i].len > 0 && parts[i].buf[parts[i].len - 1] != '\n')
            t[n++] = '\n';
    }
    *len = n;
    return t;
}

static void diff_all(const gray_image_part_t *parts, size_t nparts, int mode)
{
    uint32_t unknown = (mode & 4) ? 4 : 0;
    diff_image(GRAY_IMAGE_IDS, parts, nparts, mode & 2, unknown);
    diff_image(GRAY_IMAGE_RANGES, parts, nparts, mode & 2, unknown);
    size_t len;
    char *text = join(parts, nparts, &len);
    diff_rangeset(text, len, unknown);
    free(text);
}

void fuzz_image_diff(const char *s, size_t len)
{
    if (len == 0)
        return;
    gray_image_part_t parts[DIFF_PARTS_MAX];
    size_t nparts = 0, start = 1;
    for (size_t i = 1; i <= len; i++) {
        if (i == len || (s[i] == '|' && nparts < DIFF_PARTS_MAX - 1)) {
            parts[nparts].buf = s + start;
            parts[nparts].len = i - start;
            nparts++;
            start = i + 1;
        }
    }
    diff_all(parts, nparts, (unsigned char)s[0]);
}

/* ---- generated lists --------------------------------------------------------- */

static uint64_t diff_rng_state;

static uint64_t rnd(void)
{
    diff_rng_state ^= diff_rng_state << 13;
    diff_rng_state ^= diff_rng_state >> 7;
    diff_rng_state ^= diff_rng_state << 17;
    return diff_rng_state;
}

static unsigned below(unsigned n)
{
    return n ? (unsigned)(rnd() % n) : 0;
}

typedef struct textbuf {
    char *p;
    size_t len, cap;
} textbuf_t;

static void put(textbuf_t *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->p = realloc(t->p, t->cap);
        CHECK(t->p != NULL);
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
}

static void puts_(textbuf_t *t, const char *s)
{
    put(t, s, strlen(s));
}

static const char *const blanks[] = {" ", "\t", "  ", " \t", "\r", "\v", "\f"};
#define NBLANKS (sizeof blanks / sizeof blanks[0])
static const char *const names_used[] = {"v2", "v3", "1", "zz", "0", "stable", "v2"};

/* an address: IPv4 (clustered around base, or anywhere) or IPv6 */
static void address(textbuf_t *t, int family, uint32_t base, uint32_t i, int spread)
{
    char b[96];
    if (family == 4) {
        uint32_t x = spread ? (uint32_t)rnd() : base + i * (1 + below(3));
        snprintf(b, sizeof b, "%u.%u.%u.%u", x >> 24, x >> 16 & 255, x >> 8 & 255, x & 255);
    } else {
        static const char *const v6[] = {"2001:db8:%x::%x", "::ffff:%x:%x", "::%x:%x",
                                         "fe80::%x:%x", "2001:db8::%x:%x", "%x::%x"};
        snprintf(b, sizeof b, v6[below(6)], spread ? below(65536) : 1 + (i >> 16 & 0xfff),
                 spread ? below(65536) : (i & 0xffff));
    }
    puts_(t, b);
}

static void prefix(textbuf_t *t, int family)
{
    char b[16];
    unsigned max = family == 4 ? 32 : 128;
    unsigned p = below(4) == 0 ? below(max + 1) : max - below(max < 9 ? max : 9);
    switch (below(40)) {
    case 0: snprintf(b, sizeof b, "/0%u", p); break;          /* leading zero: bad */
    case 1: snprintf(b, sizeof b, "/%u", max + 1 + below(90)); break;   /* too long: bad */
    case 2: snprintf(b, sizeof b, "/"); break;
    default: snprintf(b, sizeof b, "/%u", p); break;
    }
    puts_(t, b);
}

static const char *const junk[] = {"1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.4x",
                                   "::g", ":::", "1::2::3", "10.0.0.1/3x", "a b c d",
                                   "::ffff:1.2.3.4", "::ffff:0:0/96", "::/0", "::/80",
                                   "0.0.0.0/0", "255.255.255.255", "::ffff:10.0.0.0/104",
                                   "1.2.3.4/32", "10.0.0.0/8", "10.0.0.0/8", "\xff\xfe"};

/* one line of a list of the kind (0: ids, 1: ranges), i-th */
static void one_line(textbuf_t *t, int ranges, uint32_t i, uint32_t base, int spread,
                     int v6share, int with_names, int dup_every, textbuf_t *prev)
{
    unsigned r = below(100);
    if (r < 3) {                     /* blank, comment */
        puts_(t, r == 0 ? "" : r == 1 ? "# a comment" : blanks[below(NBLANKS)]);
        return;
    }
    if (r < 6) {                     /* a junk field */
        puts_(t, junk[below(sizeof junk / sizeof junk[0])]);
        return;
    }
    if (r < 9) {                     /* leading blanks */
        puts_(t, blanks[below(NBLANKS)]);
    }
    if (dup_every && prev->len > 0 && below((unsigned)dup_every) == 0) {
        /* an earlier line's field again (later wins; the target may differ) */
        size_t from = below((unsigned)prev->len), end = from;
        while (from > 0 && prev->p[from - 1] != '\n')
            from--;
        while (end < prev->len && end - from < 300 && prev->p[end] != '\n' &&
               prev->p[end] != ' ')
            end++;
        char field[300];
        memcpy(field, prev->p + from, end - from);   /* put() may move prev's bytes */
        put(t, field, end - from);
    } else if (ranges) {
        int family = below(100) < (unsigned)v6share ? 6 : 4;
        address(t, family, base, i, spread);
        if (below(3) == 0)
            prefix(t, family);
    } else {
        char b[300];
        unsigned k = below(10);
        if (k == 0) {                /* long: up to past GRAY_ID_MAX */
            size_t n = 150 + below(120);
            memset(b, 'a' + (int)below(26), n);
            b[n] = 0;
        } else if (k == 1) {         /* odd bytes */
            size_t n = 1 + below(12);
            for (size_t j = 0; j < n; j++) {
                char c = (char)(0x21 + below(0x7f - 0x21 + 40));
                b[j] = c == '#' ? '_' : c;
            }
            b[n] = 0;
        } else {
            if (spread)
                snprintf(b, sizeof b, "id%llx", (unsigned long long)rnd());
            else
                snprintf(b, sizeof b, "u%u", i);
        }
        puts_(t, b);
    }
    if (with_names && below(3) == 0) {
        puts_(t, blanks[below(4)]);
        puts_(t, names_used[below(7)]);
        if (below(30) == 0)
            puts_(t, " extra");      /* a third field: bad */
    }
    if (below(15) == 0)
        puts_(t, below(2) ? " # inline" : "#x");
    if (below(20) == 0)
        puts_(t, "\r");
}

/* A list of n lines in one of the orders; the last line's end may lack. */
static void gen_list(textbuf_t *t, int ranges, size_t n)
{
    uint32_t base = (uint32_t)rnd() & ~0xfffffu;
    int spread = below(3) == 0, v6share = below(3) == 0 ? 0 : below(3) == 0 ? 100 : (int)below(40);
    int with_names = below(5) != 0, dup_every = below(3) == 0 ? 0 : 2 + (int)below(40);
    int order = (int)below(3);      /* 0: ascending, 1: descending, 2: as generated */
    for (size_t k = 0; k < n; k++) {
        uint32_t i = order == 1   ? (uint32_t)(n - k)
                     : order == 2 ? (uint32_t)(rnd() % (n + 1))
                                  : (uint32_t)k;
        one_line(t, ranges, i, base, spread, v6share, with_names, dup_every, t);
        if (k + 1 < n || below(4) != 0)
            puts_(t, "\n");
    }
}

/* Parts cut at line ends, or anywhere (a cut inside a line splits it), some empty. */
static size_t cut_parts(const textbuf_t *t, gray_image_part_t *parts)
{
    size_t want = below(4) == 0 ? 1 : 1 + below(DIFF_PARTS_MAX);
    int anywhere = below(3) == 0;
    size_t n = 0, at = 0;
    while (n < want - 1 && at < t->len) {
        size_t step = 1 + below((unsigned)(2 * t->len / want + 1));
        size_t end = at + step < t->len ? at + step : t->len;
        if (!anywhere) {
            const char *nl = memchr(t->p + end - 1, '\n', t->len - end + 1);
            end = nl ? (size_t)(nl - t->p) + 1 : t->len;
        }
        parts[n].buf = t->p + at;
        parts[n].len = below(10) == 0 ? 0 : end - at;
        at += parts[n].len;
        n++;
    }
    parts[n].buf = t->p + at;
    parts[n].len = t->len - at;
    return n + 1;
}

void image_diff_check(int rounds, size_t max_lines)
{
    diff_rng_state = 0x243f6a8885a308d3ull;
    textbuf_t t = {NULL, 0, 0};
    gray_image_part_t parts[DIFF_PARTS_MAX];
    for (int r = 0; r < rounds; r++) {
        size_t sizes[] = {0, 1, 2, 3 + below(30), 30 + below(700), below((unsigned)max_lines + 1),
                          max_lines};
        size_t n = sizes[below(7)];
        t.len = 0;
        gen_list(&t, r & 1, n);
        put(&t, "", 0);
        size_t np = cut_parts(&t, parts);
        diff_all(parts, np, (int)(rnd() & 7));
    }
    free(t.p);
}

#ifdef IMAGE_DIFF_MAIN
/* make image-diff: optimized, the real thresholds, large lists */
const char *fuzz_invariant = "?";

void fuzz_check_failed(const char *cond, const char *file, int line)
{
    fprintf(stderr, "\nimage-diff: invariant broken: %s\n    CHECK(%s) failed at %s:%d\n",
            fuzz_invariant, cond, file, line);
    fflush(stderr);
    __builtin_trap();
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 300;
    size_t max_lines = argc > 2 ? (size_t)atol(argv[2]) : 200000;
    image_diff_check(rounds, max_lines);
    printf("image-diff: %d generated lists (up to %zu lines), each compiled both ways as ids "
           "and as ranges: the same bytes as the reference\n", rounds, max_lines);
    return 0;
}
#endif
