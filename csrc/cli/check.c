/* check.c - what the router would decide for an address and identities,
 * from the same memcached values and in the same precedence (lua/gray.lua:
 * identity entry > address entry > id list > range > percent > stable; the
 * tester override is per request and left aside). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CHECK_IDS_MAX 4             /* identities a router keys on */

/* A value that names a target ("1" or a name), or NULL for none: absent,
 * "" and "0" fall through to the next rule, as decision_of() takes them. */
static const char *target_of(const cli_value_t *v)
{
    if (v->value == NULL || v->len == 0 || (v->len == 1 && v->value[0] == '0'))
        return NULL;
    return v->value;
}

/* The target an id list gives value, or NULL; into buf. */
static const char *list_lookup(const char *text, size_t len, const char *value, char *buf,
                               size_t cap)
{
    const char *found = NULL;
    const char *p = text, *end = text + len;
    size_t vl = strlen(value);
    while (p < end) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        const char *stop = e ? e : end;
        /* fields as the router's pattern splits them: id, target, rest */
        const char *f[3] = { NULL, NULL, NULL };
        size_t fl[3] = { 0, 0, 0 };
        const char *q = p;
        for (int k = 0; k < 3; k++) {
            while (q < stop && (*q == ' ' || *q == '\t' || *q == '\r'))
                q++;
            if (q == stop)
                break;
            f[k] = q;
            while (q < stop && !(*q == ' ' || *q == '\t' || *q == '\r'))
                q++;
            fl[k] = (size_t)(q - f[k]);
        }
        if (f[0] && f[0][0] != '#' && !f[2] && fl[0] == vl && memcmp(f[0], value, vl) == 0) {
            size_t tl = f[1] ? fl[1] : 1;
            if (tl >= cap)
                tl = cap - 1;
            memcpy(buf, f[1] ? f[1] : "1", tl);
            buf[tl] = '\0';
            found = buf;    /* a later line overrides, as in the router's table */
        }
        p = e ? e + 1 : end;
    }
    return found;
}

/* Compiles the ranges list with the C core, as the router does, every
 * target name in it taken as known, and looks up ip. Returns the target
 * name (into buf), NULL when no range holds ip, or "" when the list does not
 * compile (printed). *lines counts the lines compiled. */
static const char *range_lookup(const char *text, size_t len, const gray_ip_t *ip, char *buf,
                                size_t cap, uint32_t *lines, uint32_t *bad)
{
    /* target names: "1" first, then each distinct second field */
    size_t ncap = 2 + len, nlen = 1, count = 1;
    char *names = malloc(ncap);
    const char *result = "";
    gray_rentry4_t *e4 = NULL;
    gray_rentry6_t *e6 = NULL;
    gray_run4_t *v4 = NULL;
    gray_run6_t *v6 = NULL;
    uint32_t *ix4 = NULL, *ix6 = NULL;
    if (names == NULL)
        goto oom;
    names[0] = '1';
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        const char *stop = e ? e : end;
        const char *hash = memchr(p, '#', (size_t)(stop - p));
        if (hash)
            stop = hash;
        char key[GRAY_MC_KEY_MAX + 8];
        if (cli_line_key(LIST_RANGES, p, (size_t)(stop - p), key, sizeof key) > 0) {
            const char *q = p;
            while (q < stop && (*q == ' ' || *q == '\t' || *q == '\r'))
                q++;
            while (q < stop && !(*q == ' ' || *q == '\t' || *q == '\r'))
                q++;
            while (q < stop && (*q == ' ' || *q == '\t' || *q == '\r'))
                q++;
            const char *n0 = q;
            while (q < stop && !(*q == ' ' || *q == '\t' || *q == '\r'))
                q++;
            size_t nl = (size_t)(q - n0);
            int known = nl == 0;
            /* linear search: a ranges list names a handful of targets */
            for (size_t s = 0; !known && s < nlen;) {
                const char *nlp = memchr(names + s, '\n', nlen - s);
                size_t el = nlp ? (size_t)(nlp - (names + s)) : nlen - s;
                known = el == nl && memcmp(names + s, n0, nl) == 0;
                s += el + 1;
            }
            if (!known && count < GRAY_TARGETS_MAX) {
                names[nlen++] = '\n';
                memcpy(names + nlen, n0, nl);
                nlen += nl;
                count++;
            }
        }
        p = e ? e + 1 : end;
    }

    size_t room4, room6;
    gray_ranges_room(text, len, &room4, &room6);
    e4 = malloc((room4 + 1) * sizeof *e4);
    e6 = malloc((room6 + 1) * sizeof *e6);
    if (!e4 || !e6)
        goto oom;
    gray_ranges_stats_t st;
    int rc = gray_ranges_parse(text, len, names, nlen, e4, room4, e6, room6, &st);
    *lines = st.taken;
    *bad = st.bad + st.unknown;
    if (rc != GRAY_OK) {
        fprintf(stderr, "gray-admin: the ranges list does not parse: %s\n", gray_strerror(rc));
        goto done;
    }
    gray_rangeset_t set;
    memset(&set, 0, sizeof set);
    size_t l4 = gray_rangeset_index_len(2 * st.n4), l6 = gray_rangeset_index_len(2 * st.n6);
    v4 = malloc((2 * st.n4 + 1) * sizeof *v4);
    v6 = malloc((2 * st.n6 + 1) * sizeof *v6);
    ix4 = malloc((l4 + 1) * sizeof *ix4);
    ix6 = malloc((l6 + 1) * sizeof *ix6);
    if (!v4 || !v6 || !ix4 || !ix6)
        goto oom;
    set.v4 = v4;
    set.v6 = v6;
    set.v4_index = ix4;
    set.v6_index = ix6;
    rc = gray_rangeset_build(&set, e4, st.n4, e6, st.n6);
    if (rc != GRAY_OK) {
        fprintf(stderr, "gray-admin: the ranges list does not compile (the router keeps its"
                " last copy): %s\n", gray_strerror(rc));
        goto done;
    }
    int t = gray_rangeset_find(&set, ip);
    result = NULL;
    if (t > 0) {
        /* the t-th name */
        const char *s = names;
        for (int k = 1; k < t; k++)
            s = memchr(s, '\n', nlen - (size_t)(s - names)) + 1;
        const char *nlp = memchr(s, '\n', nlen - (size_t)(s - names));
        size_t el = nlp ? (size_t)(nlp - s) : nlen - (size_t)(s - names);
        if (el >= cap)
            el = cap - 1;
        memcpy(buf, s, el);
        buf[el] = '\0';
        result = buf;
    }
    goto done;
