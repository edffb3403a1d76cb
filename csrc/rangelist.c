/* rangelist.c - the ranges list (text, one address or CIDR and an optional
 * target name per line) into entries for gray_rangeset_build(). */
#include <string.h>

#include "gray.h"
#include "internal.h"
#include "image_internal.h"

/* Field separators. A CR anywhere between fields is blank, which covers
 * CRLF line ends and stray CRs alike. */
static inline int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* The index (from 1) of name in the '\n'-separated names, 0 when absent. */
static uint32_t name_index(const char *names, size_t names_len, const char *name, size_t len)
{
    uint32_t k = 1;
    const char *p = names, *end = names + names_len;
    for (;;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        if ((size_t)(stop - p) == len && memcmp(p, name, len) == 0)
            return k;
        if (nl == NULL)
            return 0;
        p = nl + 1;
        k++;
    }
}

int gray_target_name_ok(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > GRAY_TARGET_NAME_MAX || (len == 1 && s[0] == '0'))
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e || s[i] == '#')
            return 0;
    return 1;
}

static void note(uint32_t *count, uint32_t *lines, uint32_t line)
{
    if (*count < GRAY_RANGES_REPORT)
        lines[*count] = line;
    (*count)++;
}

/* The prefix length written after '/' of an IPv6 CIDR (128 without one);
 * the text has passed gray_cidr_parse(). */
static uint16_t written_prefix(const char *s, size_t len)
{
    const char *slash = memchr(s, '/', len);
    if (slash == NULL)
        return 128;
    unsigned v = 0;
    for (const char *d = slash + 1; d < s + len; d++)
        v = v * 10 + (unsigned)(*d - '0');
    return (uint16_t)v;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Byte classes of a line: a field ends at a blank or a stop; '\n' ends
 * the line, '#' what is read of it. */
#define C_FIELD 0
#define C_BLANK 1
#define C_STOP  2
static const uint8_t range_class[256] = {
    [' '] = C_BLANK, ['\t'] = C_BLANK, ['\r'] = C_BLANK, ['\n'] = C_STOP, ['#'] = C_STOP,
};

/* A strict dotted quad with an optional "/prefix" (1..3 digits, no leading
 * zero, at most 32) as the whole field starting at s: the usual line,
 * parsed as it is scanned. Past the field, and *lo, *hi, when the field is
 * one; NULL for anything else, which the field's scan and
 * gray_cidr_parse() then decide as they always did (so both agree on
 * every field). */
static gray_always_inline const char *quick_v4(const char *s, const char *end, uint32_t *lo,
                                               uint32_t *hi)
{
    const char *p = s;
    uint32_t ip = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (p == end || *p != '.')
                return NULL;
            p++;
        }
        if (p == end || !gray_is_digit(*p))
            return NULL;
        unsigned v = (unsigned)(*p++ - '0');
        if (p != end && gray_is_digit(*p)) {
            if (v == 0)
                return NULL;
            v = v * 10 + (unsigned)(*p++ - '0');
            if (p != end && gray_is_digit(*p)) {
                v = v * 10 + (unsigned)(*p++ - '0');
                if (v > 255)
                    return NULL;
            }
        }
        ip = ip << 8 | v;
    }
    unsigned prefix = 32;
    if (p != end && *p == '/') {
        p++;
        if (p == end || !gray_is_digit(*p))
            return NULL;
        prefix = (unsigned)(*p++ - '0');
        if (p != end && gray_is_digit(*p)) {
            if (prefix == 0)
                return NULL;
            prefix = prefix * 10 + (unsigned)(*p++ - '0');
            if (prefix > 32)
                return NULL;
        }
    }
    /* the field ends here, or it is something else */
    if (p != end && range_class[(unsigned char)*p] == C_FIELD)
        return NULL;
    uint32_t mask = prefix == 0 ? 0 : ~(uint32_t)0 << (32 - prefix);
    *lo = ip & mask;
    *hi = ip | ~mask;
    return p;
}

/* Room for one more entry of the family: grown (doubled) when the arrays
 * are the caller's gray_big_alloc() ones, else counted past the end. */
static int room4(gray_ranges_out_t *o, size_t n)
{
    if (n < o->cap4 || !o->grow)
        return n < o->cap4;
    size_t cap = o->cap4 ? 2 * o->cap4 : 4096;
    void *p = gray_big_grow(o->e4, o->cap4 * sizeof *o->e4, cap * sizeof *o->e4);
    if (p == NULL)
        return -1;
    o->e4 = p;
    o->cap4 = cap;
    return 1;
}

static int room6(gray_ranges_out_t *o, size_t n)
{
    if (n < o->cap6 || !o->grow)
        return n < o->cap6;
    size_t cap = o->cap6 ? 2 * o->cap6 : 1024;
    void *p = gray_big_grow(o->e6, o->cap6 * sizeof *o->e6, cap * sizeof *o->e6);
    if (p == NULL)
        return -1;
    o->e6 = p;
    o->cap6 = cap;
    return 1;
}

