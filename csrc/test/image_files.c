/* image_files.c - the list images' file and thread paths, which a fuzz
 * input cannot reach, run once by replay.c under AddressSanitizer, UBSan
 * and LeakSanitizer: compile to a file (waiting, and in a thread), map,
 * look up every id, replace the file while it is mapped, cancel a running
 * job, refuse a cut file. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../gray.h"

/* a failed check names itself before the trap (stdout may be a pipe's
 * buffer that the trap loses) */
#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "image_files.c:%d: check failed: %s\n", \
                                                __LINE__, #cond); \
                                        __builtin_trap(); } } while (0)

#define FILE_IDS 50000

void image_files_check(void);

static void sleep_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static int wait_job(gray_image_job_t *job, gray_image_stats_t *st)
{
    int rc;
    while ((rc = gray_image_poll(job, st)) == GRAY_JOB_RUNNING)
        sleep_ms(1);
    return rc;
}

/* "id-<i> [v2]" lines; the line end of the last line left out */
static char *id_text(int n, int salt, size_t *len)
{
    char *t = malloc((size_t)n * 24 + 1);
    size_t at = 0;
    for (int i = 0; i < n; i++)
        at += (size_t)sprintf(t + at, "id-%d%s%s", i, (i + salt) % 2 ? " v2" : "",
                              i + 1 < n ? "\n" : "");
    *len = at;
    return t;
}

