/* dist.c - server placement: libmemcached 1.1's key -> server maps (modula,
 * ketama, weighted ketama), so the router and every libmemcached client
 * (gray-admin, PHP, pylibmc) put a key on the same server. */
#include <string.h>

#include "gray.h"
#include "internal.h"

/* libmemcached's MEMCACHED_POINTS_PER_SERVER(_KETAMA) */
#define KETAMA_POINTS          100   /* per server, one-at-a-time hash each */
#define KETAMA_WEIGHTED_POINTS 160   /* per server of average weight, 4 per MD5 */
#define POINT_NAME_MAX (GRAY_DIST_HOST_MAX + sizeof ":65535-4294967295")

/* ---- MD5 (RFC 1321) ------------------------------------------------------ */

/* floor(2^32 * |sin(i + 1)|) */
static const uint32_t md5_k[64] = {
    0xd76aa478u, 0xe8c7b756u, 0x242070dbu, 0xc1bdceeeu,
    0xf57c0fafu, 0x4787c62au, 0xa8304613u, 0xfd469501u,
    0x698098d8u, 0x8b44f7afu, 0xffff5bb1u, 0x895cd7beu,
    0x6b901122u, 0xfd987193u, 0xa679438eu, 0x49b40821u,
    0xf61e2562u, 0xc040b340u, 0x265e5a51u, 0xe9b6c7aau,
    0xd62f105du, 0x02441453u, 0xd8a1e681u, 0xe7d3fbc8u,
    0x21e1cde6u, 0xc33707d6u, 0xf4d50d87u, 0x455a14edu,
    0xa9e3e905u, 0xfcefa3f8u, 0x676f02d9u, 0x8d2a4c8au,
    0xfffa3942u, 0x8771f681u, 0x6d9d6122u, 0xfde5380cu,
    0xa4beea44u, 0x4bdecfa9u, 0xf6bb4b60u, 0xbebfbc70u,
    0x289b7ec6u, 0xeaa127fau, 0xd4ef3085u, 0x04881d05u,
    0xd9d4d039u, 0xe6db99e5u, 0x1fa27cf8u, 0xc4ac5665u,
    0xf4292244u, 0x432aff97u, 0xab9423a7u, 0xfc93a039u,
    0x655b59c3u, 0x8f0ccc92u, 0xffeff47du, 0x85845dd1u,
    0x6fa87e4fu, 0xfe2ce6e0u, 0xa3014314u, 0x4e0811a1u,
    0xf7537e82u, 0xbd3af235u, 0x2ad7d2bbu, 0xeb86d391u,
};

/* left rotations: four per round */
static const uint8_t md5_s[16] = {7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21};

static inline uint32_t rotl(uint32_t x, unsigned r)
{
    return x << r | x >> (32 - r);
}

static inline uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void md5_block(uint32_t st[4], const unsigned char *p)
{
    uint32_t m[16];
    for (unsigned i = 0; i < 16; i++)
        m[i] = le32(p + 4 * i);

    uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
    for (unsigned i = 0; i < 64; i++) {
        uint32_t f;
        unsigned g;
        switch (i >> 4) {
        case 0: f = (b & c) | (~b & d); g = i; break;
        case 1: f = (d & b) | (~d & c); g = (5 * i + 1) & 15; break;
        case 2: f = b ^ c ^ d; g = (3 * i + 5) & 15; break;
        default: f = c ^ (b | ~d); g = (7 * i) & 15; break;
        }
        uint32_t t = d;
        d = c;
        c = b;
        b = b + rotl(a + f + md5_k[i] + m[g], md5_s[(i >> 4) * 4 + (i & 3)]);
        a = t;
    }
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
}

