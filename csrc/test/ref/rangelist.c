/* The reference: csrc/rangelist.c as main had it before compile6 (43bf080), verbatim but for
 * rename.h and the include paths; image_diff.c compares its images with today's. */
#include "rename.h"
/* rangelist.c - the ranges list (text, one address or CIDR and an optional
 * target name per line) into entries for gray_rangeset_build(). */
#include <string.h>

#include "../../gray.h"
#include "../../internal.h"
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

    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        const char *hash = memchr(p, '#', (size_t)(eol - p));
        const char *stop = hash ? hash : eol;
        uint32_t line = ++st->lines;

        /* up to three fields: address, name, and anything else (an error) */
        const char *field[3] = {NULL, NULL, NULL};
        size_t flen[3] = {0, 0, 0};
        int nfields = 0;
        const char *q = p;
        while (nfields < 3) {
            while (q < stop && is_blank(*q))
                q++;
            if (q == stop)
                break;
            field[nfields] = q;
            while (q < stop && !is_blank(*q))
                q++;
            flen[nfields] = (size_t)(q - field[nfields]);
            nfields++;
        }
        p = nl ? nl + 1 : end;
        if (nfields == 0)
            continue;   /* blank or comment */

        gray_range_t r[2];
        size_t nr;
        int bad = nfields == 3 || gray_cidr_parse(field[0], flen[0], r, &nr) < 0 || nr == 0;
        if (!bad && nfields == 2)
            bad = !gray_target_name_ok(field[1], flen[1]);
        if (bad) {
            note(&st->bad, st->bad_lines, line);
            continue;
        }
        uint32_t target = nfields == 2 ? name_index(names, names_len, field[1], flen[1]) : 1;
        if (target == 0) {
            note(&st->unknown, st->unknown_lines, line);
            if (unknown == 0)
                continue;
            target = unknown;
        }

        st->taken++;
        if (gray_ip_is_v4(&r[0].lo)) {
            /* a CIDR written in IPv4: one range inside ::ffff:0:0/96 */
            if (st->n4 < cap4) {
                gray_rentry4_t *e = &e4[st->n4];
                e->lo = be32(r[0].lo.b + 12);
                e->hi = be32(r[0].hi.b + 12);
                e->line = line;
                e->target = target;
            }
            st->n4++;
        } else {
            uint16_t prefix = written_prefix(field[0], flen[0]);
            for (size_t i = 0; i < nr; i++) {
                if (st->n6 < cap6) {
                    gray_rentry6_t *e = &e6[st->n6];
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
