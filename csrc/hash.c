/* hash.c - key hashing: picking a memcached server, percentage buckets. */
#include <string.h>

#include "gray.h"

/* Bob Jenkins' one-at-a-time hash: libmemcached's default key hash, so with
 * its default (modula) distribution, gray-admin and the router agree on the
 * server that holds a key. libmemcached adds each byte as a sign-extended
 * char (x86), so bytes >= 0x80 are added the same way here. */
uint32_t gray_hash_oaat(const char *key, size_t len)
{
    uint32_t h = 0;
    for (size_t i = 0; i < len; i++) {
        h += (uint32_t)(int32_t)(int8_t)key[i];
        h += h << 10;
        h ^= h >> 6;
    }
    h += h << 3;
    h ^= h >> 11;
    h += h << 15;
    return h;
}

/* 4 bytes at p as a little-endian number, at any alignment. */
static inline uint32_t load_le32(const unsigned char *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
#else
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
#endif
}

static inline uint32_t rotl32(uint32_t x, unsigned r)
{
    return x << r | x >> (32 - r);
}

/* one 4-byte block's contribution before it is mixed into the hash */
static inline uint32_t murmur3_scramble(uint32_t k)
{
    k *= 0xcc9e2d51u;
    k = rotl32(k, 15);
    return k * 0x1b873593u;
}

/* Austin Appleby's MurmurHash3_x86_32 (SMHasher), so any other
 * implementation (an admin tool, a client library) buckets a key the same
 * way. The length is mixed in as 32 bits, as the reference's int is. */
uint32_t gray_murmur3_32(const char *key, size_t len, uint32_t seed)
{
    const unsigned char *p = (const unsigned char *)key;
    const unsigned char *end = p + (len & ~(size_t)3);
    uint32_t h = seed;

    for (; p < end; p += 4) {
        h ^= murmur3_scramble(load_le32(p));
        h = rotl32(h, 13);
        h = h * 5 + 0xe6546b64u;
    }

    uint32_t tail = 0;
    switch (len & 3) {
    case 3: tail = (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0]; break;
    case 2: tail = (uint32_t)p[1] << 8 | p[0]; break;
    case 1: tail = p[0]; break;
    }
    if (len & 3)
        h ^= murmur3_scramble(tail);

    h ^= (uint32_t)len;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

uint32_t gray_percent_bucket(const char *key, size_t len)
{
    return gray_murmur3_32(key, len, 0) % GRAY_PERCENT_BUCKETS;
}
