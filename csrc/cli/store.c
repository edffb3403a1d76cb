/* store.c - the connection to memcached: the server list, placement, reads. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_parse_servers(const char *spec, char hosts[][GRAY_IP_TEXT_MAX], unsigned *ports,
                      unsigned *weights, int max, char *err, size_t errlen)
{
    /* the router's rule (gray_servers_parse): hosts kept as written, since
     * libmemcached hashes the name it is given, not the address */
    gray_server_spec_t specs[CLI_SERVERS_MAX], bad;
    size_t cap = max < CLI_SERVERS_MAX ? (size_t)max : CLI_SERVERS_MAX;
    int n = gray_servers_parse(spec, strlen(spec), specs, cap, &bad);
    if (n == GRAY_ESPACE) {
        snprintf(err, errlen, "more than %d servers", max);
        return -1;
    }
    if (n < 0 && bad.item_len == 0) {
        snprintf(err, errlen, "no server given (expected 'host:port[, host:port...]')");
        return -1;
    }
    if (n < 0) {
        snprintf(err, errlen, "bad server '%.*s' (%s)", (int)bad.item_len, spec + bad.item_off,
                 gray_server_error(n));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (specs[i].host_len >= GRAY_IP_TEXT_MAX) {     /* gray_ip_parse bounds it */
            snprintf(err, errlen, "bad server '%.*s'", (int)specs[i].item_len,
                     spec + specs[i].item_off);
            return -1;
        }
        memcpy(hosts[i], spec + specs[i].host_off, specs[i].host_len);
        hosts[i][specs[i].host_len] = '\0';
        ports[i] = specs[i].port;
        weights[i] = specs[i].weight;
    }
    return n;
}

/* Where keys go: set before the servers are added (libmemcached builds its
 * ketama continuum from the servers added after), and exactly as the
 * router's `distribution` places them (its C placement is checked against
 * libmemcached itself in spec/dist_spec.lua). */
static int set_distribution(memcached_st *mc, const char *mode)
{
    memcached_return_t rc;
    if (strcmp(mode, "modula") == 0) {
        rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_DISTRIBUTION,
                                    MEMCACHED_DISTRIBUTION_MODULA);
    } else if (strcmp(mode, "ketama") == 0) {
        rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_KETAMA, 1);
    } else if (strcmp(mode, "ketama-weighted") == 0) {
        rc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1);
    } else {
        fprintf(stderr, "gray-admin: --distribution '%s': expected ketama, ketama-weighted or"
                " modula\n", mode);
        return -1;
    }
    return rc == MEMCACHED_SUCCESS ? 0 : -1;
}

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
    memcached_st *mc = memcached_create(NULL);
    if (mc == NULL) {
        fprintf(stderr, "gray-admin: out of memory\n");
        return NULL;
    }
    if (set_distribution(mc, opts->distribution) != 0) {
        memcached_free(mc);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (weights[i] > 1 && strcmp(opts->distribution, "ketama-weighted") != 0) {
            fprintf(stderr, "gray-admin: server %s:%u: a weight needs --distribution"
                    " ketama-weighted\n", hosts[i], ports[i]);
            memcached_free(mc);
            return NULL;
        }
        memcached_return_t rc = weights[i] > 1
            ? memcached_server_add_with_weight(mc, hosts[i], (in_port_t)ports[i], weights[i])
            : memcached_server_add(mc, hosts[i], (in_port_t)ports[i]);
        if (rc != MEMCACHED_SUCCESS) {
            fprintf(stderr, "gray-admin: server %s:%u: %s\n", hosts[i], ports[i],
                    cli_mc_error(mc, rc));
            memcached_free(mc);
            return NULL;
        }
    }
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, opts->timeout_ms);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, opts->timeout_ms);
    /* a request goes out whole at once: with Nagle's algorithm the tail of
     * a large set waits for the server's delayed ACK (~40 ms a write) */
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    /* a server that fails is reported, not silently skipped: the key it
     * holds would be read from another server by nobody */
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, 0);
    return mc;
}

const char *cli_mc_error(memcached_st *mc, memcached_return_t rc)
{
    /* libmemcached's message less its handle address and source position:
     * "(0x55...) CONNECTION FAILURE,  host: 127.0.0.1:1 -> ./src/...:233" */
    static char msg[256];
    const char *m = memcached_last_error(mc) != MEMCACHED_SUCCESS
        ? memcached_last_error_message(mc) : NULL;
    if (m == NULL)
        return memcached_strerror(mc, rc);
    if (m[0] == '(' && strchr(m, ')'))
        m = strchr(m, ')') + 1;
    while (*m == ' ')
        m++;
    snprintf(msg, sizeof msg, "%s", m);
    char *arrow = strstr(msg, " -> ");
    if (arrow)
        *arrow = '\0';
    for (char *d = strstr(msg, ",  "); d; d = strstr(d, ",  "))
        memmove(d + 1, d + 2, strlen(d + 2) + 1);
    return msg;
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
