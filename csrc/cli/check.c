/* check.c - what the router would decide for an address and identities,
 * from the same memcached values and in the same precedence, a function per
 * rule: identity entry > address entry > id list > range > percent >
 * stable (the tester override is per request and left aside).
 * spec/check_diff_spec.lua compares it with real nginx. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CHECK_IDS_MAX 4             /* identities a router keys on */
#define CHECK_TARGETS_MAX 254       /* "1", "gray" and the names of --targets, as the
                                       router's (with stable and the unknown-target
                                       index: 255) */
#define CHECK_LISTS_MAX 4           /* names in --lists (identities) */

/* isspace() in the C locale: what Lua's %s matches in the router's patterns */
static int lua_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* The router's target names, "1\ngray\n<targets...>\nstable", as its
 * compiled ranges list numbers them (the unknown-target index comes after);
 * "1" and "gray" both name the default target, named gray. */
typedef struct check_names {
    char text[(CHECK_TARGETS_MAX + 2) * (GRAY_TARGET_NAME_MAX + 1)];
    size_t len;
    uint32_t count;
} check_names_t;

static int names_has(const check_names_t *k, const char *name, size_t len)
{
    const char *p = k->text, *end = k->text + k->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        if ((size_t)(stop - p) == len && memcmp(p, name, len) == 0)
            return 1;
        p = stop + 1;
    }
    return 0;
}

static void names_add(check_names_t *k, const char *name, size_t len)
{
    if (k->len)
        k->text[k->len++] = '\n';
    memcpy(k->text + k->len, name, len);
    k->len += len;
    k->count++;
}

/* --targets as the router's $gray_targets: "name=location, ..." (or bare
 * names), each a target name (gray_target_name_ok) other than "stable".
 * 0, or EXIT_USAGE (printed). */
static int parse_targets(const char *spec, check_names_t *k)
{
    k->len = 0;
    k->count = 0;
    names_add(k, "1", 1);
    names_add(k, "gray", 4);
    const char *p = spec;
    while (p && *p) {
        const char *comma = strchr(p, ',');
        const char *stop = comma ? comma : p + strlen(p);
        while (p < stop && lua_space(*p))
            p++;
        const char *n0 = p;
        while (p < stop && !lua_space(*p) && *p != '=')
            p++;
        size_t nl = (size_t)(p - n0);
        char name[GRAY_TARGET_NAME_MAX + 2];
        snprintf(name, sizeof name, "%.*s", (int)(nl < sizeof name - 1 ? nl : sizeof name - 1),
                 n0);
        if (nl == 6 && memcmp(n0, "stable", 6) == 0)
            return cli_usage_error("--targets names '%s', which is reserved (a value 'stable'"
                                   " pins a client to the stable location)", "stable");
        if ((nl == 4 && memcmp(n0, "gray", 4) == 0) || (nl == 1 && n0[0] == '1'))
            return cli_usage_error("--targets names '%s', which is reserved (the default"
                                   " target, named gray: value 1 or gray)", name);
        if (nl > 0 && !gray_target_name_ok(n0, nl))
            return cli_usage_error("--targets names '%s', which is not a target name (1 to 64"
                                   " printable ASCII bytes without '#', not 0)", name);
        if (nl > 0 && !names_has(k, n0, nl)) {
            if (k->count >= CHECK_TARGETS_MAX)
                return cli_usage_error("%s", "--targets has more than 251 names");
            names_add(k, n0, nl);
        }
        p = comma ? comma + 1 : stop;
    }
    names_add(k, "stable", 6);
    return 0;
}

/* Whether --lists (the router's lists: "dev, uid") names name. */
static int lists_has(const char *lists, const char *name)
{
    size_t len = strlen(name);
    const char *p = lists;
    while (p && *p) {
        while (*p == ',' || lua_space(*p))
            p++;
        const char *n0 = p;
        while (*p && *p != ',' && !lua_space(*p))
            p++;
        if ((size_t)(p - n0) == len && len > 0 && memcmp(n0, name, len) == 0)
            return 1;
    }
    return 0;
}

/* What a decision came to: none (the next rule decides), a target name
 * ("1", a name of --targets, "stable"), or the unknown-target decision. */
enum { DECIDE_NONE = 0, DECIDE_TARGET, DECIDE_UNKNOWN };

/* What a memcached entry's value decides, as the router's decision_of():
 * absent, "" and "0" are no match; a known name is its target; anything
 * else names no target: the stable location, reason unknown-target. */
static int entry_decides(const check_names_t *k, const cli_value_t *v)
{
    if (v->value == NULL || v->len == 0 || (v->len == 1 && v->value[0] == '0'))
        return DECIDE_NONE;
    return names_has(k, v->value, v->len) ? DECIDE_TARGET : DECIDE_UNKNOWN;
}

