/* store.c - the connection to memcached: the server list, placement, reads. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

memcached_st *cli_connect(const cli_opts_t *opts)
{
    static char hosts[CLI_SERVERS_MAX][GRAY_IP_TEXT_MAX];
    static unsigned ports[CLI_SERVERS_MAX], weights[CLI_SERVERS_MAX];
    char err[256];
    /* libmemcached's convention: --servers, else MEMCACHED_SERVERS (when
     * set: used, and refused if invalid, never skipped), else the default */
    const char *servers = opts->servers, *from = opts->servers_from;
    const char *env = getenv("MEMCACHED_SERVERS");
    if (from == NULL && env != NULL) {
        servers = env;
        from = "MEMCACHED_SERVERS";
    } else if (from == NULL) {
        from = "default";
    }
    int n = cli_parse_servers(servers, hosts, ports, weights, CLI_SERVERS_MAX, err, sizeof err);
    if (n < 0) {
        fprintf(stderr, "gray-admin: %s: %s\n", from, err);
        return NULL;
    }
    if (opts->verbose)
        fprintf(stderr, "gray-admin: servers %s (%s)\n", servers, from);
    memcached_st *mc = cli_mc_new(hosts, ports, weights, n, opts->distribution, opts->timeout_ms,
                                  err, sizeof err);
    if (mc == NULL)
        fprintf(stderr, "gray-admin: %s\n", err);
    return mc;
}

int cli_delete(memcached_st *mc, const char *key, const char *before, const char *after)
{
    memcached_return_t rc = memcached_delete(mc, key, strlen(key), 0);
    if (rc == MEMCACHED_NOTFOUND) {
        fprintf(stderr, "gray-admin: %s%s%s\n", before, key, after);
        return EXIT_NOTFOUND;
    }
    if (rc != MEMCACHED_SUCCESS) {
        fprintf(stderr, "gray-admin: delete %s: %s\n", key, cli_mc_error(mc, rc));
        return EXIT_STORE;
    }
    return 0;
}

int cli_gets(memcached_st *mc, const char *key, cli_value_t *v)
{
    const char *keys[1] = { key };
    size_t lens[1] = { strlen(key) };
    v->value = NULL;
    v->len = 0;
    v->cas = 0;
    v->flags = 0;
    memcached_return_t rc = memcached_mget(mc, keys, lens, 1);
    if (rc != MEMCACHED_SUCCESS) {
        fprintf(stderr, "gray-admin: gets %s: %s\n", key, cli_mc_error(mc, rc));
        return -1;
    }
    memcached_result_st *res;
    int failed = 0;
    while ((res = memcached_fetch_result(mc, NULL, &rc)) != NULL) {
        if (v->value == NULL && memcached_result_key_length(res) == lens[0] &&
            memcmp(memcached_result_key_value(res), key, lens[0]) == 0) {
            v->len = memcached_result_length(res);
            v->cas = memcached_result_cas(res);
            v->flags = memcached_result_flags(res);
            v->value = malloc(v->len + 1);
            if (v->value == NULL) {
                failed = 1;
            } else {
                memcpy(v->value, memcached_result_value(res), v->len);
                v->value[v->len] = '\0';
            }
        }
        memcached_result_free(res);
    }
    if (rc != MEMCACHED_END && rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND) {
        fprintf(stderr, "gray-admin: gets %s: %s\n", key, cli_mc_error(mc, rc));
        free(v->value);
        v->value = NULL;
        return -1;
    }
    if (failed) {
        fprintf(stderr, "gray-admin: out of memory\n");
        return -1;
    }
    return 0;
}
