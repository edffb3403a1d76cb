/* import.c - gray-admin import: bulk entries and ranges lines from a file,
 * every line checked before anything is written.
 *
 * The file is streamed twice and never held: pass 1 checks every line (and
 * keeps the ranges lines, the only ones that need memory: they go into one
 * list edit); then the ranges lines are written in that one edit, under the
 * list's import lock (listedit.c); pass 2 reads the file again and writes
 * the entries pipelined (libmemcached's buffered mode, noreply sets),
 * IMPORT_BATCH at a time, each batch read back with one multi-get before
 * the next is sent: the multi-get is the check that every entry landed.
 * stdin that cannot be read twice (a pipe) is copied to an unlinked
 * temporary file during pass 1.
 *
 *   gray-admin import entries.txt        # "<ip|cidr|name:id> [target] [--ttl S]"
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "../image_internal.h"

#define IMPORT_LINE_MAX   4096      /* bytes in one line, comments included */
#define IMPORT_READ_BYTES 65536     /* one read() of the file */
#define IMPORT_BATCH      1024      /* entries written, then read back, together:
                                       their replies (at most ~46 KB) fit in the
                                       socket's receive buffer */
#define IMPORT_SHORT_TTL  5         /* s: an entry this short-lived may be gone
                                       before it is read back: not an error */
#define IMPORT_SHOWN_MAX  10        /* entries named when they did not land */
#define LINE_EOF          (-1)      /* next_line(): the end, or a failure (err) */
#define LINE_TOO_LONG     (-2)

/* ---- reading the file, line by line, in constant memory ------------------ */

typedef struct reader {
    int fd;
    int spool;                  /* pass 1 copies what it reads here; -1: no */
    int eof;
    int err;                    /* errno of a failed read or spool write */
    size_t lineno;
    size_t start, end;          /* the unread bytes of buf */
    char buf[IMPORT_READ_BYTES];
} reader_t;

/* The next line, NUL-terminated, into line (IMPORT_LINE_MAX + 1 bytes): its
 * length, LINE_TOO_LONG (the rest of it skipped), or LINE_EOF at the end or
 * after a failure (r->err set). */
static long next_line(reader_t *r, char *line)
{
    size_t n = 0;
    int too_long = 0;
    for (;;) {
        if (r->start == r->end) {
            if (r->eof) {
                if (n == 0 && !too_long)
                    return LINE_EOF;
                break;              /* a last line without '\n' */
            }
            ssize_t got = read(r->fd, r->buf, sizeof r->buf);
            if (got < 0 && errno == EINTR)
                continue;
            if (got < 0) {
                r->err = errno;
                return LINE_EOF;
            }
            if (got == 0) {
                r->eof = 1;
                continue;
            }
            int werr = r->spool >= 0 ? gray_write_all(r->spool, r->buf, (size_t)got) : 0;
            if (werr != 0) {
                r->err = werr;
                return LINE_EOF;
            }
            r->start = 0;
            r->end = (size_t)got;
        }
        const char *s = r->buf + r->start;
        size_t avail = r->end - r->start;
        const char *nl = memchr(s, '\n', avail);
        size_t take = nl ? (size_t)(nl - s) : avail;
        if (!too_long && n + take > IMPORT_LINE_MAX)
            too_long = 1;
        if (!too_long) {
            memcpy(line + n, s, take);
            n += take;
        }
        r->start += take + (nl != NULL);
        if (nl)
            break;
    }
    r->lineno++;
    line[n] = '\0';
    return too_long ? LINE_TOO_LONG : (long)n;
}

