/* replay.c - a deterministic stand-in for libFuzzer, run by "make test" under
 * AddressSanitizer and UndefinedBehaviorSanitizer: for every fuzz target
 * (fuzz_target.c's table), each file of its corpus csrc/test/corpus/<name>
 * as is, every prefix of it, then seeded random mutations. "make fuzz" runs
 * the same targets under libFuzzer for open-ended search.
 *
 *   replay MUTATIONS [CORPUS_DIR [TARGET]]   # mutations per target, shared by its files */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

void image_files_check(void);   /* image_files.c: files and threads */
void image_diff_check(int rounds, size_t max_lines);   /* image_diff.c: against main's compile */

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
        size_t pos = len ? rng() % len : 0;
        switch (rng() % 5) {
        case 0: /* flip a byte */
            if (len > 0)
                buf[pos] = (uint8_t)rng();
            break;
        case 1: /* delete a run */
            if (len > 0) {
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
            if (len > 1 && len * 2 <= cap) {
                size_t from = rng() % len, n = 1 + rng() % (len - from);
                memmove(buf + len, buf + from, n);
                len += n;
            }
            break;
        default: /* truncate */
            if (len > 0)
                len = rng() % len;
            break;
        }
    }
    return len;
}

#define REPLAY_FILES_MAX 512
#define REPLAY_DIFF_LISTS 300       /* generated lists image_diff_check() compiles both ways */
#define REPLAY_DIFF_LINES 3000      /* and their most lines */
#define REPLAY_INPUT_MAX 8192       /* a corpus file's bytes, mutations grow it to this */

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every file of dir through target t: as is, each prefix, then its share of
 * the target's mutations. Returns the inputs run, or -1 when the corpus is
 * missing or empty. */
static long replay_target(size_t t, const char *root, long iterations)
{
    static uint8_t seed[REPLAY_INPUT_MAX], buf[REPLAY_INPUT_MAX];
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, fuzz_target_name(t));
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    char *names[REPLAY_FILES_MAX];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < REPLAY_FILES_MAX)
        if (e->d_name[0] != '.')
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof names[0], by_name);   /* the same order on every machine */
    long runs = 0, each = n ? iterations / (long)n + 1 : 0;
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s/%s", root, fuzz_target_name(t), names[i]);
        FILE *f = fopen(path, "rb");
        if (f == NULL) {
            fprintf(stderr, "replay: cannot read %s\n", path);
            exit(1);
        }
        size_t len = fread(seed, 1, sizeof seed, f);
        fclose(f);
        for (size_t cut = 0; cut <= len; cut++, runs++)
            fuzz_run(t, seed, cut);
        for (long k = 0; k < each; k++, runs++) {
            memcpy(buf, seed, len);
            fuzz_run(t, buf, mutate(buf, len, sizeof buf));
        }
        free(names[i]);
    }
    return n ? runs : -1;
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 100000;
    const char *root = argc > 2 ? argv[2] : "csrc/test/corpus";
    const char *only = argc > 3 ? argv[3] : NULL;
    long total = 0;

    if (only && fuzz_target_find(only) < 0) {
        fprintf(stderr, "replay: no fuzz target '%s'\n", only);
        return 2;
    }
    for (size_t t = 0; t < fuzz_target_count(); t++) {
        if (only && strcmp(only, fuzz_target_name(t)) != 0)
            continue;
        long runs = replay_target(t, root, iterations);
        if (runs < 0) {
            fprintf(stderr, "replay: no corpus for the fuzz target %s in %s/%s\n",
                    fuzz_target_name(t), root, fuzz_target_name(t));
            return 1;
        }
        printf("replay: %-10s %8ld inputs, no fault\n", fuzz_target_name(t), runs);
        total += runs;
    }
    if (!only) {
        image_files_check();
        image_diff_check(REPLAY_DIFF_LISTS, REPLAY_DIFF_LINES);
    }
    printf("replay: %ld inputs through %zu fuzz target%s, no fault%s\n", total,
           only ? (size_t)1 : fuzz_target_count(), only ? "" : "s",
           only ? "" : "; list image files and threads checked; generated lists compile "
                       "to the reference's images");
    return 0;
}
