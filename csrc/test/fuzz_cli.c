/* fuzz_cli.c - fuzz targets for gray-admin's parsers that need no memcached
 * (csrc/cli/args.c, check.c, listedit.c, import.c), run by fuzz_target.c's
 * table. Invariants:
 *   - cli_parse_percent, cli_parse_count and cli_id_name_ok agree with naive
 *     readings of their rules; a percentage printed back parses the same;
 *   - cli_cidr_normal's text is a fixed point and covers what the input
 *     covers; cli_line_key's key is the normal form of the first field;
 *   - cli_classify's key is the canonical address, the normal CIDR or the
 *     id as given, and classifying the key again gives the same key;
 *   - an import line is taken as its fields say (first field classified,
 *     target, --ttl), is refused when a naive reading finds it bad, and its
 *     result written back as a line parses to the same result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cli/cli.h"
#include "fuzz.h"

#define KEY_ROOM 256                /* cli_line_key's out (cap >= 256) */
#define IMPORT_LINE_LIMIT 4096      /* import.c's IMPORT_LINE_MAX */
#define IMPORT_TOO_LONG (-2)        /* import.c's LINE_TOO_LONG */

static const cli_opts_t opts = {
    .servers = "127.0.0.1:11211", .distribution = "ketama", .key_prefix = "",
    .ranges_key = "gray:ranges", .percent_key = "gray:percent", .targets = "", .lists = "",
};

static int space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static int blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

static int digit(char c)
{
    return c >= '0' && c <= '9';
}

/* "0".."100" with at most two decimals, spaces around: percent * 100 */
static long naive_percent(const char *s, size_t len)
{
    size_t a = 0, b = len;
    while (a < b && space(s[a]))
        a++;
    while (b > a && space(s[b - 1]))
        b--;
    size_t i = a;
    while (i < b && digit(s[i]))
        i++;
    if (i == a)
        return -1;
    size_t dot = i, ndec = 0;
    if (i < b) {
        if (s[i] != '.')
            return -1;
        for (i++; i < b; i++, ndec++)
            if (!digit(s[i]))
                return -1;
        if (ndec < 1 || ndec > 2)
            return -1;
    }
    size_t z = a;
    while (z < dot && s[z] == '0')
        z++;
    if (dot - z > 3)
        return -1;                  /* more than 100 whatever the decimals */
    long v = 0;
    for (size_t k = z; k < dot; k++)
        v = v * 10 + (s[k] - '0');
    v *= 100;
    if (ndec >= 1)
        v += (s[dot + 1] - '0') * 10;
    if (ndec == 2)
        v += s[dot + 2] - '0';
    return v > 10000 ? -1 : v;
}

static long naive_count(const char *s, long max)
{
    size_t n = strlen(s);
    if (n == 0 || n > 9)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v > max ? -1 : v;
}

static int naive_id_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > CLI_ID_NAME_MAX || (len == 4 && memcmp(s, "gray", 4) == 0))
        return 0;
    int past_f = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if ((c >= 'g' && c <= 'z') || (c >= 'G' && c <= 'Z') || c == '_' || c == '-')
            past_f = 1;
        else if (!((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || digit(c)))
            return 0;
    }
    return past_f;
}

/* The address ranges a text covers: a bare address or a CIDR. */
static int covers(const char *s, size_t len, gray_range_t r[2], size_t *n)
{
    if (memchr(s, '/', len) == NULL) {
        if (gray_ip_parse(s, len, &r[0].lo) != GRAY_OK)
            return -1;
        r[0].hi = r[0].lo;
        *n = 1;
        return 0;
    }
    return gray_cidr_parse(s, len, r, n) < 0 ? -1 : 0;
}

static void check_normal(const char *s, size_t len)
{
    char out[GRAY_IP_TEXT_MAX + 4], again[GRAY_IP_TEXT_MAX + 4];
    INVARIANT("cli_cidr_normal: its text is a fixed point and covers what the input covers");
    int w = cli_cidr_normal(s, len, out);
    if (w < 0) {
        CHECK(w == GRAY_EADDR || w == GRAY_EPREFIX || w == GRAY_EINVAL);
        return;
    }
    CHECK(w > 0 && (size_t)w < sizeof out && strlen(out) == (size_t)w);
    /* (s, len) in: the bytes past len are not read (digits there once
     * lengthened the prefix: corpus/cli_args/regress-prefix-past-len) */
    char *padded = malloc(len + 4);
    memcpy(padded, s, len);
    memcpy(padded + len, "99\n", 4);
    int wp = cli_cidr_normal(padded, len, again);
    free(padded);
    CHECK(wp == w && memcmp(out, again, (size_t)w + 1) == 0);
    CHECK(cli_cidr_normal(out, (size_t)w, again) == w && memcmp(out, again, (size_t)w) == 0);
    gray_range_t a[2], b[2];
    size_t na, nb;
    CHECK(covers(s, len, a, &na) == 0 && covers(out, (size_t)w, b, &nb) == 0);
    CHECK(na == nb && memcmp(a, b, na * sizeof a[0]) == 0);
}