void gray_md5(const char *data, size_t len, uint8_t digest[16])
{
    uint32_t st[4] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u};
    const unsigned char *p = (const unsigned char *)data;
    size_t left = len;

    for (; left >= 64; p += 64, left -= 64)
        md5_block(st, p);

    /* the tail, 0x80, zeros and the bit length: one block or two */
    unsigned char tail[128];
    memset(tail, 0, sizeof tail);
    if (left)
        memcpy(tail, p, left);
    tail[left] = 0x80;
    size_t blocks = left < 56 ? 1 : 2;
    uint64_t bits = (uint64_t)len << 3;
    for (unsigned i = 0; i < 8; i++)
        tail[blocks * 64 - 8 + i] = (unsigned char)(bits >> (8 * i));
    md5_block(st, tail);
    if (blocks == 2)
        md5_block(st, tail + 64);

    for (unsigned i = 0; i < 4; i++) {
        digest[4 * i] = (uint8_t)st[i];
        digest[4 * i + 1] = (uint8_t)(st[i] >> 8);
        digest[4 * i + 2] = (uint8_t)(st[i] >> 16);
        digest[4 * i + 3] = (uint8_t)(st[i] >> 24);
    }
}

/* ---- the continuum --------------------------------------------------------- */

uint32_t gray_dist_hash(int mode, const char *key, size_t len)
{
    if (mode == GRAY_DIST_KETAMA_WEIGHTED) {
        /* libhashkit's MD5 key hash: the digest's first 4 bytes, little-endian */
        uint8_t md[16];
        gray_md5(key, len, md);
        return le32(md);
    }
    return gray_hash_oaat(key, len);
}

size_t gray_dist_room(int mode, size_t nservers)
{
    if (nservers == 0 || nservers > GRAY_DIST_SERVERS_MAX)
        return 0;
    switch (mode) {
    case GRAY_DIST_MODULA: return 0;
    case GRAY_DIST_KETAMA: return nservers * KETAMA_POINTS;
    /* the weighted shares are floored, so they never sum above this (see
     * weighted_points()) */
    case GRAY_DIST_KETAMA_WEIGHTED: return nservers * KETAMA_WEIGHTED_POINTS;
    default: return 0;
    }
}

