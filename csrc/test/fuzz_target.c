/* fuzz_target.c - a fuzz target per parser in libgray (the table at the end;
 * gray-admin's in fuzz_cli.c), each with its seed corpus in
 * csrc/test/corpus/<name>. libFuzzer runs one per process (FUZZ_TARGET=name,
 * tools/fuzz.lua); replay.c runs them all under ASan in make test. A target's
 * input is in a buffer of exactly its size so AddressSanitizer sees any read
 * past the end. Besides memory safety it checks invariants and traps, naming
 * the invariant, when one fails:
 *   - canonical text parses back to the same address and is a fixed point;
 *   - a walk's client is the peer, or an address that occurs in the header;
 *   - a decoded reply's offsets stay inside what was consumed, and every
 *     shorter prefix of a complete reply is "incomplete", never a value;
 *   - a decoded meta (mg) reply answers requests in order, its k and O
 *     tokens name the request it is matched to, and its hits re-encoded
 *     ("VA <n> c<cas> f<flags> O<index>" ... "MN") decode to the same hits,
 *     and a request built from a key list is one line per key, then mn;
 *   - a merged CIDR set answers as a linear scan of its ranges does, and a
 *     CIDR written in IPv6 never covers an IPv4 (mapped) address;
 *   - an untrusted peer is its own client whatever the headers say, and a
 *     header only decides when its walk took a hop;
 *   - a ranges list counts as it fills, never writes past the room it is
 *     given, and its compiled set answers as a naive scan of the parsed
 *     entries does (the most specific range, of equal ones the later line);
 *   - murmur3 equals a byte-at-a-time reading of the algorithm at any
 *     alignment, and the bucket is its value modulo 10000;
 *   - a server continuum is sorted, holds the points its mode gives, fails
 *     with GRAY_ESPACE one point short (small lists), and its O(log n)
 *     lookup answers as a linear scan of the circle does;
 *   - a server list's items lie in order inside the text, hold no
 *     separator, their hosts are IP addresses kept as written (IPv6 text
 *     exactly when in brackets), and the items joined again parse the same;
 *   - a signed token made of the input as its subject checks back to that
 *     subject and expiry, and expires at it; the input itself is never a
 *     valid token (no MAC is guessed);
 *   - a list image (ids or ranges, split into parts, with given or
 *     collected target names) opens and verifies; every id of every line
 *     finds what a naive scan of the joined lines says (the last good line
 *     wins), and so does an id that is not listed; a ranges image answers
 *     as the naive scan of gray_ranges_parse()'s entries does; a flipped
 *     byte or a cut is refused by a verifying open, and an image with a
 *     flipped byte that still opens answers lookups without a fault. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../gray.h"
#include "../internal.h"
#include "fuzz.h"

static gray_range_t trusted[8];
static size_t ntrusted;

static void init_trusted(void)
{
    static const char *cidrs[] = {"127.0.0.0/8", "10.0.0.0/8", "::1", "2001:db8::/32"};
    if (ntrusted)
        return;
    size_t used = 0, n;
    for (size_t i = 0; i < 4; i++) {
        INVARIANT("the harness's trusted CIDRs parse");
        CHECK(gray_cidr_parse(cidrs[i], strlen(cidrs[i]), &trusted[used], &n) >= 0);
        used += n;
    }
    ntrusted = gray_ipset_build(trusted, used);
}

static const gray_ip_t mapped_first = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0}};
static const gray_ip_t mapped_last = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff,
                                       0xff}};

/* The references' comparisons, in plain code: a libc memcmp() is
 * intercepted by the sanitizers and libFuzzer, which in the naive scans'
 * inner loops cost more than the scans. */
static inline __attribute__((always_inline)) uint64_t be64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}

/* <0, 0, >0 as a, b compare as 128-bit numbers (memcmp(a, b, 16)'s sign) */
static inline __attribute__((always_inline)) int ip_cmp(const gray_ip_t *a,
                                                      const gray_ip_t *b)
{
    uint64_t x = be64(a->b), y = be64(b->b);
    if (x == y) {
        x = be64(a->b + 8);
        y = be64(b->b + 8);
    }
    return (x > y) - (x < y);
}

