/* hash.c - key hashing for picking a memcached server. */
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
