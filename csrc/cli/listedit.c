/* listedit.c - the ranges list and id lists: read (parts joined), change,
 * write back with CAS (split into parts when large), retried on conflict. */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static const char PARTS_HEADER[] = "#gray-parts ";

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

int cli_cidr_normal(const char *s, size_t len, char *out)
{
    gray_range_t r[2];
    size_t nr;
    gray_ip_t ip;
    if (memchr(s, '/', len) == NULL && gray_ip_parse(s, len, &ip) == GRAY_OK) {
        /* a bare address in its canonical text, as the router keys a client:
         * ::ffff:1.2.3.4 is 1.2.3.4 (written in IPv6 no line would match it) */
        int w = gray_ip_format(&ip, out, GRAY_IP_TEXT_MAX);
        if (w >= 0)
            out[w] = '\0';
        return w;
    }
    int rc = gray_cidr_parse(s, len, r, &nr);
    if (rc < 0)
        return rc;
    if (nr == 0)
        return GRAY_EINVAL;     /* inside ::ffff:0:0/96 written in IPv6 */
    const char *slash = memchr(s, '/', len);
    size_t alen = (size_t)(slash - s);
    gray_ip_parse(s, alen, &ip);
    int v4 = gray_ip_is_v4(&ip) && memchr(s, ':', alen) == NULL;
    unsigned bits = v4 ? 32 : 128;
    unsigned prefix = 0;        /* digits, checked by gray_cidr_parse; read up to len only */
    for (const char *p = slash + 1; p < s + len; p++)
        prefix = prefix * 10 + (unsigned)(*p - '0');
    unsigned keep = v4 ? prefix + 96 : prefix;
    for (unsigned i = 0; i < 16; i++) {
        unsigned first = i * 8;
        if (first >= keep)
            ip.b[i] = 0;
        else if (first + 8 > keep)
            ip.b[i] &= (uint8_t)(0xff00u >> (keep - first));
    }
    int w = gray_ip_format(&ip, out, GRAY_IP_TEXT_MAX);
    if (w < 0)
        return w;
    if (prefix != bits)
        w += sprintf(out + w, "/%u", prefix);
    out[w] = '\0';
    return w;
}

size_t cli_line_key(int kind, const char *line, size_t len, char *out, size_t cap)
{
    size_t i = 0;
    while (i < len && is_blank(line[i]))
        i++;
    if (i == len || line[i] == '#')
        return 0;
    size_t start = i;
    while (i < len && !is_blank(line[i]) && !(kind == LIST_RANGES && line[i] == '#'))
        i++;
    size_t flen = i - start;
    if (kind == LIST_RANGES) {
        char norm[GRAY_IP_TEXT_MAX + 4];
        int w = cli_cidr_normal(line + start, flen, norm);
        if (w <= 0 || (size_t)w >= cap)
            return 0;
        memcpy(out, norm, (size_t)w + 1);
        return (size_t)w;
    }
    if (flen >= cap)
        return 0;
    memcpy(out, line + start, flen);
    out[flen] = '\0';
    return flen;
}

/* ---- reading ------------------------------------------------------------ */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* The header "#gray-parts <n> <tag>": n and tag, or 0 when malformed. */
static unsigned parse_header(const char *v, size_t len, char *tag, size_t tagcap)
{
    size_t hl = sizeof PARTS_HEADER - 1;
    if (len < hl || memcmp(v, PARTS_HEADER, hl) != 0)
        return 0;
    size_t i = hl;
    unsigned long n = 0;
    while (i < len && v[i] >= '0' && v[i] <= '9' && n <= CLI_PARTS_MAX)
        n = n * 10 + (unsigned long)(v[i++] - '0');
    if (i == hl || i >= len || v[i] != ' ' || n < 1 || n > CLI_PARTS_MAX)
        return 0;
    size_t t = ++i;
    while (i < len && v[i] > 0x20 && v[i] < 0x7f)
        i++;
    if (i == t || i - t >= tagcap)
        return 0;
    memcpy(tag, v + t, i - t);
    tag[i - t] = '\0';
    return (unsigned)n;
}

/* The parts of a split list (list->parts, list->tag) in one multi-get,
 * joined in order into list->text. 0, -1 on a failure (printed), 1 when
 * part *missing is absent. */
