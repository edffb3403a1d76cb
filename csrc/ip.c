/* ip.c - strict IPv4/IPv6 text parsing and canonical (RFC 5952) formatting. */
#include <string.h>

#include "gray.h"
#include "internal.h"

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

int gray_ip_is_v4(const gray_ip_t *ip)
{
    return memcmp(ip->b, v4mapped_prefix, sizeof v4mapped_prefix) == 0;
}

/* The value of a decimal digit, or a number > 9 for any other byte. */
static inline unsigned digit_value(char c)
{
    return (unsigned)(unsigned char)c - '0';
}

/* Strict dotted quad into out[0..3]: four decimal octets, no leading zeros. */
static int parse_v4(const char *s, size_t len, uint8_t *out)
{
    const char *p = s, *end = s + len;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (p == end || *p != '.')
                return GRAY_EADDR;
            p++;
        }
        unsigned v, d;
        if (p == end || (v = digit_value(*p)) > 9)
            return GRAY_EADDR;
        p++;
        if (p != end && (d = digit_value(*p)) <= 9) {
            if (v == 0)
                return GRAY_EADDR;          /* a leading zero */
            v = v * 10 + d;
            p++;
            if (p != end && (d = digit_value(*p)) <= 9) {
                v = v * 10 + d;
                p++;
                if (v > 255 || (p != end && digit_value(*p) <= 9))
                    return GRAY_EADDR;
            }
        }
        out[part] = (uint8_t)v;
    }
    return p == end ? GRAY_OK : GRAY_EADDR;
}

int gray_ip_parse_v4(const char *s, size_t len, gray_ip_t *out)
{
    memcpy(out->b, v4mapped_prefix, sizeof v4mapped_prefix);
    return parse_v4(s, len, out->b + 12);
}

/* Each hex digit's value plus one (0: not a hex digit). A table, not
 * range tests: the random hex of client addresses made those branches
 * mispredict at almost every byte (~160 ns per random IPv6 address, ~30 ns
 * with the table). */
static const uint8_t hex_plus_one[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5,
    ['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
    ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

static inline int hex_value(char c)
{
    return hex_plus_one[(unsigned char)c] - 1;
}

/* RFC 4291 section 2.2 text forms into out[0..15]. */
static int parse_v6(const char *s, size_t len, uint8_t *out)
{
    uint8_t words[16];
    int nbytes = 0;         /* bytes filled in words */
    int gap = -1;           /* byte index where "::" sits */
    size_t i = 0;

    if (len < 2)
        return GRAY_EADDR;
    if (s[0] == ':') {
        if (s[1] != ':')
            return GRAY_EADDR;
        gap = 0;
        i = 2;
        if (i == len)
            goto done;
    }

    for (;;) {
        /* one group: 1..4 hex digits, or an embedded IPv4 at the tail */
        size_t start = i;
        unsigned v = 0;
        int h;
        while (i < len && i - start < 4 && (h = hex_value(s[i])) >= 0) {
            v = (v << 4) | (unsigned)h;
            i++;
        }
        if (i < len && s[i] == '.') {
            /* the dotted quad runs to the end and needs room for 4 bytes */
            if (nbytes > 12 || i == start)
                return GRAY_EADDR;
            if (parse_v4(s + start, len - start, words + nbytes) != GRAY_OK)
                return GRAY_EADDR;
            nbytes += 4;
            break;
        }
        if (i == start || nbytes > 14)
            return GRAY_EADDR;
        if (i < len && hex_value(s[i]) >= 0)
            return GRAY_EADDR;          /* a fifth hex digit */
        words[nbytes++] = (uint8_t)(v >> 8);
        words[nbytes++] = (uint8_t)v;
        if (i == len)
            break;
        if (s[i] != ':')
            return GRAY_EADDR;          /* '%' zone ids land here too */
        i++;
        if (i < len && s[i] == ':') {
            if (gap >= 0)
                return GRAY_EADDR;      /* a second "::" */
            gap = nbytes;
            i++;
            if (i == len)
                break;
        } else if (i == len) {
            return GRAY_EADDR;          /* a trailing single ':' */
        }
    }

done:
    if (gap >= 0) {
        /* "::" stands for at least one zero group */
        if (nbytes > 14)
            return GRAY_EADDR;
        int tail = nbytes - gap;
        memset(out, 0, 16);
        memcpy(out, words, (size_t)gap);
        memcpy(out + 16 - tail, words + gap, (size_t)tail);
        return GRAY_OK;
    }
    if (nbytes != 16)
        return GRAY_EADDR;
    memcpy(out, words, 16);
    return GRAY_OK;
}

int gray_ip_parse(const char *s, size_t len, gray_ip_t *out)
{
    if (s == NULL || len == 0 || len > GRAY_IP_TEXT_MAX)
        return GRAY_EADDR;
    if (memchr(s, ':', len) != NULL)
        return parse_v6(s, len, out->b);
    memcpy(out->b, v4mapped_prefix, sizeof v4mapped_prefix);
    return parse_v4(s, len, out->b + 12);
}

/* A port after an address: decimal digits worth 1..65535. Leading zeros are
 * allowed in any number, as nginx's ngx_atoi takes them ("080", "00080");
 * the caller's GRAY_HOST_TEXT_MAX bounds the length. */
static int port_ok(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    unsigned v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!gray_is_digit(s[i]))
            return 0;
        v = v * 10 + (unsigned)(s[i] - '0');
        if (v > 65535)
            return 0;
    }
    return v != 0;
}