void image_files_check(void)
{
    static const char names[] = "1\nv2";
    char dir[] = "/tmp/gray-replay-XXXXXX", path[64], key[32];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/list", dir);

    /* two parts cut at a line end, the first without its '\n' */
    size_t len;
    char *text = id_text(FILE_IDS, 0, &len);
    char *cut = strstr(text + len / 2, "\n");
    gray_image_part_t parts[2] = {{text, (size_t)(cut - text)}, {cut + 1, len - (size_t)(cut - text) - 1}};
    gray_image_stats_t st;
    CHECK(gray_image_compile(GRAY_IMAGE_IDS, parts, 2, names, sizeof names - 1, 0, 1, path, &st) ==
          GRAY_OK);
    CHECK(st.entries == FILE_IDS && st.lines == FILE_IDS && st.bad == 0);
    uint64_t cas = 0;
    CHECK(gray_image_peek(path, &cas) == GRAY_IMAGE_IDS && cas == 1);
    gray_image_t *old;
    CHECK(gray_image_open(path, GRAY_IMAGE_VERIFY, &old) == GRAY_OK);
    for (int i = 0; i < FILE_IDS; i++) {
        int n = snprintf(key, sizeof key, "id-%d", i);
        CHECK(gray_image_find_id(old, key, (size_t)n) == (i % 2 ? 2 : 1));
    }

    /* a new image onto the same path from a thread; the old one stays mapped */
    size_t len2;
    char *text2 = id_text(FILE_IDS, 1, &len2);
    gray_image_part_t one = {text2, len2};
    gray_image_job_t *job;
    CHECK(gray_image_compile_start(GRAY_IMAGE_IDS, &one, 1, NULL, 0, 0, 2, path, &job) == GRAY_OK);
    CHECK(wait_job(job, &st) == GRAY_OK && st.entries == FILE_IDS && st.ntargets == 2);
    CHECK(gray_image_job_free(job) == GRAY_OK);
    gray_image_t *cur;
    CHECK(gray_image_open(path, 0, &cur) == GRAY_OK && gray_image_version(cur) == 2);
    for (int i = 0; i < FILE_IDS; i += 7) {
        int n = snprintf(key, sizeof key, "id-%d", i);
        CHECK(gray_image_find_id(old, key, (size_t)n) == (i % 2 ? 2 : 1));
        CHECK(gray_image_find_id(cur, key, (size_t)n) == (i % 2 ? 1 : 2));
    }
    gray_image_close(old);
    gray_image_close(cur);

    /* ranges in a thread, then a job asked to stop at once */
    static const char ranges[] = "10.0.0.0/8 v2\n10.1.0.0/16\n::/0 v2";
    gray_image_part_t rp = {ranges, sizeof ranges - 1};
    CHECK(gray_image_compile_start(GRAY_IMAGE_RANGES, &rp, 1, names, sizeof names - 1, 0, 3,
                                   path, &job) == GRAY_OK);
    CHECK(wait_job(job, &st) == GRAY_OK && st.taken == 3);
    CHECK(gray_image_job_free(job) == GRAY_OK);
    CHECK(gray_image_open(path, GRAY_IMAGE_VERIFY, &cur) == GRAY_OK);
    CHECK(gray_image_find_text(cur, "10.2.3.4", 8) == 2 && gray_image_find_text(cur, "10.1.0.1", 8) == 1);
    CHECK(gray_image_find_text(cur, "::1", 3) == 2 && gray_image_find_text(cur, "1.1.1.1", 7) == 0);
    gray_image_close(cur);

    CHECK(gray_image_compile_start(GRAY_IMAGE_IDS, parts, 2, names, sizeof names - 1, 0, 4, path,
                                   &job) == GRAY_OK);
    if (gray_image_job_free(job) == GRAY_JOB_RUNNING) {
        int rc = wait_job(job, &st);
        CHECK(rc == GRAY_ECANCELED || rc == GRAY_OK);
        CHECK(gray_image_job_free(job) == GRAY_OK);
    }

    /* the job owns a copy of the text: the caller's memory may go at once
     * (a worker's Lua VM is closed at its exit while a thread compiles);
     * under ASan a read of the freed text is a fault */
    size_t len3;
    char *text3 = id_text(FILE_IDS, 1, &len3);
    gray_image_part_t own = {text3, len3};
    CHECK(gray_image_compile_start(GRAY_IMAGE_IDS, &own, 1, NULL, 0, 0, 5, path, &job) == GRAY_OK);
    memset(text3, '#', len3);
    free(text3);
    CHECK(wait_job(job, &st) == GRAY_OK && st.entries == FILE_IDS);
    CHECK(gray_image_job_free(job) == GRAY_OK);
    CHECK(gray_image_open(path, GRAY_IMAGE_VERIFY, &cur) == GRAY_OK && gray_image_version(cur) == 5);
    CHECK(gray_image_find_id(cur, "id-0", 4) == 2 && gray_image_find_id(cur, "id-1", 4) == 1);
    gray_image_close(cur);

    /* a job built in steps (slices cut after a line break, each copied at
     * once), then one built in memory whose image the caller takes; a
     * job never run is freed */
    size_t len4;
    char *text4 = id_text(FILE_IDS, 0, &len4);
    char *mid = strchr(text4 + len4 / 3, '\n') + 1;
    CHECK(gray_image_job_new(GRAY_IMAGE_IDS, names, sizeof names - 1, 0, 6, path, &job) == GRAY_OK);
    CHECK(gray_image_job_add(job, text4, (size_t)(mid - text4)) == GRAY_OK);
    CHECK(gray_image_job_add(job, mid, len4 - (size_t)(mid - text4)) == GRAY_OK);
    CHECK(gray_image_job_run(job) == GRAY_OK && gray_image_job_run(job) == GRAY_EINVAL);
    CHECK(gray_image_job_add(job, "x", 1) == GRAY_EINVAL);
    CHECK(wait_job(job, &st) == GRAY_OK && st.entries == FILE_IDS);
    CHECK(gray_image_job_image(job, &cur) == GRAY_EINVAL);     /* written to a file */
    CHECK(gray_image_job_free(job) == GRAY_OK);
    CHECK(gray_image_job_new(GRAY_IMAGE_IDS, names, sizeof names - 1, 0, 7, NULL, &job) == GRAY_OK);
    CHECK(gray_image_job_add(job, text4, len4) == GRAY_OK);
    free(text4);
    CHECK(gray_image_job_run(job) == GRAY_OK);
    CHECK(wait_job(job, &st) == GRAY_OK && st.entries == FILE_IDS);
    CHECK(gray_image_job_image(job, &cur) == GRAY_OK && gray_image_version(cur) == 7);
    CHECK(gray_image_job_image(job, &old) == GRAY_EINVAL);     /* taken */
    CHECK(gray_image_job_free(job) == GRAY_OK);
    CHECK(gray_image_find_id(cur, "id-0", 4) == 1 && gray_image_find_id(cur, "id-1", 4) == 2);
    gray_image_close(cur);
    CHECK(gray_image_job_new(GRAY_IMAGE_RANGES, NULL, 0, 0, 8, NULL, &job) == GRAY_OK);
    CHECK(gray_image_job_add(job, ranges, sizeof ranges - 1) == GRAY_OK);
    CHECK(gray_image_job_free(job) == GRAY_OK);

    /* a cut file: refused by open and peek */
    FILE *f = fopen(path, "r+");
    CHECK(f != NULL && ftruncate(fileno(f), 300) == 0);
    fclose(f);
    CHECK(gray_image_open(path, 0, &cur) == GRAY_ECORRUPT);
    CHECK(gray_image_peek(path, &cas) == GRAY_ECORRUPT);
    CHECK(gray_image_open(dir, 0, &cur) < 0);

    free(text);
    free(text2);
    CHECK(unlink(path) == 0 && rmdir(dir) == 0);
}
