/* imagejob.c - gray_image_compile() in a detached thread, so that an event
 * loop (an nginx worker) never waits for a parse, a sort or a write: it
 * starts a job and polls it from a timer.
 *
 * A job is built in steps: gray_image_job_new(), then gray_image_job_add()
 * for each part as it arrives (each call copies one part, under 1 MB: the
 * event loop never copies a whole list at once), then gray_image_job_run().
 * gray_image_compile_start() does the three at once. */
#define _GNU_SOURCE        /* syscall(SYS_gettid) */

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "gray.h"
#include "image_internal.h"

#define GRAY_JOB_NICE 19     /* the compiling thread's nice value */

struct gray_image_job {
    atomic_int running;         /* 1 until the thread has stored rc and st */
    atomic_int cancel;          /* set by gray_image_job_free() on a running job */
    int started;                /* gray_image_job_run() started the thread */
    int rc;
    int kind;
    uint32_t unknown;
    uint64_t cas;
    gray_image_part_t *parts;   /* each part's bytes copied (gray_big_alloc): the
                                   caller's memory may go away under a running
                                   thread (a worker's Lua VM is closed at its exit,
                                   whatever is anchored) */
    size_t nparts;
    size_t cap;                 /* parts' room, up to GRAY_JOB_PIECES_MAX */
    size_t total;
    char *names;
    size_t names_len;
    char *path;                 /* NULL: built in memory (gray_image_job_image) */
    gray_big_defer_t defer;     /* the thread's frees, unmapped by job_release() */
    void *out;                  /* a memory job's image, until taken */
    size_t out_len;
    gray_image_stats_t st;
};

static void job_release(gray_image_job_t *job)
{
    if (job->parts != NULL)
        for (size_t i = 0; i < job->nparts; i++)
            gray_big_free((void *)(uintptr_t)job->parts[i].buf);
    free(job->parts);
    gray_big_defer_release(&job->defer);
    gray_big_free(job->out);
    free(job->names);
    free(job->path);
    free(job);
}

static void *job_run(void *arg)
{
    gray_image_job_t *job = arg;
#ifdef __linux__
    /* The compile runs at nice 19, not SCHED_IDLE. A SCHED_IDLE thread
     * preempted inside a syscall that holds the process's mmap_lock (its
     * mmap, madvise) does not run again while the workers keep every core
     * busy, and a worker that needs the lock (mmap, munmap, brk) waits for
     * it: make bench-lists on an idle 2-core machine measured 68.8 ms of a
     * worker blocked with SCHED_IDLE, 16.2 ms with nice 19 (p99 added
     * +62.6 ms against +28.9 ms). Nice 19 gets a slice now and then, so a
     * lock it holds comes back. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), GRAY_JOB_NICE);
#endif
    gray_big_defer(&job->defer);
    if (job->path != NULL) {
        job->rc = gray_image_compile_c(job->kind, job->parts, job->nparts, job->names,
                                       job->names_len, job->unknown, job->cas, job->path,
                                       &job->st, &job->cancel);
    } else {
        struct timespec w0, c0, w1, c1;
        clock_gettime(CLOCK_MONOTONIC, &w0);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
        job->rc = gray_image_build_c(job->kind, job->parts, job->nparts, job->names,
                                     job->names_len, job->unknown, job->cas, &job->out,
                                     &job->out_len, &job->st, &job->cancel);
        clock_gettime(CLOCK_MONOTONIC, &w1);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
        job->st.wall_ns = (uint64_t)(w1.tv_sec - w0.tv_sec) * 1000000000u +
                          (uint64_t)(w1.tv_nsec - w0.tv_nsec);
        job->st.cpu_ns = (uint64_t)(c1.tv_sec - c0.tv_sec) * 1000000000u +
                         (uint64_t)(c1.tv_nsec - c0.tv_nsec);
    }
    gray_big_defer(NULL);
    /* release: rc and st are visible to whoever sees running == 0 */
    atomic_store_explicit(&job->running, 0, memory_order_release);
    return NULL;
}

int gray_image_job_new(int kind, const char *names, size_t names_len, uint32_t unknown,
                       uint64_t cas, const char *path, gray_image_job_t **out)
{
    *out = NULL;
    size_t plen = path ? strlen(path) : 0;
    if ((kind != GRAY_IMAGE_IDS && kind != GRAY_IMAGE_RANGES) || (path != NULL && plen == 0) ||
        plen > GRAY_IMAGE_PATH_MAX || unknown > GRAY_TARGETS_MAX ||
        (names == NULL && names_len > 0) || names_len > GRAY_NAMES_BYTES_MAX)
        return GRAY_EINVAL;
    gray_image_job_t *job = calloc(1, sizeof *job);
    if (job == NULL)
        return GRAY_ENOMEM;
    job->kind = kind;
    job->unknown = unknown;
    job->cas = cas;
    job->rc = GRAY_EINVAL;      /* what polling a job never run says */
    job->names_len = names_len;
    job->cap = 16;
    job->parts = calloc(job->cap, sizeof *job->parts);
    job->names = malloc(names_len ? names_len : 1);
    job->path = path ? malloc(plen + 1) : NULL;
    if (job->parts == NULL || job->names == NULL || (path != NULL && job->path == NULL)) {
        job_release(job);
        return GRAY_ENOMEM;
    }
    if (names_len > 0)
        memcpy(job->names, names, names_len);
    if (path != NULL)
        memcpy(job->path, path, plen + 1);
    atomic_init(&job->running, 0);
    atomic_init(&job->cancel, 0);
    *out = job;
    return GRAY_OK;
}