static int bytes_eq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

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
                INVARIANT("a CIDR is at most two ranges, lo <= hi, and one written in IPv6 never "
                          "covers an IPv4 (mapped) address");
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
    INVARIANT("the merged set answers as a linear scan of the unmerged ranges");
    CHECK(nset <= nraw);
    for (size_t k = 0; k < nraw; k++) {
        const gray_ip_t *probe[2] = {&raw[k].lo, &raw[k].hi};
        for (int j = 0; j < 2; j++) {
            int linear = 0;
            for (size_t m = 0; m < nraw && !linear; m++)
                linear = ip_cmp(&raw[m].lo, probe[j]) <= 0 && ip_cmp(probe[j], &raw[m].hi) <= 0;
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
    INVARIANT("gray_client_key and gray_peer_key agree on a bad peer");
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
        INVARIANT("the one-header walk (gray_header_key) agrees with gray_client_key on X-Real-IP"
                  " alone");
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
    INVARIANT("an untrusted peer is its own client whatever the headers say; a header decides "
              "only after a hop");
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
    INVARIANT("round trip: canonical text parses back to the same address, is a fixed point, and "
              "needs all its room");
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
    INVARIANT("a walk's client is the peer when no hop was taken, and trusted exactly when the "
              "walk did not stop at an untrusted hop");
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
    INVARIANT("a get reply's values lie inside what was consumed, and every shorter prefix of a "
              "complete reply is incomplete");
    int rc = gray_mc_parse_get(s, len, keys, sizeof keys - 1, vals, &n, &line, &need);
    CHECK(n <= 8);
    if (rc == GRAY_EAGAIN) {
        CHECK(need >= 1);
    } else if (rc >= 0) {
        CHECK((size_t)rc <= len);
        check_values(vals, n, (size_t)rc);
        /* every prefix of a complete reply is incomplete */
        if (len <= 600) {
            /* each prefix ends where the buffer ends: ASan sees a read past it */
            char *buf = malloc(rc ? (size_t)rc : 1);
            for (size_t cut = 0; cut < (size_t)rc; cut++) {
                char *p = buf + (size_t)rc - cut;
                memcpy(p, s, cut);
                size_t pn = 8, pneed;
                CHECK(gray_mc_parse_get(p, cut, keys, sizeof keys - 1, vals, &pn, &line,
                                        &pneed) == GRAY_EAGAIN);
                CHECK(pneed >= 1 && cut + pneed <= (size_t)rc);
            }
            free(buf);
        }
    }
    n = 8;
    rc = gray_mc_parse_get(s, len, NULL, 0, vals, &n, &line, &need);
    if (rc >= 0)
        check_values(vals, n, (size_t)rc);

    /* one key: the shortcut for the usual replies answers as the general
     * decoder does, every output (capacities 1 and 0: no room for a value) */
    INVARIANT("gray_mc_parse_get (its shortcuts) and the general decoder agree on the result, "
              "the values, the line and need, for one key, a list and none");
    static const char *const one[] = { "192.168.2.20", "k", "k1", "a", "k 1", "a k1", NULL };
    for (size_t k = 0; k < sizeof one / sizeof one[0]; k++) {
        for (size_t cap = 0; cap <= 1; cap++) {
            gray_mc_value_t fv[1], gv[1];
            gray_mc_line_t fl, gl;
            size_t fn = cap, gn = cap, fneed = 7, gneed = 7;
            memset(fv, 0xa5, sizeof fv);
            memset(gv, 0xa5, sizeof gv);
            memset(&fl, 0xa5, sizeof fl);
            memset(&gl, 0xa5, sizeof gl);
            size_t klen = one[k] ? strlen(one[k]) : 0;
            int frc = gray_mc_parse_get(s, len, one[k], klen, fv, &fn, &fl, &fneed);
            int grc = gray_mc_parse_get_general(s, len, one[k], klen, gv, &gn, &gl, &gneed);
            CHECK(frc == grc && fn == gn && fneed == gneed);
            CHECK(fn == 0 || memcmp(fv, gv, sizeof fv) == 0);
            if (frc >= 0)
                CHECK(fl.kind == gl.kind && fl.msg_off == gl.msg_off &&
                      fl.msg_len == gl.msg_len && fl.number == gl.number);
        }
    }
}

/* The first byte is the mode (GRAY_META_* bits), the rest the reply. */
#define META_CAP 8
static const char meta_keys[] = "a k1 192.168.2.20 ::1 a";

static void check_metas(const char *s, const gray_mc_meta_t *v, size_t n, size_t consumed)
{
    for (size_t i = 0; i < n; i++) {
        CHECK(v[i].kind == GRAY_MC_VA || v[i].kind == GRAY_MC_HD);
        CHECK((size_t)v[i].data_off + v[i].data_len + 2 <= consumed || v[i].kind == GRAY_MC_HD);
        CHECK((size_t)v[i].key_off + v[i].key_len <= consumed);
        CHECK((size_t)v[i].opaque_off + v[i].opaque_len <= consumed);
        CHECK((size_t)v[i].req_off + v[i].req_len <= sizeof meta_keys - 1);
        /* in request order, every request answered at most once */
        if (i > 0)
            CHECK(v[i].index > v[i - 1].index);
        if (v[i].has & GRAY_META_HAS_KEY)
            CHECK(v[i].key_len == v[i].req_len &&
                  memcmp(s + v[i].key_off, meta_keys + v[i].req_off, v[i].req_len) == 0);
        if (v[i].has & GRAY_META_HAS_OPAQUE) {
            char num[16];
            int k = snprintf(num, sizeof num, "%u", v[i].index);
            CHECK((size_t)k == v[i].opaque_len && memcmp(s + v[i].opaque_off, num, (size_t)k) == 0);
        }
    }
}

/* The request path's pipeline builder (gray_mc_meta_list). Byte 0's low 5
 * bits say which of k1..k5 are present, its top 3 bits how much room the
 * buffer has (0: all it needs, 1..7: 0 to 6 sixths of it); the rest of the
 * input, split at '\n', gives the keys' texts in order. The buffer is
 * exactly cap bytes: ASan sees a write past it. */
static void check_meta_list(const char *s, size_t len)
{
    INVARIANT("the mg pipeline built from separate keys equals the naive build, refuses no key or"
              " a length out of 1..GRAY_MC_KEY_MAX, and never writes past its room");
    const char *k[GRAY_MC_LIST_MAX] = {0};
    size_t l[GRAY_MC_LIST_MAX] = {0};
    unsigned mask = (unsigned char)s[0] & 31;
    size_t pos = 1;
    for (int i = 0; i < GRAY_MC_LIST_MAX; i++) {
        const char *start = s + pos;
        const char *nl = pos < len ? memchr(start, '\n', len - pos) : NULL;
        size_t kl = nl ? (size_t)(nl - start) : len - pos;
        if (mask & (1u << i)) {
            k[i] = start;
            l[i] = kl;
        }
        pos += kl + (nl ? 1 : 0);
    }
    static char want[GRAY_MC_LIST_MAX * (GRAY_MC_KEY_MAX + 16) + 8];
    size_t need = 0;
    int present = 0, bad = 0;
    char digit = '0';
    for (int i = 0; i < GRAY_MC_LIST_MAX; i++) {
        if (k[i] == NULL)
            continue;
        present++;
        if (l[i] == 0 || l[i] > GRAY_MC_KEY_MAX) {
            bad = 1;
            continue;
        }
        /* memcpy, not %.*s: a key's bytes may hold a NUL */
        memcpy(want + need, "mg ", 3);
        memcpy(want + need + 3, k[i], l[i]);
        need += 3 + l[i];
        memcpy(want + need, " v q O", 6);
        want[need + 6] = digit++;
        memcpy(want + need + 7, "\r\n", 2);
        need += 9;
    }
    memcpy(want + need, "mn\r\n", 4);
    need += 4;
    unsigned room = (unsigned char)s[0] >> 5;
    size_t cap = room == 0 ? need : need * (room - 1) / 6;
    char *out = malloc(cap ? cap : 1);
    int rc = gray_mc_meta_list(k[0], l[0], k[1], l[1], k[2], l[2], k[3], l[3], k[4], l[4], out,
                               cap);
    if (!present || bad) {
        CHECK(rc == GRAY_EINVAL || (rc == GRAY_ESPACE && bad));
    } else if (cap < need) {
        CHECK(rc == GRAY_ESPACE);
    } else {
        CHECK(rc >= 0 && (size_t)rc == need && memcmp(out, want, need) == 0);
    }
    free(out);
}

static void fuzz_mc_meta(const char *s, size_t len)
{
    if (len == 0)
        return;
    check_meta_list(s, len);
    int mode = (unsigned char)s[0] & 7;
    const char *r = s + 1;
    size_t rlen = len - 1;
    gray_mc_meta_t vals[META_CAP];
    gray_mc_line_t line;
    size_t n = META_CAP, need;
    INVARIANT("an mg reply's hits lie inside what was consumed, answer requests in order (k and O"
              " name the request), and every shorter prefix is incomplete");
    int rc = gray_mc_parse_meta(r, rlen, meta_keys, sizeof meta_keys - 1, mode, vals, &n, &line,
                                &need);
    CHECK(n <= META_CAP);
    if (rc == GRAY_EAGAIN) {
        CHECK(need >= 1);
    } else if (rc >= 0) {
        CHECK((size_t)rc <= rlen);
        check_metas(r, vals, n, (size_t)rc);
        if (rlen <= 600) {
            /* each prefix ends where the buffer ends: ASan sees a read past it */
            char *buf = malloc(rc ? (size_t)rc : 1);
            for (size_t cut = 0; cut < (size_t)rc; cut++) {
                char *p = buf + (size_t)rc - cut;
                memcpy(p, r, cut);
                gray_mc_meta_t pv[META_CAP];
                size_t pn = META_CAP, pneed;
                CHECK(gray_mc_parse_meta(p, cut, meta_keys, sizeof meta_keys - 1, mode, pv, &pn,
                                         &line, &pneed) == GRAY_EAGAIN);
                CHECK(pneed >= 1 && cut + pneed <= (size_t)rc);
            }
            free(buf);
        }
        INVARIANT("round trip: the hits re-encoded as a quiet pipeline (VA/HD ... O<index>, MN) "
                  "decode to the same hits");
        /* round trip: the hits re-encoded as a quiet pipeline by position */
        if (line.kind == GRAY_MC_MN || !(mode & GRAY_META_PIPELINE)) {
            size_t room = (size_t)rc + n * 80 + 8;
            char *e = malloc(room);
            size_t m = 0;
            for (size_t i = 0; i < n; i++) {
                if (vals[i].kind == GRAY_MC_VA)
                    m += (size_t)snprintf(e + m, room - m, "VA %u", vals[i].data_len);
                else
                    m += (size_t)snprintf(e + m, room - m, "HD");
                if (vals[i].has & GRAY_META_HAS_CAS)
                    m += (size_t)snprintf(e + m, room - m, " c%llu",
                                          (unsigned long long)vals[i].cas);
                if (vals[i].has & GRAY_META_HAS_FLAGS)
                    m += (size_t)snprintf(e + m, room - m, " f%u", vals[i].flags);
                m += (size_t)snprintf(e + m, room - m, " O%u\r\n", vals[i].index);
                if (vals[i].kind == GRAY_MC_VA) {
                    memcpy(e + m, r + vals[i].data_off, vals[i].data_len);
                    m += vals[i].data_len;
                    memcpy(e + m, "\r\n", 2);
                    m += 2;
                }
            }
            memcpy(e + m, "MN\r\n", 4);
            m += 4;
            int emode = GRAY_META_PIPELINE | GRAY_META_QUIET | (mode & GRAY_META_VALUE);
            gray_mc_meta_t ev[META_CAP];
            size_t en = META_CAP, eneed;
            CHECK(gray_mc_parse_meta(e, m, meta_keys, sizeof meta_keys - 1, emode, ev, &en, &line,
                                     &eneed) == (int)m);
            CHECK(en == n);
            for (size_t i = 0; i < n; i++) {
                CHECK(ev[i].kind == vals[i].kind && ev[i].index == vals[i].index);
                CHECK(ev[i].req_off == vals[i].req_off && ev[i].req_len == vals[i].req_len);
                CHECK(ev[i].data_len == vals[i].data_len &&
                      memcmp(e + ev[i].data_off, r + vals[i].data_off, vals[i].data_len) == 0);
                CHECK(ev[i].cas == vals[i].cas && ev[i].flags == vals[i].flags);
                CHECK((ev[i].has & 3) == (vals[i].has & 3));
            }
            free(e);
        }
    }
    INVARIANT("a request built from a key list is one line per key, then mn, or GRAY_EINVAL");
    /* the reply bytes as a key list: the request built from it is one line
     * per key, then mn, inside the room the Lua side gives it */
    size_t room = rlen + (rlen + 1) / 2 * (3 + 18) + 4;
    char *q = malloc(room);
    int qn = gray_mc_meta_request(r, rlen, "v q", 3, q, room);
    if (qn >= 0) {
        size_t lines = 0, keys = 1;
        for (size_t i = 0; i + 1 < (size_t)qn; i++)
            lines += q[i] == '\r' && q[i + 1] == '\n';
        for (size_t i = 0; i < rlen; i++)
            keys += r[i] == ' ';
        CHECK(lines == keys + 1 && memcmp(q + qn - 4, "mn\r\n", 4) == 0);
    } else {
        CHECK(qn == GRAY_EINVAL);
    }
    free(q);

    INVARIANT("an mg reply decoded without keys stays inside what was consumed");
    n = META_CAP;
    rc = gray_mc_parse_meta(r, rlen, NULL, 0, mode, vals, &n, &line, &need);
    if (rc >= 0)
        for (size_t i = 0; i < n; i++)
            CHECK(vals[i].index >= i && (size_t)vals[i].data_off + vals[i].data_len <= (size_t)rc);
}

static void fuzz_mc_line(const char *s, size_t len)
{
    gray_mc_line_t line;
    INVARIANT("a reply line's message lies inside the line consumed");
    int rc = gray_mc_parse_line(s, len, &line);
    if (rc >= 0) {
        CHECK((size_t)rc <= len);
        CHECK((size_t)line.msg_off + line.msg_len + 2 <= (size_t)rc);
    }
    (void)gray_mc_key_ok(s, len);
}

/* The naive answer for a v4 address: of the entries holding it, the
 * smallest range (the longest prefix), of equal ones the later line. */
static uint32_t naive4(const gray_rentry4_t *e, size_t n, uint32_t x)
{
    const gray_rentry4_t *best = NULL;
    for (size_t i = 0; i < n; i++) {
        if (e[i].lo > x || x > e[i].hi)
            continue;
        if (best == NULL || e[i].hi - e[i].lo < best->hi - best->lo ||
            (e[i].hi - e[i].lo == best->hi - best->lo && e[i].line > best->line))
            best = &e[i];
    }
    return best ? best->target : 0;
}

/* For v6, the prefix written decides (an IPv6 CIDR may have been cut in two
 * around ::ffff:0:0/96), then the later line. */
static uint32_t naive6(const gray_rentry6_t *e, size_t n, const gray_ip_t *x)
{
    const gray_rentry6_t *best = NULL;
    for (size_t i = 0; i < n; i++) {
        if (ip_cmp(&e[i].lo, x) > 0 || ip_cmp(x, &e[i].hi) > 0)
            continue;
        if (best == NULL || e[i].prefix > best->prefix ||
            (e[i].prefix == best->prefix && e[i].line > best->line))
            best = &e[i];
    }
    return best ? best->target : 0;
}

static gray_ip_t v4_ip(uint32_t x)
{
    gray_ip_t ip = mapped_first;
    ip.b[12] = (uint8_t)(x >> 24);
    ip.b[13] = (uint8_t)(x >> 16);
    ip.b[14] = (uint8_t)(x >> 8);
    ip.b[15] = (uint8_t)x;
    return ip;
}

static uint32_t v4_value(const gray_ip_t *ip)
{
    return (uint32_t)ip->b[12] << 24 | (uint32_t)ip->b[13] << 16 | (uint32_t)ip->b[14] << 8 |
           ip->b[15];
}

static gray_ip_t ip_step(gray_ip_t ip, int up)
{
    for (int i = 15; i >= 0; i--) {
        uint8_t before = ip.b[i];
        ip.b[i] = (uint8_t)(up ? before + 1 : before - 1);
        if (up ? ip.b[i] != 0 : before != 0)
            break;
    }
    return ip;
}

#define PROBE_ENTRIES 12   /* entries whose edges are probed (each probe scans all) */

/* A ranges list from the input, with three known target names. */
static void fuzz_ranges(const char *s, size_t len)
{
    static const char names[] = "1\nv2\nv3";
    gray_ranges_stats_t st, st2;
    INVARIANT("a ranges list counts as it fills (lines, taken, bad, the room it reports)");
    int rc = gray_ranges_parse(s, len, names, sizeof names - 1, 0, NULL, 0, NULL, 0, &st);
    CHECK(rc == GRAY_OK || rc == GRAY_ESPACE);
    CHECK((rc == GRAY_OK) == (st.n4 == 0 && st.n6 == 0));
    CHECK(st.taken + st.bad + st.unknown <= st.lines && st.lines <= len);
    CHECK(st.n4 + st.n6 >= st.taken && st.n4 + st.n6 <= 2 * st.taken);
    size_t room4, room6;
    gray_ranges_room(s, len, &room4, &room6);
    CHECK(st.n4 <= room4 && st.n6 <= room6);
    for (uint32_t i = 0; i < st.bad && i < GRAY_RANGES_REPORT; i++)
        CHECK(st.bad_lines[i] >= 1 && st.bad_lines[i] <= st.lines &&
              (i == 0 || st.bad_lines[i] > st.bad_lines[i - 1]));

    INVARIANT("a ranges list fills exactly the room counted, and refuses one entry less");
    /* exactly the room counted; one less must be refused, not overrun */
    gray_rentry4_t *e4 = malloc(st.n4 ? st.n4 * sizeof *e4 : 1);
    gray_rentry6_t *e6 = malloc(st.n6 ? st.n6 * sizeof *e6 : 1);
    if (st.n4 + st.n6 > 0) {
        size_t c4 = st.n4 ? st.n4 - 1 : 0, c6 = st.n4 ? st.n6 : st.n6 - 1;
        CHECK(gray_ranges_parse(s, len, names, sizeof names - 1, 0, e4, c4, e6, c6, &st2) ==
              GRAY_ESPACE);
    }
    CHECK(gray_ranges_parse(s, len, names, sizeof names - 1, 0, e4, st.n4, e6, st.n6, &st2) ==
          GRAY_OK);
    CHECK(memcmp(&st, &st2, sizeof st) == 0);

    /* the parsed entries, kept unsorted for the naive scan */
    gray_rentry4_t *c4 = malloc(st.n4 ? st.n4 * sizeof *c4 : 1);
    gray_rentry6_t *c6 = malloc(st.n6 ? st.n6 * sizeof *c6 : 1);
    memcpy(c4, e4, st.n4 * sizeof *e4);
    memcpy(c6, e6, st.n6 * sizeof *e6);
    INVARIANT("parsed entries are ordered ranges of known targets; nothing written in IPv6 covers"
              " an IPv4 address");
    for (uint32_t i = 0; i < st.n4; i++)
        CHECK(e4[i].lo <= e4[i].hi && e4[i].target >= 1 && e4[i].target <= 3);
    for (uint32_t i = 0; i < st.n6; i++) {
        CHECK(ip_cmp(&e6[i].lo, &e6[i].hi) <= 0 && e6[i].prefix <= 128);
        /* nothing written in IPv6 covers an IPv4 address */
        CHECK(ip_cmp(&e6[i].hi, &mapped_first) < 0 || ip_cmp(&e6[i].lo, &mapped_last) > 0);
    }

    gray_rangeset_t set;
    size_t ix4 = gray_rangeset_index_len(2 * st.n4), ix6 = gray_rangeset_index_len(2 * st.n6);
    set.v4 = malloc(2 * st.n4 * sizeof *set.v4 + 1);
    set.v6 = malloc(2 * st.n6 * sizeof *set.v6 + 1);
    set.v4_index = malloc(ix4 * sizeof *set.v4_index);
    set.v6_index = malloc(ix6 * sizeof *set.v6_index);
    INVARIANT("a compiled range set is sorted runs of distinct targets with an ascending index "
              "inside its room");
    CHECK(gray_rangeset_build(&set, e4, st.n4, e6, st.n6) == GRAY_OK);
    CHECK(set.n4 <= 2 * st.n4 && set.n6 <= 2 * st.n6);
    for (uint32_t i = 1; i < set.n4; i++)
        CHECK(memcmp(set.v4[i - 1].start, set.v4[i].start, 4) < 0 &&
              set.v4[i - 1].target != set.v4[i].target);
    for (uint32_t i = 1; i < set.n6; i++)
        CHECK(ip_cmp(&set.v6[i - 1].start, &set.v6[i].start) < 0 &&
              set.v6[i - 1].target != set.v6[i].target);
    /* each index ascends to the run count within the room it was given */
    CHECK(((size_t)1 << set.v4_bits) + 1 <= ix4 && ((size_t)1 << set.v6_bits) + 1 <= ix6);
    CHECK(set.v4_skip + set.v4_bits <= 32 && set.v6_skip + set.v6_bits <= 128);
    for (size_t b = 1; b <= ((size_t)1 << set.v4_bits); b++)
        CHECK(set.v4_index[b - 1] <= set.v4_index[b]);
    for (size_t b = 1; b <= ((size_t)1 << set.v6_bits); b++)
        CHECK(set.v6_index[b - 1] <= set.v6_index[b]);
    CHECK(set.v4_index[(size_t)1 << set.v4_bits] == set.n4);
    CHECK(set.v6_index[(size_t)1 << set.v6_bits] == set.n6);

    INVARIANT("the compiled set answers as a naive scan of the parsed entries (most specific "
              "range, of equal ones the later line)");
    for (uint32_t i = 0; i < st.n4 && i < PROBE_ENTRIES; i++) {
        uint32_t probe[4] = {c4[i].lo, c4[i].hi, c4[i].lo - 1, c4[i].hi + 1};
        for (int k = 0; k < 4; k++) {
            gray_ip_t ip = v4_ip(probe[k]);
            CHECK(gray_rangeset_find(&set, &ip) == (int)naive4(c4, st.n4, probe[k]));
        }
    }
    for (uint32_t i = 0; i < st.n6 && i < PROBE_ENTRIES; i++) {
        gray_ip_t probe[4] = {c6[i].lo, c6[i].hi, ip_step(c6[i].lo, 0), ip_step(c6[i].hi, 1)};
        for (int k = 0; k < 4; k++) {
            int want = gray_ip_is_v4(&probe[k]) ? (int)naive4(c4, st.n4, v4_value(&probe[k]))
                                                : (int)naive6(c6, st.n6, &probe[k]);
            CHECK(gray_rangeset_find(&set, &probe[k]) == want);
        }
    }
    static const char *fixed[] = {"0.0.0.0", "255.255.255.255", "10.1.2.3", "::", "::1",
                                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::1",
                                  "::fffe:ffff:ffff", "::1:0:0:0"};
    for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++) {
        gray_ip_t ip;
        CHECK(gray_ip_parse(fixed[k], strlen(fixed[k]), &ip) == GRAY_OK);
        int want = gray_ip_is_v4(&ip) ? (int)naive4(c4, st.n4, v4_value(&ip))
                                      : (int)naive6(c6, st.n6, &ip);
        CHECK(gray_rangeset_find_text(&set, fixed[k], strlen(fixed[k])) == want);
    }
    CHECK(gray_rangeset_find_text(&set, s, len) >= GRAY_EADDR);

    free(set.v4);
    free(set.v6);
    free(set.v4_index);
    free(set.v6_index);
    free(c4);
    free(c6);
    free(e4);
    free(e6);
}

