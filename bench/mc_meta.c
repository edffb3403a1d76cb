/* mc_meta.c - get vs mg: the bytes on the wire and the C decode of one
 * lookup, for 1 and 3 keys (issue 16's miss path: an address and 2 ids).
 *
 *   build/mc-meta-bench            prints the bytes each way for every case
 *   build/mc-meta-bench CASE N     decodes CASE's reply N times (for
 *                                  callgrind: bench/mc_meta.sh takes the
 *                                  difference of N and 2N runs)
 *
 * The requests and replies are what memcached 1.6 sends (checked by
 * spec/memcached_spec.lua against the real server). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../csrc/gray.h"

#define K1 "203.0.113.7"
#define K2 "uid:8412937"
#define K3 "dev:4f9a2c71e0"

struct bench_case {
    const char *name;
    const char *req;
    const char *reply;
    const char *keys;           /* as the decoder is given them */
    int meta;                   /* 0: get decoder; else the GRAY_META_* mode + 8 */
};

static const struct bench_case cases[] = {
    {"get-1-hit", "get " K1 "\r\n", "VALUE " K1 " 0 1\r\n1\r\nEND\r\n", K1, 0},
    {"mg-1-hit", "mg " K1 " v\r\n", "VA 1\r\n1\r\n", K1, 8 + GRAY_META_VALUE},
    {"get-1-miss", "get " K1 "\r\n", "END\r\n", K1, 0},
    {"mg-1-miss", "mg " K1 " v\r\n", "EN\r\n", K1, 8 + GRAY_META_VALUE},
    {"get-3-hit", "get " K1 " " K2 " " K3 "\r\n",
     "VALUE " K1 " 0 1\r\n1\r\nVALUE " K2 " 0 2\r\nv2\r\nVALUE " K3 " 0 2\r\nv3\r\nEND\r\n",
     K1 " " K2 " " K3, 0},
    {"mg-3-hit", "mg " K1 " v q O0\r\nmg " K2 " v q O1\r\nmg " K3 " v q O2\r\nmn\r\n",
     "VA 1 O0\r\n1\r\nVA 2 O1\r\nv2\r\nVA 2 O2\r\nv3\r\nMN\r\n", K1 " " K2 " " K3,
     8 + GRAY_META_PIPELINE + GRAY_META_VALUE + GRAY_META_QUIET},
    {"mg-3-hit-k", "mg " K1 " v q k\r\nmg " K2 " v q k\r\nmg " K3 " v q k\r\nmn\r\n",
     "VA 1 k" K1 "\r\n1\r\nVA 2 k" K2 "\r\nv2\r\nVA 2 k" K3 "\r\nv3\r\nMN\r\n",
     K1 " " K2 " " K3, 8 + GRAY_META_PIPELINE + GRAY_META_VALUE + GRAY_META_QUIET},
    {"get-3-1hit", "get " K1 " " K2 " " K3 "\r\n", "VALUE " K2 " 0 2\r\nv2\r\nEND\r\n",
     K1 " " K2 " " K3, 0},
    {"mg-3-1hit", "mg " K1 " v q O0\r\nmg " K2 " v q O1\r\nmg " K3 " v q O2\r\nmn\r\n",
     "VA 2 O1\r\nv2\r\nMN\r\n", K1 " " K2 " " K3,
     8 + GRAY_META_PIPELINE + GRAY_META_VALUE + GRAY_META_QUIET},
    /* "has the list changed?": a 1 MB list's header key, the value unread */
    {"gets-cas-1MB", "gets gray:list:ids\r\n", NULL, "gray:list:ids", 0},
    {"mg-cas", "mg gray:list:ids c\r\n", "HD c1844674407370955\r\n", "gray:list:ids", 8},
};

#define NCASES (sizeof cases / sizeof cases[0])
#define LIST_BYTES 1000000

static char *big_reply(size_t *len)
{
    static const char head[] = "VALUE gray:list:ids 0 1000000 1844674407370955\r\n";
    size_t n = sizeof head - 1 + LIST_BYTES + 7;
    char *r = malloc(n);
    memcpy(r, head, sizeof head - 1);
    memset(r + sizeof head - 1, 'x', LIST_BYTES);
    memcpy(r + sizeof head - 1 + LIST_BYTES, "\r\nEND\r\n", 7);
    *len = n;
    return r;
}

int main(int argc, char **argv)
{
    size_t big_len;
    char *big = big_reply(&big_len);
    if (argc < 3) {
        printf("%-14s %9s %9s %9s\n", "case", "request", "reply", "total");
        for (size_t i = 0; i < NCASES; i++) {
            size_t q = strlen(cases[i].req);
            size_t r = cases[i].reply ? strlen(cases[i].reply) : big_len;
            printf("%-14s %9zu %9zu %9zu\n", cases[i].name, q, r, q + r);
        }
        return 0;
    }
    const struct bench_case *c = NULL;
    for (size_t i = 0; i < NCASES; i++)
        if (strcmp(argv[1], cases[i].name) == 0)
            c = &cases[i];
    if (c == NULL) {
        fprintf(stderr, "unknown case %s\n", argv[1]);
        return 2;
    }
    long n = atol(argv[2]);
    const char *reply = c->reply ? c->reply : big;
    size_t len = c->reply ? strlen(c->reply) : big_len;
    size_t klen = strlen(c->keys);
    gray_mc_value_t vals[4];
    gray_mc_meta_t metas[4];
    gray_mc_line_t line;
    size_t need;
    long sum = 0;
    for (long i = 0; i < n; i++) {
        size_t nv = 4;
        int rc = c->meta ? gray_mc_parse_meta(reply, len, c->keys, klen, c->meta - 8, metas,
                                              &nv, &line, &need)
                         : gray_mc_parse_get(reply, len, c->keys, klen, vals, &nv, &line, &need);
        if (rc != (int)len) {
            fprintf(stderr, "%s: decode returned %d of %zu\n", c->name, rc, len);
            return 1;
        }
        sum += (long)nv;
    }
    printf("%s: %ld values\n", c->name, sum);
    free(big);
    return 0;
}