/* ---- one line (import_line_t: cli.h) ------------------------------------ */

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Checks line as add's arguments (cli.h). */
int cli_import_parse_line(const cli_opts_t *opts, char *line, long len, import_line_t *out)
{
    out->kind = 0;
    out->target = NULL;
    out->ttl = -1;
    if (len == LINE_TOO_LONG)
        return cli_usage_error("longer than %s bytes", "4096");
    if (memchr(line, '\0', (size_t)len) != NULL)
        return cli_usage_error("%s", "a NUL byte");
    char *args[2];
    int nargs = 0;
    for (char *p = line;;) {
        while (is_blank(*p))
            p++;
        if (*p == '\0' || *p == '#')
            break;                  /* the end, or a comment to the end */
        char *tok = p;
        while (*p && !is_blank(*p))
            p++;
        if (*p)
            *p++ = '\0';
        if (strcmp(tok, "--ttl") == 0) {
            while (is_blank(*p))
                p++;
            char *num = p;
            while (*p && !is_blank(*p))
                p++;
            if (*p)
                *p++ = '\0';
            if (out->ttl >= 0)
                return cli_usage_error("%s", "--ttl given twice");
            if (*num == '\0' || *num == '#')
                return cli_usage_error("%s", "--ttl without a number (seconds, 0 to 2592000)");
            out->ttl = cli_parse_count(num, CLI_TTL_MAX);
            if (out->ttl < 0)
                return cli_usage_error("bad --ttl '%s' (seconds, 0 to 2592000)", num);
        } else if (tok[0] == '-') {
            return cli_usage_error("'%s' looks like an option: a line is <ip|cidr|name:id>"
                                   " [target] [--ttl S]", tok);
        } else if (nargs == 2) {
            return cli_usage_error("'%s': expected <ip|cidr|name:id> [target] [--ttl S]", tok);
        } else {
            args[nargs++] = tok;
        }
    }
    if (nargs == 0) {
        if (out->ttl >= 0)
            return cli_usage_error("%s", "expected <ip|cidr|name:id> [target] [--ttl S]");
        return 0;
    }
    cli_thing_t t;
    const char *target = nargs == 2 ? args[1] : NULL;
    if (cli_classify(opts, args[0], &t) != 0 || cli_check_target(target) != 0)
        return EXIT_USAGE;
    if (t.kind == CLI_THING_RANGE && out->ttl >= 0)
        return cli_usage_error("%s", "a ranges line has no --ttl");
    out->kind = t.kind;
    memcpy(out->key, t.key, sizeof out->key);
    /* the default target (1 or gray): the value 1 */
    out->target = target && strcmp(target, "1") != 0 && strcmp(target, "gray") != 0 ? target
                                                                                    : NULL;
    return 0;
}

/* ---- the ranges lines, kept from pass 1 for one list edit ----------------- */

typedef struct ranges {
    char *text;                 /* "key\0line\0" after one another */
    size_t len, cap;
    size_t *at;                 /* where each edit's key starts in text */
    size_t n, ncap;
} ranges_t;

static int ranges_push(ranges_t *r, const char *key, const char *target)
{
    size_t kl = strlen(key), tl = target ? strlen(target) + 1 : 0;
    size_t need = 2 * (kl + 1) + tl;
    if (r->len + need > r->cap) {
        size_t cap = r->cap ? r->cap : 1 << 16;
        while (cap < r->len + need)
            cap *= 2;
        char *t = realloc(r->text, cap);
        if (t == NULL)
            return -1;
        r->text = t;
        r->cap = cap;
    }
    if (r->n == r->ncap) {
        size_t ncap = r->ncap ? r->ncap * 2 : 1024;
        size_t *a = realloc(r->at, ncap * sizeof *a);
        if (a == NULL)
            return -1;
        r->at = a;
        r->ncap = ncap;
    }
    r->at[r->n++] = r->len;
    char *p = r->text + r->len;
    p += sprintf(p, "%s", key) + 1;
    p += sprintf(p, "%s%s%s", key, target ? " " : "", target ? target : "") + 1;
    r->len = (size_t)(p - r->text);
    return 0;
}

/* ---- the entries: pipelined sets, read back a batch at a time ------------ */

