/* token.c - gray-admin token: mints a signed token (csrc/token.c) for the
 * tester override or, with --id, for a signed identity cookie. Needs no
 * memcached: the secret file is all it reads. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <time.h>
#include <sys/stat.h>

#include "cli.h"

#define TOKEN_TTL_MAX  (400L * 86400L)   /* s: a token lives at most this long */
#define SECRET_READ_MAX 8192            /* bytes read from a secret file */

/* A lifetime in nginx's time syntax: "3600", "90s", "30m", "1h", "1h30m",
 * "7d" (s, m, h, d; a bare number is seconds). -1 when it is not one or is
 * over max. */
static long parse_ttl(const char *s, long max)
{
    if (s == NULL || *s == '\0')
        return -1;
    long total = 0;
    const char *p = s;
    while (*p) {
        long n = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (++digits > 9)
                return -1;
            n = n * 10 + (*p++ - '0');
        }
        if (digits == 0)
            return -1;
        long unit;
        switch (*p) {
        case '\0': unit = p == s + digits ? 1 : -1; break;   /* bare only alone */
        case 's': unit = 1; p++; break;
        case 'm': unit = 60; p++; break;
        case 'h': unit = 3600; p++; break;
        case 'd': unit = 86400; p++; break;
        default: unit = -1;
        }
        if (unit < 0 || n > max / unit)
            return -1;
        total += n * unit;
        if (total > max)
            return -1;
    }
    return total;
}

/* The secret's key bytes from path into key (GRAY_SECRET_MAX room); its
 * length, or -1 after printing why. */
static int read_secret(const char *path, char *key)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "gray-admin: token: cannot read the secret file %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "gray-admin: token: the secret file %s is a directory\n", path);
        fclose(f);
        return -1;
    }
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & S_IROTH))
        fprintf(stderr, "gray-admin: token: warning: %s is readable by every user\n", path);
    static char buf[SECRET_READ_MAX + 1];
    size_t n = fread(buf, 1, sizeof buf, f);
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        fprintf(stderr, "gray-admin: token: cannot read the secret file %s\n", path);
        return -1;
    }
    int len = n > SECRET_READ_MAX ? GRAY_EINVAL : gray_secret_len(buf, n);
    if (len < 0) {
        fprintf(stderr, "gray-admin: token: the secret file %s must hold %d to %d bytes"
                " (trailing blanks and newlines aside)\n", path, GRAY_SECRET_MIN,
                GRAY_SECRET_MAX);
        return -1;
    }
    memcpy(key, buf, (size_t)len);
    return len;
}

int cli_cmd_token(memcached_st *mc, const cli_opts_t *opts, const cli_args_t *args)
{
    (void)mc;
    (void)opts;
    int argc = args->npos;
    char **argv = args->pos;
    const char *subject = NULL, *ttl_text = NULL, *secret_file = NULL, *id = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = strcmp(a, "--ttl") == 0 ? &ttl_text
                          : strcmp(a, "--secret-file") == 0 ? &secret_file
                          : strcmp(a, "--id") == 0 ? &id : NULL;
        if (slot) {
            if (i + 1 >= argc)
                return cli_usage_error("token: option %s needs a value", a);
            *slot = argv[++i];
        } else if (a[0] == '-' && a[1] != '\0') {
            return cli_usage_error("token: unknown option '%s' (--ttl, --secret-file, --id)",
                                   a);
        } else if (subject == NULL) {
            subject = a;
        } else {
            return cli_usage_error("token: one subject only, got also '%s'", a);
        }
    }
    if (subject == NULL)
        return cli_usage_error("%s", "token: expected token <target> --ttl D --secret-file F"
                               " (or token <id> --id NAME ...)");
    if (ttl_text == NULL || secret_file == NULL)
        return cli_usage_error("%s", "token: --ttl and --secret-file are required");
    long ttl = parse_ttl(ttl_text, TOKEN_TTL_MAX);
    if (ttl < 1)
        return cli_usage_error("token: bad --ttl '%s' (1s to 400d: 3600, 90s, 30m, 1h, 7d)",
                               ttl_text);
    char ctx[GRAY_TOKEN_CONTEXT_MAX + 1];
    if (id) {
        if (!cli_id_name_ok(id, strlen(id)))
            return cli_usage_error("token: bad --id '%s' (an identity name of $gray_ids)", id);
        snprintf(ctx, sizeof ctx, "id:%s", id);
    } else {
        snprintf(ctx, sizeof ctx, "force");
    }
    char key[GRAY_SECRET_MAX];
    int key_len = read_secret(secret_file, key);
    if (key_len < 0)
        return EXIT_USAGE;
    char out[GRAY_TOKEN_MAX + 1];
    int n = gray_token_make(ctx, strlen(ctx), key, (size_t)key_len, subject, strlen(subject),
                            (int64_t)time(NULL) + ttl, out, sizeof out);
    memset(key, 0, sizeof key);
    if (n < 0)
        return cli_usage_error("token: bad subject '%s' (1 to 200 printable bytes, no spaces)",
                               subject);
    out[n] = '\0';
    puts(out);
    return 0;
}
