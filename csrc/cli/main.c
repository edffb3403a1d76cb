/* main.c - gray-admin's command line: arguments, commands, help. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define ARGS_MAX 64                 /* positional arguments and --id options */

static const char USAGE[] =
"usage: gray-admin [options] <command> [arguments]\n"
"\n"
"Edits the memcached entries, lists and percentage that lua-resty-gray reads,\n"
"in the router's formats and with its key placement.\n"
"\n"
"Commands:\n"
"  add <ip|cidr|name:id> [target] [--ttl S]\n"
"      ip       an address entry: key <key-prefix><canonical address>\n"
"               (::ffff:1.2.3.4 is written as 1.2.3.4), value the target\n"
"      name:id  an identity entry, key as given (uid:42)\n"
"      cidr     a line of the ranges list (as 'ranges add'); no --ttl\n"
"      target   '1' (the default gray target, the default) or a target name\n"
"               of the router's targets option; --ttl S expires the entry\n"
"               after S seconds (0 = never, at most 2592000)\n"
"  remove <ip|cidr|name:id>   deletes the entry (a cidr: its ranges line)\n"
"  get <ip|cidr|name:id>      prints the entry's value (a cidr: its ranges\n"
"                             line); exit 1 when there is none\n"
"  ranges add <ip|cidr> [target]   adds or retargets a line of the ranges list\n"
"  ranges remove <ip|cidr>         removes its line(s)\n"
"  ranges list                     prints the list (parts joined)\n"
"  list <name> add <id> [target]   adds or retargets an id in gray:list:<name>\n"
"  list <name> remove <id>         removes it\n"
"  list <name> show                prints the list (parts joined)\n"
"  percent [N]     sets the percentage (0 to 100, at most two decimals);\n"
"                  without N prints it\n"
"  import <file>   bulk entries, one per line as add's arguments\n"
"                  ('<ip|cidr|name:id> [target] [--ttl S]'; '#' comments and\n"
"                  blank lines skipped; '-' reads stdin). Every line is checked\n"
"                  before anything is written; ranges lines are written in one\n"
"                  edit. Progress on stderr when it is a terminal.\n"
"  check <ip> [--id name=value ...]\n"
"                  prints what the router would decide and why: identity\n"
"                  entries (in the order given), the address entry, id lists,\n"
"                  the ranges list, the percentage and the bucket of the\n"
"                  identity key (the first --id, else the address). The\n"
"                  tester override (force) is per request and not shown.\n"
"\n"
"List edits read the list, change it and write it back with CAS, again on a\n"
"conflict (up to 100 times), so concurrent edits never lose a line. A list\n"
"over one memcached item is written in parts (<key>:<tag>:<i>) under the\n"
"header '#gray-parts <n> <tag>', as the router reads it; old parts expire\n"
"60 s after a rewrite.\n"
"\n"
"Options:\n"
"  --servers LIST      memcached servers, $gray_memcached syntax:\n"
"                      \"127.0.0.1:11211, [::1]:11212\" (default 127.0.0.1:11211)\n"
"  --distribution M    key placement: modula (libmemcached's default, the\n"
"                      router's)\n"
"  --key-prefix P      the router's key_prefix for address keys (default none)\n"
"  --ranges-key K      the router's ranges_key (default gray:ranges)\n"
"  --percent-key K     the router's percent_key (default gray:percent)\n"
"  --timeout MS        connect and I/O timeout (default 2000)\n"
"  --part-size BYTES   split lists above this size (default 921600)\n"
"  --ttl S             add, import: entry lifetime in seconds\n"
"  --id name=value     check: an identity (up to 4, in the router's order)\n"
"  -v, --verbose       more messages on stderr\n"
"  -h, --help          this text\n"
"\n"
"Exit status: 0 done, 1 get found nothing, 2 bad arguments, 3 memcached\n"
"failed, 4 a list edit still conflicted after its retries.\n";

#define IMPORT_SHOWN_MAX 10          /* bad import lines described */

/* Set while import checks its lines: messages name the line, the first
 * IMPORT_SHOWN_MAX only. */
static size_t import_line, import_shown;