static int read_parts(memcached_st *mc, cli_list_t *list, unsigned *missing)
{
    unsigned n = list->parts;
    size_t klen = strlen(list->key) + strlen(list->tag) + 16;
    char *names = malloc((size_t)n * klen);
    const char **keys = malloc(n * sizeof *keys);
    size_t *lens = malloc(n * sizeof *lens);
    char **parts = calloc(n, sizeof *parts);
    size_t *plens = calloc(n, sizeof *plens);
    int rc = -1;
    if (!names || !keys || !lens || !parts || !plens) {
        fprintf(stderr, "gray-admin: out of memory\n");
        goto done;
    }
    for (unsigned i = 0; i < n; i++) {
        char *k = names + (size_t)i * klen;
        lens[i] = (size_t)snprintf(k, klen, "%s:%s:%u", list->key, list->tag, i + 1);
        keys[i] = k;
    }
    memcached_return_t mrc = memcached_mget(mc, keys, lens, n);
    if (mrc != MEMCACHED_SUCCESS) {
        fprintf(stderr, "gray-admin: reading the parts of %s: %s\n", list->key,
                cli_mc_error(mc, mrc));
        goto done;
    }
    memcached_result_st *res;
    size_t total = 0;
    while ((res = memcached_fetch_result(mc, NULL, &mrc)) != NULL) {
        const char *rk = memcached_result_key_value(res);
        size_t rkl = memcached_result_key_length(res);
        /* the part number after the last ':' */
        size_t j = rkl;
        while (j > 0 && rk[j - 1] != ':')
            j--;
        unsigned long idx = strtoul(rk + j, NULL, 10);
        if (idx >= 1 && idx <= n && parts[idx - 1] == NULL) {
            size_t pl = memcached_result_length(res);
            parts[idx - 1] = malloc(pl + 1);
            if (parts[idx - 1]) {
                memcpy(parts[idx - 1], memcached_result_value(res), pl);
                plens[idx - 1] = pl;
                total += pl;
            }
        }
        memcached_result_free(res);
    }
    if (mrc != MEMCACHED_END && mrc != MEMCACHED_SUCCESS && mrc != MEMCACHED_NOTFOUND) {
        fprintf(stderr, "gray-admin: reading the parts of %s: %s\n", list->key,
                cli_mc_error(mc, mrc));
        goto done;
    }
    for (unsigned i = 0; i < n; i++) {
        if (parts[i] == NULL) {
            *missing = i + 1;
            rc = 1;
            goto done;
        }
    }
    char *all = malloc(total + 1);
    if (all == NULL) {
        fprintf(stderr, "gray-admin: out of memory\n");
        goto done;
    }
    size_t off = 0;
    for (unsigned i = 0; i < n; i++) {
        memcpy(all + off, parts[i], plens[i]);
        off += plens[i];
    }
    all[total] = '\0';
    list->text = all;
    list->len = total;
    rc = 0;
done:
    if (parts)
        for (unsigned i = 0; i < n; i++)
            free(parts[i]);
    free(parts);
    free(plens);
    free(names);
    free(keys);
    free(lens);
    return rc;
}

/* One read: 0, -1 on a failure (printed), 1 when part *missing is absent. */
static int read_once(memcached_st *mc, cli_list_t *list, unsigned *missing)
{
    cli_value_t v;
    list->text = NULL;
    list->len = 0;
    list->cas = 0;
    list->exists = 0;
    list->parts = 0;
    list->tag[0] = '\0';
    if (cli_gets(mc, list->key, &v) != 0)
        return -1;
    if (v.value == NULL)
        return 0;
    list->exists = 1;
    list->cas = v.cas;
    if (v.len < sizeof PARTS_HEADER - 1 || memcmp(v.value, PARTS_HEADER,
                                                  sizeof PARTS_HEADER - 1) != 0) {
        list->text = v.value;
        list->len = v.len;
        return 0;
    }
    list->parts = parse_header(v.value, v.len, list->tag, sizeof list->tag);
    free(v.value);
    if (list->parts == 0) {
        fprintf(stderr, "gray-admin: %s: bad parts header (expected '#gray-parts <n> <tag>')\n",
                list->key);
        return -1;
    }
    return read_parts(mc, list, missing);
}

int cli_list_read(memcached_st *mc, cli_list_t *list)
{
    unsigned missing = 0;
    for (int attempt = 1;; attempt++) {
        int rc = read_once(mc, list, &missing);
        if (rc <= 0)
            return rc;
        /* the parts of a version are written before its header and kept a
         * while after, so a missing one was deleted or evicted: a rewrite
         * is the only repair (the router keeps its last copy meanwhile) */
        if (attempt == CLI_READ_TRIES) {
            fprintf(stderr, "gray-admin: %s: part %s:%s:%u of %u is missing (the router keeps"
                    " its last good copy; delete the key to start the list anew)\n", list->key,
                    list->key, list->tag, missing, list->parts);
            return -1;
        }
        sleep_ms(20);
    }
}

