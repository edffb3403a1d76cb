/* imagejob.c - gray_image_compile() in a detached thread, so that an event
 * loop (an nginx worker) never waits for a parse, a sort or a write: it
 * starts a job and polls it from a timer. */
#define _DEFAULT_SOURCE    /* syscall(SYS_gettid) */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "gray.h"
#include "image_internal.h"

#define GRAY_JOB_NICE 10     /* the compiling thread's nice value (Linux) */

struct gray_image_job {
    atomic_int running;         /* 1 until the thread has stored rc and st */
    atomic_int cancel;          /* set by gray_image_job_free() on a running job */
    int rc;
    int kind;
    uint32_t unknown;
    uint64_t cas;
    gray_image_part_t *parts;   /* copied, pointing into text */
    char *text;                 /* the parts' bytes, copied: the caller's memory may
                                   go away under a running thread (a worker's Lua
                                   VM is closed at its exit, whatever is anchored) */
    size_t nparts;
    char *names;
    size_t names_len;
    char *path;
    gray_image_stats_t st;
};

static void job_release(gray_image_job_t *job)
{
    free(job->parts);
    gray_big_free(job->text);
    free(job->names);
    free(job->path);
    free(job);
}

static void *job_run(void *arg)
{
    gray_image_job_t *job = arg;
#ifdef __linux__
    /* the compile yields the CPU to the event loops: a worker's requests
     * go first (on Linux a thread has its own nice value; best effort) */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), GRAY_JOB_NICE);
#endif
    job->rc = gray_image_compile_c(job->kind, job->parts, job->nparts, job->names,
                                   job->names_len, job->unknown, job->cas, job->path, &job->st,
                                   &job->cancel);
    /* release: rc and st are visible to whoever sees running == 0 */
    atomic_store_explicit(&job->running, 0, memory_order_release);
    return NULL;
}

int gray_image_compile_start(int kind, const gray_image_part_t *parts, size_t nparts,
                             const char *names, size_t names_len, uint32_t unknown,
                             uint64_t cas, const char *path, gray_image_job_t **out)
{
    *out = NULL;
    size_t plen = path ? strlen(path) : 0;
    if ((kind != GRAY_IMAGE_IDS && kind != GRAY_IMAGE_RANGES) || plen == 0 ||
        plen > GRAY_IMAGE_PATH_MAX || nparts > GRAY_IMAGE_PARTS_MAX || unknown > GRAY_TARGETS_MAX ||
        (parts == NULL && nparts > 0) || (names == NULL && names_len > 0))
        return GRAY_EINVAL;
    gray_image_job_t *job = calloc(1, sizeof *job);
    if (job == NULL)
        return GRAY_ENOMEM;
    job->kind = kind;
    job->unknown = unknown;
    job->cas = cas;
    job->nparts = nparts;
    job->names_len = names_len;
    job->parts = malloc((nparts ? nparts : 1) * sizeof *parts);
    job->names = malloc(names_len ? names_len : 1);
    job->path = malloc(plen + 1);
    if (job->parts == NULL || job->names == NULL || job->path == NULL) {
        job_release(job);
        return GRAY_ENOMEM;
    }
    size_t total = 0;
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].buf == NULL && parts[i].len > 0) {
            job_release(job);
            return GRAY_EINVAL;
        }
        if (parts[i].len > SIZE_MAX - total) {
            job_release(job);
            return GRAY_EINVAL;
        }
        total += parts[i].len;
    }
    job->text = gray_big_alloc(total ? total : 1);
    if (job->text == NULL) {
        job_release(job);
        return GRAY_ENOMEM;
    }
    for (size_t i = 0, off = 0; i < nparts; i++) {
        if (parts[i].len > 0)
            memcpy(job->text + off, parts[i].buf, parts[i].len);
        job->parts[i].buf = job->text + off;
        job->parts[i].len = parts[i].len;
        off += parts[i].len;
    }
    if (names_len > 0)
        memcpy(job->names, names, names_len);
    memcpy(job->path, path, plen + 1);
    atomic_init(&job->running, 1);
    atomic_init(&job->cancel, 0);

    /* The thread takes no signal: nginx's handlers stay with its main thread. */
    pthread_attr_t attr;
    sigset_t all, old;
    sigfillset(&all);
    if (pthread_attr_init(&attr) != 0) {
        job_release(job);
        return GRAY_ENOMEM;
    }
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t tid;
    int err = pthread_create(&tid, &attr, job_run, job);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err != 0) {
        job_release(job);
        errno = err;
        return GRAY_EIO;
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