static int usage_error(const char *fmt, const char *arg)
{
    if (import_line) {
        if (import_shown++ < IMPORT_SHOWN_MAX) {
            fprintf(stderr, "gray-admin: import: line %zu: ", import_line);
            fprintf(stderr, fmt, arg);
            fputc('\n', stderr);
        }
        return EXIT_USAGE;
    }
    fprintf(stderr, "gray-admin: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(gray-admin --help lists the commands)\n");
    return EXIT_USAGE;
}

int cli_id_name_ok(const char *name, size_t len)
{
    if (len == 0 || len > CLI_ID_NAME_MAX)
        return 0;
    int past_f = 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alpha && !(c >= '0' && c <= '9') && c != '_' && c != '-')
            return 0;
        char lc = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        past_f |= (lc >= 'g' && lc <= 'z') || c == '_' || c == '-';
    }
    return past_f;
}

int cli_target_ok(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > CLI_TARGET_MAX || strcmp(s, "0") == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e || s[i] == '#')
            return 0;
    return 1;
}

/* ---- what an argument names ------------------------------------------- */

enum { THING_ADDR = 1, THING_ID, THING_RANGE };

typedef struct thing {
    int kind;
    char key[GRAY_MC_KEY_MAX + 1];  /* the entry key, or the normal CIDR */
} thing_t;

/* Classifies add/remove/get's first argument; 0 or EXIT_USAGE (printed). */
static int classify(const cli_opts_t *opts, const char *arg, thing_t *t)
{
    size_t len = strlen(arg);
    if (memchr(arg, '/', len)) {
        char norm[GRAY_IP_TEXT_MAX + 4];
        int w = cli_cidr_normal(arg, len, norm);
        if (w < 0)
            return usage_error(w == GRAY_EINVAL
                               ? "'%s' covers no address the router matches (an IPv6-written"
                                 " CIDR inside ::ffff:0:0/96; write IPv4 ranges in IPv4)"
                               : "'%s' is not a CIDR (a.b.c.d/n, n 0..32, or v6/n, n 0..128)",
                               arg);
        t->kind = THING_RANGE;
        memcpy(t->key, norm, (size_t)w + 1);
        return 0;
    }
    gray_ip_t ip;
    if (gray_ip_parse(arg, len, &ip) == GRAY_OK) {
        char canon[GRAY_IP_TEXT_MAX];
        int w = gray_ip_format(&ip, canon, sizeof canon);
        canon[w] = '\0';
        t->kind = THING_ADDR;
        snprintf(t->key, sizeof t->key, "%s%s", opts->key_prefix, canon);
        return 0;
    }
    const char *colon = memchr(arg, ':', len);
    if (colon && cli_id_name_ok(arg, (size_t)(colon - arg))) {
        size_t vl = len - (size_t)(colon - arg) - 1;
        if (vl == 0 || vl > CLI_ID_VALUE_MAX || !gray_mc_key_ok(colon + 1, vl))
            return usage_error("'%s': an id value is 1 to 200 bytes without spaces or"
                               " control bytes", arg);
        t->kind = THING_ID;
        memcpy(t->key, arg, len + 1);
        return 0;
    }
    return usage_error("'%s' is neither an IP address, a CIDR nor name:id (an identity"
                       " name holds a letter past 'f', '_' or '-')", arg);
}

static int check_target(const char *target)
{
    if (target && !cli_target_ok(target))
        return usage_error("bad target '%s' (1 or a name of 1 to 64 printable bytes without"
                           " '#'; remove an entry with remove)", target);
    return 0;
}

/* "<first field>[ <target>]": a list line (malloc'd). */
static char *list_line(const char *first, const char *target)
{
    size_t n = strlen(first) + (target ? strlen(target) + 1 : 0) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s%s", first, target ? " " : "", target ? target : "");
    return s;
}

/* Parses --ttl's value; -1 when bad. */
static long parse_ttl(const char *s)
{
    if (s == NULL || *s == '\0' || strlen(s) > 8)
        return -1;
    long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v > CLI_TTL_MAX ? -1 : v;
}

/* ---- commands ------------------------------------------------------------ */