void cli_list_free(cli_list_t *list)
{
    free(list->text);
    list->text = NULL;
}

/* ---- editing ------------------------------------------------------------ */

typedef struct line {
    const char *text;           /* into the old text, or an edit's line */
    size_t len;
    const char *key;            /* into the key arena, NULL: no key (kept verbatim) */
    int prev;                   /* the previous line with the same key, -1 */
    int gone;
} line_t;

typedef struct table {
    int *slot;                  /* line index + 1, 0: empty */
    size_t mask;
} table_t;

static size_t key_hash(const char *k)
{
    return gray_hash_oaat(k, strlen(k));
}

/* The slot of key: its line, or the empty slot where it goes. */
static size_t table_find(const table_t *t, const line_t *lines, const char *key)
{
    size_t i = key_hash(key) & t->mask;
    while (t->slot[i] != 0 && strcmp(lines[t->slot[i] - 1].key, key) != 0)
        i = (i + 1) & t->mask;
    return i;
}

/* The lines' keys, packed into blocks that never move (a key is at most
 * GRAY_MC_KEY_MAX + 8 bytes): a few bytes per line, not a malloc each. */
#define KEY_BLOCK_BYTES (256u * 1024u)

typedef struct key_block {
    struct key_block *next;
    size_t used;
    char data[KEY_BLOCK_BYTES];
} key_block_t;

typedef struct edit_state {
    line_t *lines;
    size_t n, cap;              /* cap: the old lines and the edits, set once */
    table_t t;
    key_block_t *keys;          /* the block being filled first */
} edit_state_t;

static const char *key_dup(edit_state_t *s, const char *key, size_t len)
{
    if (s->keys == NULL || s->keys->used + len + 1 > KEY_BLOCK_BYTES) {
        key_block_t *b = malloc(sizeof *b);
        if (b == NULL)
            return NULL;
        b->next = s->keys;
        b->used = 0;
        s->keys = b;
    }
    char *k = s->keys->data + s->keys->used;
    memcpy(k, key, len + 1);
    s->keys->used += len + 1;
    return k;
}

static void state_free(edit_state_t *s)
{
    for (key_block_t *b = s->keys, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(s->lines);
    free(s->t.slot);
}

static int push_line(edit_state_t *s, int kind, const char *text, size_t len)
{
    if (s->n == s->cap)
        return -1;              /* cannot happen: cap counts every push */
    char key[GRAY_MC_KEY_MAX + 8];
    size_t kl = cli_line_key(kind, text, len, key, sizeof key);
    line_t *ln = &s->lines[s->n];
    ln->text = text;
    ln->len = len;
    ln->key = kl ? key_dup(s, key, kl) : NULL;
    ln->prev = -1;
    ln->gone = 0;
    if (kl && ln->key == NULL)
        return -1;
    if (ln->key) {
        size_t i = table_find(&s->t, s->lines, ln->key);
        if (s->t.slot[i])
            ln->prev = s->t.slot[i] - 1;
        s->t.slot[i] = (int)s->n + 1;
    }
    s->n++;
    return 0;
}

/* Applies the edits to text; *out is the new text (malloc'd), *changed the
 * edits that changed something. -1: out of memory. */
static int apply(int kind, const char *text, size_t len, const cli_edit_t *edits, size_t nedits,
                 char **out, size_t *outlen, size_t *changed)
{
    edit_state_t s = { 0 };
    size_t nl = 1;
    for (size_t i = 0; i < len; i++)
        nl += text[i] == '\n';
    size_t want = 2 * (nl + nedits) + 16, size = 16;
    while (size < want)
        size *= 2;
    s.t.slot = calloc(size, sizeof *s.t.slot);
    s.t.mask = size - 1;
    s.cap = nl + nedits;
    s.lines = malloc(s.cap * sizeof *s.lines);
    if (s.t.slot == NULL || s.lines == NULL) {
        state_free(&s);
        return -1;
    }
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        const char *stop = e ? e : end;
        if (push_line(&s, kind, p, (size_t)(stop - p)) != 0)
            goto oom;
        p = e ? e + 1 : end;
    }
    *changed = 0;
    for (size_t k = 0; k < nedits; k++) {
        const cli_edit_t *ed = &edits[k];
        size_t i = table_find(&s.t, s.lines, ed->key);
        int at = s.t.slot[i] ? s.t.slot[i] - 1 : -1;
        while (at >= 0 && s.lines[at].gone)
            at = s.lines[at].prev;
        if (ed->line == NULL) {
            /* remove every line of the key */
            int hit = 0;
            for (int j = at; j >= 0; j = s.lines[j].prev) {
                hit |= !s.lines[j].gone;
                s.lines[j].gone = 1;
            }
            *changed += (size_t)hit;
        } else if (at >= 0) {
            /* the last line of the key rules (as in the router): replace it */
            line_t *ln = &s.lines[at];
            if (ln->len != strlen(ed->line) || memcmp(ln->text, ed->line, ln->len) != 0) {
                ln->text = ed->line;
                ln->len = strlen(ed->line);
                (*changed)++;
            }
        } else {
            if (push_line(&s, kind, ed->line, strlen(ed->line)) != 0)
                goto oom;
            (*changed)++;
        }
    }
    size_t total = 0;
    for (size_t i = 0; i < s.n; i++)
        total += s.lines[i].gone ? 0 : s.lines[i].len + 1;
    char *o = malloc(total + 1);
    if (o == NULL)
        goto oom;
    size_t off = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (!s.lines[i].gone) {
            memcpy(o + off, s.lines[i].text, s.lines[i].len);
            off += s.lines[i].len;
            o[off++] = '\n';
        }
    }
    o[off] = '\0';
    *out = o;
    *outlen = off;
    state_free(&s);
    return 0;