typedef struct batch {
    size_t n;                   /* lines in the batch */
    size_t done, total;         /* entries written so far, in the file */
    size_t differ, missing;     /* read back otherwise, not at all */
    int tty;
    char key[IMPORT_BATCH][GRAY_MC_KEY_MAX + 1];
    char value[IMPORT_BATCH][CLI_TARGET_MAX + 1];
    long ttl[IMPORT_BATCH];
    int last[2 * IMPORT_BATCH]; /* a key's last line in the batch + 1; 0: free */
    int got[IMPORT_BATCH];      /* by line: its key was read back */
    const char *keys[IMPORT_BATCH];
    size_t lens[IMPORT_BATCH];
    memcached_result_st result; /* one, reused by every fetch */
    int has_result;
} batch_t;

static size_t batch_slot(const batch_t *b, const char *key, size_t len)
{
    size_t mask = 2 * IMPORT_BATCH - 1, i = gray_hash_oaat(key, len) & mask;
    while (b->last[i] && strcmp(b->key[b->last[i] - 1], key) != 0)
        i = (i + 1) & mask;
    return i;
}

static void progress(const batch_t *b)
{
    if (b->tty)
        fprintf(stderr, "\rgray-admin: import: %zu/%zu entries (%zu%%)%s", b->done, b->total,
                b->total ? b->done * 100 / b->total : 100, b->done == b->total ? "\n" : "");
}

static void not_landed(batch_t *b, size_t i, const char *got, size_t len)
{
    if (b->differ + b->missing < IMPORT_SHOWN_MAX) {
        if (got)
            fprintf(stderr, "gray-admin: import: %s reads back '%.*s', not '%s'\n", b->key[i],
                    (int)(len > 80 ? 80 : len), got, b->value[i]);
        else
            fprintf(stderr, "gray-admin: import: %s is not in memcached after its set\n",
                    b->key[i]);
    }
    if (got)
        b->differ++;
    else
        b->missing++;
}

/* Reads the batch back in one multi-get, sent after its sets on the same
 * connection: each key must hold its last line's value. 0, or EXIT_STORE
 * (printed). */
static int batch_check(memcached_st *mc, batch_t *b)
{
    size_t nk = 0;
    memset(b->last, 0, sizeof b->last);
    for (size_t i = 0; i < b->n; i++) {
        size_t s = batch_slot(b, b->key[i], strlen(b->key[i]));
        if (b->last[s] == 0) {
            b->keys[nk] = b->key[i];
            b->lens[nk++] = strlen(b->key[i]);
        }
        b->last[s] = (int)i + 1;
        b->got[i] = 0;
    }
    memcached_return_t rc = memcached_mget(mc, b->keys, b->lens, nk);
    if (rc != MEMCACHED_SUCCESS) {
        fprintf(stderr, "gray-admin: import: reading the entries back: %s\n",
                cli_mc_error(mc, rc));
        return EXIT_STORE;
    }
    memcached_result_st *res;
    while ((res = memcached_fetch_result(mc, &b->result, &rc)) != NULL) {
        size_t kl = memcached_result_key_length(res);
        char k[GRAY_MC_KEY_MAX + 1];
        if (kl <= GRAY_MC_KEY_MAX) {
            memcpy(k, memcached_result_key_value(res), kl);
            k[kl] = '\0';
            int at = b->last[batch_slot(b, k, kl)] - 1;
            if (at >= 0) {
                const char *v = memcached_result_value(res);
                size_t vl = memcached_result_length(res);
                b->got[at] = 1;
                if (vl != strlen(b->value[at]) || memcmp(v, b->value[at], vl) != 0)
                    not_landed(b, (size_t)at, v, vl);
            }
        }
    }
    if (rc != MEMCACHED_END && rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND) {
        fprintf(stderr, "gray-admin: import: reading the entries back: %s\n",
                cli_mc_error(mc, rc));
        return EXIT_STORE;
    }
    for (size_t j = 0; j < nk; j++) {
        int at = b->last[batch_slot(b, b->keys[j], b->lens[j])] - 1;
        if (!b->got[at] && !(b->ttl[at] > 0 && b->ttl[at] < IMPORT_SHORT_TTL))
            not_landed(b, (size_t)at, NULL, 0);
    }
    b->done += b->n;
    b->n = 0;
    progress(b);
    return b->differ + b->missing ? EXIT_STORE : 0;
}