int gray_ip_parse_host(const char *s, size_t len, gray_ip_t *out)
{
    if (s == NULL || len == 0 || len > GRAY_HOST_TEXT_MAX)
        return GRAY_EADDR;

    if (s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close == NULL)
            return GRAY_EADDR;
        size_t inner = (size_t)(close - s) - 1;
        size_t rest = len - inner - 2;
        if (rest > 0 && (close[1] != ':' || !port_ok(close + 2, rest - 1)))
            return GRAY_EADDR;
        /* brackets enclose IPv6 only (RFC 3986 IP-literal) */
        if (inner == 0 || memchr(s + 1, ':', inner) == NULL)
            return GRAY_EADDR;
        return parse_v6(s + 1, inner, out->b);
    }

    const char *colon = memchr(s, ':', len);
    if (colon != NULL && memchr(colon + 1, ':', len - (size_t)(colon - s) - 1) == NULL) {
        /* exactly one colon: "a.b.c.d:port" */
        size_t alen = (size_t)(colon - s);
        if (!port_ok(colon + 1, len - alen - 1))
            return GRAY_EADDR;
        memcpy(out->b, v4mapped_prefix, sizeof v4mapped_prefix);
        return parse_v4(s, alen, out->b + 12);
    }
    return gray_ip_parse(s, len, out);
}

static char *put_u8_decimal(char *p, unsigned v)
{
    if (v >= 100)
        *p++ = (char)('0' + v / 100);
    if (v >= 10)
        *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

int gray_ip_format(const gray_ip_t *ip, char *buf, size_t cap)
{
    char tmp[GRAY_IP_TEXT_MAX];
    char *p = tmp;
    const uint8_t *b = ip->b;

    if (gray_ip_is_v4(ip)) {
        for (int i = 12; i < 16; i++) {
            if (i > 12)
                *p++ = '.';
            p = put_u8_decimal(p, b[i]);
        }
    } else {
        /* RFC 5952: compress the longest run (>= 2) of zero groups, the first
         * one on a tie; lower case; no leading zeros. */
        unsigned g[8];
        for (int i = 0; i < 8; i++)
            g[i] = (unsigned)b[2 * i] << 8 | b[2 * i + 1];
        int best = -1, best_len = 1;
        for (int i = 0; i < 8;) {
            if (g[i] != 0) {
                i++;
                continue;
            }
            int j = i;
            while (j < 8 && g[j] == 0)
                j++;
            if (j - i > best_len) {
                best = i;
                best_len = j - i;
            }
            i = j;
        }
        static const char hex[] = "0123456789abcdef";
        for (int i = 0; i < 8; i++) {
            if (i == best) {
                *p++ = ':';
                *p++ = ':';
                i += best_len - 1;
                continue;
            }
            if (i > 0 && i != best + best_len)
                *p++ = ':';
            int started = 0;
            for (int shift = 12; shift >= 0; shift -= 4) {
                unsigned nib = (g[i] >> shift) & 0xf;
                if (nib != 0 || started || shift == 0) {
                    *p++ = hex[nib];
                    started = 1;
                }
            }
        }
    }

    size_t n = (size_t)(p - tmp);
    if (n > cap)
        return GRAY_ESPACE;
    memcpy(buf, tmp, n);
    return (int)n;
}

int gray_ip_canonical(const char *s, size_t len, char *buf, size_t cap)
{
    gray_ip_t ip;
    int rc = gray_ip_parse_host(s, len, &ip);
    if (rc != GRAY_OK)
        return rc;
    return gray_ip_format(&ip, buf, cap);
}