/* The t-th of the router's target names (from 1) into buf. */
static void name_at(const check_names_t *k, uint32_t t, char *buf, size_t cap)
{
    const char *s = k->text, *end = k->text + k->len;
    for (uint32_t i = 1; i < t && s < end; i++) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        s = nl ? nl + 1 : end;
    }
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    snprintf(buf, cap, "%.*s", (int)((nl ? nl : end) - s), s);
}

/* What an id list gives value, compiled exactly as the router compiles it
 * (the C image of gray_image_build(): '#' comments anywhere, fields split
 * as Lua's %s, the later of equal ids wins, a name not in the router's
 * targets is the unknown-target decision). The target name goes into buf;
 * -1 when the list does not compile (printed). */
static int list_lookup(const check_names_t *k, const char *text, size_t len, const char *value,
                       char *buf, size_t cap)
{
    uint32_t unknown_index = k->count + 1;
    gray_image_part_t part = { text, len };
    gray_image_stats_t st;
    void *mem = NULL;
    size_t mem_len = 0;
    gray_image_t *img = NULL;
    int rc = gray_image_build(GRAY_IMAGE_IDS, &part, 1, k->text, k->len, unknown_index, 0,
                              &mem, &mem_len, &st);
    if (rc == GRAY_OK)
        rc = gray_image_open_mem(mem, mem_len, 0, &img);
    if (rc != GRAY_OK) {
        fprintf(stderr, "gray-admin: the id list does not compile: %s\n", gray_strerror(rc));
        if (mem)
            gray_image_free_buf(mem);
        return -1;
    }
    int t = gray_image_find_id(img, value, strlen(value));
    int found = DECIDE_NONE;
    if (t > 0 && (uint32_t)t == unknown_index) {
        snprintf(buf, cap, "stable");
        found = DECIDE_UNKNOWN;
    } else if (t > 0) {
        name_at(k, (uint32_t)t, buf, cap);
        found = DECIDE_TARGET;
    }
    gray_image_close(img);
    gray_image_free_buf(mem);
    return found;
}

/* Compiles the ranges list with the C core and the router's target names,
 * exactly as the router does, and looks up ip. Returns what it decides (the
 * target name into buf), or -1 when the list does not compile (printed).
 * *lines counts the lines in use, *bad the lines skipped, *unknown those
 * naming an unknown target. */