static int one_list_edit(memcached_st *mc, const cli_opts_t *opts, const char *key, int kind,
                         const char *lkey, const char *target, int remove)
{
    cli_edit_t ed = { strdup(lkey), remove ? NULL : list_line(lkey, target) };
    if (ed.key == NULL || (!remove && ed.line == NULL)) {
        fprintf(stderr, "gray-admin: out of memory\n");
        return EXIT_STORE;
    }
    size_t changed = 0;
    int rc = cli_list_edit(mc, opts, key, kind, &ed, 1, &changed);
    if (rc == 0 && opts->verbose)
        fprintf(stderr, "gray-admin: %s: %s\n", key, changed ? "changed" : "unchanged");
    if (rc == 0 && remove && changed == 0)
        fprintf(stderr, "gray-admin: %s: no line for %s\n", key, lkey);
    free(ed.key);
    free(ed.line);
    return rc;
}

static int cmd_set_entry(memcached_st *mc, const char *key, const char *target, long ttl)
{
    const char *value = target ? target : "1";
    memcached_return_t rc = memcached_set(mc, key, strlen(key), value, strlen(value),
                                          (time_t)ttl, 0);
    if (rc != MEMCACHED_SUCCESS) {
        fprintf(stderr, "gray-admin: set %s: %s\n", key, cli_mc_error(mc, rc));
        return EXIT_STORE;
    }
    return 0;
}

static int cmd_print_list(memcached_st *mc, const char *key)
{
    char *text, tag[32];
    size_t len;
    uint64_t cas;
    int exists;
    unsigned parts;
    if (cli_list_read(mc, key, &text, &len, &cas, &exists, tag, sizeof tag, &parts) != 0)
        return EXIT_STORE;
    if (text) {
        fwrite(text, 1, len, stdout);
        if (len && text[len - 1] != '\n')
            putchar('\n');
    }
    free(text);
    return 0;
}

/* The line of a ranges list whose key is norm, printed; EXIT_NOTFOUND. */
static int cmd_get_range(memcached_st *mc, const cli_opts_t *opts, const char *norm)
{
    char *text, tag[32];
    size_t len;
    uint64_t cas;
    int exists;
    unsigned parts;
    int rc = cli_list_read(mc, opts->ranges_key, &text, &len, &cas, &exists, tag, sizeof tag,
                           &parts);
    if (rc != 0)
        return EXIT_STORE;
    const char *found = NULL;
    size_t flen = 0;
    const char *p = text, *end = text ? text + len : NULL;
    while (p && p < end) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        const char *stop = e ? e : end;
        char key[GRAY_MC_KEY_MAX + 8];
        if (cli_line_key(LIST_RANGES, p, (size_t)(stop - p), key, sizeof key) &&
            strcmp(key, norm) == 0) {
            found = p;
            flen = (size_t)(stop - p);
        }
        p = e ? e + 1 : end;
    }
    if (found)
        printf("%.*s\n", (int)flen, found);
    else
        fprintf(stderr, "gray-admin: %s has no line for %s\n", opts->ranges_key, norm);
    free(text);
    return found ? 0 : EXIT_NOTFOUND;
}

static int cmd_add(memcached_st *mc, const cli_opts_t *opts, char **pos, int npos, long ttl)
{
    if (npos < 2 || npos > 3)
        return usage_error("%s", "add: expected add <ip|cidr|name:id> [target] [--ttl S]");
    thing_t t;
    const char *target = npos == 3 ? pos[2] : NULL;
    int rc = classify(opts, pos[1], &t);
    if (rc == 0)
        rc = check_target(target);
    if (rc != 0)
        return rc;
    if (t.kind == THING_RANGE) {
        if (ttl >= 0)
            return usage_error("%s", "add: a ranges line has no --ttl");
        if (target && strcmp(target, "1") == 0)
            target = NULL;
        return one_list_edit(mc, opts, opts->ranges_key, LIST_RANGES, t.key, target, 0);
    }
    return cmd_set_entry(mc, t.key, target, ttl < 0 ? 0 : ttl);
}