oom:
    fprintf(stderr, "gray-admin: out of memory\n");
done:
    free(names);
    free(e4);
    free(e6);
    free(v4);
    free(v6);
    free(ix4);
    free(ix6);
    return result;
}

long cli_parse_percent(const char *s, size_t len)
{
    while (len && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')) {
        s++;
        len--;
    }
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r' ||
                   s[len - 1] == '\n'))
        len--;
    size_t i = 0;
    long whole = 0, frac = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9' && whole <= 1000)
        whole = whole * 10 + (s[i++] - '0');
    if (i == 0)
        return -1;
    if (i < len) {
        if (s[i] != '.' || len - i - 1 < 1 || len - i - 1 > 2)
            return -1;
        for (size_t j = i + 1; j < len; j++) {
            if (s[j] < '0' || s[j] > '9')
                return -1;
            frac = frac * 10 + (s[j] - '0');
        }
        if (len - i - 1 == 1)
            frac *= 10;
    }
    long t = whole * 100 + frac;
    return t > 10000 ? -1 : t;
}

int cli_check(memcached_st *mc, const cli_opts_t *opts, const char *addr,
              char *const *ids, int nids)
{
    gray_ip_t ip;
    char canon[GRAY_IP_TEXT_MAX];
    if (gray_ip_parse(addr, strlen(addr), &ip) != GRAY_OK) {
        fprintf(stderr, "gray-admin: check: '%s' is not an IP address\n", addr);
        return EXIT_USAGE;
    }
    int cl = gray_ip_format(&ip, canon, sizeof canon);
    canon[cl] = '\0';
    if (nids > CHECK_IDS_MAX) {
        fprintf(stderr, "gray-admin: check: at most %d --id (a router keys on at most %d"
                " identities)\n", CHECK_IDS_MAX, CHECK_IDS_MAX);
        return EXIT_USAGE;
    }
    char idkey[CHECK_IDS_MAX][GRAY_MC_KEY_MAX + 1];
    const char *idval[CHECK_IDS_MAX];
    char idname[CHECK_IDS_MAX][CLI_ID_NAME_MAX + 1];
    for (int i = 0; i < nids; i++) {
        const char *eq = strchr(ids[i], '=');
        size_t nl = eq ? (size_t)(eq - ids[i]) : 0;
        const char *v = eq ? eq + 1 : "";
        size_t vl = strlen(v);
        if (!eq || !cli_id_name_ok(ids[i], nl) || vl == 0 || vl > CLI_ID_VALUE_MAX ||
            !gray_mc_key_ok(v, vl)) {
            fprintf(stderr, "gray-admin: check: bad --id '%s' (expected name=value: a name"
                    " as in the router's ids option, a value of 1 to %d bytes without spaces"
                    " or control bytes)\n", ids[i], CLI_ID_VALUE_MAX);
            return EXIT_USAGE;
        }
        memcpy(idname[i], ids[i], nl);
        idname[i][nl] = '\0';
        snprintf(idkey[i], sizeof idkey[i], "%s:%s", idname[i], v);
        idval[i] = v;
    }
    char akey[GRAY_MC_KEY_MAX + 1];
    snprintf(akey, sizeof akey, "%s%s", opts->key_prefix, canon);

    const char *target = NULL;
    char reason[160] = "default";
    char buf[CLI_TARGET_MAX + 1];
    int rc = 0;
    printf("address:  %s\n", canon);

    /* identity entries, in order, then the address entry */
    for (int i = 0; i < nids && !target; i++) {
        cli_value_t v;
        if (cli_gets(mc, idkey[i], &v) != 0)
            return EXIT_STORE;
        const char *t = target_of(&v);
        printf("entry:    %s = %s\n", idkey[i], t ? t : "(none)");
        if (t) {
            snprintf(buf, sizeof buf, "%s", t);
            target = buf;
            snprintf(reason, sizeof reason, "id:%s", idname[i]);
        }
        free(v.value);
    }
    if (!target) {
        cli_value_t v;
        if (cli_gets(mc, akey, &v) != 0)
            return EXIT_STORE;
        const char *t = target_of(&v);
        printf("entry:    %s = %s\n", akey, t ? t : "(none)");
        if (t) {
            snprintf(buf, sizeof buf, "%s", t);
            target = buf;
            snprintf(reason, sizeof reason, "ip");
        }
        free(v.value);
    }
    /* id lists: gray:list:<name> for each identity given */
    for (int i = 0; i < nids && !target; i++) {
        char lkey[GRAY_MC_KEY_MAX + 1], tag[32];
        snprintf(lkey, sizeof lkey, "gray:list:%s", idname[i]);
        char *text;
        size_t len;
        uint64_t cas;
        int exists;
        unsigned parts;
        int r = cli_list_read(mc, lkey, &text, &len, &cas, &exists, tag, sizeof tag, &parts);
        if (r != 0)
            return EXIT_STORE;
        const char *t = text ? list_lookup(text, len, idval[i], buf, sizeof buf) : NULL;
        printf("list:     %s %s\n", lkey, !exists ? "(none)" : t ? "lists it" : "does not list it");
        if (t) {
            target = t;
            snprintf(reason, sizeof reason, "list:%s", idname[i]);
        }
        free(text);
    }
    /* ranges */
    if (!target && opts->ranges_key[0]) {
        char *text, tag[32];
        size_t len;
        uint64_t cas;
        int exists;
        unsigned parts;
        int r = cli_list_read(mc, opts->ranges_key, &text, &len, &cas, &exists, tag, sizeof tag,
                              &parts);
        if (r != 0)
            return EXIT_STORE;
        if (!exists) {
            printf("ranges:   %s (none)\n", opts->ranges_key);
        } else {
            uint32_t lines = 0, bad = 0;
            const char *t = range_lookup(text, len, &ip, buf, sizeof buf, &lines, &bad);
            if (t && t[0] == '\0') {
                rc = EXIT_STORE;
            } else {
                printf("ranges:   %s: %u lines in use, %u skipped; %s\n", opts->ranges_key,
                       lines, bad, t ? "a range holds the address" : "no range holds it");
            }
            if (t && t[0]) {
                target = t;
                snprintf(reason, sizeof reason, "range");
            }
        }
        free(text);
    }
    /* the percentage, bucketed by the first identity, else the address */
    const char *pkey = nids > 0 ? idkey[0] : canon;
    uint32_t bucket = gray_percent_bucket(pkey, strlen(pkey));
    long threshold = 0;
    if (opts->percent_key[0]) {
        cli_value_t v;
        if (cli_gets(mc, opts->percent_key, &v) != 0)
            return EXIT_STORE;
        if (v.value) {
            threshold = cli_parse_percent(v.value, v.len);
            if (threshold < 0) {
                printf("percent:  %s = '%.40s': not a percentage (the router ignores it)\n",
                       opts->percent_key, v.value);
                threshold = 0;
            } else {
                printf("percent:  %s = %ld.%02ld\n", opts->percent_key, threshold / 100,
                       threshold % 100);
            }
        } else {
            printf("percent:  %s (none)\n", opts->percent_key);
        }
        free(v.value);
    }
    printf("bucket:   %s -> %u of %u (in the percentage below %ld)\n", pkey, bucket,
           GRAY_PERCENT_BUCKETS, threshold);
    if (!target && threshold > 0 && bucket < (uint32_t)threshold) {
        target = "1";
        snprintf(reason, sizeof reason, "percent");
    }
    printf("decision: %s (reason %s)\n", target ? target : "stable", reason);
    if (target && strcmp(target, "1") != 0)
        printf("note:     target '%s' must be in the router's targets, else stable\n", target);
    return rc;
}