static int range_lookup(const check_names_t *k, const char *text, size_t len,
                        const gray_ip_t *ip, char *buf, size_t cap, uint32_t *lines,
                        uint32_t *bad, uint32_t *unknown)
{
    int result = -1;
    gray_rentry4_t *e4 = NULL;
    gray_rentry6_t *e6 = NULL;
    gray_run4_t *v4 = NULL;
    gray_run6_t *v6 = NULL;
    uint32_t *ix4 = NULL, *ix6 = NULL;
    uint32_t unknown_index = k->count + 1;

    size_t room4, room6;
    gray_ranges_room(text, len, &room4, &room6);
    e4 = malloc((room4 + 1) * sizeof *e4);
    e6 = malloc((room6 + 1) * sizeof *e6);
    if (!e4 || !e6)
        goto oom;
    gray_ranges_stats_t st;
    int rc = gray_ranges_parse(text, len, k->text, k->len, unknown_index, e4, room4, e6, room6,
                               &st);
    *lines = st.taken;
    *bad = st.bad;
    *unknown = st.unknown;
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
    uint32_t t = (uint32_t)gray_rangeset_find(&set, ip);
    result = DECIDE_NONE;
    if (t == unknown_index) {
        snprintf(buf, cap, "stable");
        result = DECIDE_UNKNOWN;
    } else if (t > 0) {
        name_at(k, t, buf, cap);
        result = DECIDE_TARGET;
    }
    goto done;
oom:
    fprintf(stderr, "gray-admin: out of memory\n");
done:
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
    while (len && lua_space(*s)) {
        s++;
        len--;
    }
    while (len && lua_space(s[len - 1]))
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

/* ---- the rules, in the router's precedence ---------------------------- */

/* A check under way: the request it asks about and what it has decided. */
typedef struct check {
    memcached_st *mc;
    const cli_opts_t *opts;
    const check_names_t *names;
    gray_ip_t ip;
    char canon[GRAY_IP_TEXT_MAX];   /* the address in canonical text */
    char akey[GRAY_MC_KEY_MAX + 1]; /* its entry key */
    int nids;
    char idname[CHECK_IDS_MAX][CLI_ID_NAME_MAX + 1];
    const char *idval[CHECK_IDS_MAX];
    char idkey[CHECK_IDS_MAX][GRAY_MC_KEY_MAX + 1];
    int decided;                    /* DECIDE_* */
    char target[GRAY_TARGET_NAME_MAX + 1];
    char reason[160];
    int rc;                         /* the exit code when a rule failed but the
                                       others still run */
    uint32_t bucket;                /* the percentage's bucket of the identity key */
    int kept;                       /* the percentage is bad: the router keeps its last */
} check_t;

/* Records a rule's decision d (not DECIDE_NONE): the target name (len
 * bytes) and the reason, rule or unknown-target. */
static void take(check_t *c, int d, const char *name, size_t len, const char *rule)
{
    if (len == 1 && name[0] == '1') {       /* value 1: the default target, gray */
        name = "gray";
        len = 4;
    }
    c->decided = d;
    snprintf(c->target, sizeof c->target, "%.*s", (int)len, name);
    snprintf(c->reason, sizeof c->reason, "%s", d == DECIDE_UNKNOWN ? "unknown-target" : rule);
}

/* The entry under key, for rule ("id:<name>" or "ip"). 0 or EXIT_STORE. */
static int entry_rule(check_t *c, const char *key, const char *rule)
{
    cli_value_t v;
    if (cli_gets(c->mc, key, &v) != 0)
        return EXIT_STORE;
    int d = entry_decides(c->names, &v);
    if (d == DECIDE_NONE)
        printf("entry:    %s = %s\n", key, v.value ? "(no match)" : "(none)");
    else if (d == DECIDE_TARGET)
        printf("entry:    %s = %.*s\n", key, (int)v.len, v.value);
    else
        printf("entry:    %s = '%.*s': names no target in --targets (the stable"
               " location)\n", key, (int)(v.len > 40 ? 40 : v.len), v.value);
    if (d == DECIDE_TARGET)
        take(c, d, v.value, v.len, rule);
    else if (d == DECIDE_UNKNOWN)
        take(c, d, "stable", 6, rule);
    free(v.value);
    return 0;
}

/* 1. the identity entries, in the order given */
static int rule_id_entries(check_t *c)
{
    for (int i = 0; i < c->nids && !c->decided; i++) {
        char rule[CLI_ID_NAME_MAX + 4];
        snprintf(rule, sizeof rule, "id:%s", c->idname[i]);
        if (entry_rule(c, c->idkey[i], rule) != 0)
            return EXIT_STORE;
    }
    return 0;
}

/* 2. the address entry */
static int rule_address_entry(check_t *c)
{
    return c->decided ? 0 : entry_rule(c, c->akey, "ip");
}

/* 3. the id lists: gray:list:<name> for each identity given whose list the
 * router reads (--lists) */
static int rule_id_lists(check_t *c)
{
    for (int i = 0; i < c->nids && !c->decided; i++) {
        char lkey[GRAY_MC_KEY_MAX + 1], buf[GRAY_TARGET_NAME_MAX + 1];
        snprintf(lkey, sizeof lkey, "gray:list:%s", c->idname[i]);
        if (!lists_has(c->opts->lists, c->idname[i])) {
            printf("list:     %s not read (not in --lists)\n", lkey);
            continue;
        }
        cli_list_t list = { .key = lkey };
        if (cli_list_read(c->mc, &list) != 0)
            return EXIT_STORE;
        int d = list.text ? list_lookup(c->names, list.text, list.len, c->idval[i], buf,
                                        sizeof buf)
                          : DECIDE_NONE;
        if (d < 0) {
            cli_list_free(&list);
            return EXIT_STORE;
        }
        printf("list:     %s %s\n", lkey, !list.exists ? "(none)" : d == DECIDE_UNKNOWN
               ? "lists it with a target not in --targets (the stable location)"
               : d ? "lists it" : "does not list it");
        if (d) {
            char rule[CLI_ID_NAME_MAX + 8];
            snprintf(rule, sizeof rule, "list:%s", c->idname[i]);
            take(c, d, buf, strlen(buf), rule);
        }
        cli_list_free(&list);
    }
    return 0;
}

/* 4. the ranges list (a list that does not compile: exit 3, the rules
 * after it still shown) */
static int rule_ranges(check_t *c)
{
    if (c->decided || !c->opts->ranges_key[0])
        return 0;
    cli_list_t list = { .key = c->opts->ranges_key };
    if (cli_list_read(c->mc, &list) != 0)
        return EXIT_STORE;
    if (!list.exists) {
        printf("ranges:   %s (none)\n", list.key);
        return 0;
    }
    char buf[GRAY_TARGET_NAME_MAX + 1];
    uint32_t lines = 0, bad = 0, unknown = 0;
    int d = range_lookup(c->names, list.text, list.len, &c->ip, buf, sizeof buf, &lines, &bad,
                         &unknown);
    if (d < 0) {
        c->rc = EXIT_STORE;
    } else {
        printf("ranges:   %s: %u lines in use (%u naming a target not in --targets:"
               " the stable location), %u skipped; %s\n", list.key, lines,
               unknown, bad, d == DECIDE_UNKNOWN
               ? "a range with an unknown target holds the address"
               : d ? "a range holds the address" : "no range holds it");
        if (d)
            take(c, d, buf, strlen(buf), "range");
    }
    cli_list_free(&list);
    return 0;
}

/* 5. the percentage, bucketed by the first identity, else the address
 * (shown even when an earlier rule decided) */
static int rule_percent(check_t *c)
{
    const char *pkey = c->nids > 0 ? c->idkey[0] : c->canon;
    const char *key = c->opts->percent_key;
    long threshold = 0;
    c->bucket = gray_percent_bucket(pkey, strlen(pkey));
    if (key[0]) {
        cli_value_t v;
        if (cli_gets(c->mc, key, &v) != 0)
            return EXIT_STORE;
        if (v.value) {
            threshold = cli_parse_percent(v.value, v.len);
            if (threshold < 0) {
                printf("percent:  %s = '%.40s': not a percentage; the router keeps the one it"
                       " compiled last (0 if none since it started; 0 taken here)\n",
                       key, v.value);
                threshold = 0;
                c->kept = 1;
            } else {
                printf("percent:  %s = %ld.%02ld\n", key, threshold / 100, threshold % 100);
            }
        } else {
            printf("percent:  %s (none)\n", key);
        }
        free(v.value);
    }
    long ramp = cli_ramp_share(c->mc, c->opts);        /* while it exists, it replaces it */
    if (ramp == -2)
        return EXIT_STORE;
    if (ramp >= 0)
        threshold = ramp;
    printf("bucket:   %s -> %u of %u (the percentage takes buckets below %ld)\n", pkey, c->bucket,
           GRAY_PERCENT_BUCKETS, threshold);
    if (!c->decided && threshold > 0 && c->bucket < (uint32_t)threshold)
        take(c, DECIDE_TARGET, "gray", 4, "percent");
    return 0;
}

static int (*const RULES[])(check_t *c) = {
    rule_id_entries, rule_address_entry, rule_id_lists, rule_ranges, rule_percent,
};

/* The address into c, and the count of --id checked. 0 or EXIT_USAGE (printed). */
static int check_request(check_t *c, const char *addr, int nids)
{
    if (gray_ip_parse(addr, strlen(addr), &c->ip) != GRAY_OK) {
        fprintf(stderr, "gray-admin: check: '%s' is not an IP address\n", addr);
        return EXIT_USAGE;
    }
    int cl = gray_ip_format(&c->ip, c->canon, sizeof c->canon);
    c->canon[cl] = '\0';
    if (nids > CHECK_IDS_MAX) {
        fprintf(stderr, "gray-admin: check: at most %d --id (a router keys on at most %d"
                " identities)\n", CHECK_IDS_MAX, CHECK_IDS_MAX);
        return EXIT_USAGE;
    }
    return 0;
}

/* The --id options (name=value) into c. 0 or EXIT_USAGE (printed). */
static int check_ids(check_t *c, char *const *ids, int nids)
{
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
        memcpy(c->idname[i], ids[i], nl);
        c->idname[i][nl] = '\0';
        snprintf(c->idkey[i], sizeof c->idkey[i], "%.*s:%s", (int)nl, ids[i], v);
        c->idval[i] = v;
    }
    c->nids = nids;
    return 0;
}