static int cmd_remove_or_get(memcached_st *mc, const cli_opts_t *opts, char **pos, int npos,
                             int get)
{
    if (npos != 2)
        return usage_error("%s", get ? "get: expected get <ip|cidr|name:id>"
                                     : "remove: expected remove <ip|cidr|name:id>");
    thing_t t;
    int rc = classify(opts, pos[1], &t);
    if (rc != 0)
        return rc;
    if (t.kind == THING_RANGE)
        return get ? cmd_get_range(mc, opts, t.key)
                   : one_list_edit(mc, opts, opts->ranges_key, LIST_RANGES, t.key, NULL, 1);
    if (get) {
        cli_value_t v;
        if (cli_gets(mc, t.key, &v) != 0)
            return EXIT_STORE;
        if (v.value == NULL) {
            fprintf(stderr, "gray-admin: no entry %s\n", t.key);
            return EXIT_NOTFOUND;
        }
        printf("%s\n", v.value);
        free(v.value);
        return 0;
    }
    memcached_return_t mrc = memcached_delete(mc, t.key, strlen(t.key), 0);
    if (mrc == MEMCACHED_NOTFOUND) {
        fprintf(stderr, "gray-admin: no entry %s (nothing removed)\n", t.key);
        return 0;
    }
    if (mrc != MEMCACHED_SUCCESS) {
        fprintf(stderr, "gray-admin: delete %s: %s\n", t.key, cli_mc_error(mc, mrc));
        return EXIT_STORE;
    }
    return 0;
}

static int cmd_ranges(memcached_st *mc, const cli_opts_t *opts, char **pos, int npos)
{
    const char *sub = npos > 1 ? pos[1] : "";
    if (strcmp(sub, "list") == 0 && npos == 2)
        return cmd_print_list(mc, opts->ranges_key);
    int add = strcmp(sub, "add") == 0, remove = strcmp(sub, "remove") == 0;
    if (!(add && (npos == 3 || npos == 4)) && !(remove && npos == 3))
        return usage_error("%s", "ranges: expected ranges add <ip|cidr> [target],"
                                 " ranges remove <ip|cidr> or ranges list");
    char norm[GRAY_IP_TEXT_MAX + 4];
    int w = cli_cidr_normal(pos[2], strlen(pos[2]), norm);
    if (w < 0)
        return usage_error(w == GRAY_EINVAL
                           ? "'%s' covers no address the router matches (an IPv6-written"
                             " CIDR inside ::ffff:0:0/96; write IPv4 ranges in IPv4)"
                           : "'%s' is not an address or CIDR", pos[2]);
    const char *target = npos == 4 ? pos[3] : NULL;
    if (check_target(target) != 0)
        return EXIT_USAGE;
    if (target && strcmp(target, "1") == 0)
        target = NULL;
    return one_list_edit(mc, opts, opts->ranges_key, LIST_RANGES, norm, target, remove);
}

static int cmd_list(memcached_st *mc, const cli_opts_t *opts, char **pos, int npos)
{
    if (npos < 3)
        return usage_error("%s", "list: expected list <name> add <id> [target],"
                                 " list <name> remove <id> or list <name> show");
    const char *name = pos[1], *sub = pos[2];
    if (!cli_id_name_ok(name, strlen(name)))
        return usage_error("bad list name '%s' (an identity name: letters, digits, '_', '-',"
                           " at most 32, with a letter past 'f', '_' or '-')", name);
    char key[GRAY_MC_KEY_MAX + 1];
    snprintf(key, sizeof key, "gray:list:%s", name);
    if (strcmp(sub, "show") == 0 && npos == 3)
        return cmd_print_list(mc, key);
    int add = strcmp(sub, "add") == 0, remove = strcmp(sub, "remove") == 0;
    if (!(add && (npos == 4 || npos == 5)) && !(remove && npos == 4))
        return usage_error("%s", "list: expected list <name> add <id> [target],"
                                 " list <name> remove <id> or list <name> show");
    const char *id = pos[3];
    size_t il = strlen(id);
    if (il == 0 || il > CLI_ID_VALUE_MAX || !gray_mc_key_ok(id, il) || id[0] == '#')
        return usage_error("bad id '%s' (1 to 200 bytes without spaces or control bytes, not"
                           " starting with '#')", id);
    const char *target = npos == 5 ? pos[4] : NULL;
    if (check_target(target) != 0)
        return EXIT_USAGE;
    if (target && strcmp(target, "1") == 0)
        target = NULL;
    return one_list_edit(mc, opts, key, LIST_IDS, id, target, remove);
}

