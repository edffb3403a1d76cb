/* import.c - gray-admin import: bulk entries and ranges lines from a file,
 * every line checked before anything is written. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

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

int cli_cmd_import(memcached_st *mc, const cli_opts_t *opts, char **pos, int npos)
{
    if (npos != 2)
        return cli_usage_error("%s", "import: expected import <file> ('-': stdin)");
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
                ttl = cli_parse_count(tok[++i], CLI_TTL_MAX);
                ok = ttl >= 0;
            } else if (tok[i][0] == '#') {
                break;
            } else if (nargs < 2) {
                args[nargs++] = tok[i];
            } else {
                ok = 0;
            }
        }
        cli_thing_t t;
        cli_import_line(lineno);
        if (!ok || nargs == 0) {
            cli_usage_error("%s", "expected <ip|cidr|name:id> [target] [--ttl S]");
            bad++;
            continue;
        }
        const char *target = nargs == 2 ? args[1] : NULL;
        if (cli_classify(opts, args[0], &t) != 0 || cli_check_target(target) != 0) {
            bad++;
            continue;
        }
        if (t.kind == CLI_THING_RANGE && ttl >= 0) {
            cli_usage_error("%s", "a ranges line has no --ttl");
            bad++;
            continue;
        }
        if (target && strcmp(target, "1") == 0)
            target = NULL;
        if (t.kind == CLI_THING_RANGE) {
            edits[ned].key = strdup(t.key);
            edits[ned].line = cli_list_line(t.key, target);
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
    cli_import_line(0);
    if (bad) {
        fprintf(stderr, "gray-admin: import: %zu bad lines, nothing written\n", bad);
        rc = EXIT_USAGE;
        goto done;
    }
    int tty = isatty(STDERR_FILENO);
    for (size_t i = 0; i < nent; i++) {
        rc = cli_set_entry(mc, entries[i].key, entries[i].target, entries[i].ttl);
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