/* MurmurHash3_x86_32 read one byte at a time, as the algorithm is written. */
static uint32_t murmur3_bytewise(const uint8_t *p, size_t len, uint32_t seed)
{
    uint32_t h = seed, k;
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        k = p[i] | (uint32_t)p[i + 1] << 8 | (uint32_t)p[i + 2] << 16 | (uint32_t)p[i + 3] << 24;
        k *= 0xcc9e2d51u;
        k = k << 15 | k >> 17;
        k *= 0x1b873593u;
        h ^= k;
        h = h << 13 | h >> 19;
        h = h * 5 + 0xe6546b64u;
    }
    k = 0;
    for (size_t j = len; j-- > i;)
        k = k << 8 | p[j];
    if (len > i) {
        k *= 0xcc9e2d51u;
        k = k << 15 | k >> 17;
        k *= 0x1b873593u;
        h ^= k;
    }
    h ^= (uint32_t)len;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    return h ^ h >> 16;
}

static void fuzz_hash(const char *s, size_t len)
{
    INVARIANT("murmur3 equals a byte-at-a-time reading of the algorithm at any alignment; the "
              "bucket is its value modulo 10000");
    static const uint32_t seeds[] = {0, 1, 0x9747b28cu, 0xffffffffu};
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        /* every suffix starts at another alignment */
        for (size_t off = 0; off < 4 && off <= len; off++)
            CHECK(gray_murmur3_32(s + off, len - off, seeds[i]) ==
                  murmur3_bytewise((const uint8_t *)s + off, len - off, seeds[i]));
    }
    uint32_t b = gray_percent_bucket(s, len);
    CHECK(b < GRAY_PERCENT_BUCKETS && b == gray_murmur3_32(s, len, 0) % GRAY_PERCENT_BUCKETS);
}

