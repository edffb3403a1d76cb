/* mcconn.c - a libmemcached handle placing keys as the router does: the
 * server list's parse, the distribution, the servers and the behaviours.
 * Shared by gray-admin (store.c's cli_connect) and the list images' helper
 * gray-compile (compile_helper.c), which reads a split list's parts: both
 * must place every key on the server the router's C placement (dist.c)
 * picks. */
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
static int set_distribution(memcached_st *mc, const char *mode, char *err, size_t errlen)
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
        snprintf(err, errlen, "--distribution '%s': expected ketama, ketama-weighted or"
                 " modula", mode);
        return -1;
    }
    return rc == MEMCACHED_SUCCESS ? 0 : -1;
}

/* See cli.h. */
memcached_st *cli_mc_new(char hosts[][GRAY_IP_TEXT_MAX], const unsigned *ports,
                         const unsigned *weights, int n, const char *distribution,
                         unsigned timeout_ms, char *err, size_t errlen)
{
    memcached_st *mc = memcached_create(NULL);
    if (mc == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    err[0] = '\0';
    if (set_distribution(mc, distribution, err, errlen) != 0) {
        if (err[0] == '\0')
            snprintf(err, errlen, "--distribution '%s': not set", distribution);
        memcached_free(mc);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (weights[i] > 1 && strcmp(distribution, "ketama-weighted") != 0) {
            snprintf(err, errlen, "server %s:%u: a weight needs --distribution ketama-weighted",
                     hosts[i], ports[i]);
            memcached_free(mc);
            return NULL;
        }
        memcached_return_t rc = weights[i] > 1
            ? memcached_server_add_with_weight(mc, hosts[i], (in_port_t)ports[i], weights[i])
            : memcached_server_add(mc, hosts[i], (in_port_t)ports[i]);
        if (rc != MEMCACHED_SUCCESS) {
            snprintf(err, errlen, "server %s:%u: %s", hosts[i], ports[i], cli_mc_error(mc, rc));
            memcached_free(mc);
            return NULL;
        }
    }
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, timeout_ms);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, timeout_ms);
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