static int cmd_percent(memcached_st *mc, const cli_opts_t *opts, char **pos, int npos)
{
    if (npos > 2)
        return usage_error("%s", "percent: expected percent [N]");
    const char *key = opts->percent_key;
    if (npos == 1) {
        cli_value_t v;
        if (cli_gets(mc, key, &v) != 0)
            return EXIT_STORE;
        printf("%s\n", v.value ? v.value : "(none)");
        free(v.value);
        return 0;
    }
    const char *n = pos[1];
    if (strpbrk(n, " \t\r\n") || cli_parse_percent(n, strlen(n)) < 0)
        return usage_error("bad percentage '%s' (0 to 100, at most two decimals: 5, 12.5,"
                           " 0.25)", n);
    memcached_return_t rc = memcached_set(mc, key, strlen(key), n, strlen(n), 0, 0);
    if (rc != MEMCACHED_SUCCESS) {
        fprintf(stderr, "gray-admin: set %s: %s\n", key, cli_mc_error(mc, rc));
        return EXIT_STORE;
    }
    return 0;
}

/* ---- import --------------------------------------------------------------- */

typedef struct entry {
    char key[GRAY_MC_KEY_MAX + 1];
    char *target;               /* into the file's text, NULL: "1" */
    long ttl;
} entry_t;

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            char *b = realloc(buf, cap * 2 + 1);
            if (b == NULL) {
                free(buf);
                return NULL;
            }
            buf = b;
            cap *= 2;
        }
    }
    if (buf) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

static void progress(int tty, size_t done, size_t total)
{
    if (tty && (done == total || done % 256 == 0))
        fprintf(stderr, "\rgray-admin: import: %zu/%zu entries (%zu%%)", done, total,
                total ? done * 100 / total : 100);
    if (tty && done == total)
        fputc('\n', stderr);
}

