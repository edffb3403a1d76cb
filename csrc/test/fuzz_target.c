/* fuzz_target.c - one fuzz entry point for every parser in libgray. The first
 * byte picks the parser; the rest is its input, in a buffer of exactly that
 * size so AddressSanitizer sees any read past the end. Besides memory safety
 * it checks invariants and traps when one fails:
 *   - canonical text parses back to the same address and is a fixed point;
 *   - a walk's client is the peer, or an address that occurs in the header;
 *   - a decoded reply's offsets stay inside what was consumed, and every
 *     shorter prefix of a complete reply is "incomplete", never a value;
 *   - a merged CIDR set answers as a linear scan of its ranges does, and a
 *     CIDR written in IPv6 never covers an IPv4 (mapped) address;
 *   - an untrusted peer is its own client whatever the headers say, and a
 *     header only decides when its walk took a hop. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../gray.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

enum { T_IP, T_XFF, T_FORWARDED, T_MC_GET, T_MC_LINE, T_IPSET, T_CLIENT, T_COUNT };

static gray_range_t trusted[8];
static size_t ntrusted;

static void init_trusted(void)
{
    static const char *cidrs[] = {"127.0.0.0/8", "10.0.0.0/8", "::1", "2001:db8::/32"};
    if (ntrusted)
        return;
    size_t used = 0, n;
    for (size_t i = 0; i < 4; i++) {
        CHECK(gray_cidr_parse(cidrs[i], strlen(cidrs[i]), &trusted[used], &n) >= 0);
        used += n;
    }
    ntrusted = gray_ipset_build(trusted, used);
}

static const gray_ip_t mapped_first = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0}};
static const gray_ip_t mapped_last = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff,
                                       0xff}};

/* A set from a fuzzed, comma separated CIDR list: built without fault, and
 * its lookups agree with a linear scan of the unmerged ranges. */
static void fuzz_ipset(const char *s, size_t len)
{
    gray_range_t raw[64], set[64];
    size_t nraw = 0, start = 0;
    for (size_t i = 0; i <= len && nraw + 2 <= 64; i++) {
        if (i == len || s[i] == ',') {
            size_t n;
            if (gray_cidr_parse(s + start, i - start, &raw[nraw], &n) >= 0) {
                CHECK(n <= 2);
                const char *slash = memchr(s + start, '/', i - start);
                size_t alen = slash ? (size_t)(slash - (s + start)) : i - start;
                int v6_written = memchr(s + start, ':', alen) != NULL;
                for (size_t k = nraw; k < nraw + n; k++) {
                    CHECK(memcmp(raw[k].lo.b, raw[k].hi.b, 16) <= 0);
                    /* nginx never matches an IPv6 CIDR against IPv4 peers */
                    if (v6_written)
                        CHECK(memcmp(raw[k].hi.b, mapped_first.b, 16) < 0 ||
                              memcmp(raw[k].lo.b, mapped_last.b, 16) > 0);
                }
                nraw += n;
            }
            start = i + 1;
        }
    }
    memcpy(set, raw, nraw * sizeof raw[0]);
    size_t nset = gray_ipset_build(set, nraw);
    CHECK(nset <= nraw);
    for (size_t k = 0; k < nraw; k++) {
        const gray_ip_t *probe[2] = {&raw[k].lo, &raw[k].hi};
        for (int j = 0; j < 2; j++) {
            int linear = 0;
            for (size_t m = 0; m < nraw && !linear; m++)
                linear = memcmp(raw[m].lo.b, probe[j]->b, 16) <= 0 &&
                         memcmp(probe[j]->b, raw[m].hi.b, 16) <= 0;
            CHECK(linear == gray_ipset_contains(set, nset, probe[j]));
        }
    }
}

/* The one-call client choice: the headers are split out of the input at
 * '|' (peer|X-Real-IP|X-Forwarded-For|Forwarded). */
