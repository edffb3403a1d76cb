/* replay.c - a deterministic stand-in for libFuzzer, run by "make test" under
 * AddressSanitizer and UndefinedBehaviorSanitizer: each seed as is, every
 * prefix of it, then seeded random mutations, all through fuzz_target.c.
 * "make fuzz" runs the same target under libFuzzer for open-ended search. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct { int target; const char *text; } seeds[] = {
    {0, "192.168.2.20"}, {0, "::FFFF:192.168.2.20"}, {0, "[::ffff:c0a8:214]:80"},
    {0, "2001:db8:0:0:1:0:0:1"}, {0, "2001:0db8::0001"}, {0, "1.2.3.4:65535"},
    {0, "::"}, {0, "1::"}, {0, "[2001:db8::1]:443"}, {0, "10.0.0.0/8"},
    {0, "2001:db8::/32"}, {0, "::192.0.2.1"}, {0, "fe80::1%eth0"},
    {1, "203.0.113.7, 10.0.0.2, 127.0.0.1"}, {1, " ,\t1.2.3.4 ,, [::1]:80,unknown , 10.1.1.1"},
    {1, "2001:db8::5, 2001:db8::6"},
    {2, "for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\""},
    {2, "For=\"_gazonk\", for=unknown;by=_x, for=10.0.0.1"}, {2, "for=\"[::1]\";proto=\"h\\\"x\""},
    {3, "VALUE 192.168.2.20 0 1\r\n1\r\nEND\r\n"},
    {3, "VALUE a 5 3 77\r\nabc\r\nVALUE k1 4294967295 0 18446744073709551615\r\n\r\nEND\r\n"},
    {3, "SERVER_ERROR out of memory\r\n"}, {3, "END\r\n"},
    {4, "STORED\r\n"}, {4, "CLIENT_ERROR bad data chunk\r\n"}, {4, "18446744073709551615\r\n"},
    {4, "VERSION 1.6.18\r\n"},
    {5, "10.0.0.0/8,::/0,127.0.0.1,2001:db8::/32,10.128.0.0/9,::ffff:10.0.0.0/8"},
    {5, "0.0.0.0/0,::/95,::1:0:0:0/96,1.2.3.4/31"},
    {6, "127.0.0.1| 203.0.113.7 |198.51.100.1, 10.0.0.1|for=1.2.3.4"},
    {6, "::1||[2001:db8::1]:80, unknown, 127.0.0.2|"},
    {6, "8.8.8.8|1.2.3.4|5.6.7.8|for=9.9.9.9"},
};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static const char dict[][8] = {"\r\n", " ", ",", ":", "::", ".", "[", "]", "\"", ";",
                               "=", "0", "255", "256", "VALUE ", "END", "for=", "\\", "%"};

static size_t mutate(uint8_t *buf, size_t len, size_t cap)
{
    int rounds = 1 + (int)(rng() % 4);
    for (int r = 0; r < rounds; r++) {
        size_t pos = len > 1 ? 1 + rng() % (len - 1) : 1;
        switch (rng() % 5) {
        case 0: /* flip a byte */
            if (len > 1)
                buf[pos] = (uint8_t)rng();
            break;
        case 1: /* delete a run */
            if (len > 1) {
                size_t n = 1 + rng() % 4;
                if (pos + n > len)
                    n = len - pos;
                memmove(buf + pos, buf + pos + n, len - pos - n);
                len -= n;
            }
            break;
        case 2: { /* insert a dictionary token */
            const char *t = dict[rng() % (sizeof dict / sizeof dict[0])];
            size_t n = strlen(t);
            if (pos > len)
                pos = len;
            if (len + n <= cap) {
                memmove(buf + pos + n, buf + pos, len - pos);
                memcpy(buf + pos, t, n);
                len += n;
            }
            break;
        }
        case 3: /* duplicate a chunk */
            if (len > 2 && len * 2 <= cap) {
                size_t from = 1 + rng() % (len - 1), n = 1 + rng() % (len - from);
                memmove(buf + len, buf + from, n);
                len += n;
            }
            break;
        default: /* truncate */
            if (len > 1)
                len = 1 + rng() % (len - 1);
            break;
        }
    }
    return len;
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 20000;
    uint8_t buf[4096];
    long runs = 0;

    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        size_t len = strlen(seeds[i].text);
        buf[0] = (uint8_t)seeds[i].target;
        memcpy(buf + 1, seeds[i].text, len);
        for (size_t cut = 0; cut <= len; cut++, runs++)
            LLVMFuzzerTestOneInput(buf, cut + 1);
        for (long k = 0; k < iterations; k++, runs++) {
            memcpy(buf + 1, seeds[i].text, len);
            size_t n = mutate(buf, len + 1, sizeof buf);
            LLVMFuzzerTestOneInput(buf, n);
        }
    }
    printf("replay: %ld inputs through the fuzz target, no fault\n", runs);
    return 0;
}
