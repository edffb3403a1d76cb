/* replay.c - a deterministic stand-in for libFuzzer, run by "make test" under
 * AddressSanitizer and UndefinedBehaviorSanitizer: each seed as is, every
 * prefix of it, then seeded random mutations, all through fuzz_target.c.
 * "make fuzz" runs the same target under libFuzzer for open-ended search. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void image_files_check(void);   /* image_files.c: files and threads */

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
    {11, "v2.1700000000.yLogbr4bYi8WPOeotIp_peK5qwZ9lJoxZ3oXvYtvLYg"}, {11, "a.b.1.c"},
    {11, "...........................................................0"},
    {5, "10.0.0.0/8,::/0,127.0.0.1,2001:db8::/32,10.128.0.0/9,::ffff:10.0.0.0/8"},
    {5, "0.0.0.0/0,::/95,::1:0:0:0/96,1.2.3.4/31"},
    {6, "127.0.0.1| 203.0.113.7 |198.51.100.1, 10.0.0.1|for=1.2.3.4"},
    {6, "::1||[2001:db8::1]:80, unknown, 127.0.0.2|"},
    {6, "8.8.8.8|1.2.3.4|5.6.7.8|for=9.9.9.9"},
    {7, "# office\n10.0.0.0/8\n10.1.0.0/16 v2\r\n10.1.2.3 v3 # tester\n10.1.0.0/16 1\n"},
    {7, "::/0 v2\n::/8\t v3\n::/80\n2001:db8::/32 v2\n2001:db8::/48 v9\n0.0.0.0/0\n::ffff:0:0/96\n"},
    {7, "1.2.3.4 v2 extra\n  \t\r\n\n255.255.255.255/32 v3\n0.0.0.0/1\n128.0.0.0/1 v2\nv\x01 x\n"},
    {7, "::1\n::2 v2\n::/127 v3\nffff::/16\nffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff v2\n10.0.0.0/8"},
    /* enough entries for quicksort and heapsort to run */
    {7,
        "192.3.1.1/24 v3\n10.0.3.2/24\n255.0.3.3/32 v3\n2001:db8::1:0/32\n2001:db8::/16\n"
        "0.0.3.2/12 v2\n2001:db8::1:0/48\n2001:db8::/128 v3\n10.3.0.2/28 v2\n2001:db8::/64\n"
        "fe80::/16\n2001:db8::/112\n2001:db8:1::/0\nfe80::/0 v2\nfe80::/112\n::1/48 v2\n"
        "10.0.3.0/16\n10.0.3.3/8\nfe80::/48 v3\n10.3.3.0/28 v2\n10.2.2.0/12\n0.0.0.1/32\n"
        "0.2.2.3/8\n0.1.0.2/12 v2\n2001:db8::1:0/32 v2\nfe80::/32\n2001:db8:1::/64 v3\n"
        "10.1.3.3/12 v3\n10.0.0.2/8\n::/112 v2\n::/128 v3\n10.1.1.3/28 v3\n::/16\n::1/48\n"
        "192.1.0.0/20\n0.1.0.2/24\n::1/96 v3\n2001:db8::1:0/32\n::/128 v3\n10.0.3.0/8 v3\n"
        "10.0.3.2/12 v3\n255.1.2.2/28\nfe80::/16\n2001:db8::1:0/0 v3\n10.0.0.0/24 v3\n"
        "192.2.3.3/16 v2\n10.0.2.0/24 v2\n10.3.3.2/28\n255.1.1.2/12 v3\n2001:db8:1::/128 v2\n"
        "10.3.1.1/16 v2\n10.1.1.3/16 v2\n::1/0\n2001:db8:1::/64\n10.3.3.3/16 v3\n0.3.2.0/32\n"
        "10.2.2.2/24 v3\n::1/0\n10.2.1.1/12\nfe80::/16\n2001:db8::/96 v3\n192.2.1.0/32 v2\n"
        "10.1.2.2/8 v3\nfe80::/32 v3\nfe80::/16 v3\n192.1.0.3/20 v3\nfe80::/96 v2\n"
        "2001:db8::/48 v3\n2001:db8:1::/16\n::/16 v3\n::/96 v3\n2001:db8::1:0/96\n"
        "0.3.2.3/16\n10.3.0.1/32 v3\n10.3.1.3/32 v2\n2001:db8:1::/16 v2\n255.1.2.2/16 v3\n"
        "0.1.2.1/32 v3\n192.1.3.0/24 v3\n10.0.3.0/20 v2\n10.3.3.3/12 v2\n10.2.3.3/20 v3\n"
        "192.0.2.1/12 v3\n2001:db8::/0\n255.2.2.2/8\nfe80::/16 v3\n::1/64\n"
        "2001:db8::/112 v2\n2001:db8::1:0/32\n2001:db8::1:0/48\n"},
    {8, "uid:42"}, {8, "The quick brown fox jumps over the lazy dog"},
    /* a mode byte, then servers (fuzz_dist in fuzz_target.c) */
    {9, "x127.0.0.1:11211/?3|127.0.0.2/?0|127.0.0.3:11300/?6"},
    {9, "xa|b:65535|c:65536|d"},
    /* server lists ($gray_memcached, --servers, MEMCACHED_SERVERS) */
    {10, "127.0.0.1:11211, [::1]:11212/?3 [0:0:0:0:0:0:0:1]:11213,\t[::ffff:127.0.0.1]:1"},
    {10, "127.000.000.001:11211,::1:11211,[1.2.3.4]:5,[::1],1.2.3.4:0,1.2.3.4:1/?0"},
    /* a mode byte (GRAY_META_*: 7 = pipeline, v, q), then mg replies */
    {12, "\x07VA 1 O0 c5 f3\r\nA\r\nVA 2 k192.168.2.20 O2\r\nBB\r\nHD O4\r\nMN\r\n"},
    {12, "\x03VA 1\r\nA\r\nEN kk1 O1\r\nVA 0 c18446744073709551615\r\n\r\nEN\r\nEN\r\nMN\r\n"},
    {12, "\x01HD c1 ka\r\nEN\r\nHD\r\nEN\r\nHD t-1 W X Z\r\nMN\r\n"},
    {12, "\x08HD c42\r\n"}, {12, "\x02VA 3 f1\r\nabc\r\n"}, {12, "\x02" "EN\r\n"},
    {12, "\x07ERROR\r\nERROR\r\n"}, {12, "\x05HD Oa\r\nMN\r\n"},
    /* a byte (bit 0: ranges, bit 1: names from the list), parts split at '|' */
    {13, "0uid:42 v2\n# c\nuid:7 # x\nuid:42\n" "a b c\nd v9|e v3\nuid:42 v3|\r\n\tf\v\fv2"},
    {13, "2dev-1 blue\ndev-2 green\ndev-1|dev-3 blue # x|dev-4 1\ndev#5 green"},
    {13, "0x\nx\nx v2\nx v3\nxx\n#x\n x \n\n\n" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa v2"},
    {13, "1# office\n10.0.0.0/8\n10.1.0.0/16 v2|10.1.2.3 v3 # t\n::1|::/0 v2\nnope"},
    {13, "310.0.0.0/8 red|2001:db8::/32 blue\n10.9.0.0/16 red\n::1 v9 x"},
    /* bit 2: lines naming an unknown target kept, as index 4 */
    {13, "4a v9\nb stable\nc 0\nd v2|e v7 x\nf " "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
    {13, "510.0.0.0/8 v9\n10.1.0.0/16 0\n::1 v2|::2 v7"},
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
                               "=", "0", "255", "256", "VALUE ", "END", "for=", "\\", "%",
                               "/", "\n", "#", " v2", "/0", "::/"};

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
    image_files_check();
    printf("replay: %ld inputs through the fuzz target, no fault; list image files and"
           " threads checked\n", runs);
    return 0;
}
