/* commands.c - gray-admin's commands on entries, the ranges list, id lists
 * and the percentage. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int one_list_edit(memcached_st *mc, const cli_opts_t *opts, const char *key, int kind,
                         const char *lkey, const char *target, int remove)
{
    cli_edit_t ed = { strdup(lkey), remove ? NULL : cli_list_line(lkey, target) };
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

/* The default target's names, gray and 1: written as 1 (or no target in a
 * list line), the value every router version reads. */
static int default_target(const char *target)
{
    return target && (strcmp(target, "1") == 0 || strcmp(target, "gray") == 0);
}

int cli_set_entry(memcached_st *mc, const char *key, const char *target, long ttl)
{
    const char *value = target && !default_target(target) ? target : "1";
    memcached_return_t rc = memcached_set(mc, key, strlen(key), value, strlen(value),
                                          (time_t)ttl, 0);
    if (rc != MEMCACHED_SUCCESS) {
        fprintf(stderr, "gray-admin: set %s: %s\n", key, cli_mc_error(mc, rc));
        return EXIT_STORE;
    }
    return 0;
}

static int print_list(memcached_st *mc, const char *key)
{
    cli_list_t list = { .key = key };
    if (cli_list_read(mc, &list) != 0)
        return EXIT_STORE;
    if (list.text) {
        fwrite(list.text, 1, list.len, stdout);
        if (list.len && list.text[list.len - 1] != '\n')
            putchar('\n');
    }
    cli_list_free(&list);
    return 0;
}

/* The line of a ranges list whose key is norm, printed; EXIT_NOTFOUND. */
static int get_range(memcached_st *mc, const cli_opts_t *opts, const char *norm)
{
    cli_list_t list = { .key = opts->ranges_key };
    if (cli_list_read(mc, &list) != 0)
        return EXIT_STORE;
    const char *found = NULL;
    size_t flen = 0;
    const char *p = list.text, *end = list.text ? list.text + list.len : NULL;
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
    cli_list_free(&list);
    return found ? 0 : EXIT_NOTFOUND;
}

int cli_cmd_add(memcached_st *mc, const cli_opts_t *opts, const cli_args_t *args)
{
    char **pos = args->pos;
    int npos = args->npos;
    long ttl = args->ttl;
    if (npos < 2 || npos > 3)
        return cli_usage_error("%s", "add: expected add <ip|cidr|name:id> [target]"
                                     " [--ttl S]");
    cli_thing_t t;
    const char *target = npos == 3 ? pos[2] : NULL;
    int rc = cli_classify(opts, pos[1], &t);
    if (rc == 0)
        rc = cli_check_target(target);
    if (rc != 0)
        return rc;
    if (t.kind == CLI_THING_RANGE) {
        if (ttl >= 0)
            return cli_usage_error("%s", "add: a ranges line has no --ttl");
        if (default_target(target))
            target = NULL;
        return one_list_edit(mc, opts, opts->ranges_key, LIST_RANGES, t.key, target, 0);
    }
    return cli_set_entry(mc, t.key, target, ttl < 0 ? 0 : ttl);
}

static int remove_or_get(memcached_st *mc, const cli_opts_t *opts, char **pos, int npos,
                         int get)
{
    if (npos != 2)
        return cli_usage_error("%s", get ? "get: expected get <ip|cidr|name:id>"
                                         : "remove: expected remove <ip|cidr|name:id>");
    cli_thing_t t;
    int rc = cli_classify(opts, pos[1], &t);
    if (rc != 0)
        return rc;
    if (t.kind == CLI_THING_RANGE)
        return get ? get_range(mc, opts, t.key)
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
    rc = cli_delete(mc, t.key, "no entry ", " (nothing removed)");
    return rc == EXIT_NOTFOUND ? 0 : rc;
}

int cli_cmd_remove(memcached_st *mc, const cli_opts_t *opts, const cli_args_t *args)
{
    return remove_or_get(mc, opts, args->pos, args->npos, 0);
}