static void check_line_key(const char *s, size_t len, int kind)
{
    char key[KEY_ROOM], norm[GRAY_IP_TEXT_MAX + 4];
    INVARIANT("cli_line_key: the key is the first field (ranges: in normal form), 0 for a"
              " blank, comment or unparsable line");
    size_t k = cli_line_key(kind, s, len, key, sizeof key);
    size_t i = 0;
    while (i < len && blank(s[i]))
        i++;
    if (i == len || s[i] == '#') {
        CHECK(k == 0);
        return;
    }
    size_t start = i;
    while (i < len && !blank(s[i]) && !(kind == LIST_RANGES && s[i] == '#'))
        i++;
    size_t flen = i - start;
    if (kind == LIST_IDS) {
        CHECK(k == (flen < sizeof key ? flen : 0));
        if (k)
            CHECK(memcmp(key, s + start, k) == 0 && key[k] == '\0');
        return;
    }
    int w = cli_cidr_normal(s + start, flen, norm);
    CHECK(k == (w > 0 ? (size_t)w : 0));
    if (k)
        CHECK(memcmp(key, norm, k + 1) == 0);
}

/* what cli_classify should give for arg (a C string) */
static void check_classify(const char *arg)
{
    cli_thing_t t, again;
    size_t len = strlen(arg);
    INVARIANT("cli_classify: an address keys as its canonical text, a CIDR as its normal form,"
              " name:id as given; classifying the key again gives the same key");
    int rc = cli_classify(&opts, arg, &t);
    if (rc != 0) {
        CHECK(rc == EXIT_USAGE);
        return;
    }
    CHECK(t.kind == CLI_THING_ADDR || t.kind == CLI_THING_RANGE || t.kind == CLI_THING_ID);
    size_t kl = strlen(t.key);
    CHECK(kl >= 1 && kl <= GRAY_MC_KEY_MAX && gray_mc_key_ok(t.key, kl));
    if (t.kind == CLI_THING_ADDR) {
        gray_ip_t ip;
        char canon[GRAY_IP_TEXT_MAX];
        CHECK(memchr(arg, '/', len) == NULL && gray_ip_parse(arg, len, &ip) == GRAY_OK);
        int w = gray_ip_format(&ip, canon, sizeof canon);
        CHECK(w > 0 && kl == (size_t)w && memcmp(t.key, canon, kl) == 0);
    } else if (t.kind == CLI_THING_RANGE) {
        char norm[GRAY_IP_TEXT_MAX + 4];
        CHECK(memchr(arg, '/', len) != NULL);
        int w = cli_cidr_normal(arg, len, norm);
        CHECK(w > 0 && kl == (size_t)w && memcmp(t.key, norm, kl) == 0);
    } else {
        const char *colon = strchr(arg, ':');
        CHECK(colon && naive_id_name_ok(arg, (size_t)(colon - arg)));
        CHECK(kl == len && memcmp(t.key, arg, len) == 0 && len - (size_t)(colon - arg) - 1 <= 200);
        CHECK(strncmp(arg, "gray:", 5) != 0);
    }
    CHECK(cli_classify(&opts, t.key, &again) == 0 && strcmp(again.key, t.key) == 0);
    /* a full-length prefix has no "/n" in normal form: an address again */
    if (t.kind == CLI_THING_RANGE)
        CHECK(again.kind == (strchr(t.key, '/') ? CLI_THING_RANGE : CLI_THING_ADDR));
    else
        CHECK(again.kind == t.kind);
}

/* The input as each argument parser's text. */
void fuzz_cli_args(const char *s, size_t len)
{
    cli_import_line(1);             /* usage messages: the first 10 only */
    INVARIANT("cli_parse_percent agrees with a naive reading, and its value printed back"
              " parses the same");
    long p = cli_parse_percent(s, len);
    CHECK(p == naive_percent(s, len));
    if (p >= 0) {
        char text[16];
        int n = snprintf(text, sizeof text, " %ld.%02ld\t", p / 100, p % 100);
        CHECK(cli_parse_percent(text, (size_t)n) == p);
    }
    INVARIANT("cli_id_name_ok agrees with a naive reading of the name rule");
    CHECK(cli_id_name_ok(s, len) == naive_id_name_ok(s, len));

    check_normal(s, len);
    check_line_key(s, len, LIST_RANGES);
    check_line_key(s, len, LIST_IDS);

    /* the arguments are C strings: up to the first NUL */
    char *arg = malloc(len + 1);
    memcpy(arg, s, len);
    arg[len] = '\0';
    INVARIANT("cli_parse_count agrees with a naive reading (1..9 digits, at most max)");
    CHECK(cli_parse_count(arg, CLI_TTL_MAX) == naive_count(arg, CLI_TTL_MAX));
    CHECK(cli_parse_count(arg, 100) == naive_count(arg, 100));
    check_classify(arg);
    INVARIANT("cli_target_ok is the router's target-name rule");
    CHECK(cli_target_ok(arg) == gray_target_name_ok(arg, strlen(arg)));
    free(arg);
}