#define DIST_FUZZ_SERVERS 4

/* The server of hash by walking the whole circle: the first point at or
 * after it, else the first point. */
static int dist_scan(const gray_dist_t *d, uint32_t hash)
{
    for (uint32_t i = 0; i < d->npoints; i++)
        if (d->points[i].value >= hash)
            return (int)d->points[i].server;
    return (int)d->points[0].server;
}

static void dist_check_hash(const gray_dist_t *d, uint32_t hash)
{
    uint32_t probes, bound = 0;
    int s = gray_dist_find(d, hash, &probes);
    CHECK(s >= 0 && (uint32_t)s < d->nservers);
    while (bound < 32 && (1ull << bound) < (uint64_t)d->npoints + 1)
        bound++;
    CHECK(probes <= bound);
    if (d->nservers > 1 && d->mode != GRAY_DIST_MODULA)
        CHECK(s == dist_scan(d, hash));
    if (d->mode == GRAY_DIST_MODULA)
        CHECK((uint32_t)s == hash % d->nservers);
}

/* A byte, then "host[:port][/?weight]" entries split at '|'. The byte plus
 * the length picks the mode (0 modula, 1 ketama, 2 ketama-weighted, modulo
 * 3), so that every cut and mutation of one seed tries another. */
static void fuzz_dist(const char *s, size_t len)
{
    static gray_dist_point_t points[DIST_FUZZ_SERVERS * 160];
    gray_dist_server_t servers[DIST_FUZZ_SERVERS];
    if (len == 0)
        return;
    int mode = (int)(((uint8_t)s[0] + len) % 3);
    size_t n = 0, start = 1;
    int bad = 0;
    for (size_t i = 1; i <= len && n < DIST_FUZZ_SERVERS; i++) {
        if (i < len && s[i] != '|')
            continue;
        const char *e = s + start, *end = s + i;
        const char *h = e;
        while (h < end && *h != ':' && *h != '/')
            h++;
        gray_dist_server_t *sv = &servers[n++];
        sv->host = e;
        sv->host_len = (uint32_t)(h - e);
        sv->port = 0;
        sv->weight = 0;
        if (h < end && *h == ':')
            for (h++; h < end && *h >= '0' && *h <= '9' && sv->port < 1000000; h++)
                sv->port = sv->port * 10 + (uint32_t)(*h - '0');
        if (end - h >= 2 && h[0] == '/' && h[1] == '?')
            for (h += 2; h < end && *h >= '0' && *h <= '9' && sv->weight < 100000000; h++)
                sv->weight = sv->weight * 10 + (uint32_t)(*h - '0');
        /* gray_dist_build's rule: libmemcached keeps a host of at most
         * GRAY_DIST_HOST_MAX bytes (the 1,244-byte host in corpus/dist) */
        if (sv->host_len == 0 || sv->host_len > GRAY_DIST_HOST_MAX
            || memchr(sv->host, '\0', sv->host_len) || sv->port > 65535)
            bad = 1;
        start = i + 1;
    }
    if (n == 0)
        return;

    INVARIANT("ketama placement: a list is refused exactly when a server is bad (empty host, "
              "longer than GRAY_DIST_HOST_MAX, a NUL, port > 65535)");
    size_t room = gray_dist_room(mode, n);
    CHECK(room <= sizeof points / sizeof points[0]);
    gray_dist_t d = {points, (uint32_t)room, 0, 0, 0};
    int rc = gray_dist_build(&d, mode, servers, n);
    if (bad) {
        CHECK(rc == GRAY_EINVAL);
        return;
    }
    CHECK(rc == GRAY_OK && d.nservers == n && d.mode == mode);
    INVARIANT("a continuum is sorted and holds the points its mode gives");
    if (mode == GRAY_DIST_MODULA)
        CHECK(d.npoints == 0);
    else if (mode == GRAY_DIST_KETAMA)
        CHECK(d.npoints == 100 * n);
    else
        CHECK(d.npoints > 0 && d.npoints % 4 == 0 && d.npoints <= room);
    for (uint32_t i = 1; i < d.npoints; i++)
        CHECK(points[i - 1].value < points[i].value
              || (points[i - 1].value == points[i].value
                  && points[i - 1].server <= points[i].server));

    INVARIANT("the O(log n) lookup answers as a linear scan of the circle does");
    /* the circle's edges, every point and just past it, and key hashes */
    dist_check_hash(&d, 0);
    dist_check_hash(&d, UINT32_MAX);
    for (uint32_t i = 0; i < d.npoints; i += 1 + d.npoints / 8) {
        dist_check_hash(&d, points[i].value);
        dist_check_hash(&d, points[i].value + 1);
    }
    /* keys: the input's prefixes of 1, 2, 4, ... bytes and the whole (a
     * key's cost is its length: suffixes would all be nearly len long) */
    for (size_t kl = 1; kl <= len; kl = kl < len && 2 * kl > len ? len : 2 * kl) {
        int k = gray_dist_server(&d, s, kl);
        CHECK(k == (n == 1 ? 0 : gray_dist_find(&d, gray_dist_hash(mode, s, kl), NULL)));
    }

    INVARIANT("a continuum one point short fails with GRAY_ESPACE");
    if (d.npoints > 0 && n <= 2) {     /* a second build: kept cheap */
        gray_dist_t small = {points, d.npoints - 1, 0, 0, 0};
        CHECK(gray_dist_build(&small, mode, servers, n) == GRAY_ESPACE);
    }
}

