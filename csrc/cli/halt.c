/* halt.c - gray-admin's halt and resume: the fleet-wide halt of a target,
 * the key <halt-key>:<target> (default gray:halt:<target>) that every
 * router reads with its lists (gray.halt). A halt is written with add (the
 * first halt stands: a second one says so and changes nothing), value
 * "<unix seconds> <node> <reason>" on one line; resume deletes it (for
 * gray, after moving the ramp's start on by the halt's duration: a halt
 * froze the ramp, and it goes on from the step it froze at). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define HALT_VALUE_MAX 1000         /* bytes of a halt's value (gray.halt's VALUE_MAX) */
#define HOST_MAX       64
#define CLAIM_ATTEMPTS 5            /* CAS writes of a halt's claim before giving up */

/* target's halt key into key (size GRAY_MC_KEY_MAX + 1), or EXIT_USAGE. */
static int halt_key(const cli_opts_t *opts, const char *cmd, const char *target, char *key)
{
    if (!cli_target_ok(target) || strcmp(target, "stable") == 0) {
        fprintf(stderr, "gray-admin: %s: bad target '%s' (gray or a name of the router's"
                        " targets; not stable)\n", cmd, target);
        return EXIT_USAGE;
    }
    /* the default target's value 1 is its name gray here */
    if (strcmp(target, "1") == 0)
        target = "gray";
    int n = snprintf(key, GRAY_MC_KEY_MAX + 1, "%s:%s", opts->halt_key, target);
    if (n < 0 || n > GRAY_MC_KEY_MAX || !gray_mc_key_ok(key, (size_t)n)) {
        fprintf(stderr, "gray-admin: %s: '%s:%s' is not a memcached key\n", cmd,
                opts->halt_key, target);
        return EXIT_USAGE;
    }
    return 0;
}