/* An import line: "<ip|cidr|name:id> [target] [--ttl S]", '#' comments. */
void fuzz_cli_import(const char *s, size_t len)
{
    import_line_t il, again;
    cli_import_line(1);
    INVARIANT("an import line over the limit, or holding a NUL, is refused");
    char *line = malloc(len + 1), *copy = malloc(len + 1);
    memcpy(line, s, len);
    line[len] = '\0';
    memcpy(copy, line, len + 1);
    if (len > IMPORT_LINE_LIMIT) {
        CHECK(cli_import_parse_line(&opts, line, IMPORT_TOO_LONG, &il) == EXIT_USAGE);
        goto done;
    }
    int rc = cli_import_parse_line(&opts, line, (long)len, &il);
    CHECK(rc == 0 || rc == EXIT_USAGE);
    if (memchr(s, '\0', len) != NULL) {
        CHECK(rc == EXIT_USAGE);
        goto done;
    }

    /* the naive reading: fields split at blanks, '#' opening a field ends
     * the line, --ttl takes the next field */
    INVARIANT("an import line is taken as a naive reading of its fields says: the first"
              " classified, the target, --ttl; refused when that reading finds it bad");
    char *f[8];
    int nf = 0, bad = 0, nargs = 0, nttl = 0;
    const char *args[2] = {NULL, NULL}, *ttl = NULL;
    for (char *q = copy; nf < 8;) {
        while (blank(*q))
            q++;
        if (*q == '\0' || *q == '#')
            break;
        f[nf++] = q;
        while (*q && !blank(*q))
            q++;
        if (*q)
            *q++ = '\0';
        if (strcmp(f[nf - 1], "--ttl") == 0) {
            while (blank(*q))
                q++;
            char *num = q;
            while (*q && !blank(*q))
                q++;
            if (*q)
                *q++ = '\0';
            if (nttl++ || *num == '\0' || *num == '#' || naive_count(num, CLI_TTL_MAX) < 0)
                bad = 1;
            ttl = num;
        } else if (f[nf - 1][0] == '-' || nargs == 2) {
            bad = 1;
        } else {
            args[nargs++] = f[nf - 1];
        }
    }
    if (nf == 8)
        goto done;                  /* more fields than this reading keeps */
    if (bad || (nargs == 0 && ttl))
        CHECK(rc == EXIT_USAGE);
    if (rc != 0)
        goto done;
    if (nargs == 0) {
        CHECK(il.kind == 0 && il.ttl == -1 && il.target == NULL);
        goto done;
    }
    cli_thing_t t;
    CHECK(cli_classify(&opts, args[0], &t) == 0);
    CHECK(il.kind == t.kind && strcmp(il.key, t.key) == 0);
    CHECK(args[1] == NULL || cli_target_ok(args[1]));
    if (args[1] && strcmp(args[1], "1") != 0)
        CHECK(il.target && strcmp(il.target, args[1]) == 0);
    else
        CHECK(il.target == NULL);
    CHECK(il.ttl == (ttl ? naive_count(ttl, CLI_TTL_MAX) : -1));
    CHECK(il.kind != CLI_THING_RANGE || il.ttl == -1);

    INVARIANT("round trip: an import line's result written back as a line parses the same");
    char back[GRAY_MC_KEY_MAX + GRAY_TARGET_NAME_MAX + 32];
    /* a range of one address is keyed without its full-length prefix */
    const char *full = il.kind != CLI_THING_RANGE || strchr(il.key, '/') ? ""
                       : strchr(il.key, ':') ? "/128" : "/32";
    int n = snprintf(back, sizeof back, "%s%s%s%s", il.key, full, il.target ? "\t" : "",
                     il.target ? il.target : "");
    if (il.ttl >= 0)
        n += snprintf(back + n, sizeof back - (size_t)n, " --ttl %ld # again", il.ttl);
    CHECK(n > 0 && (size_t)n < sizeof back);
    CHECK(cli_import_parse_line(&opts, back, n, &again) == 0);
    CHECK(again.kind == il.kind && strcmp(again.key, il.key) == 0 && again.ttl == il.ttl);
    CHECK((again.target == NULL) == (il.target == NULL));
    if (il.target)
        CHECK(strcmp(again.target, il.target) == 0);
done:
    free(line);
    free(copy);
}