/* Sends the set of one entry (buffered: written when the buffer fills) and
 * keeps it for batch_check. 0 or EXIT_STORE. */
static int batch_add(memcached_st *mc, batch_t *b, const import_line_t *il)
{
    size_t i = b->n;
    snprintf(b->key[i], sizeof b->key[i], "%s", il->key);
    snprintf(b->value[i], sizeof b->value[i], "%s", il->target ? il->target : "1");
    b->ttl[i] = il->ttl < 0 ? 0 : il->ttl;
    memcached_return_t rc = memcached_set(mc, b->key[i], strlen(b->key[i]), b->value[i],
                                          strlen(b->value[i]), (time_t)b->ttl[i], 0);
    if (rc != MEMCACHED_BUFFERED && rc != MEMCACHED_SUCCESS) {
        fprintf(stderr, "gray-admin: import: set %s: %s\n", b->key[i], cli_mc_error(mc, rc));
        return EXIT_STORE;
    }
    b->n++;
    return b->n == IMPORT_BATCH ? batch_check(mc, b) : 0;
}

/* ---- the command ------------------------------------------------------- */

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* "cannot open" or "cannot read" path, and why; EXIT_USAGE. */
static int input_error(const char *what, const char *path, int err)
{
    fprintf(stderr, "gray-admin: import: cannot %s %s: %s\n", what, path, strerror(err));
    return EXIT_USAGE;
}

/* Pass 2: the entries, written and read back. */
static int write_entries(memcached_st *mc, const cli_opts_t *opts, reader_t *r, char *line,
                         batch_t *b, const char *path)
{
    /* the sets go out "noreply" and buffered: libmemcached writes them when
     * its buffer fills, and the batch's multi-get follows them on the same
     * connection, so memcached has applied them when it answers the gets:
     * one round trip per batch. Switching buffered mode on closes the
     * connections (libmemcached sends quit): done once, after the list
     * edit. libmemcached's purge never runs (its watermarks above any
     * batch): it would read with a 50 ms timeout and then drop the
     * connection. */
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_IO_MSG_WATERMARK, 1u << 30);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_IO_BYTES_WATERMARK, 1u << 30);
    memcached_return_t mrc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_BUFFER_REQUESTS, 1);
    if (mrc == MEMCACHED_SUCCESS)
        mrc = memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_NOREPLY, 1);
    if (mrc != MEMCACHED_SUCCESS) {
        fprintf(stderr, "gray-admin: import: buffered mode: %s\n", cli_mc_error(mc, mrc));
        return EXIT_STORE;
    }
    import_line_t il;
    long len;
    int rc = 0;
    size_t seen = 0;
    while (rc == 0 && (len = next_line(r, line)) != LINE_EOF) {
        cli_import_line(r->lineno);
        if (cli_import_parse_line(opts, line, len, &il) != 0) {
            rc = EXIT_USAGE;
            break;
        }
        if (il.kind == CLI_THING_ADDR || il.kind == CLI_THING_ID) {
            seen++;
            rc = seen > b->total ? EXIT_USAGE : batch_add(mc, b, &il);
        }
    }
    cli_import_line(0);
    if (rc == 0 && r->err)
        return input_error("read", path, r->err);
    if (rc == 0 && seen != b->total)
        rc = EXIT_USAGE;
    if (rc == EXIT_USAGE)
        fprintf(stderr, "gray-admin: import: %s changed while it was imported\n", path);
    if (rc == 0 && b->n)
        rc = batch_check(mc, b);
    if (b->differ + b->missing)
        fprintf(stderr, "gray-admin: import: %zu entries read back otherwise and %zu not at"
                " all (memcached refused or evicted them, or another writer changed them"
                " meanwhile): run the import again\n", b->differ, b->missing);
    if (rc != 0)
        fprintf(stderr, "gray-admin: import: stopped after %zu of %zu entries\n", b->done,
                b->total);
    return rc;
}