/* This host's name, as a halt's node: "gray-admin@<host>". */
static void node_name(char *out, size_t size)
{
    char host[HOST_MAX + 1] = "";
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0')
        strcpy(host, "localhost");
    host[HOST_MAX] = '\0';
    for (char *p = host; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            *p = '_';
    snprintf(out, size, "gray-admin@%s", host);
}

int64_t cli_halt_at(const char *value)
{
    char *end = NULL;
    long long at = strtoll(value, &end, 10);
    if (value[0] < '0' || value[0] > '9' || *end != ' ' || at <= 0)
        return 0;
    return (int64_t)at;
}

int cli_cmd_halt(memcached_st *mc, const cli_opts_t *opts, const cli_args_t *args)
{
    if (args->npos != 2)
        return cli_usage_error("%s", "halt: expected halt <target> [--reason TEXT]");
    char key[GRAY_MC_KEY_MAX + 1];
    int rc = halt_key(opts, "halt", args->pos[1], key);
    if (rc != 0)
        return rc;
    const char *reason = args->reason ? args->reason : "halted by an operator";
    char node[HOST_MAX + 16], value[HALT_VALUE_MAX + 1];
    node_name(node, sizeof node);
    int n = snprintf(value, sizeof value, "%lld %s %s", (long long)time(NULL), node, reason);
    if (n < 0)
        return cli_usage_error("%s", "halt: bad reason");
    size_t len = strlen(value);
    for (size_t i = 0; i < len; i++)        /* one line: control bytes become spaces */
        if ((unsigned char)value[i] < ' ' || value[i] == 0x7f)
            value[i] = ' ';
    memcached_return_t mrc = memcached_add(mc, key, strlen(key), value, len, 0, 0);
    if (mrc == MEMCACHED_NOTSTORED || mrc == MEMCACHED_DATA_EXISTS) {
        cli_value_t v;
        if (cli_gets(mc, key, &v) == 0 && v.value) {
            fprintf(stderr, "gray-admin: %s is halted already: %s\n", key, v.value);
            free(v.value);
        } else {
            fprintf(stderr, "gray-admin: %s is halted already\n", key);
        }
        return 0;
    }
    if (mrc != MEMCACHED_SUCCESS) {
        fprintf(stderr, "gray-admin: add %s: %s\n", key, cli_mc_error(mc, mrc));
        return EXIT_STORE;
    }
    if (opts->verbose)
        fprintf(stderr, "gray-admin: %s = %s\n", key, value);
    return 0;
}

/* gray's halt froze the ramp: before the halt (key) is deleted, the time
 * it froze is claimed, then the ramp's start moved on by it. The claim
 * writes the halt back with CAS, its value unchanged (the routers read the
 * value alone), the claim's time in its flags: a resume run again after a
 * failed delete, or two at once, move the ramp by each second once (the
 * time from the halt, or from the last claim of this halt, to now). A
 * failed move takes its claim back. 0: go on with the delete (the halt is
 * gone, or has no time: nothing to move), else EXIT_STORE (printed). */
static int resume_ramp(memcached_st *mc, const cli_opts_t *opts, const char *key)
{
    if (!opts->ramp_key[0])
        return 0;
    for (int attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
        cli_value_t v;
        if (cli_gets(mc, key, &v) != 0)
            return EXIT_STORE;
        if (v.value == NULL)
            return 0;                           /* resumed meanwhile */
        int64_t at = cli_halt_at(v.value), now = (int64_t)time(NULL);
        /* the ramp moved already up to an earlier claim of this halt */
        if (at > 0 && (int64_t)v.flags > at && (int64_t)v.flags <= now)
            at = (int64_t)v.flags;
        if (at <= 0 || at >= now) {
            free(v.value);
            return 0;
        }
        memcached_return_t mrc = memcached_cas(mc, key, strlen(key), v.value, v.len, 0,
                                               (uint32_t)now, v.cas);
        if (mrc == MEMCACHED_DATA_EXISTS || mrc == MEMCACHED_NOTFOUND) {
            free(v.value);
            continue;                           /* another resume: read it again */
        }
        if (mrc != MEMCACHED_SUCCESS) {
            free(v.value);
            fprintf(stderr, "gray-admin: cas %s: %s\n", key, cli_mc_error(mc, mrc));
            return EXIT_STORE;
        }
        int rc = cli_ramp_resume(mc, opts, at);
        if (rc != 0) {
            /* the claim back (its former flags), unless the halt changed */
            cli_value_t w;
            if (cli_gets(mc, key, &w) == 0 && w.value != NULL) {
                if (w.len == v.len && memcmp(w.value, v.value, v.len) == 0 &&
                    w.flags == (uint32_t)now)
                    memcached_cas(mc, key, strlen(key), w.value, w.len, 0, v.flags, w.cas);
                free(w.value);
            }
        }
        free(v.value);
        return rc;
    }
    fprintf(stderr, "gray-admin: resume: %s changed %d times while claiming its time: %s stays"
            " halted\n", key, CLAIM_ATTEMPTS, key);
    return EXIT_STORE;
}

int cli_cmd_resume(memcached_st *mc, const cli_opts_t *opts, const cli_args_t *args)
{
    if (args->npos != 2)
        return cli_usage_error("%s", "resume: expected resume <target>");
    char key[GRAY_MC_KEY_MAX + 1];
    int rc = halt_key(opts, "resume", args->pos[1], key);
    if (rc != 0)
        return rc;
    /* gray's halt froze the ramp: its clock moves on by the halt's
     * duration first (the routers read the halts, then the ramp: one that
     * sees the halt gone sees the moved ramp) */
    if (strcmp(key + strlen(opts->halt_key), ":gray") == 0) {
        rc = resume_ramp(mc, opts, key);
        if (rc != 0)
            return rc;
    }
    rc = cli_delete(mc, key, "", ": not halted (nothing to resume)");
    return rc == EXIT_NOTFOUND ? 0 : rc;
}