oom:
    state_free(&s);
    return -1;
}

/* ---- writing ------------------------------------------------------------ */

static int is_conflict(memcached_return_t rc)
{
    return rc == MEMCACHED_DATA_EXISTS || rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_NOTFOUND;
}

/* Writes value under key: add when it did not exist, else cas. 0, 1 on a
 * conflict, -1 on a failure (printed). */
static int put_main(memcached_st *mc, const char *key, const char *value, size_t len,
                    int exists, uint64_t cas)
{
    memcached_return_t rc = exists
        ? memcached_cas(mc, key, strlen(key), value, len, 0, 0, cas)
        : memcached_add(mc, key, strlen(key), value, len, 0, 0);
    if (rc == MEMCACHED_SUCCESS)
        return 0;
    if (is_conflict(rc))
        return 1;
    fprintf(stderr, "gray-admin: writing %s: %s\n", key, cli_mc_error(mc, rc));
    return -1;
}

static void part_key(char *buf, size_t cap, const char *key, const char *tag, unsigned i)
{
    snprintf(buf, cap, "%s:%s:%u", key, tag, i);
}

/* Sets the old parts to expire soon, or deletes the new parts of a write
 * that lost its race (ttl < 0). Errors are not fatal: parts are garbage. */
static void drop_parts(memcached_st *mc, const char *key, const char *tag, unsigned n, int ttl)
{
    char k[GRAY_MC_KEY_MAX + 1];
    for (unsigned i = 1; i <= n; i++) {
        part_key(k, sizeof k, key, tag, i);
        if (ttl < 0)
            memcached_delete(mc, k, strlen(k), 0);
        else
            memcached_touch(mc, k, strlen(k), ttl);
    }
}

/* Writes a list larger than one part: the parts under a new tag, then the
 * header with CAS. 0, 1 on a conflict, -1 on a failure. */
static int put_split(memcached_st *mc, const cli_opts_t *opts, const char *key,
                     const char *text, size_t len, int exists, uint64_t cas)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r = (uint32_t)time(NULL) ^ (uint32_t)clock();
    char tag[16];
    snprintf(tag, sizeof tag, "%08x", r);

    /* cut at line ends, each part at most part_bytes (a longer line is cut
     * inside: the router joins the parts byte for byte) */
    size_t starts[CLI_PARTS_MAX + 1];
    unsigned n = 0;
    size_t off = 0;
    while (off < len) {
        if (n == CLI_PARTS_MAX) {
            fprintf(stderr, "gray-admin: %s: %zu bytes need more than %d parts\n", key, len,
                    CLI_PARTS_MAX);
            return -1;
        }
        starts[n++] = off;
        size_t endp = off + opts->part_bytes;
        if (endp >= len) {
            off = len;
        } else {
            size_t cut = endp;
            while (cut > off && text[cut - 1] != '\n')
                cut--;
            off = cut > off ? cut : endp;
        }
    }
    starts[n] = len;
    if (opts->verbose)
        fprintf(stderr, "gray-admin: %s: writing %u parts %s:%s:1..%u\n", key, n, key, tag, n);
    char k[GRAY_MC_KEY_MAX + 1];
    for (unsigned i = 0; i < n; i++) {
        part_key(k, sizeof k, key, tag, i + 1);
        memcached_return_t rc = memcached_set(mc, k, strlen(k), text + starts[i],
                                              starts[i + 1] - starts[i], 0, 0);
        if (rc != MEMCACHED_SUCCESS) {
            fprintf(stderr, "gray-admin: writing %s: %s\n", k, cli_mc_error(mc, rc));
            drop_parts(mc, key, tag, i, -1);
            return -1;
        }
    }
    char header[64];
    int hl = snprintf(header, sizeof header, "%s%u %s", PARTS_HEADER, n, tag);
    int rc = put_main(mc, key, header, (size_t)hl, exists, cas);
    if (rc != 0)
        drop_parts(mc, key, tag, n, -1);
    return rc;
}

