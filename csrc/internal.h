/* internal.h - small helpers shared by the .c files; not part of the API. */
#ifndef GRAY_INTERNAL_H
#define GRAY_INTERNAL_H

#include <stddef.h>

#if defined(__GNUC__)
#define gray_likely(x)   __builtin_expect(!!(x), 1)
#define gray_unlikely(x) __builtin_expect(!!(x), 0)
#define gray_always_inline inline __attribute__((always_inline))
#else
#define gray_likely(x)   (x)
#define gray_unlikely(x) (x)
#define gray_always_inline inline
#endif

static inline int gray_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* HTTP optional whitespace (RFC 9110 OWS) */
static inline int gray_is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* A strict dotted quad (no port, no brackets) into out, IPv4-mapped: the
 * hot path's shortcut past gray_ip_parse()'s family test (ip.c). */
struct gray_ip;
int gray_ip_parse_v4(const char *s, size_t len, struct gray_ip *out);

/* gray_mc_parse_get without its shortcut for the usual one-key replies
 * (mc.c): the tests compare the two. */
struct gray_mc_value;
struct gray_mc_line;
int gray_mc_parse_get_general(const char *buf, size_t len, const char *keys, size_t keys_len,
                              struct gray_mc_value *vals, size_t *nvals,
                              struct gray_mc_line *line, size_t *need);

#endif