int gray_ranges_parse_more(const char *text, size_t len, const char *names, size_t names_len,
                           uint32_t unknown, gray_ranges_out_t *o, gray_ranges_stats_t *st)
{
    /* the name of the last named line, and its index */
    const char *last = NULL;
    size_t last_len = 0;
    uint32_t last_index = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        uint32_t line = ++st->lines;

        /* up to three fields: address, name, and anything else (an error);
         * the same fields as splitting [p, the first '#' or the line's end)
         * by blanks */
        const char *field[3] = {NULL, NULL, NULL};
        size_t flen[3] = {0, 0, 0};
        int nfields = 0;
        const char *q = p;
        uint32_t lo4 = 0, hi4 = 0;
        int v4 = 0;
        while (nfields < 3) {
            while (q < end && range_class[(unsigned char)*q] == C_BLANK)
                q++;
            if (q == end || range_class[(unsigned char)*q] == C_STOP)
                break;
            field[nfields] = q;
            const char *past = nfields == 0 ? quick_v4(q, end, &lo4, &hi4) : NULL;
            if (past != NULL) {
                v4 = 1;
                q = past;
            } else {
                while (q < end && range_class[(unsigned char)*q] == C_FIELD)
                    q++;
            }
            flen[nfields] = (size_t)(q - field[nfields]);
            nfields++;
        }
        if (q < end && *q == '\n') {
            p = q + 1;
        } else {
            const char *nl = q < end ? memchr(q, '\n', (size_t)(end - q)) : NULL;
            p = nl ? nl + 1 : end;
        }
        if (nfields == 0)
            continue;   /* blank or comment */

        gray_range_t r[2];
        size_t nr = 0;
        int bad = nfields == 3 ||
                  (!v4 && (gray_cidr_parse(field[0], flen[0], r, &nr) < 0 || nr == 0));
        if (!bad && nfields == 2)
            bad = !gray_target_name_ok(field[1], flen[1]);
        if (bad) {
            note(&st->bad, st->bad_lines, line);
            continue;
        }
        uint32_t target = 1;
        if (nfields == 2) {
            if (last == NULL || flen[1] != last_len || memcmp(field[1], last, last_len) != 0) {
                last = field[1];
                last_len = flen[1];
                last_index = name_index(names, names_len, field[1], flen[1]);
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
        if (!v4 && gray_ip_is_v4(&r[0].lo)) {
            /* a CIDR written in IPv4: one range inside ::ffff:0:0/96 */
            v4 = 1;
            lo4 = be32(r[0].lo.b + 12);
            hi4 = be32(r[0].hi.b + 12);
        }
        if (v4) {
            int room = room4(o, st->n4);
            if (room < 0)
                return GRAY_ENOMEM;
            if (room) {
                gray_rentry4_t *e = &o->e4[st->n4];
                e->lo = lo4;
                e->hi = hi4;
                e->line = line;
                e->target = target;
            }
            st->n4++;
        } else {
            uint16_t prefix = written_prefix(field[0], flen[0]);
            for (size_t i = 0; i < nr; i++) {
                int room = room6(o, st->n6);
                if (room < 0)
                    return GRAY_ENOMEM;
                if (room) {
                    gray_rentry6_t *e = &o->e6[st->n6];
                    e->lo = r[i].lo;
                    e->hi = r[i].hi;
                    e->line = line;
                    e->prefix = prefix;
                    e->target = (uint16_t)target;
                }
                st->n6++;
            }
        }
    }
    return GRAY_OK;
}

int gray_ranges_parse(const char *text, size_t len, const char *names, size_t names_len,
                      uint32_t unknown, gray_rentry4_t *e4, size_t cap4, gray_rentry6_t *e6, size_t cap6,
                      gray_ranges_stats_t *st)
{
    memset(st, 0, sizeof *st);
    if (gray_names_check(names, names_len) == 0 || len > GRAY_RANGES_TEXT_MAX ||
        unknown > GRAY_TARGETS_MAX || (text == NULL && len > 0))
        return GRAY_EINVAL;
    if (len == 0)
        return GRAY_OK;
    gray_ranges_out_t o = { e4, cap4, e6, cap6, 0 };
    (void)gray_ranges_parse_more(text, len, names, names_len, unknown, &o, st);
    return st->n4 > cap4 || st->n6 > cap6 ? GRAY_ESPACE : GRAY_OK;
}

/* Whether an IPv6-written field may cover ::ffff:0:0/96 and so become two
 * entries: its prefix is at most 96 and the network's first 16 bits (or
 * fewer, for a shorter prefix) are zero. Host bits are cleared before that
 * counts, so "2001::/1" is ::/1. A malformed field may go either way. */
static int may_split(const char *f, size_t len)
{
    const char *slash = memchr(f, '/', len);
    if (slash == NULL)
        return 0;
    unsigned prefix = 0;
    for (const char *d = slash + 1; d < f + len && d < slash + 4; d++)
        prefix = prefix * 10 + (unsigned)(*d - '0');
    if (prefix > 96)
        return 0;
    unsigned group = 0;   /* the first group's value; "::..." has none: 0 */
    for (const char *h = f; h < slash && *h != ':' && h < f + 4; h++) {
        unsigned c = (unsigned char)*h;
        group = group << 4 | (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    unsigned need = prefix < 16 ? prefix : 16;   /* leading bits that must be zero */
    return need == 0 || (group & 0xffff) >> (16 - need) == 0;
}

void gray_ranges_room(const char *text, size_t len, size_t *room4, size_t *room6)
{
    size_t n4 = 0, n6 = 0;
    const char *p = text, *end = text != NULL ? text + len : NULL;
    while (p < end) {
        while (p < end && is_blank(*p))
            p++;
        const char *field = p;
        int v6 = 0;
        while (p < end && *p != '\n' && *p != '#' && !is_blank(*p))
            v6 |= *p++ == ':';
        if (p > field) {
            if (!v6)
                n4++;
            else
                n6 += may_split(field, (size_t)(p - field)) ? 2 : 1;
        }
        const char *nl = p < end ? memchr(p, '\n', (size_t)(end - p)) : NULL;
        p = nl ? nl + 1 : end;
    }
    *room4 = n4;
    *room6 = n6;
}
