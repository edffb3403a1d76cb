/* ramp.c - gray-admin's timed ramp and status: `ramp "<schedule>"` writes
 * the ramp key (default gray:ramp) as "<now> <schedule>", checked with the
 * router's own parser (gray_ramp_parse); `ramp stop` deletes it; `ramp`
 * prints it. `status` prints what the routers read: the halts of the
 * default target and of --targets, the ramp (the share in force and the
 * next step), the percentage and the lists (version, entries). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define TIME_TEXT_MAX 32            /* "2026-12-04 21:30:00 UTC" */
#define SPAN_TEXT_MAX 32            /* "366d23h59m59s" */
#define STATUS_TARGETS_MAX 253      /* as check's: the default target and --targets */
#define RESUME_ATTEMPTS    5        /* CAS writes of the moved ramp before giving up */

static int ramp_present;            /* print_ramp() found a ramp key */

/* unix seconds t as "YYYY-MM-DD HH:MM:SS UTC" */
static void time_text(int64_t t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || strftime(out, cap, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(out, cap, "%lld", (long long)t);
}

/* s seconds as "1h2m3s" (the larger units only when not 0) */
static void span_text(int64_t s, char *out, size_t cap)
{
    if (s < 0)
        s = -s;
    long long d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60, sec = s % 60;
    int n = 0;
    out[0] = '\0';
    if (d)
        n += snprintf(out + n, cap - (size_t)n, "%lldd", d);
    if (h && (size_t)n < cap)
        n += snprintf(out + n, cap - (size_t)n, "%lldh", h);
    if (m && (size_t)n < cap)
        n += snprintf(out + n, cap - (size_t)n, "%lldm", m);
    if ((sec || n == 0) && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, "%llds", sec);
}

static void share_text(uint32_t share, char *out, size_t cap)
{
    snprintf(out, cap, "%u.%02u%%", share / 100, share % 100);
}

/* The halt of the default target, read for the ramp (a halt freezes it):
 * its start (unix seconds) into *since, 1 when halted, 0 when not, -1 on a
 * failure (printed). */
static int default_halt(memcached_st *mc, const cli_opts_t *opts, int64_t *since)
{
    char key[GRAY_MC_KEY_MAX + 1];
    int n = snprintf(key, sizeof key, "%s:gray", opts->halt_key);
    if (n < 0 || n > GRAY_MC_KEY_MAX)
        return 0;
    cli_value_t v;
    if (cli_gets(mc, key, &v) != 0)
        return -1;
    if (v.value == NULL)
        return 0;
    /* "<unix seconds> ..." as the routers read it (gray.halt.since); a
     * value without a time freezes a router at the step it first saw: now,
     * as near as can be told here; a time ahead of this clock (a writer's
     * clock ahead, a hostile value) counts as now, as in the routers and
     * in resume */
    int64_t at = cli_halt_at(v.value), now = (int64_t)time(NULL);
    *since = at > 0 && at < now ? at : now;
    free(v.value);
    return 1;
}

/* Prints the ramp as the routers take it at now: the share in force and
 * the next step, or why there is none. Returns 0 or EXIT_STORE. */
static int print_ramp(memcached_st *mc, const cli_opts_t *opts, int64_t now)
{
    const char *key = opts->ramp_key;
    cli_value_t v;
    if (cli_gets(mc, key, &v) != 0)
        return EXIT_STORE;
    ramp_present = v.value != NULL;
    if (v.value == NULL) {
        printf("ramp:     %s (none: the percentage is in force)\n", key);
        return 0;
    }
    static gray_ramp_step_t steps[GRAY_RAMP_STEPS_MAX];
    int64_t start = 0;
    size_t err_at = 0;
    int n = gray_ramp_value_parse(v.value, v.len, &start, steps, GRAY_RAMP_STEPS_MAX, &err_at);
    if (n < 0) {
        printf("ramp:     %s = '%.60s': not a ramp (%s at byte %zu); the routers keep the"
               " ramp they read last\n", key, v.value, gray_strerror(n), err_at);
        free(v.value);
        return 0;
    }
    char t1[TIME_TEXT_MAX], t2[TIME_TEXT_MAX], s1[SPAN_TEXT_MAX], p1[16], p2[16];
    time_text(start, t1, sizeof t1);
    span_text(now - start, s1, sizeof s1);
    printf("ramp:     %s = '%s'\n", key, v.value);
    printf("          started %s (%s %s)\n", t1, s1, now >= start ? "ago" : "from now");
    free(v.value);
    int64_t since = 0;
    int halted = default_halt(mc, opts, &since);
    if (halted < 0)
        return EXIT_STORE;
    size_t i = gray_ramp_at(steps, (size_t)n, halted ? since - start : now - start);
    share_text(steps[i].share, p1, sizeof p1);
    if (halted) {
        time_text(since, t2, sizeof t2);
        printf("          frozen at %s (step %zu of %d) by the halt of gray since %s: its"
               " traffic goes to stable until resume, which goes on from this step\n", p1,
               i + 1, n, t2);
        return 0;
    }
    printf("          in force: %s (step %zu of %d)\n", p1, i + 1, n);
    if (i + 1 < (size_t)n) {
        int64_t at = start + steps[i + 1].at;
        share_text(steps[i + 1].share, p2, sizeof p2);
        time_text(at, t2, sizeof t2);
        span_text(at - now, s1, sizeof s1);
        printf("          next:     %s at %s (in %s)\n", p2, t2, s1);
    } else {
        printf("          next:     none (the last step)\n");
    }
    return 0;
}

long cli_ramp_share(memcached_st *mc, const cli_opts_t *opts)
{
    const char *key = opts->ramp_key;
    if (!key[0])
        return -1;
    cli_value_t v;
    if (cli_gets(mc, key, &v) != 0)
        return -2;
    if (v.value == NULL)
        return -1;
    static gray_ramp_step_t steps[GRAY_RAMP_STEPS_MAX];
    int64_t start = 0, since = 0, now = (int64_t)time(NULL);
    int n = gray_ramp_value_parse(v.value, v.len, &start, steps, GRAY_RAMP_STEPS_MAX, NULL);
    if (n < 0) {
        printf("ramp:     %s = '%.40s': not a ramp; the router keeps the one it read last"
               " (the percentage taken here)\n", key, v.value);
        free(v.value);
        return -1;
    }
    free(v.value);
    int halted = default_halt(mc, opts, &since);
    if (halted < 0)
        return -2;
    size_t i = gray_ramp_at(steps, (size_t)n, halted ? since - start : now - start);
    char p[16];
    share_text(steps[i].share, p, sizeof p);
    printf("ramp:     %s: %s in force (step %zu of %d%s): replaces the percentage\n", key, p,
           i + 1, n, halted ? ", frozen by the halt of gray" : "");
    return (long)steps[i].share;
}

int cli_ramp_resume(memcached_st *mc, const cli_opts_t *opts, int64_t halted_at)
{
    const char *key = opts->ramp_key;
    if (!key[0])
        return 0;
    static gray_ramp_step_t steps[GRAY_RAMP_STEPS_MAX];
    for (int attempt = 0; attempt < RESUME_ATTEMPTS; attempt++) {
        cli_value_t v;
        if (cli_gets(mc, key, &v) != 0)
            return EXIT_STORE;
        if (v.value == NULL)
            return 0;                           /* no ramp: nothing frozen */
        int64_t start = 0, now = (int64_t)time(NULL);
        int n = gray_ramp_value_parse(v.value, v.len, &start, steps, GRAY_RAMP_STEPS_MAX, NULL);
        if (n < 0) {
            fprintf(stderr, "gray-admin: resume: %s = '%.60s' is not a ramp: left as it is\n",
                    key, v.value);
            free(v.value);
            return 0;
        }
        /* the time frozen: from the halt (or from the ramp's start, for a
         * ramp written while halted) to now */
        int64_t from = halted_at > start ? halted_at : start;
        if (from > now)
            from = now;
        int64_t new_start = start + (now - from);
        if (new_start == start) {
            free(v.value);
            return 0;
        }
        const char *schedule = v.value;
        while (*schedule && *schedule != ' ' && *schedule != '\t')
            schedule++;
        char value[GRAY_RAMP_TEXT_MAX + 32];
        int w = snprintf(value, sizeof value, "%lld%s", (long long)new_start, schedule);
        uint64_t cas = v.cas;
        free(v.value);
        if (w < 0 || (size_t)w > GRAY_RAMP_TEXT_MAX || new_start > GRAY_RAMP_START_MAX) {
            fprintf(stderr, "gray-admin: resume: %s: the moved start does not fit: left as it"
                    " is\n", key);
            return 0;
        }
        memcached_return_t rc = memcached_cas(mc, key, strlen(key), value, (size_t)w, 0, 0,
                                              cas);
        if (rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTFOUND)
            continue;                           /* changed meanwhile: read it again */
        if (rc != MEMCACHED_SUCCESS) {
            fprintf(stderr, "gray-admin: cas %s: %s\n", key, cli_mc_error(mc, rc));
            return EXIT_STORE;
        }
        size_t i = gray_ramp_at(steps, (size_t)n, now - new_start);
        char p1[16], s1[SPAN_TEXT_MAX];
        share_text(steps[i].share, p1, sizeof p1);
        span_text(new_start - start, s1, sizeof s1);
        printf("ramp:     %s goes on at %s (step %zu of %d): its later steps come %s later"
               " (the halt's duration)\n", key, p1, i + 1, n, s1);
        return 0;
    }
    fprintf(stderr, "gray-admin: resume: %s changed %d times while moving its start: left as"
            " it is, and gray stays halted\n", key, RESUME_ATTEMPTS);
    return EXIT_STORE;
}

/* `ramp "<schedule>"`: checked, then written as "<now> <schedule>". */
static int ramp_set(memcached_st *mc, const cli_opts_t *opts, const char *schedule)
{
    static gray_ramp_step_t steps[GRAY_RAMP_STEPS_MAX];
    size_t len = strlen(schedule), err_at = 0;
    int n = gray_ramp_parse(schedule, len, steps, GRAY_RAMP_STEPS_MAX, &err_at);
    if (n < 0) {
        char step[48];
        size_t sl = strcspn(schedule + err_at, " \t");
        snprintf(step, sizeof step, "%.*s", (int)(sl < 40 ? sl : 40), schedule + err_at);
        fprintf(stderr, "gray-admin: ramp: %s at '%s' (expected steps like '5%% 25%%@10m"
                " 50%%@30m 100%%@1h': the first at the start, then rising offsets in s, m or h;"
                " shares from 0 to 100%% with at most two decimals, never falling; at most %d"
                " steps)\n(gray-admin --help lists the commands)\n", gray_strerror(n), step,
                GRAY_RAMP_STEPS_MAX);
        return EXIT_USAGE;
    }
    int64_t now = (int64_t)time(NULL);
    char value[GRAY_RAMP_TEXT_MAX + 32];
    int w = snprintf(value, sizeof value, "%lld %s", (long long)now, schedule);
    if (w < 0 || (size_t)w > GRAY_RAMP_TEXT_MAX)
        return cli_usage_error("%s", "ramp: the schedule is too long");
    /* the value as the routers will read it */
    int64_t start;
    if (gray_ramp_value_parse(value, (size_t)w, &start, steps, GRAY_RAMP_STEPS_MAX, NULL) != n)
        return cli_usage_error("%s", "ramp: the value does not read back");
    const char *key = opts->ramp_key;
    memcached_return_t rc = memcached_set(mc, key, strlen(key), value, (size_t)w, 0, 0);
    if (rc != MEMCACHED_SUCCESS) {
        fprintf(stderr, "gray-admin: set %s: %s\n", key, cli_mc_error(mc, rc));
        return EXIT_STORE;
    }
    return print_ramp(mc, opts, now);
}

int cli_cmd_ramp(memcached_st *mc, const cli_opts_t *opts, const cli_args_t *args)
{
    if (args->npos == 1)
        return print_ramp(mc, opts, (int64_t)time(NULL));
    if (args->npos != 2)
        return cli_usage_error("%s", "ramp: expected ramp \"<schedule>\", ramp stop or ramp"
                                     " (the schedule in one argument: quote it)");
    if (strcmp(args->pos[1], "stop") != 0)
        return ramp_set(mc, opts, args->pos[1]);
    const char *key = opts->ramp_key;
    int rc = cli_delete(mc, key, "no ramp ", " (nothing stopped)");
    if (rc != 0)
        return rc == EXIT_NOTFOUND ? 0 : rc;
    printf("ramp:     %s deleted: the percentage %s is in force again\n", key,
           opts->percent_key);
    return 0;
}

/* ---- status ------------------------------------------------------------------ */

/* The halt of target name (len bytes), printed. 0 or EXIT_STORE. */
static int print_halt(memcached_st *mc, const cli_opts_t *opts, const char *name, size_t len,
                      int64_t now)
{
    char key[GRAY_MC_KEY_MAX + 1];
    int n = snprintf(key, sizeof key, "%s:%.*s", opts->halt_key, (int)len, name);
    if (n < 0 || n > GRAY_MC_KEY_MAX || !gray_mc_key_ok(key, (size_t)n)) {
        printf("halt:     %s:%.*s is not a memcached key\n", opts->halt_key, (int)len, name);
        return 0;
    }
    cli_value_t v;
    if (cli_gets(mc, key, &v) != 0)
        return EXIT_STORE;
    if (v.value == NULL) {
        printf("halt:     %s (none: routed)\n", key);
        return 0;
    }
    /* "<unix seconds> <node> <reason>" */
    char *end = NULL;
    long long at = strtoll(v.value, &end, 10);
    if (end == v.value || *end != ' ') {
        printf("halt:     %s = '%.200s' (halted)\n", key, v.value);
    } else {
        char *node = end + 1, *sp = strchr(node, ' ');
        const char *reason = sp ? sp + 1 : "";
        char t[TIME_TEXT_MAX], s[SPAN_TEXT_MAX];
        time_text(at, t, sizeof t);
        span_text(now - at, s, sizeof s);
        printf("halt:     %s: halted since %s (%s ago) by %.*s: %.200s\n", key, t, s,
               (int)(sp ? (size_t)(sp - node) : strlen(node)), node, reason);
    }
    free(v.value);
    return 0;
}

/* The halts of the default target (gray) and of each name of --targets
 * ("v2=@a, v3" or "v2, v3"; "1" is the default target). */
static int print_halts(memcached_st *mc, const cli_opts_t *opts, int64_t now)
{
    int rc = print_halt(mc, opts, "gray", 4, now);
    const char *p = opts->targets;
    for (int count = 0; rc == 0 && p && *p && count < STATUS_TARGETS_MAX; count++) {
        p += strspn(p, " \t\r\n,");
        size_t nl = strcspn(p, " \t\r\n,=");
        if (nl > 0 && gray_target_name_ok(p, nl) && !(nl == 1 && p[0] == '1') &&
            !(nl == 4 && memcmp(p, "gray", 4) == 0) && !(nl == 6 && memcmp(p, "stable", 6) == 0))
            rc = print_halt(mc, opts, p, nl, now);
        p += strcspn(p, ",");
    }
    return rc;
}

/* A list's version (its CAS) and entries, compiled as the routers compile
 * it (the C image; the target names as the list itself uses them). */
static int print_list_info(memcached_st *mc, const char *what, const char *key, int kind)
{
    cli_list_t list = { .key = key };
    if (cli_list_read(mc, &list) != 0)
        return EXIT_STORE;
    if (!list.exists) {
        printf("%-9s %s (none)\n", what, key);
        cli_list_free(&list);
        return 0;
    }
    gray_image_part_t part = { list.text, list.len };
    gray_image_stats_t st;
    void *mem = NULL;
    size_t mem_len = 0;
    int rc = gray_image_build(kind, &part, 1, NULL, 0, 0, list.cas, &mem, &mem_len, &st);
    if (rc != GRAY_OK) {
        printf("%-9s %s: version %llu: does not compile (%s): the routers keep their last"
               " copy\n", what, key, (unsigned long long)list.cas, gray_strerror(rc));
    } else {
        printf("%-9s %s: version %llu, %u entries (%u lines skipped)%s\n", what, key,
               (unsigned long long)list.cas, st.entries, st.bad,
               list.parts ? ", in parts" : "");
        gray_image_free_buf(mem);
    }
    cli_list_free(&list);
    return 0;
}

/* The id lists of --lists ("dev, uid"). */
static int print_id_lists(memcached_st *mc, const cli_opts_t *opts)
{
    const char *p = opts->lists;
    int rc = 0;
    while (rc == 0 && p && *p) {
        p += strspn(p, " \t\r\n,");
        size_t nl = strcspn(p, " \t\r\n,");
        if (nl > 0 && nl <= CLI_ID_NAME_MAX) {
            char key[GRAY_MC_KEY_MAX + 1];
            snprintf(key, sizeof key, "gray:list:%.*s", (int)nl, p);
            rc = print_list_info(mc, "list:", key, GRAY_IMAGE_IDS);
        }
        p += nl;
    }
    return rc;
}

int cli_cmd_status(memcached_st *mc, const cli_opts_t *opts, const cli_args_t *args)
{
    if (args->npos != 1 || args->nids > 0)
        return cli_usage_error("%s", "status: expected status [--targets T] [--lists L]");
    int64_t now = (int64_t)time(NULL);
    char t[TIME_TEXT_MAX];
    time_text(now, t, sizeof t);
    printf("now:      %s\n", t);
    int rc = print_halts(mc, opts, now);
    if (rc == 0)
        rc = print_ramp(mc, opts, now);
    if (rc == 0) {
        cli_value_t v;
        if (cli_gets(mc, opts->percent_key, &v) != 0)
            return EXIT_STORE;
        long pct = v.value ? cli_parse_percent(v.value, v.len) : 0;
        if (v.value == NULL)
            printf("percent:  %s (none)\n", opts->percent_key);
        else if (pct < 0)
            printf("percent:  %s = '%.40s': not a percentage\n", opts->percent_key, v.value);
        else
            printf("percent:  %s = %ld.%02ld%s\n", opts->percent_key, pct / 100, pct % 100,
                   ramp_present ? " (not in force: the ramp replaces it)" : "");
        free(v.value);
    }
    if (rc == 0)
        rc = print_list_info(mc, "ranges:", opts->ranges_key, GRAY_IMAGE_RANGES);
    if (rc == 0)
        rc = print_id_lists(mc, opts);
    return rc;
}