#define SERVERS_FUZZ_MAX 16

static int list_sep(char c)
{
    return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* A server list: items in order inside s, hosts as written and valid, and
 * the items joined by ", " parse to the same servers. */
static void fuzz_servers(const char *s, size_t len)
{
    gray_server_spec_t out[SERVERS_FUZZ_MAX], again[SERVERS_FUZZ_MAX], bad;
    INVARIANT("a refused server list names its bad item inside the text, with a message");
    int n = gray_servers_parse(s, len, out, SERVERS_FUZZ_MAX, &bad);
    if (n < 0) {
        CHECK(n == GRAY_EINVAL || n == GRAY_EADDR || n == GRAY_ERANGE || n == GRAY_EDIGITS
              || n == GRAY_ESPACE);
        CHECK((size_t)bad.item_off + bad.item_len <= len);
        CHECK(gray_server_error(n)[0] != '\0');
        return;
    }
    INVARIANT("a server list's items lie in order in the text, hold no separator, hosts are IP "
              "text as written");
    CHECK(n >= 1 && n <= SERVERS_FUZZ_MAX);
    char joined[SERVERS_FUZZ_MAX * 64];
    size_t jl = 0, end = 0;
    int nj = 0, full = 0;      /* items joined; the first that did not fit stops it */
    for (int i = 0; i < n; i++) {
        const gray_server_spec_t *p = &out[i];
        CHECK(p->item_off >= end && p->item_len > 0 && p->item_off + p->item_len <= len);
        end = p->item_off + p->item_len;
        for (size_t k = p->item_off; k < end; k++)
            CHECK(!list_sep(s[k]));
        CHECK(p->name_len <= p->item_len);
        CHECK(p->host_off >= p->item_off && p->host_off + p->host_len < p->item_off + p->name_len);
        CHECK(p->port >= 1 && p->port <= 65535);
        CHECK(p->weight >= 1 && p->weight <= GRAY_SERVER_WEIGHT_MAX);
        gray_ip_t ip;
        CHECK(gray_ip_parse(s + p->host_off, p->host_len, &ip) == GRAY_OK);
        int bracketed = p->host_off > p->item_off;
        CHECK((memchr(s + p->host_off, ':', p->host_len) != NULL) == bracketed);
        if (bracketed)
            CHECK(s[p->item_off] == '[' && s[p->host_off + p->host_len] == ']');
        full |= p->item_len + 2 > sizeof joined - jl;
        if (!full) {
            memcpy(joined + jl, s + p->item_off, p->item_len);
            jl += p->item_len;
            memcpy(joined + jl, ", ", 2);
            jl += 2;
            nj++;
        }
    }
    if (nj == 0)
        return;
    INVARIANT("round trip: the items joined by \", \" parse to the same servers");
    int m = gray_servers_parse(joined, jl, again, SERVERS_FUZZ_MAX, &bad);
    CHECK(m == nj);
    for (int i = 0; i < m; i++) {
        CHECK(again[i].port == out[i].port && again[i].weight == out[i].weight);
        CHECK(again[i].host_len == out[i].host_len
              && memcmp(joined + again[i].host_off, s + out[i].host_off, out[i].host_len) == 0);
    }
}

static void fuzz_token(const char *s, size_t len)
{
    static const char key[] = "fuzz-secret-0123456789";
    const size_t klen = sizeof key - 1;
    int64_t exp = -1;
    INVARIANT("the input itself is never a valid token (no MAC is guessed)");
    CHECK(gray_token_check("force", 5, key, klen, s, len, 0, &exp) < 0 && exp == -1);
    char buf[GRAY_TOKEN_MAX];
    size_t sl = len > GRAY_TOKEN_SUBJECT_MAX ? GRAY_TOKEN_SUBJECT_MAX : len;
    INVARIANT("round trip: a token made with the input as subject checks back to it, expires at "
              "its expiry, and fails for another purpose");
    int m = gray_token_make("force", 5, key, klen, s, sl, 1700000000, buf, sizeof buf);
    if (m < 0)
        return;
    CHECK((size_t)m == sl + 1 + 10 + 1 + GRAY_TOKEN_MAC_LEN && memcmp(buf, s, sl) == 0);
    CHECK(gray_token_check("force", 5, key, klen, buf, (size_t)m, 1699999999, &exp) == (int)sl);
    CHECK(exp == 1700000000);
    CHECK(gray_token_check("force", 5, key, klen, buf, (size_t)m, 1700000000, NULL)
          == GRAY_EEXPIRED);
    CHECK(gray_token_check("id:uid", 6, key, klen, buf, (size_t)m, 0, NULL) == GRAY_EMAC);
}

/* ---- list images ---------------------------------------------------------- */

#define IMAGE_FUZZ_PARTS 8
#define IMAGE_NAIVE_LINES 256   /* lists up to this many lines get the naive check */

typedef struct naive_line {
    const char *id;
    size_t len;
    uint32_t target;            /* 0: not taken */
} naive_line_t;

typedef struct naive_names {
    const char *name[GRAY_TARGETS_MAX];
    size_t len[GRAY_TARGETS_MAX];
    uint32_t n;
} naive_names_t;

static int naive_blank(char c, int ids)
{
    return c == ' ' || c == '\t' || c == '\r' || (ids && (c == '\v' || c == '\f'));
}

/* Fields of one line, as the list syntax reads them: up to '#', at most 3. */
static int naive_fields(const char *p, const char *eol, int ids, const char **f, size_t *fl)
{
    int n = 0;
    while (p < eol && *p != '#' && n < 3) {
        if (naive_blank(*p, ids)) {
            p++;
            continue;
        }
        f[n] = p;
        while (p < eol && *p != '#' && !naive_blank(*p, ids))
            p++;
        fl[n] = (size_t)(p - f[n]);
        n++;
    }
    return n;
}

static uint32_t naive_name(const naive_names_t *nn, const char *s, size_t len)
{
    for (uint32_t i = 0; i < nn->n; i++)
        if (nn->len[i] == len && memcmp(nn->name[i], s, len) == 0)
            return i + 1;
    return 0;
}

/* the target-name rule, written out: 1..GRAY_TARGET_NAME_MAX bytes of
 * 0x21..0x7e but '#', not "0" */
static int naive_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > GRAY_TARGET_NAME_MAX || (len == 1 && s[0] == '0'))
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e || s[i] == '#')
            return 0;
    return 1;
}

