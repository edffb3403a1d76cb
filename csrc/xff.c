/* xff.c - the client address behind trusted proxies: X-Forwarded-For and
 * RFC 7239 Forwarded, walked as nginx's realip module does with
 * real_ip_recursive on. */
#include <string.h>

#include "gray.h"
#include "internal.h"

/* nginx splits X-Forwarded-For at ',' and ' ' only (a tab is a byte of its
 * element). */
static int is_xff_sep(char c)
{
    return c == ',' || c == ' ';
}

/* One X-Forwarded-For element as nginx's ngx_parse_addr_port() takes it:
 * "[v6]" without a port is declined there, so it is not an address here
 * either (gray_ip_parse_host() accepts it for peers and Forwarded). */
static int xff_element(const char *s, size_t len, gray_ip_t *ip)
{
    if (len > 0 && s[0] == '[' && s[len - 1] == ']')
        return GRAY_EADDR;
    return gray_ip_parse_host(s, len, ip);
}

/* The walk from the right, the start (walk->addr) already known to be
 * trusted. [*elem_start, *elem_end) bounds the element that became
 * walk->addr. */
static int walk_xff(const char *hdr, size_t len, const gray_range_t *trusted,
                    size_t ntrusted, gray_walk_t *walk, size_t *elem_start, size_t *elem_end)
{
    size_t end = len;
    for (;;) {
        /* skip separators (and so empty elements) from the right */
        while (end > 0 && is_xff_sep(hdr[end - 1]))
            end--;
        if (end == 0)
            break;
        size_t start = end;
        while (start > 0 && !is_xff_sep(hdr[start - 1]))
            start--;

        gray_ip_t ip;
        if (xff_element(hdr + start, end - start, &ip) != GRAY_OK)
            return walk->stop = GRAY_STOP_JUNK;
        walk->addr = ip;
        walk->hops++;
        *elem_start = start;
        *elem_end = end;
        if (!gray_ipset_contains(trusted, ntrusted, &ip))
            return walk->stop = GRAY_STOP_UNTRUSTED;
        end = start;
    }
    return walk->stop = walk->hops ? GRAY_STOP_ALL : GRAY_STOP_EMPTY;
}

int gray_xff_walk(const char *hdr, size_t len, const gray_range_t *trusted,
                  size_t ntrusted, gray_walk_t *walk)
{
    size_t s, e;
    walk->hops = 0;
    if (!gray_ipset_contains(trusted, ntrusted, &walk->addr))
        return walk->stop = GRAY_STOP_PEER;
    if (hdr == NULL)
        len = 0;
    return walk_xff(hdr, len, trusted, ntrusted, walk, &s, &e);
}

/* The canonical text of ip into buf, or GRAY_KEY_VERBATIM when src (the
 * text ip was parsed from) is that text already. A dotted quad without a
 * port is canonical whenever it parses (no leading zeros); anything else is
 * formatted and compared. */
static int key_text(const gray_ip_t *ip, const char *src, size_t len, char *buf, size_t cap)
{
    if (memchr(src, ':', len) == NULL)
        return (int)len + GRAY_KEY_VERBATIM;
    int n = gray_ip_format(ip, buf, cap);
    if (n == (int)len && memcmp(buf, src, len) == 0)
        return n + GRAY_KEY_VERBATIM;
    return n;
}

int gray_header_key(const char *hdr, size_t len, const gray_range_t *trusted,
                    size_t ntrusted, char *buf, size_t cap)
{
    /* The usual header: one bare dotted quad, canonical as it parses. Alone
     * in the header it is the client whether trusted or not. */
    gray_ip_t ip;
    if (gray_likely(len <= 15) && gray_ip_parse_v4(hdr, len, &ip) == GRAY_OK)
        return (int)len + GRAY_KEY_VERBATIM;

    gray_walk_t walk;
    size_t s = 0, e = 0;
    walk.hops = 0;
    walk_xff(hdr, len, trusted, ntrusted, &walk, &s, &e);
    if (walk.hops == 0)
        return 0;
    if (s == 0 && e == len)
        return key_text(&walk.addr, hdr, len, buf, cap);
    return gray_ip_format(&walk.addr, buf, cap);
}

