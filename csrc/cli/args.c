/* args.c - gray-admin's argument checks: what an argument names, target
 * names, numbers, and the message for a bad one. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define IMPORT_SHOWN_MAX 10         /* bad import lines described */

/* Set while import checks its lines: messages name the line, the first
 * IMPORT_SHOWN_MAX only. */
static size_t import_line, import_shown;

void cli_import_line(size_t line)
{
    import_line = line;
}

int cli_usage_error(const char *fmt, const char *arg)
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
    if (len == 4 && memcmp(name, "gray", 4) == 0)
        return 0;                   /* the router's own keys: gray:percent, gray:list:... */
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
    return gray_target_name_ok(s, strlen(s));
}

int cli_check_target(const char *target)
{
    if (target && !cli_target_ok(target))
        return cli_usage_error("bad target '%s' (1 or a name of 1 to 64 printable bytes"
                               " without '#'; remove an entry with remove)", target);
    return 0;
}

int cli_cidr_error(int code, const char *arg)
{
    return cli_usage_error(code == GRAY_EINVAL
                           ? "'%s' covers no address the router matches (an IPv6-written"
                             " CIDR inside ::ffff:0:0/96; write IPv4 ranges in IPv4)"
                           : "'%s' is not an address or CIDR (a.b.c.d/n, n 0..32, or v6/n,"
                             " n 0..128)", arg);
}

int cli_classify(const cli_opts_t *opts, const char *arg, cli_thing_t *t)
{
    size_t len = strlen(arg);
    if (memchr(arg, '/', len)) {
        char norm[GRAY_IP_TEXT_MAX + 4];
        int w = cli_cidr_normal(arg, len, norm);
        if (w < 0)
            return cli_cidr_error(w, arg);
        t->kind = CLI_THING_RANGE;
        memcpy(t->key, norm, (size_t)w + 1);
        return 0;
    }
    gray_ip_t ip;
    if (gray_ip_parse(arg, len, &ip) == GRAY_OK) {
        char canon[GRAY_IP_TEXT_MAX];
        int w = gray_ip_format(&ip, canon, sizeof canon);
        canon[w] = '\0';
        t->kind = CLI_THING_ADDR;
        snprintf(t->key, sizeof t->key, "%s%s", opts->key_prefix, canon);
        return 0;
    }
    const char *colon = memchr(arg, ':', len);
    if (colon && colon - arg == 4 && memcmp(arg, "gray", 4) == 0)
        return cli_usage_error("'%s' is in the router's own key space: the identity name"
                               " 'gray' is reserved", arg);
    if (colon && cli_id_name_ok(arg, (size_t)(colon - arg))) {
        size_t vl = len - (size_t)(colon - arg) - 1;
        if (vl == 0 || vl > CLI_ID_VALUE_MAX || !gray_mc_key_ok(colon + 1, vl))
            return cli_usage_error("'%s': an id value is 1 to 200 bytes without spaces or"
                                   " control bytes", arg);
        /* never one of the router's list keys or their parts */
        const char *own[] = { opts->ranges_key, opts->percent_key };
        for (int k = 0; k < 2; k++) {
            size_t ol = strlen(own[k]);
            if (strncmp(arg, own[k], ol) == 0 && (arg[ol] == '\0' || arg[ol] == ':'))
                return cli_usage_error("'%s' is the router's own key (ranges or percentage),"
                                       " not an identity entry", arg);
        }
        t->kind = CLI_THING_ID;
        memcpy(t->key, arg, len + 1);
        return 0;
    }
    return cli_usage_error("'%s' is neither an IP address, a CIDR nor name:id (an identity"
                           " name holds a letter past 'f', '_' or '-')", arg);
}

char *cli_list_line(const char *first, const char *target)
{
    size_t n = strlen(first) + (target ? strlen(target) + 1 : 0) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s%s", first, target ? " " : "", target ? target : "");
    return s;
}

long cli_parse_count(const char *s, long max)
{
    if (s == NULL || *s == '\0' || strlen(s) > 9)
        return -1;
    long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    return v > max ? -1 : v;
}
