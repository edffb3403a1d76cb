/* token.c - signed tokens: "<subject>.<expiry>.<mac>", the MAC an
 * HMAC-SHA256 (OpenSSL's libcrypto) over a context, the subject and the
 * expiry, written in base64url without padding. The router takes them as
 * the tester override (context "force") and as signed identity cookies
 * (context "id:<name>"); gray-admin token mints them. */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "gray.h"

#define MAC_BYTES 32                /* SHA-256 */
#define B64_ROOM  45                /* EVP_EncodeBlock: 4 * ceil(32 / 3) + NUL */
/* the MAC's input: context, NUL, "<subject>.<expiry>" */
#define MSG_MAX (GRAY_TOKEN_CONTEXT_MAX + 1 + GRAY_TOKEN_SUBJECT_MAX + 1 + GRAY_TOKEN_EXPIRY_DIGITS)

_Static_assert(GRAY_TOKEN_MAX == GRAY_TOKEN_SUBJECT_MAX + 1 + GRAY_TOKEN_EXPIRY_DIGITS + 1
               + GRAY_TOKEN_MAC_LEN, "GRAY_TOKEN_MAX is the longest token");

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int gray_secret_len(const char *s, size_t len)
{
    while (len > 0 && is_space(s[len - 1]))
        len--;
    if (len < GRAY_SECRET_MIN || len > GRAY_SECRET_MAX)
        return GRAY_EINVAL;
    return (int)len;
}

static int subject_ok(const char *s, size_t len)
{
    if (len == 0 || len > GRAY_TOKEN_SUBJECT_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return 0;
    return 1;
}

static int context_ok(const char *ctx, size_t len)
{
    return len > 0 && len <= GRAY_TOKEN_CONTEXT_MAX && memchr(ctx, '\0', len) == NULL;
}

/* The base64url text (no padding) of the HMAC of ctx, NUL, body into
 * out[GRAY_TOKEN_MAC_LEN]. body_len <= GRAY_TOKEN_SUBJECT_MAX + 1 +
 * GRAY_TOKEN_EXPIRY_DIGITS and ctx checked by the caller. 0, or GRAY_EINVAL
 * when libcrypto fails. */
static int mac_text(const char *ctx, size_t ctx_len, const char *key, size_t key_len,
                    const char *body, size_t body_len, char *out)
{
    unsigned char msg[MSG_MAX];
    memcpy(msg, ctx, ctx_len);
    msg[ctx_len] = '\0';
    memcpy(msg + ctx_len + 1, body, body_len);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (HMAC(EVP_sha256(), key, (int)key_len, msg, ctx_len + 1 + body_len, md, &md_len) == NULL
        || md_len != MAC_BYTES)
        return GRAY_EINVAL;
    unsigned char b64[B64_ROOM];
    EVP_EncodeBlock(b64, md, MAC_BYTES);
    for (size_t i = 0; i < GRAY_TOKEN_MAC_LEN; i++) {
        char c = (char)b64[i];
        out[i] = c == '+' ? '-' : c == '/' ? '_' : c;
    }
    return 0;
}

int gray_token_make(const char *ctx, size_t ctx_len, const char *key, size_t key_len,
                    const char *subject, size_t subject_len, int64_t expiry,
                    char *buf, size_t cap)
{
    if (!context_ok(ctx, ctx_len) || key_len < GRAY_SECRET_MIN || key_len > GRAY_SECRET_MAX
        || !subject_ok(subject, subject_len) || expiry < 1 || expiry > GRAY_TOKEN_EXPIRY_LAST)
        return GRAY_EINVAL;
    char digits[GRAY_TOKEN_EXPIRY_DIGITS];
    size_t nd = 0;
    for (int64_t e = expiry; e > 0; e /= 10)
        digits[nd++] = (char)('0' + e % 10);
    size_t body_len = subject_len + 1 + nd;
    size_t total = body_len + 1 + GRAY_TOKEN_MAC_LEN;
    if (cap < total)
        return GRAY_ESPACE;
    memcpy(buf, subject, subject_len);
    buf[subject_len] = '.';
    for (size_t i = 0; i < nd; i++)
        buf[subject_len + 1 + i] = digits[nd - 1 - i];
    buf[body_len] = '.';
    if (mac_text(ctx, ctx_len, key, key_len, buf, body_len, buf + body_len + 1) != 0)
        return GRAY_EINVAL;
    return (int)total;
}

int gray_token_check(const char *ctx, size_t ctx_len, const char *key, size_t key_len,
                     const char *tok, size_t len, int64_t now, int64_t *expiry)
{
    if (!context_ok(ctx, ctx_len) || key_len < GRAY_SECRET_MIN || key_len > GRAY_SECRET_MAX)
        return GRAY_EINVAL;
    if (len > GRAY_TOKEN_MAX || len < 1 + 1 + 1 + 1 + GRAY_TOKEN_MAC_LEN)
        return GRAY_EINVAL;
    /* from the right: the MAC is a fixed length, the expiry digits before it */
    size_t mac_at = len - GRAY_TOKEN_MAC_LEN;
    if (tok[mac_at - 1] != '.')
        return GRAY_EINVAL;
    size_t body_len = mac_at - 1;
    size_t d = body_len;
    while (d > 0 && tok[d - 1] >= '0' && tok[d - 1] <= '9')
        d--;
    size_t nd = body_len - d;
    if (nd == 0 || nd > GRAY_TOKEN_EXPIRY_DIGITS || d < 2 || tok[d - 1] != '.')
        return GRAY_EINVAL;
    size_t subject_len = d - 1;
    if (!subject_ok(tok, subject_len))
        return GRAY_EINVAL;
    int64_t e = 0;
    for (size_t i = d; i < body_len; i++)
        e = e * 10 + (tok[i] - '0');
    char want[GRAY_TOKEN_MAC_LEN];
    if (mac_text(ctx, ctx_len, key, key_len, tok, body_len, want) != 0)
        return GRAY_EINVAL;
    if (CRYPTO_memcmp(want, tok + mac_at, GRAY_TOKEN_MAC_LEN) != 0)
        return GRAY_EMAC;
    if (e <= now)
        return GRAY_EEXPIRED;
    if (expiry)
        *expiry = e;
    return (int)subject_len;
}