static int cmd_import(memcached_st *mc, const cli_opts_t *opts, char **pos, int npos)
{
    if (npos != 2)
        return usage_error("%s", "import: expected import <file> ('-': stdin)");
    FILE *f = strcmp(pos[1], "-") == 0 ? stdin : fopen(pos[1], "rb");
    if (f == NULL) {
        fprintf(stderr, "gray-admin: import: cannot open %s\n", pos[1]);
        return EXIT_USAGE;
    }
    size_t len = 0;
    char *text = read_all(f, &len);
    if (f != stdin)
        fclose(f);
    if (text == NULL) {
        fprintf(stderr, "gray-admin: out of memory\n");
        return EXIT_STORE;
    }
    size_t nlines = 1;
    for (size_t i = 0; i < len; i++)
        nlines += text[i] == '\n';
    entry_t *entries = malloc(nlines * sizeof *entries);
    cli_edit_t *edits = calloc(nlines, sizeof *edits);
    size_t nent = 0, ned = 0, bad = 0, lineno = 0;
    int rc = 0;
    if (!entries || !edits) {
        fprintf(stderr, "gray-admin: out of memory\n");
        rc = EXIT_STORE;
        goto done;
    }
    /* check every line first: a bad file writes nothing */
    for (char *p = text, *end = text + len; p < end;) {
        char *e = memchr(p, '\n', (size_t)(end - p));
        if (e)
            *e = '\0';
        char *line = p;
        p = e ? e + 1 : end;
        lineno++;
        char *tok[8];
        int ntok = 0;
        for (char *s = strtok(line, " \t\r"); s && ntok < 8; s = strtok(NULL, " \t\r"))
            tok[ntok++] = s;
        if (ntok == 0 || tok[0][0] == '#')
            continue;
        long ttl = -1;
        char *args[3];
        int nargs = 0, ok = 1;
        for (int i = 0; i < ntok && ok; i++) {
            if (strcmp(tok[i], "--ttl") == 0 && i + 1 < ntok && ttl < 0) {
                ttl = parse_ttl(tok[++i]);
                ok = ttl >= 0;
            } else if (tok[i][0] == '#') {
                break;
            } else if (nargs < 2) {
                args[nargs++] = tok[i];
            } else {
                ok = 0;
            }
        }
        thing_t t;
        import_line = lineno;
        if (!ok || nargs == 0) {
            usage_error("%s", "expected <ip|cidr|name:id> [target] [--ttl S]");
            bad++;
            continue;
        }
        const char *target = nargs == 2 ? args[1] : NULL;
        if (classify(opts, args[0], &t) != 0 || check_target(target) != 0) {
            bad++;
            continue;
        }
        if (t.kind == THING_RANGE && ttl >= 0) {
            usage_error("%s", "a ranges line has no --ttl");
            bad++;
            continue;
        }
        if (target && strcmp(target, "1") == 0)
            target = NULL;
        if (t.kind == THING_RANGE) {
            edits[ned].key = strdup(t.key);
            edits[ned].line = list_line(t.key, target);
            if (!edits[ned].key || !edits[ned].line) {
                fprintf(stderr, "gray-admin: out of memory\n");
                rc = EXIT_STORE;
                goto done;
            }
            ned++;
        } else {
            entry_t *en = &entries[nent++];
            memcpy(en->key, t.key, sizeof en->key);
            en->target = (char *)target;
            en->ttl = ttl < 0 ? 0 : ttl;
        }
    }
    import_line = 0;
    if (bad) {
        fprintf(stderr, "gray-admin: import: %zu bad lines, nothing written\n", bad);
        rc = EXIT_USAGE;
        goto done;
    }
    int tty = isatty(STDERR_FILENO);
    for (size_t i = 0; i < nent; i++) {
        rc = cmd_set_entry(mc, entries[i].key, entries[i].target, entries[i].ttl);
        if (rc != 0) {
            fprintf(stderr, "gray-admin: import: stopped after %zu of %zu entries\n", i, nent);
            goto done;
        }
        progress(tty, i + 1, nent);
    }
    size_t changed = 0;
    if (ned) {
        if (tty)
            fprintf(stderr, "gray-admin: import: %zu ranges lines into %s\n", ned,
                    opts->ranges_key);
        rc = cli_list_edit(mc, opts, opts->ranges_key, LIST_RANGES, edits, ned, &changed);
        if (rc != 0)
            goto done;
    }
    printf("imported %zu entries and %zu ranges lines (%zu changed the list)\n", nent, ned,
           changed);
done:
    if (edits)
        for (size_t i = 0; i < ned; i++) {
            free(edits[i].key);
            free(edits[i].line);
        }
    free(edits);
    free(entries);
    free(text);
    return rc;
}

/* ---- main ------------------------------------------------------------------ */