int cli_cmd_check(memcached_st *mc, const cli_opts_t *opts, const cli_args_t *args)
{
    if (args->npos != 2)
        return cli_usage_error("%s", "check: expected check <ip> [--id name=value ...]");
    static check_names_t names;
    static check_t c;
    memset(&c, 0, sizeof c);
    c.mc = mc;
    c.opts = opts;
    c.names = &names;
    int rc = check_request(&c, args->pos[1], args->nids);
    if (rc == 0)
        rc = parse_targets(opts->targets, &names);
    if (rc == 0)
        rc = check_ids(&c, args->ids, args->nids);
    if (rc != 0)
        return rc;
    snprintf(c.akey, sizeof c.akey, "%s%s", opts->key_prefix, c.canon);
    snprintf(c.target, sizeof c.target, "stable");
    snprintf(c.reason, sizeof c.reason, "default");

    printf("address:  %s\n", c.canon);
    for (size_t r = 0; r < sizeof RULES / sizeof RULES[0]; r++)
        if ((rc = RULES[r](&c)) != 0)
            return rc;
    printf("decision: %s (reason %s)\n", c.target, c.reason);
    if (!c.decided && c.kept)
        printf("note:     a router that compiled a percentage above %u.%02u before '%s' went"
               " bad sends this client to 1 (reason percent)\n", c.bucket / 100, c.bucket % 100,
               opts->percent_key);
    return c.rc;
}