/* ---- the import lock ------------------------------------------------------
 *
 * An edit that rewrites a big list (an import) takes longer than a one-line
 * edit, so CAS alone lets a stream of small edits win every race against it.
 * The import therefore holds <key>:lock (taken with add, renewed with cas,
 * LOCK_TTL s, deleted when done), and every edit waits while someone else
 * holds it: the import then conflicts at most with the edits already past
 * their check, once each. CAS still guards every write, so a writer that
 * ignores the lock can delay an import but never lose a line. Waiting has
 * one deadline (LOCK_WAIT_MS from the start of the edit); an import that
 * dies leaves the lock for at most LOCK_TTL s. */

#define LOCK_TTL        15          /* s: a lock not renewed is gone after this */
#define LOCK_WAIT_MS    60000       /* an edit waits this long at most for a lock */
#define LOCK_POLL_MS    20          /* between two looks at a held lock */
#define LOCK_VALUE_MAX  200

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void lock_key(char *buf, size_t cap, const char *key)
{
    snprintf(buf, cap, "%s:lock", key);
}

/* Waits until key's lock is free (me NULL) or taken by me (me set: taken
 * with add or renewed with cas, LOCK_TTL s from now). 0, EXIT_CONFLICT
 * past deadline, EXIT_STORE (printed). */
static int lock_wait(memcached_st *mc, const char *key, const char *me, uint64_t deadline)
{
    char lk[GRAY_MC_KEY_MAX + 1];
    lock_key(lk, sizeof lk, key);
    size_t ml = me ? strlen(me) : 0;
    int told = 0;
    for (;;) {
        cli_value_t v;
        if (cli_gets(mc, lk, &v) != 0)
            return EXIT_STORE;
        memcached_return_t rc = MEMCACHED_SUCCESS;
        if (v.value == NULL && me == NULL)
            return 0;
        if (v.value == NULL)
            rc = memcached_add(mc, lk, strlen(lk), me, ml, LOCK_TTL, 0);
        else if (me && v.len == ml && memcmp(v.value, me, ml) == 0)
            rc = memcached_cas(mc, lk, strlen(lk), me, ml, LOCK_TTL, 0, v.cas);
        else
            rc = MEMCACHED_DATA_EXISTS;         /* someone else's */
        if (rc == MEMCACHED_SUCCESS) {
            free(v.value);
            return 0;
        }
        if (!is_conflict(rc)) {
            free(v.value);
            fprintf(stderr, "gray-admin: writing %s: %s\n", lk, cli_mc_error(mc, rc));
            return EXIT_STORE;
        }
        if (v.value && !told++)
            fprintf(stderr, "gray-admin: %s: waiting for %.*s (%s)\n", key,
                    (int)(v.len > LOCK_VALUE_MAX ? LOCK_VALUE_MAX : v.len), v.value, lk);
        if (now_ms() >= deadline) {
            fprintf(stderr, "gray-admin: %s: still locked by %.*s after %d s, nothing"
                    " written (the lock %s lasts %d s after its holder stops)\n", key,
                    v.value ? (int)(v.len > LOCK_VALUE_MAX ? LOCK_VALUE_MAX : v.len) : 7,
                    v.value ? v.value : "another", LOCK_WAIT_MS / 1000, lk, LOCK_TTL);
            free(v.value);
            return EXIT_CONFLICT;
        }
        free(v.value);
        uint32_t r = 0;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
            r = (uint32_t)clock();
        sleep_ms(LOCK_POLL_MS / 2 + r % LOCK_POLL_MS);
    }
}