int cli_cmd_get(memcached_st *mc, const cli_opts_t *opts, const cli_args_t *args)
{
    return remove_or_get(mc, opts, args->pos, args->npos, 1);
}

int cli_cmd_ranges(memcached_st *mc, const cli_opts_t *opts, const cli_args_t *args)
{
    char **pos = args->pos;
    int npos = args->npos;
    const char *sub = npos > 1 ? pos[1] : "";
    if (strcmp(sub, "list") == 0 && npos == 2)
        return print_list(mc, opts->ranges_key);
    int add = strcmp(sub, "add") == 0, remove = strcmp(sub, "remove") == 0;
    if (!(add && (npos == 3 || npos == 4)) && !(remove && npos == 3))
        return cli_usage_error("%s", "ranges: expected ranges add <ip|cidr> [target],"
                                     " ranges remove <ip|cidr> or ranges list");
    char norm[GRAY_IP_TEXT_MAX + 4];
    int w = cli_cidr_normal(pos[2], strlen(pos[2]), norm);
    if (w < 0)
        return cli_cidr_error(w, pos[2]);
    const char *target = npos == 4 ? pos[3] : NULL;
    if (cli_check_target(target) != 0)
        return EXIT_USAGE;
    if (default_target(target))
        target = NULL;
    return one_list_edit(mc, opts, opts->ranges_key, LIST_RANGES, norm, target, remove);
}

int cli_cmd_list(memcached_st *mc, const cli_opts_t *opts, const cli_args_t *args)
{
    char **pos = args->pos;
    int npos = args->npos;
    if (npos < 3)
        return cli_usage_error("%s", "list: expected list <name> add <id> [target],"
                                     " list <name> remove <id> or list <name> show");
    const char *name = pos[1], *sub = pos[2];
    if (!cli_id_name_ok(name, strlen(name)))
        return cli_usage_error("bad list name '%s' (an identity name: letters, digits, '_',"
                               " '-', at most 32, with a letter past 'f', '_' or '-')", name);
    char key[GRAY_MC_KEY_MAX + 1];
    snprintf(key, sizeof key, "gray:list:%s", name);
    if (strcmp(sub, "show") == 0 && npos == 3)
        return print_list(mc, key);
    int add = strcmp(sub, "add") == 0, remove = strcmp(sub, "remove") == 0;
    if (!(add && (npos == 4 || npos == 5)) && !(remove && npos == 4))
        return cli_usage_error("%s", "list: expected list <name> add <id> [target],"
                                     " list <name> remove <id> or list <name> show");
    const char *id = pos[3];
    size_t il = strlen(id);
    if (il == 0 || il > CLI_ID_VALUE_MAX || !gray_mc_key_ok(id, il) || id[0] == '#')
        return cli_usage_error("bad id '%s' (1 to 200 bytes without spaces or control bytes,"
                               " not starting with '#')", id);
    const char *target = npos == 5 ? pos[4] : NULL;
    if (cli_check_target(target) != 0)
        return EXIT_USAGE;
    if (default_target(target))
        target = NULL;
    return one_list_edit(mc, opts, key, LIST_IDS, id, target, remove);
}

int cli_cmd_percent(memcached_st *mc, const cli_opts_t *opts, const cli_args_t *args)
{
    char **pos = args->pos;
    int npos = args->npos;
    if (npos > 2)
        return cli_usage_error("%s", "percent: expected percent [N]");
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
        return cli_usage_error("bad percentage '%s' (0 to 100, at most two decimals: 5,"
                               " 12.5, 0.25)", n);
    memcached_return_t rc = memcached_set(mc, key, strlen(key), n, strlen(n), 0, 0);
    if (rc != MEMCACHED_SUCCESS) {
        fprintf(stderr, "gray-admin: set %s: %s\n", key, cli_mc_error(mc, rc));
        return EXIT_STORE;
    }
    return 0;
}