/* Decimal digits of v at p; returns the end. */
static char *put_u32(char *p, uint32_t v)
{
    char tmp[10];
    unsigned n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* A point's name, as libmemcached hashes it: "host-i" on the default port,
 * "host:port-i" on any other. */
static size_t point_name(char *buf, const gray_dist_server_t *s, uint32_t port, uint32_t i)
{
    char *p = buf;
    memcpy(p, s->host, s->host_len);
    p += s->host_len;
    if (port != GRAY_DIST_DEFAULT_PORT) {
        *p++ = ':';
        p = put_u32(p, port);
    }
    *p++ = '-';
    p = put_u32(p, i);
    return (size_t)(p - buf);
}

/* A server's points in the weighted continuum, computed as libmemcached's
 * update_continuum() does, step by step in float (each assignment rounds to
 * float, as its expression does), so that every share floors the same way:
 * floor(weight / total * 160 / 4 * servers + 1e-10) * 4. The shares' floors
 * sum to at most 160 * servers (float errors are far below 1 point at
 * GRAY_DIST_SERVERS_MAX). */
static uint32_t weighted_points(uint32_t weight, uint64_t total, size_t nservers)
{
    float pct = (float)weight / (float)total;
    float x = pct * (float)KETAMA_WEIGHTED_POINTS;
    x = x / 4.0f;
    x = x * (float)nservers;
    x = x + 0.0000000001f;
    return (uint32_t)x * 4;     /* x >= 0: truncation is floor(), without libm */
}

static inline int point_less(const gray_dist_point_t *a, const gray_dist_point_t *b)
{
    return a->value < b->value || (a->value == b->value && a->server < b->server);
}

/* Heapsort by (value, server), libmemcached's order: equal points of one
 * server are interchangeable, so the result is the same whatever the sort.
 * Not inlined, so that make fuzz can leave it out of the coverage tracing
 * (csrc/test/fuzz-nocov.txt): called once per build. */
__attribute__((noinline)) static void sort_points(gray_dist_point_t *a, size_t n)
{
    for (size_t end = n, start = n / 2; end > 1;) {
        size_t root;
        if (start > 0) {
            root = --start;
        } else {
            gray_dist_point_t t = a[0];
            a[0] = a[--end];
            a[end] = t;
            root = 0;
        }
        for (;;) {
            size_t child = 2 * root + 1;
            if (child >= end)
                break;
            if (child + 1 < end && point_less(&a[child], &a[child + 1]))
                child++;
            if (!point_less(&a[root], &a[child]))
                break;
            gray_dist_point_t t = a[root];
            a[root] = a[child];
            a[child] = t;
            root = child;
        }
    }
}

int gray_dist_build(gray_dist_t *d, int mode, const gray_dist_server_t *servers, size_t n)
{
    if (n == 0 || n > GRAY_DIST_SERVERS_MAX)
        return GRAY_EINVAL;
    if (mode != GRAY_DIST_MODULA && mode != GRAY_DIST_KETAMA && mode != GRAY_DIST_KETAMA_WEIGHTED)
        return GRAY_EINVAL;

    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const gray_dist_server_t *s = &servers[i];
        /* libmemcached keeps the name as a C string of < NI_MAXHOST bytes */
        if (s->host_len == 0 || s->host_len > GRAY_DIST_HOST_MAX
            || memchr(s->host, '\0', s->host_len) != NULL || s->port > 65535)
            return GRAY_EINVAL;
        total += s->weight ? s->weight : 1;      /* 0 is libmemcached's "default": 1 */
    }

    size_t need = 0;
    if (mode == GRAY_DIST_KETAMA) {
        need = n * KETAMA_POINTS;
    } else if (mode == GRAY_DIST_KETAMA_WEIGHTED) {
        for (size_t i = 0; i < n; i++)
            need += weighted_points(servers[i].weight ? servers[i].weight : 1, total, n);
    }
    if (need > d->room)
        return GRAY_ESPACE;

    char name[POINT_NAME_MAX];
    uint32_t np = 0;
    for (size_t i = 0; i < n && mode != GRAY_DIST_MODULA; i++) {
        const gray_dist_server_t *s = &servers[i];
        uint32_t port = s->port ? s->port : GRAY_DIST_DEFAULT_PORT;
        if (mode == GRAY_DIST_KETAMA) {
            for (uint32_t k = 0; k < KETAMA_POINTS; k++) {
                size_t len = point_name(name, s, port, k);
                d->points[np].value = gray_hash_oaat(name, len);
                d->points[np++].server = (uint32_t)i;
            }
        } else {
            /* each name's MD5 gives 4 points, its 4 little-endian words */
            uint32_t hashes = weighted_points(s->weight ? s->weight : 1, total, n) / 4;
            for (uint32_t k = 0; k < hashes; k++) {
                uint8_t md[16];
                size_t len = point_name(name, s, port, k);
                gray_md5(name, len, md);
                for (unsigned w = 0; w < 4; w++) {
                    d->points[np].value = le32(md + 4 * w);
                    d->points[np++].server = (uint32_t)i;
                }
            }
        }
    }
    sort_points(d->points, np);
    d->npoints = np;
    d->nservers = (uint32_t)n;
    d->mode = mode;
    return GRAY_OK;
}

int gray_dist_find(const gray_dist_t *d, uint32_t hash, uint32_t *probes)
{
    uint32_t steps = 0;
    int server;
    if (d->nservers <= 1) {
        server = d->nservers ? 0 : GRAY_EINVAL;
    } else if (d->mode == GRAY_DIST_MODULA) {
        server = (int)(hash % d->nservers);
    } else if (d->npoints == 0) {
        server = GRAY_EINVAL;
    } else {
        /* the first point at or after hash, round the circle past the last */
        size_t lo = 0, hi = d->npoints;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            steps++;
            if (d->points[mid].value < hash)
                lo = mid + 1;
            else
                hi = mid;
        }
        server = (int)d->points[lo == d->npoints ? 0 : lo].server;
    }
    if (probes)
        *probes = steps;
    return server;
}

int gray_dist_server(const gray_dist_t *d, const char *key, size_t len)
{
    /* libmemcached skips the hash for a single server */
    if (d->nservers == 1)
        return 0;
    return gray_dist_find(d, gray_dist_hash(d->mode, key, len), NULL);
}

/* ---- the server list ------------------------------------------------------ */

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