/* An import under way. */
typedef struct import {
    memcached_st *mc;
    const cli_opts_t *opts;
    const char *path;           /* as messages name it: "stdin" for '-' */
    int fd;                     /* the file (STDIN_FILENO for '-') */
    int seekable;               /* a regular file: pass 2 reads it again from start */
    off_t start;
    struct stat st0;            /* the file when pass 1 began */
    reader_t *r;
    char *line;                 /* IMPORT_LINE_MAX + 1 bytes */
    batch_t *b;
    ranges_t rg;
    size_t changed;             /* ranges lines that changed the list */
} import_t;

static int out_of_memory(void)
{
    fprintf(stderr, "gray-admin: out of memory\n");
    return EXIT_STORE;
}

/* 1 when the file is a regular one and changed since pass 1 began. */
static int file_changed(const import_t *im)
{
    struct stat st1;
    return im->seekable && (fstat(im->fd, &st1) != 0 || !same_file(&im->st0, &st1));
}

/* What reads im->fd, and the spool when it cannot be read twice. 0 or an
 * exit code (printed). */
static int import_open(import_t *im)
{
    im->r = malloc(sizeof *im->r);
    im->line = malloc(IMPORT_LINE_MAX + 1);
    im->b = calloc(1, sizeof *im->b);
    if (!im->r || !im->line || !im->b)
        return out_of_memory();
    reader_t *r = im->r;
    r->fd = im->fd;
    r->spool = -1;
    r->eof = r->err = 0;
    r->lineno = r->start = r->end = 0;
    if (memcached_result_create(im->mc, &im->b->result) == NULL)
        return out_of_memory();
    im->b->has_result = 1;
    if (fstat(im->fd, &im->st0) != 0)
        return input_error("read", im->path, errno);
    if (S_ISDIR(im->st0.st_mode))
        return input_error("read", im->path, EISDIR);
    im->seekable = S_ISREG(im->st0.st_mode) && (im->start = lseek(im->fd, 0, SEEK_CUR)) >= 0;
    if (!im->seekable) {
        /* read once only (a pipe, a terminal): pass 1 copies it */
        const char *dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        char tmpl[4096];
        snprintf(tmpl, sizeof tmpl, "%s/gray-admin-import.XXXXXX", dir);
        r->spool = mkstemp(tmpl);
        if (r->spool < 0)
            return input_error("create", tmpl, errno);
        unlink(tmpl);
    }
    return 0;
}

/* Pass 1: checks every line (a bad file writes nothing), keeps the ranges
 * lines and counts the entries. 0 or an exit code (printed). */
static int import_check(import_t *im)
{
    size_t bad = 0;
    long len;
    import_line_t il;
    while ((len = next_line(im->r, im->line)) != LINE_EOF) {
        cli_import_line(im->r->lineno);
        if (cli_import_parse_line(im->opts, im->line, len, &il) != 0) {
            bad++;
        } else if (il.kind == CLI_THING_RANGE) {
            if (ranges_push(&im->rg, il.key, il.target) != 0)
                return out_of_memory();
        } else if (il.kind) {
            im->b->total++;
        }
    }
    cli_import_line(0);
    if (im->r->err)
        return input_error("read", im->path, im->r->err);
    if (bad) {
        fprintf(stderr, "gray-admin: import: %zu bad lines, nothing written\n", bad);
        return EXIT_USAGE;
    }
    if (file_changed(im)) {
        fprintf(stderr, "gray-admin: import: %s changed while it was checked, nothing"
                " written\n", im->path);
        return EXIT_USAGE;
    }
    return 0;
}