/* The naive reading of an id list: each line's id and target (0 when the
 * line is skipped); names collected first when collect is set. */
static size_t naive_ids(const char *text, size_t len, int collect, uint32_t unknown_index,
                        naive_names_t *nn, naive_line_t *out, size_t cap, uint32_t *bad,
                        uint32_t *unknown)
{
    static const char *given[] = {"1", "v2", "v3"};
    nn->n = 0;
    if (!collect) {
        for (int i = 0; i < 3; i++) {
            nn->name[nn->n] = given[i];
            nn->len[nn->n++] = strlen(given[i]);
        }
    } else {
        nn->name[0] = "1";
        nn->len[nn->n++] = 1;
        for (const char *p = text, *end = text + len; p < end;) {
            const char *nl = memchr(p, '\n', (size_t)(end - p)), *eol = nl ? nl : end;
            const char *f[3];
            size_t fl[3];
            if (naive_fields(p, eol, 1, f, fl) == 2 && naive_name_ok(f[1], fl[1]) &&
                !naive_name(nn, f[1], fl[1]) && nn->n < GRAY_TARGETS_MAX) {
                nn->name[nn->n] = f[1];
                nn->len[nn->n++] = fl[1];
            }
            p = nl ? nl + 1 : end;
        }
    }
    size_t n = 0;
    *bad = *unknown = 0;
    for (const char *p = text, *end = text + len; p < end && n < cap;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *eol = nl ? nl : end;
        const char *f[3];
        size_t fl[3];
        int k = naive_fields(p, eol, 1, f, fl);
        p = nl ? nl + 1 : end;
        out[n].id = NULL;
        out[n].len = 0;
        out[n].target = 0;
        if (k == 0) {
            n++;
            continue;
        }
        if (k == 3 || fl[0] > GRAY_ID_MAX || (k == 2 && !naive_name_ok(f[1], fl[1]))) {
            (*bad)++;
        } else {
            uint32_t t = k == 2 ? naive_name(nn, f[1], fl[1]) : 1;
            if (t == 0) {
                (*unknown)++;
                t = unknown_index;
            }
            out[n].target = t;
        }
        out[n].id = f[0];
        out[n].len = fl[0];
        n++;
    }
    return n;
}

/* The last taken line with this id decides; 0 when none. */
static int naive_find(const naive_line_t *l, size_t n, const char *id, size_t len)
{
    int t = 0;
    for (size_t i = 0; i < n; i++)
        if (l[i].target && l[i].len == len && bytes_eq(l[i].id, id, len))
            t = (int)l[i].target;
    return t;
}

/* A flipped byte or a cut: a verifying open refuses it, a plain one may
 * take it (a byte in the body), and then lookups must stay in bounds. */
static void image_damage(const uint8_t *img, size_t size, size_t at, int ids,
                         const char *probe, size_t plen)
{
    uint64_t *copy = malloc(size + 8);
    memcpy(copy, img, size);
    ((uint8_t *)copy)[at % size] ^= (uint8_t)(1u << (at % 8));
    gray_image_t *h;
    INVARIANT("a flipped byte or a cut is refused by a verifying open; an image that still opens "
              "answers lookups without a fault");
    CHECK(gray_image_open_mem(copy, size, GRAY_IMAGE_VERIFY, &h) < 0);
    if (gray_image_open_mem(copy, size, 0, &h) == GRAY_OK) {
        if (ids) {
            CHECK(gray_image_find_id(h, probe, plen) >= 0);
        } else {
            gray_ip_t ip;
            for (uint32_t x = 0; x < 64; x++) {
                ip = v4_ip(x * 0x04000001u);
                CHECK(gray_image_find_ip(h, &ip) >= 0);
                memset(ip.b, (int)(x * 4), 16);
                CHECK(gray_image_find_ip(h, &ip) >= 0);
            }
        }
        gray_image_close(h);
    }
    memcpy(copy, img, size);
    CHECK(gray_image_open_mem(copy, at % size, 0, &h) < 0);
    free(copy);
}