/* Deletes key's lock if it is still me's (quietly: a lock left behind
 * expires by itself). */
static void lock_release(memcached_st *mc, const char *key, const char *me)
{
    char lk[GRAY_MC_KEY_MAX + 1];
    lock_key(lk, sizeof lk, key);
    size_t vl = 0;
    uint32_t flags;
    memcached_return_t rc;
    char *v = memcached_get(mc, lk, strlen(lk), &vl, &flags, &rc);
    if (v && vl == strlen(me) && memcmp(v, me, vl) == 0)
        memcached_delete(mc, lk, strlen(lk), 0);
    free(v);
}

static int check_list_key(const char *key)
{
    /* room for ":<tag>:<part>" after the key */
    if (!gray_mc_key_ok(key, strlen(key)) || strlen(key) > GRAY_MC_KEY_MAX - 14) {
        fprintf(stderr, "gray-admin: '%s' cannot be a list key (at most %d bytes, no spaces"
                " or control bytes)\n", key, GRAY_MC_KEY_MAX - 14);
        return EXIT_USAGE;
    }
    return 0;
}

/* The edit loop: lock (wait for others', or hold me's), read, apply, write
 * with CAS, again on a conflict. */
static int list_edit(memcached_st *mc, const cli_opts_t *opts, const char *key, int kind,
                     const cli_edit_t *edits, size_t nedits, size_t *changed, const char *me)
{
    uint64_t deadline = now_ms() + LOCK_WAIT_MS;
    unsigned backoff = 1;
    for (int attempt = 1; attempt <= CLI_CAS_TRIES; attempt++) {
        cli_list_t list = { .key = key };
        char *out = NULL;
        size_t outlen;
        int lrc = lock_wait(mc, key, me, deadline);
        if (lrc != 0)
            return lrc;
        if (cli_list_read(mc, &list) != 0)
            return EXIT_STORE;
        int arc = apply(kind, list.text ? list.text : "", list.len, edits, nedits, &out, &outlen,
                        changed);
        cli_list_free(&list);
        if (arc != 0) {
            fprintf(stderr, "gray-admin: out of memory\n");
            return EXIT_STORE;
        }
        if (*changed == 0) {
            free(out);
            return 0;
        }
        if (outlen > CLI_LIST_WARN)
            fprintf(stderr, "gray-admin: warning: %s is %zu bytes, over the router's default"
                    " list_max (32 MiB)\n", key, outlen);
        /* a long apply: renew the lock before the write */
        if (me && (lrc = lock_wait(mc, key, me, deadline)) != 0) {
            free(out);
            return lrc;
        }
        int rc = outlen > opts->part_bytes
            ? put_split(mc, opts, key, out, outlen, list.exists, list.cas)
            : put_main(mc, key, out, outlen, list.exists, list.cas);
        free(out);
        if (rc < 0)
            return EXIT_STORE;
        if (rc == 0) {
            if (list.parts)
                drop_parts(mc, key, list.tag, list.parts, CLI_OLD_PARTS_TTL);
            if (opts->verbose && attempt > 1)
                fprintf(stderr, "gray-admin: %s written after %d tries\n", key, attempt);
            return 0;
        }
        /* another writer came first: read again after a random pause */
        uint32_t r = 0;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
            r = (uint32_t)clock();
        sleep_ms(r % (backoff + 1));
        if (backoff < 64)
            backoff *= 2;
    }
    fprintf(stderr, "gray-admin: %s: still conflicting after %d tries, nothing written\n", key,
            CLI_CAS_TRIES);
    return EXIT_CONFLICT;
}

int cli_list_edit(memcached_st *mc, const cli_opts_t *opts, const char *key, int kind,
                  const cli_edit_t *edits, size_t nedits, size_t *changed)
{
    int rc = check_list_key(key);
    return rc ? rc : list_edit(mc, opts, key, kind, edits, nedits, changed, NULL);
}

int cli_list_edit_locked(memcached_st *mc, const cli_opts_t *opts, const char *key, int kind,
                         const cli_edit_t *edits, size_t nedits, size_t *changed)
{
    int rc = check_list_key(key);
    if (rc)
        return rc;
    char me[LOCK_VALUE_MAX], host[64] = "?";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    snprintf(me, sizeof me, "import-pid-%ld-on-%s-since-%ld", (long)getpid(), host,
             (long)time(NULL));
    rc = list_edit(mc, opts, key, kind, edits, nedits, changed, me);
    lock_release(mc, key, me);
    return rc;
}