/* The ranges lines: one edit under the list's import lock, first, as it is
 * the step that may fail for other reasons than memcached failing. Their
 * text is freed after (their count kept). 0 or an exit code (printed). */
static int import_ranges(import_t *im)
{
    ranges_t *rg = &im->rg;
    int rc = 0;
    if (rg->n) {
        cli_edit_t *edits = malloc(rg->n * sizeof *edits);
        if (edits == NULL)
            return out_of_memory();
        for (size_t i = 0; i < rg->n; i++) {
            edits[i].key = rg->text + rg->at[i];
            edits[i].line = edits[i].key + strlen(edits[i].key) + 1;
        }
        if (isatty(STDERR_FILENO) || im->opts->verbose)
            fprintf(stderr, "gray-admin: import: %zu ranges lines into %s\n", rg->n,
                    im->opts->ranges_key);
        rc = cli_list_edit_locked(im->mc, im->opts, im->opts->ranges_key, LIST_RANGES, edits,
                                  rg->n, &im->changed);
        free(edits);
        if (rc != 0)
            fprintf(stderr, "gray-admin: import: nothing written\n");
    }
    free(rg->text);
    free(rg->at);
    rg->text = NULL;
    rg->at = NULL;
    return rc;
}

/* Pass 2: the entries, from the file again (or its spool). 0 or an exit
 * code (printed). */
static int import_entries(import_t *im)
{
    reader_t *r = im->r;
    if (im->b->total == 0)
        return 0;
    if (r->spool >= 0) {
        r->fd = r->spool;
        r->spool = -1;
        im->start = 0;
    }
    if (lseek(r->fd, im->start, SEEK_SET) < 0)
        return input_error("read", im->path, errno);
    if (file_changed(im)) {
        fprintf(stderr, "gray-admin: import: %s changed while it was imported (%zu ranges"
                " lines written, no entries)\n", im->path, im->rg.n);
        return EXIT_USAGE;
    }
    r->eof = r->err = 0;
    r->lineno = r->start = r->end = 0;
    im->b->tty = isatty(STDERR_FILENO);
    return write_entries(im->mc, im->opts, r, im->line, im->b, im->path);
}

static void import_close(import_t *im)
{
    reader_t *r = im->r;
    if (r && r->spool >= 0)
        close(r->spool);
    if (r && r->fd != im->fd && r->fd >= 0)
        close(r->fd);
    if (im->fd != STDIN_FILENO)
        close(im->fd);
    free(im->rg.text);
    free(im->rg.at);
    if (im->b && im->b->has_result)
        memcached_result_free(&im->b->result);
    free(im->b);
    free(im->line);
    free(r);
}

int cli_cmd_import(memcached_st *mc, const cli_opts_t *opts, const cli_args_t *args)
{
    if (args->npos != 2)
        return cli_usage_error("%s", "import: expected import <file> ('-': stdin)");
    const char *arg = args->pos[1];
    int is_stdin = strcmp(arg, "-") == 0;
    import_t im = { .mc = mc, .opts = opts, .path = is_stdin ? "stdin" : arg };
    im.fd = is_stdin ? STDIN_FILENO : open(arg, O_RDONLY | O_CLOEXEC);
    if (im.fd < 0)
        return input_error("open", im.path, errno);
    int rc = import_open(&im);
    if (rc == 0)
        rc = import_check(&im);
    if (rc == 0)
        rc = import_ranges(&im);
    if (rc == 0)
        rc = import_entries(&im);
    if (rc == 0)
        printf("imported %zu entries and %zu ranges lines (%zu changed the list)\n",
               im.b->total, im.rg.n, im.changed);
    import_close(&im);
    return rc;
}