int gray_image_job_add(gray_image_job_t *job, const char *buf, size_t len)
{
    if (job == NULL || job->started || (buf == NULL && len > 0))
        return GRAY_EINVAL;
    if (job->nparts >= GRAY_JOB_PIECES_MAX || len > (size_t)GRAY_RANGES_TEXT_MAX + 1 ||
        job->total + len > (size_t)GRAY_RANGES_TEXT_MAX + GRAY_JOB_PIECES_MAX)
        return GRAY_EINVAL;
    if (job->nparts == job->cap) {
        size_t cap = job->cap * 2;
        gray_image_part_t *p = realloc(job->parts, cap * sizeof *p);
        if (p == NULL)
            return GRAY_ENOMEM;
        job->parts = p;
        job->cap = cap;
    }
    char *copy = gray_big_alloc(len ? len : 1);
    if (copy == NULL)
        return GRAY_ENOMEM;
    if (len > 0)
        memcpy(copy, buf, len);
    job->parts[job->nparts].buf = copy;
    job->parts[job->nparts].len = len;
    job->nparts++;
    job->total += len;
    return GRAY_OK;
}

int gray_image_job_run(gray_image_job_t *job)
{
    if (job == NULL || job->started)
        return GRAY_EINVAL;
    job->started = 1;
    atomic_store(&job->running, 1);

    /* The thread takes no signal: nginx's handlers stay with its main thread. */
    pthread_attr_t attr;
    sigset_t all, old;
    sigfillset(&all);
    if (pthread_attr_init(&attr) != 0) {
        atomic_store(&job->running, 0);
        job->rc = GRAY_ENOMEM;
        return GRAY_ENOMEM;
    }
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t tid;
    int err = pthread_create(&tid, &attr, job_run, job);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err != 0) {
        atomic_store(&job->running, 0);
        job->rc = GRAY_EIO;
        errno = err;
        return GRAY_EIO;
    }
    return GRAY_OK;
}

int gray_image_job_image(gray_image_job_t *job, gray_image_t **out)
{
    *out = NULL;
    if (job == NULL || !job->started ||
        atomic_load_explicit(&job->running, memory_order_acquire) || job->rc != GRAY_OK ||
        job->path != NULL || job->out == NULL)
        return GRAY_EINVAL;
    int rc = gray_image_adopt(job->out, job->out_len, out);
    if (rc == GRAY_OK)
        job->out = NULL;        /* the image's now */
    return rc;
}

int gray_image_compile_start(int kind, const gray_image_part_t *parts, size_t nparts,
                             const char *names, size_t names_len, uint32_t unknown,
                             uint64_t cas, const char *path, gray_image_job_t **out)
{
    *out = NULL;
    if (nparts > GRAY_IMAGE_PARTS_MAX || (parts == NULL && nparts > 0))
        return GRAY_EINVAL;
    gray_image_job_t *job;
    int rc = gray_image_job_new(kind, names, names_len, unknown, cas, path, &job);
    if (rc != GRAY_OK)
        return rc;
    for (size_t i = 0; i < nparts && rc == GRAY_OK; i++)
        rc = gray_image_job_add(job, parts[i].buf, parts[i].len);
    if (rc == GRAY_OK)
        rc = gray_image_job_run(job);
    if (rc != GRAY_OK) {
        int e = errno;
        job_release(job);
        errno = e;
        return rc;
    }
    *out = job;
    return GRAY_OK;
}

int gray_image_poll(gray_image_job_t *job, gray_image_stats_t *st)
{
    if (atomic_load_explicit(&job->running, memory_order_acquire))
        return GRAY_JOB_RUNNING;
    if (st != NULL)
        *st = job->st;
    return job->rc;
}

int gray_image_job_free(gray_image_job_t *job)
{
    if (job == NULL)
        return GRAY_OK;
    if (atomic_load_explicit(&job->running, memory_order_acquire)) {
        atomic_store(&job->cancel, 1);
        return GRAY_JOB_RUNNING;
    }
    job_release(job);
    return GRAY_OK;
}