/* The first byte: bit 0 the kind (ids, ranges), bit 1 collected names,
 * bit 2 lines naming an unknown target kept (index 4, past the names);
 * then parts split at '|'. */
static void fuzz_image(const char *s, size_t len)
{
    if (len == 0)
        return;
    int ids = !(s[0] & 1), collect = (s[0] & 2) != 0;
    uint32_t unknown_index = (s[0] & 4) ? 4 : 0;
    static const char names[] = "1\nv2\nv3";
    gray_image_part_t parts[IMAGE_FUZZ_PARTS];
    size_t nparts = 0, start = 1;
    for (size_t i = 1; i <= len && nparts < IMAGE_FUZZ_PARTS; i++) {
        if (i == len || s[i] == '|' || nparts == IMAGE_FUZZ_PARTS - 1) {
            if (nparts == IMAGE_FUZZ_PARTS - 1)
                i = len;   /* the last part takes the rest */
            parts[nparts].buf = s + start;
            parts[nparts].len = i - start;
            nparts++;
            start = i + 1;
        }
    }
    /* the join, done naively */
    char *text = malloc(len + IMAGE_FUZZ_PARTS + 1);
    size_t tlen = 0;
    for (size_t i = 0; i < nparts; i++) {
        memcpy(text + tlen, parts[i].buf, parts[i].len);
        tlen += parts[i].len;
        if (parts[i].len > 0 && parts[i].buf[parts[i].len - 1] != '\n' && nparts > 1)
            text[tlen++] = '\n';
    }

    void *img;
    size_t size;
    gray_image_stats_t st;
    INVARIANT("a list image builds, counts its lines, opens verified and reports what it was "
              "built with");
    int rc = gray_image_build(ids ? GRAY_IMAGE_IDS : GRAY_IMAGE_RANGES, parts, nparts,
                              collect ? NULL : names, collect ? 0 : sizeof names - 1,
                              unknown_index, 42, &img, &size, &st);
    CHECK(rc == GRAY_OK && st.bytes == size && size % 8 == 0);
    /* a line naming an unknown target is skipped, or taken with the index */
    CHECK(st.taken + st.bad + (unknown_index ? 0 : st.unknown) <= st.lines);
    CHECK(st.entries <= st.taken && (!unknown_index || st.unknown <= st.taken));
    gray_image_t *h;
    CHECK(gray_image_open_mem(img, size, GRAY_IMAGE_VERIFY, &h) == GRAY_OK);
    CHECK(gray_image_version(h) == 42);
    CHECK(gray_image_kind(h) == (ids ? GRAY_IMAGE_IDS : GRAY_IMAGE_RANGES));
    gray_image_stats_t info;
    gray_image_info(h, &info);
    CHECK(info.entries == st.entries && info.bad == st.bad && info.lines == st.lines &&
          info.bytes == size && info.ntargets == st.ntargets);
    size_t nlen;
    const char *first = gray_image_target(h, 1, &nlen);
    CHECK(first != NULL && nlen == 1 && first[0] == '1');
    CHECK(gray_image_target(h, st.ntargets + 1, &nlen) == NULL);

    if (ids) {
        CHECK(gray_image_find_ip(h, &mapped_first) == GRAY_EINVAL);
        INVARIANT("an id image finds what a naive scan of the joined lines says (the last good "
                  "line wins)");
        naive_line_t *lines = malloc((tlen + 1) * sizeof *lines);
        naive_names_t nn;
        uint32_t bad, unknown;
        size_t n = naive_ids(text, tlen, collect, unknown_index, &nn, lines, tlen + 1, &bad,
                             &unknown);
        CHECK(n == st.lines && bad == st.bad && unknown == st.unknown);
        CHECK(nn.n == st.ntargets);
        if (n <= IMAGE_NAIVE_LINES) {
            uint32_t distinct = 0;
            for (size_t i = 0; i < n; i++) {
                if (lines[i].id == NULL)
                    continue;
                int want = naive_find(lines, n, lines[i].id, lines[i].len);
                CHECK(gray_image_find_id(h, lines[i].id, lines[i].len) == want);
                if (lines[i].target && naive_find(lines, i, lines[i].id, lines[i].len) == 0)
                    distinct++;
                /* an id one byte shorter is listed or not, as the scan says */
                if (lines[i].len > 1)
                    CHECK(gray_image_find_id(h, lines[i].id, lines[i].len - 1) ==
                          naive_find(lines, n, lines[i].id, lines[i].len - 1));
            }
            CHECK(distinct == st.entries);
        }
        CHECK(gray_image_find_id(h, s, len) == naive_find(lines, n, s, len));
        CHECK(gray_image_find_id(h, "", 0) == 0);
        free(lines);
    } else {
        CHECK(gray_image_find_id(h, "x", 1) == GRAY_EINVAL);
        INVARIANT("a ranges image answers as the naive scan of gray_ranges_parse()'s entries");
        /* against the entries the ranges parser reads from the same text */
        const char *nm = names;
        size_t nm_len = sizeof names - 1;
        static char collected[GRAY_TARGETS_MAX * (GRAY_TARGET_NAME_MAX + 1)];
        if (collect) {
            size_t at = 0;
            for (uint32_t k = 1; k <= st.ntargets; k++) {
                const char *t = gray_image_target(h, k, &nlen);
                if (k > 1)
                    collected[at++] = '\n';
                memcpy(collected + at, t, nlen);
                at += nlen;
            }
            nm = collected;
            nm_len = at;
        }
        gray_ranges_stats_t rs;
        size_t room4, room6;
        gray_ranges_room(text, tlen, &room4, &room6);
        gray_rentry4_t *e4 = malloc(room4 ? room4 * sizeof *e4 : 1);
        gray_rentry6_t *e6 = malloc(room6 ? room6 * sizeof *e6 : 1);
        CHECK(gray_ranges_parse(text, tlen, nm, nm_len, unknown_index, e4, room4, e6, room6,
                                &rs) == GRAY_OK);
        CHECK(rs.taken == st.taken && rs.bad == st.bad && rs.unknown == st.unknown &&
              rs.lines == st.lines);
        for (uint32_t i = 0; i < rs.n4 && i < PROBE_ENTRIES; i++) {
            uint32_t probe[4] = {e4[i].lo, e4[i].hi, e4[i].lo - 1, e4[i].hi + 1};
            for (int k = 0; k < 4; k++) {
                gray_ip_t ip = v4_ip(probe[k]);
                CHECK(gray_image_find_ip(h, &ip) == (int)naive4(e4, rs.n4, probe[k]));
            }
        }
        for (uint32_t i = 0; i < rs.n6 && i < PROBE_ENTRIES; i++) {
            gray_ip_t probe[4] = {e6[i].lo, e6[i].hi, ip_step(e6[i].lo, 0), ip_step(e6[i].hi, 1)};
            for (int k = 0; k < 4; k++) {
                int want = gray_ip_is_v4(&probe[k]) ? (int)naive4(e4, rs.n4, v4_value(&probe[k]))
                                                    : (int)naive6(e6, rs.n6, &probe[k]);
                CHECK(gray_image_find_ip(h, &probe[k]) == want);
            }
        }
        CHECK(gray_image_find_text(h, s, len) >= GRAY_EADDR);
        free(e4);
        free(e6);
    }
    gray_image_close(h);
    image_damage(img, size, (size_t)gray_murmur3_32(s, len, 7), ids, s, len);

    INVARIANT("the raw input opened as an image is refused without a fault");
    /* the raw input as an image: refused, without a fault */
    uint64_t *raw = malloc(len + 8);
    memcpy(raw, s, len);
    CHECK(gray_image_open_mem(raw, len, 0, &h) < 0);
    free(raw);
    gray_image_free_buf(img);
    free(text);
}

