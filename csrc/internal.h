/* internal.h - small helpers shared by the .c files; not part of the API. */
#ifndef GRAY_INTERNAL_H
#define GRAY_INTERNAL_H

#include <stddef.h>

#if defined(__GNUC__)
#define gray_likely(x)   __builtin_expect(!!(x), 1)
#define gray_unlikely(x) __builtin_expect(!!(x), 0)
#else
#define gray_likely(x)   (x)
#define gray_unlikely(x) (x)
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

#endif
