/* ramp.c - timed ramp schedules: "5% 25%@10m 50%@30m 100%@1h", and the
 * memcached value "<start> <schedule>" (gray.h, "timed ramps"). Each node
 * reads the value and picks the step in force from its own clock. */
#include "gray.h"

#define SHARE_DIGITS_MAX 6      /* "000100%" is still a share; more is junk */
#define AT_DIGITS_MAX    9
#define START_DIGITS_MAX 11

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A share at s[*pos..end): digits, at most 2 decimals, '%'. */
static int parse_share(const char *s, size_t end, size_t *pos, uint32_t *share)
{
    size_t p = *pos;
    uint32_t whole = 0, frac = 0;
    int nd = 0, nf = 0;
    while (p < end && is_digit(s[p])) {
        if (++nd > SHARE_DIGITS_MAX)
            return GRAY_ERANGE;
        whole = whole * 10 + (uint32_t)(s[p++] - '0');
    }
    if (nd == 0)
        return GRAY_ESTEP;
    if (p < end && s[p] == '.') {
        p++;
        while (p < end && is_digit(s[p])) {
            if (++nf > 2)
                return GRAY_ESTEP;
            frac = frac * 10 + (uint32_t)(s[p++] - '0');
        }
        if (nf == 0)
            return GRAY_ESTEP;
        if (nf == 1)
            frac *= 10;
    }
    if (p >= end || s[p] != '%')
        return GRAY_ESTEP;
    if (whole > 100 || whole * 100 + frac > GRAY_PERCENT_BUCKETS)
        return GRAY_ERANGE;
    *share = whole * 100 + frac;
    *pos = p + 1;
    return GRAY_OK;
}

/* An offset at s[*pos..end) after '@': digits and a unit s, m or h. */
static int parse_at(const char *s, size_t end, size_t *pos, uint32_t *at)
{
    size_t p = *pos;
    uint64_t v = 0;
    int nd = 0;
    while (p < end && is_digit(s[p])) {
        if (++nd > AT_DIGITS_MAX)
            return GRAY_ERANGE;
        v = v * 10 + (uint64_t)(s[p++] - '0');
    }
    if (nd == 0 || p >= end)
        return GRAY_ESTEP;
    switch (s[p]) {
    case 's': break;
    case 'm': v *= 60; break;
    case 'h': v *= 3600; break;
    default: return GRAY_ESTEP;
    }
    if (v > GRAY_RAMP_AT_MAX)
        return GRAY_ERANGE;
    *at = (uint32_t)v;
    *pos = p + 1;
    return GRAY_OK;
}

static int fail(int code, size_t *err_at, size_t where)
{
    if (err_at)
        *err_at = where;
    return code;
}

int gray_ramp_parse(const char *s, size_t len, gray_ramp_step_t *steps, size_t cap,
                    size_t *err_at)
{
    size_t p = 0, n = 0;
    if (len > GRAY_RAMP_TEXT_MAX)
        return fail(GRAY_ERANGE, err_at, 0);
    for (;;) {
        while (p < len && is_blank(s[p]))
            p++;
        if (p == len)
            break;
        size_t begin = p;
        uint32_t share, at = 0;
        int rc = parse_share(s, len, &p, &share);
        if (rc < 0)
            return fail(rc, err_at, begin);
        if (p < len && s[p] == '@') {
            p++;
            rc = parse_at(s, len, &p, &at);
            if (rc < 0)
                return fail(rc, err_at, begin);
        } else if (n > 0) {
            return fail(GRAY_ESTEP, err_at, begin);     /* only the first has no offset */
        }
        if (p < len && !is_blank(s[p]))
            return fail(GRAY_ESTEP, err_at, begin);
        if (n == 0 && at != 0)
            return fail(GRAY_EORDER, err_at, begin);    /* the first step is at the start */
        if (n > 0 && (at <= steps[n - 1].at || share < steps[n - 1].share))
            return fail(GRAY_EORDER, err_at, begin);
        if (n == cap)
            return fail(GRAY_ESPACE, err_at, begin);
        steps[n].at = at;
        steps[n].share = share;
        n++;
    }
    if (n == 0)
        return fail(GRAY_ESTEP, err_at, p);
    return (int)n;
}

int gray_ramp_value_parse(const char *s, size_t len, int64_t *start, gray_ramp_step_t *steps,
                          size_t cap, size_t *err_at)
{
    size_t p = 0;
    int64_t v = 0;
    if (len > GRAY_RAMP_TEXT_MAX)
        return fail(GRAY_ERANGE, err_at, 0);
    while (p < len && is_digit(s[p])) {
        if (p == START_DIGITS_MAX)
            return fail(GRAY_ERANGE, err_at, 0);
        v = v * 10 + (s[p++] - '0');
    }
    if (p == 0 || p == len || !is_blank(s[p]))
        return fail(GRAY_EINVAL, err_at, p);
    if (v < 1 || v > GRAY_RAMP_START_MAX)
        return fail(GRAY_ERANGE, err_at, 0);
    size_t at = 0;
    int rc = gray_ramp_parse(s + p, len - p, steps, cap, &at);
    if (rc < 0)
        return fail(rc, err_at, p + at);
    *start = v;
    return rc;
}

size_t gray_ramp_at(const gray_ramp_step_t *steps, size_t n, int64_t elapsed)
{
    size_t i = 0;
    while (i + 1 < n && (int64_t)steps[i + 1].at <= elapsed)
        i++;
    return i;
}