/* ---- the targets ----------------------------------------------------------- */

static void fuzz_xff(const char *s, size_t len)
{
    fuzz_walk(s, len, 0);
}

static void fuzz_forwarded(const char *s, size_t len)
{
    fuzz_walk(s, len, 1);
}

/* A ramp schedule: steps start at 0, rise strictly in time, never fall in
 * share, stay in bounds; written back as text they parse to the same
 * steps; as a value ("<start> <schedule>") it parses alike, its error
 * offset moved by the start's; the step in force never goes back as time
 * goes on and is never a step still to come. */
static void fuzz_ramp(const char *s, size_t len)
{
    static gray_ramp_step_t steps[GRAY_RAMP_STEPS_MAX], again[GRAY_RAMP_STEPS_MAX];
    size_t err_at = (size_t)-1;
    int n = gray_ramp_parse(s, len, steps, GRAY_RAMP_STEPS_MAX, &err_at);

    char *value = malloc(len + 3);
    memcpy(value, "7 ", 2);
    memcpy(value + 2, s, len);
    int64_t start = 0;
    size_t verr = (size_t)-1;
    int vn = gray_ramp_value_parse(value, len + 2, &start, again, GRAY_RAMP_STEPS_MAX, &verr);
    free(value);
    int as_value = len + 2 <= GRAY_RAMP_TEXT_MAX;
    INVARIANT("a schedule parses as a value's the same way (a value too long is refused)");
    CHECK(as_value ? vn == n : vn == GRAY_ERANGE);
    if (n < 0) {
        INVARIANT("a refusal names a step inside the text");
        CHECK(err_at <= len);
        if (as_value)
            CHECK(verr == err_at + 2);
        return;
    }
    CHECK(!as_value || start == 7);
    INVARIANT("steps: 1..cap, the first at 0, offsets rising, shares never falling, in bounds");
    CHECK(n >= 1 && n <= GRAY_RAMP_STEPS_MAX && steps[0].at == 0);
    for (int i = 0; i < n; i++) {
        CHECK(steps[i].share <= GRAY_PERCENT_BUCKETS && steps[i].at <= GRAY_RAMP_AT_MAX);
        CHECK(!as_value || (again[i].at == steps[i].at && again[i].share == steps[i].share));
        if (i > 0)
            CHECK(steps[i].at > steps[i - 1].at && steps[i].share >= steps[i - 1].share);
    }
    INVARIANT("the steps written back parse to the same steps");
    static char text[GRAY_RAMP_STEPS_MAX * 32];
    size_t tl = 0;
    for (int i = 0; i < n; i++)
        tl += (size_t)snprintf(text + tl, sizeof text - tl, i ? " %u.%02u%%@%us" : "%u.%02u%%",
                               steps[i].share / 100, steps[i].share % 100, steps[i].at);
    int m = tl <= GRAY_RAMP_TEXT_MAX ? gray_ramp_parse(text, tl, again, GRAY_RAMP_STEPS_MAX, NULL)
                                     : n;
    CHECK(m == n);
    for (int i = 0; tl <= GRAY_RAMP_TEXT_MAX && i < n; i++)
        CHECK(again[i].at == steps[i].at && again[i].share == steps[i].share);
    INVARIANT("the step in force never goes back in time and has begun");
    size_t last = 0;
    for (int64_t t = -1; t <= (int64_t)steps[n - 1].at + 1;
         t += 1 + (int64_t)steps[n - 1].at / 64) {
        size_t i = gray_ramp_at(steps, (size_t)n, t);
        CHECK(i < (size_t)n && i >= last && (t < 0 || steps[i].at <= (uint64_t)t));
        CHECK(i + 1 == (size_t)n || (int64_t)steps[i + 1].at > t);
        last = i;
    }
}

void fuzz_image_diff(const char *s, size_t len);   /* image_diff.c */

/* one per parser; the name is its corpus directory, csrc/test/corpus/<name> */
static const struct {
    const char *name;
    void (*run)(const char *s, size_t len);
} targets[] = {
    {"ip", fuzz_ip},                /* IP text: parse, format, canonical, CIDR */
    {"ipset", fuzz_ipset},          /* CIDR lists merged into a set */
    {"xff", fuzz_xff},              /* the X-Forwarded-For walk */
    {"forwarded", fuzz_forwarded},  /* the Forwarded walk */
    {"client", fuzz_client_key},    /* peer, X-Real-IP, XFF, Forwarded together */
    {"mc_get", fuzz_mc_get},        /* get/gets replies */
    {"mc_line", fuzz_mc_line},      /* one-line replies, key check */
    {"mc_meta", fuzz_mc_meta},      /* mg replies and requests */
    {"ranges", fuzz_ranges},        /* the ranges-list compiler */
    {"image", fuzz_image},          /* list images: id-list and ranges compilers */
    {"image_diff", fuzz_image_diff}, /* both compilers against main's (csrc/test/ref) */
    {"hash", fuzz_hash},            /* murmur3 and the percentage bucket */
    {"dist", fuzz_dist},            /* ketama placement */
    {"servers", fuzz_servers},      /* server lists */
    {"token", fuzz_token},          /* the signed-token check */
    {"cli_args", fuzz_cli_args},    /* gray-admin's argument parsers */
    {"cli_import", fuzz_cli_import}, /* gray-admin's import lines */
    {"ramp", fuzz_ramp},            /* timed ramp schedules and values */
};

const char *fuzz_invariant = "?";
static const char *fuzz_current = "?";

void fuzz_check_failed(const char *cond, const char *file, int line)
{
    fprintf(stderr, "\nfuzz target %s: invariant broken: %s\n    CHECK(%s) failed at %s:%d\n",
            fuzz_current, fuzz_invariant, cond, file, line);
    fflush(stderr);
    __builtin_trap();
}

size_t fuzz_target_count(void)
{
    return sizeof targets / sizeof targets[0];
}

const char *fuzz_target_name(size_t i)
{
    return i < fuzz_target_count() ? targets[i].name : NULL;
}

int fuzz_target_find(const char *name)
{
    for (size_t i = 0; name && i < fuzz_target_count(); i++)
        if (strcmp(targets[i].name, name) == 0)
            return (int)i;
    return -1;
}

void fuzz_run(size_t i, const uint8_t *data, size_t size)
{
    char *s = malloc(size ? size : 1);   /* exactly size bytes: overreads are caught */
    memcpy(s, data, size);
    fuzz_current = targets[i].name;
    fuzz_invariant = "?";
    targets[i].run(s, size);
    free(s);
}

#ifdef FUZZ_LIBFUZZER
/* libFuzzer: one target per run, named by the environment (tools/fuzz.lua) */
static int chosen = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    chosen = fuzz_target_find(getenv("FUZZ_TARGET"));
    if (chosen < 0) {
        fprintf(stderr, "fuzz: set FUZZ_TARGET to one of:");
        for (size_t i = 0; i < fuzz_target_count(); i++)
            fprintf(stderr, " %s", targets[i].name);
        fprintf(stderr, "\n");
        exit(2);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_run((size_t)chosen, data, size);
    return 0;
}
#endif