static void fuzz_client_key(const char *s, size_t len)
{
    const char *part[4] = {NULL, NULL, NULL, NULL};
    size_t plen[4] = {0, 0, 0, 0};
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= len && k < 4; i++) {
        if (i == len || s[i] == '|') {
            part[k] = s + start;
            plen[k] = i - start;
            k++;
            start = i + 1;
        }
    }
    init_trusted();
    gray_walk_t w;
    int32_t from;
    char buf[GRAY_IP_TEXT_MAX], peer_buf[GRAY_IP_TEXT_MAX];
    int n = gray_client_key(part[0], plen[0], part[1], plen[1], part[2], plen[2], part[3],
                            plen[3], trusted, ntrusted, &w, &from, buf, sizeof buf);
    int p = gray_peer_key(part[0], plen[0], trusted, ntrusted, peer_buf, sizeof peer_buf);
    CHECK((n < 0) == (p < 0));
    if (n < 0)
        return;
    if (p & GRAY_KEY_VERBATIM) {
        /* the peer's text is its canonical form: buf was left alone */
        CHECK((size_t)(p & 0xffff) == plen[0] && plen[0] < GRAY_IP_TEXT_MAX);
        memcpy(peer_buf, part[0], plen[0]);
        p &= ~GRAY_KEY_VERBATIM;
    }
    if (part[1] != NULL && (p & GRAY_PEER_TRUSTED)) {
        /* the hot path's one-header walk agrees with the whole choice */
        char hbuf[GRAY_IP_TEXT_MAX], cbuf[GRAY_IP_TEXT_MAX];
        gray_walk_t w2;
        int32_t from2;
        int h = gray_header_key(part[1], plen[1], trusted, ntrusted, hbuf, sizeof hbuf);
        int c = gray_client_key(part[0], plen[0], part[1], plen[1], NULL, 0, NULL, 0, trusted,
                                ntrusted, &w2, &from2, cbuf, sizeof cbuf);
        CHECK(h >= 0 && c > 0);
        if (h == 0) {
            CHECK(from2 == GRAY_FROM_PEER);
        } else {
            CHECK(from2 == GRAY_FROM_REAL_IP);
            if (h & GRAY_KEY_VERBATIM) {
                h &= ~GRAY_KEY_VERBATIM;
                memcpy(hbuf, part[1], plen[1]);
                CHECK((size_t)h == plen[1]);
            }
            CHECK(h == c && memcmp(hbuf, cbuf, (size_t)c) == 0);
        }
    }
    CHECK(n > 0 && n < GRAY_IP_TEXT_MAX);
    CHECK(from >= GRAY_FROM_PEER && from <= GRAY_FROM_FORWARDED);
    if (p < GRAY_PEER_TRUSTED) {
        /* an untrusted peer is its own client, whatever the headers say */
        CHECK(from == GRAY_FROM_PEER && n == p && memcmp(buf, peer_buf, (size_t)n) == 0);
    }
    if (from == GRAY_FROM_PEER) {
        int pl = p >= GRAY_PEER_TRUSTED ? p - GRAY_PEER_TRUSTED : p;
        CHECK(n == pl && memcmp(buf, peer_buf, (size_t)n) == 0);
    } else {
        CHECK(w.hops >= 1);
    }
}

static void fuzz_ip(const char *s, size_t len)
{
    gray_ip_t a, b;
    char text[GRAY_IP_TEXT_MAX], again[GRAY_IP_TEXT_MAX];
    gray_range_t r[2];

    size_t nr;
    (void)gray_ip_parse(s, len, &a);
    (void)gray_cidr_parse(s, len, r, &nr);
    if (gray_ip_parse_host(s, len, &a) != GRAY_OK)
        return;
    int n = gray_ip_format(&a, text, sizeof text);
    CHECK(n > 0 && n < GRAY_IP_TEXT_MAX);
    CHECK(gray_ip_parse(text, (size_t)n, &b) == GRAY_OK);
    CHECK(memcmp(a.b, b.b, 16) == 0);
    int m = gray_ip_canonical(text, (size_t)n, again, sizeof again);
    CHECK(m == n && memcmp(text, again, (size_t)n) == 0);
    CHECK(gray_ip_format(&a, text, (size_t)n - 1) == GRAY_ESPACE);
}