static inline int is_list_sep(char c)
{
    return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Decimal digits p[0..n) into *v, at most max; 0 or a code. */
static int parse_u32(const char *p, size_t n, uint32_t max, uint32_t *v, int code)
{
    uint32_t x = 0;
    if (n == 0)
        return code;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return code;
        x = x * 10 + (uint32_t)(p[i] - '0');
        if (x > max)
            return code;
    }
    *v = x;
    return 0;
}

/* One item s[0..len) into sp (offsets relative to s); GRAY_OK or a code. */
static int parse_server(const char *s, size_t len, gray_server_spec_t *sp)
{
    size_t name_len = len;
    uint32_t weight = 1;
    const char *slash = memchr(s, '/', len);
    if (slash != NULL) {
        name_len = (size_t)(slash - s);
        size_t wlen = len - name_len;
        if (wlen < 3 || slash[1] != '?'
            || parse_u32(slash + 2, wlen - 2, GRAY_SERVER_WEIGHT_MAX, &weight, GRAY_EDIGITS)
            || weight == 0)
            return GRAY_EDIGITS;
    }
    size_t host_off, host_len, colon;
    int bracketed = name_len > 0 && s[0] == '[';
    if (bracketed) {
        const char *close = memchr(s, ']', name_len);
        if (close == NULL)
            return GRAY_EADDR;
        host_off = 1;
        host_len = (size_t)(close - s) - 1;
        colon = (size_t)(close - s) + 1;
        if (colon >= name_len || s[colon] != ':')
            return GRAY_EINVAL;
    } else {
        colon = name_len;
        while (colon > 0 && s[colon - 1] != ':')
            colon--;
        if (colon == 0)
            return GRAY_EINVAL;
        colon--;
        host_off = 0;
        host_len = colon;
    }
    uint32_t port = 0;
    if (parse_u32(s + colon + 1, name_len - colon - 1, 65535, &port, GRAY_ERANGE) || port == 0)
        return GRAY_ERANGE;
    gray_ip_t ip;
    const char *host = s + host_off;
    if (host_len == 0 || gray_ip_parse(host, host_len, &ip) != GRAY_OK
        || (memchr(host, ':', host_len) != NULL) != bracketed)
        return GRAY_EADDR;
    sp->name_len = (uint32_t)name_len;
    sp->host_off = (uint32_t)host_off;
    sp->host_len = (uint32_t)host_len;
    sp->port = port;
    sp->weight = weight;
    return GRAY_OK;
}

int gray_servers_parse(const char *s, size_t len, gray_server_spec_t *out, size_t cap,
                       gray_server_spec_t *bad)
{
    size_t n = 0, i = 0;
    memset(bad, 0, sizeof *bad);
    for (;;) {
        while (i < len && is_list_sep(s[i]))
            i++;
        if (i == len)
            break;
        size_t start = i;
        while (i < len && !is_list_sep(s[i]))
            i++;
        gray_server_spec_t sp;
        sp.item_off = (uint32_t)start;
        sp.item_len = (uint32_t)(i - start);
        int rc = parse_server(s + start, i - start, &sp);
        if (rc == GRAY_OK && n == cap)
            rc = GRAY_ESPACE;
        if (rc != GRAY_OK) {
            bad->item_off = sp.item_off;
            bad->item_len = sp.item_len;
            return rc;
        }
        sp.host_off += (uint32_t)start;
        out[n++] = sp;
    }
    return n ? (int)n : GRAY_EINVAL;
}

const char *gray_server_error(int code)
{
    switch (code) {
    case GRAY_EINVAL: return "expected host:port, IPv6 as [addr]:port";
    case GRAY_EADDR:  return "the host must be an IP address, IPv6 as [addr]:port";
    case GRAY_ERANGE: return "the port must be 1 to 65535";
    case GRAY_EDIGITS: return "bad weight: expected host:port/?N, N 1 to "
                              STRINGIFY(GRAY_SERVER_WEIGHT_MAX);
    case GRAY_ESPACE: return "too many servers";
    default:          return gray_strerror(code);
    }
}