/* The value of option argv[*i] ("--name value" or "--name=value"), or NULL. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t nl = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, nl) != 0)
        return NULL;
    if (a[nl] == '=')
        return a + nl + 1;
    if (a[nl] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        usage_error("option %s needs a value", name);
        exit(EXIT_USAGE);
    }
    return argv[++*i];
}

int main(int argc, char **argv)
{
    cli_opts_t opts = {
        .servers = "127.0.0.1:11211", .distribution = "modula", .key_prefix = "",
        .ranges_key = "gray:ranges", .percent_key = "gray:percent", .timeout_ms = 2000,
        .part_bytes = CLI_PART_BYTES, .verbose = 0,
    };
    char *pos[ARGS_MAX], *ids[ARGS_MAX];
    int npos = 0, nids = 0, dashdash = 0;
    long ttl = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (dashdash || a[0] != '-' || strcmp(a, "-") == 0) {
            if (npos == ARGS_MAX)
                return usage_error("%s", "too many arguments");
            pos[npos++] = argv[i];
        } else if (strcmp(a, "--") == 0) {
            dashdash = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(USAGE, stdout);
            return 0;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            opts.verbose = 1;
        } else if ((v = opt_value(argc, argv, &i, "--servers"))) {
            opts.servers = v;
        } else if ((v = opt_value(argc, argv, &i, "--distribution"))) {
            opts.distribution = v;
        } else if ((v = opt_value(argc, argv, &i, "--key-prefix"))) {
            if (strlen(v) > 200 || (v[0] && !gray_mc_key_ok(v, strlen(v))))
                return usage_error("bad --key-prefix '%s' (at most 200 bytes without spaces"
                                   " or control bytes)", v);
            opts.key_prefix = v;
        } else if ((v = opt_value(argc, argv, &i, "--ranges-key"))) {
            if (!gray_mc_key_ok(v, strlen(v)))
                return usage_error("bad --ranges-key '%s'", v);
            opts.ranges_key = v;
        } else if ((v = opt_value(argc, argv, &i, "--percent-key"))) {
            if (!gray_mc_key_ok(v, strlen(v)))
                return usage_error("bad --percent-key '%s'", v);
            opts.percent_key = v;
        } else if ((v = opt_value(argc, argv, &i, "--timeout"))) {
            long ms = parse_ttl(v);
            if (ms < 1 || ms > 600000)
                return usage_error("bad --timeout '%s' (milliseconds, 1 to 600000)", v);
            opts.timeout_ms = (unsigned)ms;
        } else if ((v = opt_value(argc, argv, &i, "--part-size"))) {
            long b = parse_ttl(v);
            if (b < 64 || b > (long)CLI_PART_BYTES)
                return usage_error("bad --part-size '%s' (bytes, 64 to 921600)", v);
            opts.part_bytes = (size_t)b;
        } else if ((v = opt_value(argc, argv, &i, "--ttl"))) {
            ttl = parse_ttl(v);
            if (ttl < 0)
                return usage_error("bad --ttl '%s' (seconds, 0 to 2592000)", v);
        } else if ((v = opt_value(argc, argv, &i, "--id"))) {
            if (nids == ARGS_MAX)
                return usage_error("%s", "too many --id");
            ids[nids++] = (char *)v;
        } else {
            return usage_error("unknown option '%s'", a);
        }
    }
    if (npos == 0)
        return usage_error("%s", "no command given");
    const char *cmd = pos[0];
    static const char *const COMMANDS[] = {
        "add", "remove", "get", "ranges", "list", "percent", "import", "check", NULL,
    };
    int known = 0;
    for (int k = 0; COMMANDS[k]; k++)
        known |= strcmp(cmd, COMMANDS[k]) == 0;
    if (!known)
        return usage_error("unknown command '%s'", cmd);
    if (ttl >= 0 && strcmp(cmd, "add") != 0)
        return usage_error("%s", "--ttl is for add (and inside import files)");
    if (nids > 0 && strcmp(cmd, "check") != 0)
        return usage_error("%s", "--id is for check");
    if (strcmp(cmd, "check") == 0 && npos != 2)
        return usage_error("%s", "check: expected check <ip> [--id name=value ...]");

    memcached_st *mc = cli_connect(&opts);
    if (mc == NULL)
        return EXIT_USAGE;
    int rc;
    if (strcmp(cmd, "add") == 0)
        rc = cmd_add(mc, &opts, pos, npos, ttl);
    else if (strcmp(cmd, "remove") == 0)
        rc = cmd_remove_or_get(mc, &opts, pos, npos, 0);
    else if (strcmp(cmd, "get") == 0)
        rc = cmd_remove_or_get(mc, &opts, pos, npos, 1);
    else if (strcmp(cmd, "ranges") == 0)
        rc = cmd_ranges(mc, &opts, pos, npos);
    else if (strcmp(cmd, "list") == 0)
        rc = cmd_list(mc, &opts, pos, npos);
    else if (strcmp(cmd, "percent") == 0)
        rc = cmd_percent(mc, &opts, pos, npos);
    else if (strcmp(cmd, "import") == 0)
        rc = cmd_import(mc, &opts, pos, npos);
    else
        rc = cli_check(mc, &opts, pos[1], ids, nids);
    memcached_free(mc);
    return rc;
}
