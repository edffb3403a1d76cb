/* mc.c - memcached text protocol: key safety and zero-copy reply decoding
 * (doc/protocol.txt: retrieval replies, the one-line replies, and the meta
 * protocol's replies to mg and mn). */
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "gray.h"
#include "internal.h"

/* Bytes a key may not hold, 8 at a time (SWAR): a nonzero result when some
 * byte of w is <= 0x20 (a control byte or a space) or is 0x7f. Bytes from
 * 0x80 up pass, as in the bytewise test. */
#define KEY_ONES  0x0101010101010101ULL
#define KEY_HIGHS 0x8080808080808080ULL
static inline uint64_t key_bad8(uint64_t w)
{
    uint64_t low = (w - KEY_ONES * 0x21) & ~w;          /* a byte < 0x21 */
    uint64_t del = w ^ (KEY_ONES * 0x7f);
    uint64_t is_del = (del - KEY_ONES) & ~del;           /* a byte == 0x7f */
    return (low | is_del) & KEY_HIGHS;
}

/* gray_mc_key_ok's body, inlined where this file needs it (an exported
 * function is called through the PLT, never inlined, under -fPIC). */
static gray_always_inline int key_ok(const char *key, size_t len)
{
    if (key == NULL || len == 0 || len > GRAY_MC_KEY_MAX)
        return 0;
    uint64_t w;
    if (len >= 8) {
        /* whole words, then the last 8 bytes (overlapping the last word) */
        for (size_t i = 0; i + 8 < len; i += 8) {
            memcpy(&w, key + i, 8);
            if (key_bad8(w))
                return 0;
        }
        memcpy(&w, key + len - 8, 8);
        return key_bad8(w) == 0;
    }
    if (len >= 4) {
        /* the first 4 and the last 4 bytes (overlapping) in one word */
        uint32_t a, b;
        memcpy(&a, key, 4);
        memcpy(&b, key + len - 4, 4);
        return key_bad8((uint64_t)a | (uint64_t)b << 32) == 0;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c <= 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

int gray_mc_key_ok(const char *key, size_t len)
{
    return key_ok(key, len);
}

/* Finds the CR of the CRLF ending the line that starts at pos. A bare LF
 * (or CR) can never become part of a valid line: an error, not "need more",
 * and the same answer for every prefix that holds it. */
static int find_eol(const char *buf, size_t len, size_t pos, size_t *eol)
{
    size_t avail = len - pos;
    size_t window = avail < GRAY_MC_LINE_MAX ? avail : GRAY_MC_LINE_MAX;
    const char *cr = memchr(buf + pos, '\r', window);
    if (gray_unlikely(cr == NULL)) {
        if (memchr(buf + pos, '\n', window) != NULL)
            return GRAY_ELINE;
        return avail >= GRAY_MC_LINE_MAX ? GRAY_ELINE : GRAY_EAGAIN;
    }
    size_t i = (size_t)(cr - buf);
    if (memchr(buf + pos, '\n', i - pos) != NULL)
        return GRAY_ELINE;
    if (i + 1 >= len)
        return GRAY_EAGAIN;
    if (buf[i + 1] != '\n')
        return GRAY_ELINE;
    *eol = i;
    return GRAY_OK;
}

/* 19 decimal digits always fit in 64 bits: only a 20th needs an overflow
 * test (a division per digit would cost more than the rest of a decode). */
#define U64_SAFE_DIGITS 19

/* Plain decimal digits (1..20 of them) no larger than max. */
static int parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0 || len > 20)
        return len == 0 ? GRAY_EDIGITS : GRAY_ERANGE;
    uint64_t v = 0;
    size_t fast = len < U64_SAFE_DIGITS ? len : U64_SAFE_DIGITS;
    for (size_t i = 0; i < fast; i++) {
        if (!gray_is_digit(s[i]))
            return GRAY_EDIGITS;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (len > U64_SAFE_DIGITS) {
        if (!gray_is_digit(s[U64_SAFE_DIGITS]))
            return GRAY_EDIGITS;
        unsigned d = (unsigned)(s[U64_SAFE_DIGITS] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return GRAY_ERANGE;
        v = v * 10 + d;
    }
    if (v > max)
        return GRAY_ERANGE;
    *out = v;
    return GRAY_OK;
}

static int starts_with(const char *s, size_t len, const char *word, size_t wlen)
{
    return len >= wlen && memcmp(s, word, wlen) == 0;
}

#define LIT(s) s, sizeof(s) - 1

/* Classifies the line buf[0..n) (without CRLF). */
static int classify_line(const char *buf, size_t n, gray_mc_line_t *line)
{
    static const struct { const char *word; uint8_t len; uint8_t kind; } exact[] = {
        {LIT("STORED"), GRAY_MC_STORED},       {LIT("NOT_STORED"), GRAY_MC_NOT_STORED},
        {LIT("EXISTS"), GRAY_MC_EXISTS},       {LIT("NOT_FOUND"), GRAY_MC_NOT_FOUND},
        {LIT("DELETED"), GRAY_MC_DELETED},     {LIT("TOUCHED"), GRAY_MC_TOUCHED},
        {LIT("OK"), GRAY_MC_OK},               {LIT("END"), GRAY_MC_END},
        {LIT("ERROR"), GRAY_MC_ERROR},
    };
    /* keywords followed by a space and a message */
    static const struct { const char *word; uint8_t len; uint8_t kind; } prefixed[] = {
        {LIT("CLIENT_ERROR "), GRAY_MC_CLIENT_ERROR},
        {LIT("SERVER_ERROR "), GRAY_MC_SERVER_ERROR},
        {LIT("ERROR "), GRAY_MC_ERROR},
        {LIT("VERSION "), GRAY_MC_VERSION},
    };

    line->msg_off = 0;
    line->msg_len = 0;
    line->number = 0;
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        if (n == exact[i].len && memcmp(buf, exact[i].word, n) == 0) {
            line->kind = exact[i].kind;
            return GRAY_OK;
        }
    }
    for (size_t i = 0; i < sizeof prefixed / sizeof prefixed[0]; i++) {
        if (starts_with(buf, n, prefixed[i].word, prefixed[i].len)) {
            line->kind = prefixed[i].kind;
            line->msg_off = prefixed[i].len;
            line->msg_len = (uint32_t)(n - prefixed[i].len);
            return GRAY_OK;
        }
    }
    if (n > 0 && gray_is_digit(buf[0])) {
        int rc = parse_u64(buf, n, UINT64_MAX, &line->number);
        if (rc != GRAY_OK)
            return rc;
        line->kind = GRAY_MC_NUMBER;
        line->msg_len = (uint32_t)n;
        return GRAY_OK;
    }
    return GRAY_EREPLY;
}

int gray_mc_parse_line(const char *buf, size_t len, gray_mc_line_t *line)
{
    size_t eol;
    if (len > INT_MAX)
        return GRAY_EINVAL;
    int rc = find_eol(buf, len, 0, &eol);
    if (rc != GRAY_OK)
        return rc;
    rc = classify_line(buf, eol, line);
    return rc != GRAY_OK ? rc : (int)(eol + 2);
}

/* Is key the next requested key not answered yet? memcached answers in
 * request order and each requested key at most once, so the search only moves
 * forward from *cursor, where the last match ended; a key asked for twice may
 * be answered twice. Misses are skipped over. */
static int key_requested(const char *keys, size_t keys_len, size_t *cursor,
                         const char *key, size_t klen)
{
    size_t p = *cursor;
    while (p < keys_len) {
        const char *sp = memchr(keys + p, ' ', keys_len - p);
        size_t end = sp ? (size_t)(sp - keys) : keys_len;
        if (end - p == klen && memcmp(keys + p, key, klen) == 0) {
            *cursor = end < keys_len ? end + 1 : keys_len;
            return 1;
        }
        p = end + 1;
    }
    return 0;
}

/* Reads a decimal field at *p that ends at a space or at eol, no larger than
 * max; leaves *p on the space (or eol). */
static int number_field(const char *buf, size_t *p, size_t eol, uint64_t max, uint64_t *out)
{
    size_t start = *p, i = start;
    while (i < eol && buf[i] != ' ')
        i++;
    int rc = parse_u64(buf + start, i - start, max, out);
    if (rc == GRAY_OK)
        *p = i;
    return rc;
}

/* "VALUE <key> <flags> <bytes> [<cas>]" without the CRLF, starting after
 * "VALUE ": one pass, single spaces between fields. Fills v (offsets
 * relative to buf) and *bytes. */
static int parse_value_line(const char *buf, size_t pos, size_t eol,
                            gray_mc_value_t *v, uint64_t *bytes)
{
    size_t p = pos;
    while (p < eol && buf[p] != ' ') {
        unsigned char c = (unsigned char)buf[p];
        if (c < 0x20 || c == 0x7f)
            return GRAY_EKEY;
        p++;
    }
    size_t klen = p - pos;
    if (klen == 0 || klen > GRAY_MC_KEY_MAX)
        return GRAY_EKEY;
    if (p == eol)
        return GRAY_EINVAL;

    uint64_t flags, cas = 0;
    int rc;
    p++;
    if ((rc = number_field(buf, &p, eol, UINT32_MAX, &flags)) != GRAY_OK)
        return rc;
    if (p == eol)
        return GRAY_EINVAL;
    p++;
    if ((rc = number_field(buf, &p, eol, GRAY_MC_DATA_MAX, bytes)) != GRAY_OK)
        return rc;
    v->has_cas = 0;
    if (p < eol) {
        p++;
        if ((rc = number_field(buf, &p, eol, UINT64_MAX, &cas)) != GRAY_OK)
            return rc;
        if (p != eol)
            return GRAY_EINVAL;
        v->has_cas = 1;
    }

    v->key_off = (uint32_t)pos;
    v->key_len = (uint32_t)klen;
    v->flags = (uint32_t)flags;
    v->cas = cas;
    return GRAY_OK;
}

/* A decimal field of 1..U64_SAFE_DIGITS digits at buf[*p] ending at the byte
 * `end`: its value, *p left on that byte; or 0 when it is anything else (more
 * digits, another byte: the general decoder says what). */
static gray_always_inline int short_number(const char *buf, size_t len, size_t *p, char end,
                                           uint64_t *out)
{
    size_t i = *p, stop = i + U64_SAFE_DIGITS;
    uint64_t v = 0;
    if (stop > len)
        stop = len;
    while (i < stop && gray_is_digit(buf[i])) {
        v = v * 10 + (unsigned)(buf[i] - '0');
        i++;
    }
    if (i == *p || i >= len || buf[i] != end)
        return 0;
    *p = i;
    *out = v;
    return 1;
}

/* The usual whole reply to "get <key>" with a value, for one valid key:
 * "VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n", short numbers in
 * range, no cas. Decodes it exactly as parse_get_general does (returns the
 * bytes consumed), in one pass with no search; anything else, including a
 * reply not complete yet, is 0: the general decoder's (GRAY_EAGAIN, errors).
 * key must pass key_ok (gray_mc_key_ok): no space, no control byte (CR,
 * LF), no DEL, so its echo in the VALUE line is what the general decoder
 * would accept. */
static int parse_get_one(const char *buf, size_t len, const char *key, size_t klen,
                         gray_mc_value_t *vals, size_t cap)
{
    uint64_t flags, bytes;
    size_t p = 6 + klen;
    if (cap == 0 || len < p + 2 || buf[0] != 'V' || buf[1] != 'A' || buf[2] != 'L' ||
        buf[3] != 'U' || buf[4] != 'E' || buf[5] != ' ' || memcmp(buf + 6, key, klen) != 0 ||
        buf[p] != ' ')
        return 0;
    p++;
    if (!short_number(buf, len, &p, ' ', &flags) || flags > UINT32_MAX)
        return 0;
    p++;
    if (!short_number(buf, len, &p, '\r', &bytes) || bytes > GRAY_MC_DATA_MAX)
        return 0;
    /* the CR is at p: LF, data, CRLF, "END" CRLF */
    size_t data = p + 2;
    if (len - p < 9 || (size_t)bytes > len - p - 9 || buf[p + 1] != '\n')
        return 0;
    const char *t = buf + data + bytes;     /* the CRLF after the data */
    if (t[0] != '\r' || t[1] != '\n' || t[2] != 'E' || t[3] != 'N' || t[4] != 'D' ||
        t[5] != '\r' || t[6] != '\n')
        return 0;
    vals[0].key_off = 6;
    vals[0].key_len = (uint32_t)klen;
    vals[0].data_off = (uint32_t)data;
    vals[0].data_len = (uint32_t)bytes;
    vals[0].flags = (uint32_t)flags;
    vals[0].has_cas = 0;
    vals[0].cas = 0;
    return (int)(data + bytes + 7);
}

int gray_mc_parse_get(const char *buf, size_t len, const char *keys, size_t keys_len,
                      gray_mc_value_t *vals, size_t *nvals, gray_mc_line_t *line,
                      size_t *need)
{
    /* the usual replies: a miss ("END" alone: whatever was asked), or one
     * value for one valid key (it holds no space: a list of one) */
    int rc = 0;
    size_t n = 0;
    if (len >= 5 && len <= INT_MAX && buf[0] == 'E' && buf[1] == 'N' && buf[2] == 'D' &&
        buf[3] == '\r' && buf[4] == '\n') {
        rc = 5;
    } else if (len <= INT_MAX && key_ok(keys, keys_len)) {
        rc = parse_get_one(buf, len, keys, keys_len, vals, *nvals);
        n = 1;
    }
    if (rc > 0) {
        line->kind = GRAY_MC_END;
        line->msg_off = line->msg_len = 0;
        line->number = 0;
        *nvals = n;
        *need = 0;
        return rc;
    }
    return gray_mc_parse_get_general(buf, len, keys, keys_len, vals, nvals, line, need);
}

int gray_mc_parse_get_general(const char *buf, size_t len, const char *keys, size_t keys_len,
                              gray_mc_value_t *vals, size_t *nvals, gray_mc_line_t *line,
                              size_t *need)
{
    size_t cap = *nvals, count = 0, pos = 0, cursor = 0;
    int rc;

    *nvals = 0;
    *need = 0;
    if (len > INT_MAX)
        return GRAY_EINVAL;

    for (;;) {
        size_t eol;
        rc = find_eol(buf, len, pos, &eol);
        if (rc == GRAY_EAGAIN) {
            /* at least the rest of this line's CRLF */
            *need = (len > pos && buf[len - 1] == '\r') ? 1 : 2;
            break;
        }
        if (rc != GRAY_OK)
            break;

        if (starts_with(buf + pos, eol - pos, LIT("VALUE "))) {
            gray_mc_value_t v;
            uint64_t bytes;
            rc = parse_value_line(buf, pos + 6, eol, &v, &bytes);
            if (rc != GRAY_OK)
                break;
            if (keys != NULL &&
                !key_requested(keys, keys_len, &cursor, buf + v.key_off, v.key_len)) {
                rc = GRAY_EUNASKED;
                break;
            }
            if (count == cap) {
                rc = GRAY_ESPACE;
                break;
            }
            size_t data = eol + 2;
            size_t data_end = data + (size_t)bytes;
            if (data_end + 2 > len) {
                /* the data, its CRLF and at least "END\r\n" are missing */
                *need = data_end + 2 + 5 - len;
                rc = GRAY_EAGAIN;
                break;
            }
            if (buf[data_end] != '\r' || buf[data_end + 1] != '\n') {
                rc = GRAY_EDATA;
                break;
            }
            v.data_off = (uint32_t)data;
            v.data_len = (uint32_t)bytes;
            vals[count++] = v;
            pos = data_end + 2;
            continue;
        }

        if (eol - pos == 3 && memcmp(buf + pos, "END", 3) == 0) {
            line->kind = GRAY_MC_END;       /* the usual last line, fast */
            line->msg_off = line->msg_len = 0;
            line->number = 0;
            *nvals = count;
            return (int)(eol + 2);
        }
        rc = classify_line(buf + pos, eol - pos, line);
        if (rc != GRAY_OK)
            break;
        switch (line->kind) {
        case GRAY_MC_END:
        case GRAY_MC_ERROR:
        case GRAY_MC_CLIENT_ERROR:
        case GRAY_MC_SERVER_ERROR:
            line->msg_off += (uint32_t)pos;
            *nvals = count;
            return (int)(eol + 2);
        default:
            rc = GRAY_EREPLY;   /* STORED, a number, ...: not a get reply */
            break;
        }
        break;
    }
    *nvals = count;
    return rc;
}

/* ---- meta protocol: replies to "mg" (doc/protocol.txt, "Meta Get") ------- */

/* Where the next unanswered request is: its key's offset in the key list
 * (past keys_len once every key is answered) and its position. */
typedef struct meta_cursor {
    size_t off;
    uint32_t index;
} meta_cursor_t;

/* The length of the key at c->off. */
static size_t key_len_at(const char *keys, size_t keys_len, size_t off)
{
    const char *sp = memchr(keys + off, ' ', keys_len - off);
    return sp ? (size_t)(sp - (keys + off)) : keys_len - off;
}

/* Moves c to the request at position target (>= c->index); 0 when the list
 * holds fewer keys. */
static int skip_to(const char *keys, size_t keys_len, meta_cursor_t *c, uint64_t target)
{
    while (c->index < target) {
        if (c->off > keys_len)
            return 0;
        c->off += key_len_at(keys, keys_len, c->off) + 1;
        c->index++;
    }
    return c->off <= keys_len;
}

/* Moves c forward to the first request for key, at or after c; 0 when none. */
static int seek_key(const char *keys, size_t keys_len, meta_cursor_t *c,
                    const char *key, size_t klen)
{
    while (c->off <= keys_len) {
        size_t n = key_len_at(keys, keys_len, c->off);
        if (n == klen && memcmp(keys + c->off, key, klen) == 0)
            return 1;
        c->off += n + 1;
        c->index++;
    }
    return 0;
}

/* The tokens of one meta reply line that matter here. */
typedef struct meta_tokens {
    uint64_t cas;
    uint32_t flags;
    uint32_t has;               /* GRAY_META_HAS_* */
    size_t key_off, key_len;
    size_t opaque_off, opaque_len;
} meta_tokens_t;

/* The flags of a meta reply line, from p (on a space, or at eol) to eol:
 * " <flag><token>" each, single spaces, a flag a letter. c, f, k and O are
 * read (each at most once); the others (t, s, h, l, W, X, Z...) are passed
 * over. */
static int meta_flags(const char *buf, size_t p, size_t eol, meta_tokens_t *t)
{
    t->has = 0;
    t->cas = 0;
    t->flags = 0;
    t->key_off = t->key_len = t->opaque_off = t->opaque_len = 0;
    while (p < eol) {
        if (buf[p] != ' ' || p + 1 >= eol)
            return GRAY_EINVAL;         /* double or trailing space */
        p++;
        char f = buf[p];
        if (!((f >= 'a' && f <= 'z') || (f >= 'A' && f <= 'Z')))
            return GRAY_EINVAL;
        size_t start = ++p;
        uint32_t bit = f == 'c' ? GRAY_META_HAS_CAS : f == 'f' ? GRAY_META_HAS_FLAGS
                     : f == 'k' ? GRAY_META_HAS_KEY : f == 'O' ? GRAY_META_HAS_OPAQUE : 0;
        if (t->has & bit)
            return GRAY_EINVAL;         /* memcached never repeats a flag */
        t->has |= bit;
        int rc;
        uint64_t v;
        if (bit == GRAY_META_HAS_CAS)   /* numbers: their digits are the check */
            rc = number_field(buf, &p, eol, UINT64_MAX, &t->cas);
        else if (bit == GRAY_META_HAS_FLAGS)
            rc = number_field(buf, &p, eol, UINT32_MAX, &v);
        else
            rc = GRAY_OK;
        if (rc != GRAY_OK)
            return rc;
        if (bit == GRAY_META_HAS_FLAGS)
            t->flags = (uint32_t)v;
        while (p < eol && buf[p] != ' ') {
            unsigned char c = (unsigned char)buf[p];
            if (c < 0x20 || c == 0x7f)
                return GRAY_EINVAL;
            p++;
        }
        size_t n = p - start;
        switch (f) {
        case 'c':
        case 'f':
            break;
        case 'k':
            if (n == 0 || n > GRAY_MC_KEY_MAX)
                return GRAY_EKEY;
            t->key_off = start;
            t->key_len = n;
            break;
        case 'O':
            if (n == 0 || n > GRAY_MC_OPAQUE_MAX)
                return GRAY_EINVAL;
            t->opaque_off = start;
            t->opaque_len = n;
            break;
        default:                        /* t, s, h, l, W, X, Z...: not read */
            break;
        }
    }
    return GRAY_OK;
}

/* Which request a reply answers (see gray.h): fills v's index, req_off and
 * req_len, and moves c past it. */
static int meta_match(const char *buf, const char *keys, size_t keys_len, int quiet,
                      meta_cursor_t *c, const meta_tokens_t *t, gray_mc_meta_t *v)
{
    uint64_t target = c->index;
    if (t->has & GRAY_META_HAS_OPAQUE) {
        /* memcached echoes the O<i> sent, which has no leading zero */
        if (parse_u64(buf + t->opaque_off, t->opaque_len, UINT32_MAX - 1, &target) != GRAY_OK
            || (t->opaque_len > 1 && buf[t->opaque_off] == '0'))
            return GRAY_EUNASKED;
        if (target < c->index || (!quiet && target != c->index))
            return GRAY_EUNASKED;
    }
    if (!skip_to(keys, keys_len, c, target))
        return GRAY_EUNASKED;           /* past the last request */
    if (t->has & GRAY_META_HAS_KEY) {
        const char *key = buf + t->key_off;
        if (quiet && !(t->has & GRAY_META_HAS_OPAQUE)) {
            if (!seek_key(keys, keys_len, c, key, t->key_len))
                return GRAY_EUNASKED;
        } else if (key_len_at(keys, keys_len, c->off) != t->key_len ||
                   memcmp(keys + c->off, key, t->key_len) != 0) {
            return GRAY_EUNASKED;
        }
    }
    size_t n = key_len_at(keys, keys_len, c->off);
    v->index = c->index;
    v->req_off = (uint32_t)c->off;
    v->req_len = (uint32_t)n;
    c->off += n + 1;
    c->index++;
    return GRAY_OK;
}

int gray_mc_parse_meta(const char *buf, size_t len, const char *keys, size_t keys_len,
                       int mode, gray_mc_meta_t *vals, size_t *nvals, gray_mc_line_t *line,
                       size_t *need)
{
    size_t cap = *nvals, count = 0, pos = 0;
    uint32_t replies = 0;
    meta_cursor_t cur = {keys_len == 0 ? 1 : 0, 0};     /* no keys: all answered */
    int pipeline = (mode & GRAY_META_PIPELINE) != 0;
    int quiet = (mode & GRAY_META_QUIET) != 0;
    int rc;

    *nvals = 0;
    *need = 0;
    if (len > INT_MAX)
        return GRAY_EINVAL;

    /* the usual miss, fast: one mg's "EN", or a quiet pipeline's lone "MN" */
    if (len >= 4 && buf[2] == '\r' && buf[3] == '\n' && (keys == NULL || keys_len > 0)) {
        int32_t kind = !pipeline && buf[0] == 'E' && buf[1] == 'N' ? GRAY_MC_EN
                     : pipeline && (quiet || keys == NULL) && buf[0] == 'M' && buf[1] == 'N'
                     ? GRAY_MC_MN : 0;
        if (kind != 0) {
            line->kind = kind;
            line->msg_off = line->msg_len = 0;
            line->number = 0;
            return 4;
        }
    }

    for (;;) {
        size_t eol;
        rc = find_eol(buf, len, pos, &eol);
        if (rc == GRAY_EAGAIN) {
            *need = (len > pos && buf[len - 1] == '\r') ? 1 : 2;
            break;
        }
        if (rc != GRAY_OK)
            break;

        const char *l = buf + pos;
        size_t n = eol - pos;
        int32_t kind = 0;
        if (n >= 2 && (n == 2 || l[2] == ' ')) {
            if (l[0] == 'V' && l[1] == 'A')
                kind = GRAY_MC_VA;
            else if (l[0] == 'H' && l[1] == 'D')
                kind = GRAY_MC_HD;
            else if (l[0] == 'E' && l[1] == 'N')
                kind = GRAY_MC_EN;
            else if (l[0] == 'M' && l[1] == 'N' && n == 2)
                kind = GRAY_MC_MN;
        }
        if (kind == 0) {
            rc = classify_line(l, n, line);
            if (rc != GRAY_OK)
                break;
            if (line->kind == GRAY_MC_ERROR || line->kind == GRAY_MC_CLIENT_ERROR ||
                line->kind == GRAY_MC_SERVER_ERROR) {
                line->msg_off += (uint32_t)pos;
                *nvals = count;
                return (int)(eol + 2);
            }
            rc = GRAY_EREPLY;           /* STORED, END, a number...: not an mg reply */
            break;
        }

        if (kind == GRAY_MC_MN) {
            /* without q every request answers before MN */
            if (!pipeline || (keys != NULL && !quiet && cur.off <= keys_len)) {
                rc = GRAY_EREPLY;
                break;
            }
            line->kind = GRAY_MC_MN;
            line->msg_off = line->msg_len = 0;
            line->number = 0;
            *nvals = count;
            return (int)(eol + 2);
        }

        /* a hit must be the kind that was asked for; q suppresses EN */
        if ((kind == GRAY_MC_EN && quiet) ||
            (kind == GRAY_MC_VA && !(mode & GRAY_META_VALUE)) ||
            (kind == GRAY_MC_HD && (mode & GRAY_META_VALUE))) {
            rc = GRAY_EREPLY;
            break;
        }
        size_t p = pos + 2;
        uint64_t bytes = 0;
        if (kind == GRAY_MC_VA) {
            p++;
            size_t start = p;
            while (p < eol && buf[p] != ' ')
                p++;
            if ((rc = parse_u64(buf + start, p - start, GRAY_MC_DATA_MAX, &bytes)) != GRAY_OK)
                break;
        }
        meta_tokens_t t;
        if ((rc = meta_flags(buf, p, eol, &t)) != GRAY_OK)
            break;
        gray_mc_meta_t m = {.index = replies};
        if (keys != NULL) {
            if (!pipeline && kind == GRAY_MC_EN && t.has == 0) {
                /* the usual miss of one mg: it answers request 0, nothing to name */
                if (keys_len == 0) {
                    rc = GRAY_EUNASKED;
                    break;
                }
            } else if ((rc = meta_match(buf, keys, keys_len, quiet, &cur, &t, &m)) != GRAY_OK) {
                break;
            }
        }
        replies++;

        size_t next = eol + 2;
        if (kind != GRAY_MC_EN) {
            if (count == cap) {
                rc = GRAY_ESPACE;
                break;
            }
            gray_mc_meta_t *v = &vals[count];
            v->data_off = v->data_len = 0;
            if (kind == GRAY_MC_VA) {
                size_t data_end = next + (size_t)bytes;
                if (data_end + 2 > len) {
                    /* the data, its CRLF and, in a pipeline, at least "MN\r\n" */
                    *need = data_end + 2 + (pipeline ? 4 : 0) - len;
                    rc = GRAY_EAGAIN;
                    break;
                }
                if (buf[data_end] != '\r' || buf[data_end + 1] != '\n') {
                    rc = GRAY_EDATA;
                    break;
                }
                v->data_off = (uint32_t)next;
                v->data_len = (uint32_t)bytes;
                next = data_end + 2;
            }
            v->kind = kind;
            v->index = m.index;
            v->req_off = m.req_off;
            v->req_len = m.req_len;
            v->has = t.has;
            v->key_off = (uint32_t)t.key_off;
            v->key_len = (uint32_t)t.key_len;
            v->opaque_off = (uint32_t)t.opaque_off;
            v->opaque_len = (uint32_t)t.opaque_len;
            v->flags = t.flags;
            v->cas = t.cas;
            count++;
        }
        pos = next;
        if (!pipeline) {                /* one mg, one reply */
            line->kind = kind;
            line->msg_off = line->msg_len = 0;
            line->number = 0;
            *nvals = count;
            return (int)pos;
        }
    }
    *nvals = count;
    return rc;
}

int gray_mc_meta_request(const char *keys, size_t keys_len, const char *flags, size_t flags_len,
                         char *out, size_t cap)
{
    size_t n = 0, pos = 0;
    uint32_t index = 0;
    if (keys_len == 0 || keys_len > INT_MAX || flags_len > GRAY_MC_LINE_MAX)
        return GRAY_EINVAL;
    for (size_t i = 0; i < flags_len; i++)
        if (flags[i] < 0x20 || flags[i] > 0x7e)
            return GRAY_EINVAL;         /* no CR, LF or other control byte */
    while (pos <= keys_len) {
        size_t klen = key_len_at(keys, keys_len, pos);
        if (!gray_mc_key_ok(keys + pos, klen))
            return GRAY_EINVAL;         /* an empty key: a double, leading or trailing space */
        char num[11];
        size_t dlen = 0;
        uint32_t i = index;
        do {
            num[sizeof num - 1 - dlen++] = (char)('0' + i % 10);
            i /= 10;
        } while (i != 0);
        /* "mg " key [" " flags] " O" digits CRLF */
        size_t line = 3 + klen + (flags_len ? 1 + flags_len : 0) + 2 + dlen + 2;
        if (line > cap - n)
            return GRAY_ESPACE;
        memcpy(out + n, "mg ", 3);
        memcpy(out + n + 3, keys + pos, klen);
        n += 3 + klen;
        if (flags_len) {
            out[n++] = ' ';
            memcpy(out + n, flags, flags_len);
            n += flags_len;
        }
        memcpy(out + n, " O", 2);
        memcpy(out + n + 2, num + sizeof num - dlen, dlen);
        n += 2 + dlen;
        memcpy(out + n, "\r\n", 2);
        n += 2;
        pos += klen + 1;
        index++;
    }
    if (cap - n < 4 || n > (size_t)INT_MAX - 4)
        return GRAY_ESPACE;
    memcpy(out + n, "mn\r\n", 4);
    return (int)(n + 4);
}

int gray_mc_meta_list(const char *k1, size_t l1, const char *k2, size_t l2, const char *k3,
                      size_t l3, const char *k4, size_t l4, const char *k5, size_t l5,
                      char *out, size_t cap)
{
    const char *keys[GRAY_MC_LIST_MAX] = {k1, k2, k3, k4, k5};
    size_t lens[GRAY_MC_LIST_MAX] = {l1, l2, l3, l4, l5};
    size_t n = 0;
    char digit = '0';
    for (int i = 0; i < GRAY_MC_LIST_MAX; i++) {
        if (keys[i] == NULL)
            continue;
        size_t klen = lens[i];
        if (klen == 0 || klen > GRAY_MC_KEY_MAX)
            return GRAY_EINVAL;
        /* "mg " key " v q O" digit CRLF */
        if (3 + klen + 6 + 1 + 2 > cap - n)
            return GRAY_ESPACE;
        memcpy(out + n, "mg ", 3);
        memcpy(out + n + 3, keys[i], klen);
        n += 3 + klen;
        memcpy(out + n, " v q O", 6);
        out[n + 6] = digit++;
        memcpy(out + n + 7, "\r\n", 2);
        n += 9;
    }
    if (n == 0 || cap - n < 4)
        return n == 0 ? GRAY_EINVAL : GRAY_ESPACE;
    memcpy(out + n, "mn\r\n", 4);
    return (int)(n + 4);
}