static void fuzz_walk(const char *s, size_t len, int forwarded)
{
    gray_walk_t w;
    init_trusted();
    CHECK(gray_ip_parse("127.0.0.1", 9, &w.addr) == GRAY_OK);
    int stop = forwarded ? gray_forwarded_walk(s, len, trusted, ntrusted, &w)
                         : gray_xff_walk(s, len, trusted, ntrusted, &w);
    CHECK(stop >= GRAY_STOP_PEER && stop <= GRAY_STOP_EMPTY);
    CHECK(w.hops <= len);
    if (w.hops == 0) {
        gray_ip_t peer;
        gray_ip_parse("127.0.0.1", 9, &peer);
        CHECK(memcmp(w.addr.b, peer.b, 16) == 0);
    }
    if (stop == GRAY_STOP_UNTRUSTED)
        CHECK(!gray_ipset_contains(trusted, ntrusted, &w.addr));
    else
        CHECK(gray_ipset_contains(trusted, ntrusted, &w.addr));
}

static void check_values(const gray_mc_value_t *v, size_t n, size_t consumed)
{
    for (size_t i = 0; i < n; i++) {
        CHECK((size_t)v[i].key_off + v[i].key_len <= consumed);
        CHECK((size_t)v[i].data_off + v[i].data_len + 2 <= consumed);
        CHECK(v[i].key_len >= 1 && v[i].key_len <= GRAY_MC_KEY_MAX);
    }
}

static void fuzz_mc_get(const char *s, size_t len)
{
    static const char keys[] = "a k1 192.168.2.20 ::1";
    gray_mc_value_t vals[8];
    gray_mc_line_t line;
    size_t n = 8, need;
    int rc = gray_mc_parse_get(s, len, keys, sizeof keys - 1, vals, &n, &line, &need);
    CHECK(n <= 8);
    if (rc == GRAY_EAGAIN) {
        CHECK(need >= 1);
    } else if (rc >= 0) {
        CHECK((size_t)rc <= len);
        check_values(vals, n, (size_t)rc);
        /* every prefix of a complete reply is incomplete */
        if (len <= 600) {
            for (size_t cut = 0; cut < (size_t)rc; cut++) {
                char *p = malloc(cut ? cut : 1);
                memcpy(p, s, cut);
                size_t pn = 8, pneed;
                CHECK(gray_mc_parse_get(p, cut, keys, sizeof keys - 1, vals, &pn, &line,
                                        &pneed) == GRAY_EAGAIN);
                CHECK(pneed >= 1 && cut + pneed <= (size_t)rc);
                free(p);
            }
        }
    }
    n = 8;
    rc = gray_mc_parse_get(s, len, NULL, 0, vals, &n, &line, &need);
    if (rc >= 0)
        check_values(vals, n, (size_t)rc);
}

static void fuzz_mc_line(const char *s, size_t len)
{
    gray_mc_line_t line;
    int rc = gray_mc_parse_line(s, len, &line);
    if (rc >= 0) {
        CHECK((size_t)rc <= len);
        CHECK((size_t)line.msg_off + line.msg_len + 2 <= (size_t)rc);
    }
    (void)gray_mc_key_ok(s, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int target = data[0] % T_COUNT;
    size_t len = size - 1;
    char *s = malloc(len ? len : 1);   /* exactly len bytes: overreads are caught */
    memcpy(s, data + 1, len);
    switch (target) {
    case T_IP:        fuzz_ip(s, len); break;
    case T_XFF:       fuzz_walk(s, len, 0); break;
    case T_FORWARDED: fuzz_walk(s, len, 1); break;
    case T_MC_GET:    fuzz_mc_get(s, len); break;
    case T_MC_LINE:   fuzz_mc_line(s, len); break;
    case T_IPSET:     fuzz_ipset(s, len); break;
    case T_CLIENT:    fuzz_client_key(s, len); break;
    }
    free(s);
    return 0;
}