/* RFC 9110 tchar */
static int is_tchar(unsigned char c)
{
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
        return 1;
    if (c >= '0' && c <= '9')
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Unquoted values are read leniently: proxies write for=[::1] without the
 * quotes RFC 7239 asks for, so any byte but the delimiters is taken. */
static int is_value_byte(unsigned char c)
{
    return c > 0x20 && c != 0x7f && c != ',' && c != ';' && c != '"';
}

/* What one Forwarded element tells about its "for" parameter. */
enum { ELEM_JUNK, ELEM_ADDR };

/* Parses one element starting at *pos (blanks skipped), stopping before the
 * ',' that ends it or at len. Returns ELEM_ADDR with *ip set, ELEM_JUNK, or
 * GRAY_EINVAL on a syntax error. */
static int parse_element(const char *h, size_t len, size_t *pos, gray_ip_t *ip)
{
    size_t p = *pos;
    const char *for_val = NULL;
    size_t for_len = 0;
    int for_count = 0, for_escaped = 0;

    for (;;) {
        while (p < len && gray_is_ows(h[p]))
            p++;
        if (p == len || h[p] == ',')
            break;
        if (h[p] == ';') {
            p++;
            continue;
        }
        size_t name = p;
        while (p < len && is_tchar((unsigned char)h[p]))
            p++;
        size_t name_len = p - name;
        if (name_len == 0 || p == len || h[p] != '=')
            return GRAY_EINVAL;
        p++;

        const char *val;
        size_t val_len;
        int escaped = 0;
        if (p < len && h[p] == '"') {
            p++;
            val = h + p;
            for (;;) {
                if (p == len)
                    return GRAY_EINVAL;         /* unterminated quoted-string */
                if (h[p] == '"')
                    break;
                if (h[p] == '\\') {
                    escaped = 1;
                    if (++p == len)
                        return GRAY_EINVAL;
                }
                p++;
            }
            val_len = (size_t)(h + p - val);
            p++;                                /* the closing quote */
        } else {
            val = h + p;
            while (p < len && is_value_byte((unsigned char)h[p]))
                p++;
            val_len = (size_t)(h + p - val);
            if (val_len == 0)
                return GRAY_EINVAL;
        }

        if (name_len == 3 && (h[name] | 0x20) == 'f' && (h[name + 1] | 0x20) == 'o' &&
            (h[name + 2] | 0x20) == 'r') {
            for_count++;
            for_val = val;
            for_len = val_len;
            for_escaped = escaped;
        }

        while (p < len && gray_is_ows(h[p]))
            p++;
        if (p < len && h[p] != ';' && h[p] != ',')
            return GRAY_EINVAL;
    }
    *pos = p;
    /* no "for", a repeated one, an escaped one (never needed by an address),
     * "unknown" and "_obfuscated" are all not addresses */
    if (for_count != 1 || for_escaped)
        return ELEM_JUNK;
    return gray_ip_parse_host(for_val, for_len, ip) == GRAY_OK ? ELEM_ADDR : ELEM_JUNK;
}

/*
 * The walk from the right, done in one pass from the left because quoted
 * strings can only be split reliably from the left: the client is decided by
 * the rightmost "stopper" (an untrusted address or a non-address). With none,
 * it is the leftmost address; an untrusted stopper is the client itself; a
 * non-address hands over to the element just right of it (or the peer).
 */
int gray_forwarded_walk(const char *hdr, size_t len, const gray_range_t *trusted,
                        size_t ntrusted, gray_walk_t *walk)
{
    walk->hops = 0;
    if (!gray_ipset_contains(trusted, ntrusted, &walk->addr))
        return walk->stop = GRAY_STOP_PEER;
    if (hdr == NULL)
        len = 0;

    uint32_t n = 0;             /* elements seen */
    uint32_t stop_at = 0;       /* 1-based index of the rightmost stopper, 0: none */
    int stop_junk = 0;
    int want_next = 0;          /* the element after a junk stopper is wanted */
    gray_ip_t first = {{0}}, stop_ip = {{0}}, next_ip = {{0}};
    size_t p = 0;

    for (;;) {
        while (p < len && (hdr[p] == ',' || gray_is_ows(hdr[p])))
            p++;
        if (p == len)
            break;
        gray_ip_t ip;
        int kind = parse_element(hdr, len, &p, &ip);
        n++;
        if (kind == GRAY_EINVAL) {
            /* nothing after a syntax error can be delimited: one junk
             * element up to the end */
            stop_at = n;
            stop_junk = 1;
            break;
        }
        if (kind == ELEM_JUNK) {
            stop_at = n;
            stop_junk = 1;
            want_next = 1;
            continue;
        }
        if (n == 1)
            first = ip;
        if (!gray_ipset_contains(trusted, ntrusted, &ip)) {
            stop_at = n;
            stop_junk = 0;
            stop_ip = ip;
            want_next = 0;
        } else if (want_next) {
            next_ip = ip;
            want_next = 0;
        }
    }

    if (stop_at == 0) {
        if (n == 0)
            return walk->stop = GRAY_STOP_EMPTY;
        walk->addr = first;
        walk->hops = n;
        return walk->stop = GRAY_STOP_ALL;
    }
    if (!stop_junk) {
        walk->addr = stop_ip;
        walk->hops = n - stop_at + 1;
        return walk->stop = GRAY_STOP_UNTRUSTED;
    }
    if (stop_at < n)
        walk->addr = next_ip;
    walk->hops = n - stop_at;
    return walk->stop = GRAY_STOP_JUNK;
}

int gray_peer_key(const char *peer, size_t len, const gray_range_t *trusted,
                  size_t ntrusted, char *buf, size_t cap)
{
    gray_ip_t ip;
    int rc = gray_ip_parse_host(peer, len, &ip);
    if (rc != GRAY_OK)
        return rc;
    /* "a.b.c.d:port" and "[v6]" forms are never verbatim: key_text() sees
     * their ':' and formats */
    int n = key_text(&ip, peer, len, buf, cap);
    if (n < 0)
        return n;
    return gray_ipset_contains(trusted, ntrusted, &ip) ? n + GRAY_PEER_TRUSTED : n;
}

int gray_client_key(const char *peer, size_t peer_len, const char *real_ip, size_t real_ip_len,
                    const char *xff, size_t xff_len, const char *fwd, size_t fwd_len,
                    const gray_range_t *trusted, size_t ntrusted, gray_walk_t *walk,
                    int32_t *from, char *buf, size_t cap)
{
    int rc = gray_ip_parse_host(peer, peer_len, &walk->addr);
    if (rc != GRAY_OK)
        return rc;
    walk->hops = 0;
    walk->stop = GRAY_STOP_PEER;
    *from = GRAY_FROM_PEER;
    if (!gray_ipset_contains(trusted, ntrusted, &walk->addr))
        return gray_ip_format(&walk->addr, buf, cap);

    if (real_ip != NULL) {
        /* nginx (real_ip_header X-Real-IP, recursive) walks the value as it
         * walks X-Forwarded-For. Only when no element of it is an address
         * are the lists tried: our extension. */
        gray_xff_walk(real_ip, real_ip_len, trusted, ntrusted, walk);
        if (walk->hops > 0) {
            *from = GRAY_FROM_REAL_IP;
            return gray_ip_format(&walk->addr, buf, cap);
        }
    }
    if (xff != NULL) {
        gray_xff_walk(xff, xff_len, trusted, ntrusted, walk);
        *from = walk->hops ? GRAY_FROM_XFF : GRAY_FROM_PEER;
    } else if (fwd != NULL) {
        gray_forwarded_walk(fwd, fwd_len, trusted, ntrusted, walk);
        *from = walk->hops ? GRAY_FROM_FORWARDED : GRAY_FROM_PEER;
    } else {
        walk->stop = GRAY_STOP_EMPTY;
    }
    return gray_ip_format(&walk->addr, buf, cap);
}
