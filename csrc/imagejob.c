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
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
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

/* ---- the helper process ------------------------------------------------- */

#define HELPER_STACK   (64 * 1024)  /* the spawning child's stack, until its execve */
#define HELPER_POLL_MS 5            /* between two checks of a running helper */
#define HELPER_FD_MIN  16           /* the memfds sit at or above this, never on 3 or 4 */
#define HELPER_EXEC_FAILED 127      /* the child's exit status when execve failed */

static pthread_mutex_t helper_lock = PTHREAD_MUTEX_INITIALIZER;
static int helper_set;              /* gray_image_helper() chose it */
static char helper_path[GRAY_IMAGE_PATH_MAX + 1];   /* "": none */

/* The default: gray-compile in the directory of the object this code is in. */
static void helper_default(void)
{
    helper_path[0] = '\0';
#ifdef __linux__
    Dl_info info;
    if (dladdr((void *)&gray_image_helper, &info) == 0 || info.dli_fname == NULL)
        return;
    /* absolute: a worker's directory is not the loader's */
    char *lib = realpath(info.dli_fname, NULL);
    if (lib == NULL)
        return;
    const char *slash = strrchr(lib, '/');
    size_t dir = slash ? (size_t)(slash - lib) + 1 : 0;
    if (dir + sizeof GRAY_HELPER_NAME > sizeof helper_path) {
        free(lib);
        return;
    }
    memcpy(helper_path, lib, dir);
    free(lib);
    memcpy(helper_path + dir, GRAY_HELPER_NAME, sizeof GRAY_HELPER_NAME);
    if (dir == 0 || access(helper_path, X_OK) != 0)
        helper_path[0] = '\0';
#endif
}

const char *gray_image_helper(const char *path, int set)
{
    pthread_mutex_lock(&helper_lock);
    if (set) {
        if (path == NULL) {
            helper_default();
        } else if (strlen(path) < sizeof helper_path) {
            memcpy(helper_path, path, strlen(path) + 1);
        } else {
            helper_path[0] = '\0';
        }
        helper_set = 1;
    } else if (!helper_set) {
        helper_default();
        helper_set = 1;
    }
    const char *p = helper_path[0] ? helper_path : NULL;
    pthread_mutex_unlock(&helper_lock);
    return p;
}

/* The helper's path copied into out (cap GRAY_IMAGE_PATH_MAX + 1): 1, or 0
 * when there is none. */
static int helper_get(char *out)
{
    (void)gray_image_helper(NULL, 0);
    pthread_mutex_lock(&helper_lock);
    memcpy(out, helper_path, sizeof helper_path);
    pthread_mutex_unlock(&helper_lock);
    return out[0] != '\0';
}

#ifdef __linux__
/* A memfd above HELPER_FD_MIN (close-on-exec), or -1. */
static int fd_high(int fd);
static int helper_memfd(const char *name)
{
    return fd_high((int)syscall(SYS_memfd_create, name, 1u /* MFD_CLOEXEC */));
}

typedef struct helper_spawn {
    const char *path;
    int job_fd, out_fd, done_fd;
    char *stack2;               /* the grandchild's stack */
    volatile pid_t pid;         /* the helper, set by the child */
    volatile int exec_failed;   /* set by the grandchild */
} helper_spawn_t;

/* The grandchild: the helper once it has exec'd. Its fds 3, 4 and 5 are the
 * job, the result and the write end of the done pipe (closed when it
 * exits, whatever the way). */
static int helper_grandchild(void *arg)
{
    helper_spawn_t *sp = arg;
    char *argv[] = { (char *)GRAY_HELPER_NAME, NULL };
    char *envp[] = { NULL };
    if (dup2(sp->job_fd, GRAY_HELPER_FD_JOB) >= 0 && dup2(sp->out_fd, GRAY_HELPER_FD_OUT) >= 0 &&
        dup2(sp->done_fd, GRAY_HELPER_FD_DONE) >= 0)
        execve(sp->path, argv, envp);
    sp->exec_failed = 1;        /* our parents' memory: they wait for this exit */
    _exit(HELPER_EXEC_FAILED);
}

/* The child of clone(CLONE_VM | CLONE_VFORK) with no exit signal: it
 * starts the helper the same way and exits at once, so that the helper is
 * nobody's child here. An exec resets a process's exit signal to SIGCHLD,
 * and an nginx worker's SIGCHLD handler reaps every child with
 * waitpid(-1) ("unknown process exited"); this child never execs, so only
 * the __WCLONE wait below sees it. Only async-signal-safe calls here, every
 * signal blocked (the job thread's mask: the helper unblocks them). */
static int helper_child(void *arg)
{
    helper_spawn_t *sp = arg;
    pid_t pid = clone(helper_grandchild, sp->stack2 + HELPER_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD,
                      sp);
    sp->pid = pid;
    _exit(pid < 0 ? HELPER_EXEC_FAILED : 0);
}

/* The job's text into a memfd, as gray_helper_job_t says; the fd or -1. */
static int helper_job_file(const gray_image_job_t *job)
{
    int fd = helper_memfd("gray-job");
    if (fd < 0)
        return -1;
    gray_helper_job_t h = { GRAY_HELPER_MAGIC, job->kind, job->unknown, (int32_t)getpid(), job->cas,
                            job->nparts, job->names_len, job->total };
    int bad = gray_write_all(fd, &h, sizeof h);
    for (size_t i = 0; i < job->nparts && !bad; i++) {
        uint64_t len = job->parts[i].len;
        bad = gray_write_all(fd, &len, sizeof len);
    }
    if (!bad)
        bad = gray_write_all(fd, job->names, job->names_len);
    for (size_t i = 0; i < job->nparts && !bad; i++)
        bad = gray_write_all(fd, job->parts[i].buf, job->parts[i].len);
    if (!bad)
        bad = gray_write_all(fd, job->path, strlen(job->path));     /* the rest: the path */
    if (bad) {
        close(fd);
        return -1;
    }
    return fd;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A close-on-exec fd moved at or above HELPER_FD_MIN, or -1. */
static int fd_high(int fd)
{
    if (fd < 0 || fd >= HELPER_FD_MIN)
        return fd;
    int high = fcntl(fd, F_DUPFD_CLOEXEC, HELPER_FD_MIN);
    close(fd);
    return high;
}

/* Compiles the job in the helper process. GRAY_OK or an error, with
 * job->st filled; 1 when the helper could not be started (the caller
 * compiles in this thread). The helper's end is seen on the done pipe (its
 * write end closes when the helper exits); its result is in the result
 * memfd. */
static int helper_run(gray_image_job_t *job, const char *path)
{
    int job_fd = helper_job_file(job);
    int out_fd = helper_memfd("gray-result");
    int pipefd[2] = { -1, -1 };
    if (pipe2(pipefd, O_CLOEXEC) == 0) {
        pipefd[0] = fd_high(pipefd[0]);
        pipefd[1] = fd_high(pipefd[1]);
    }
    gray_helper_result_t res;
    memset(&res, 0, sizeof res);
    char *stacks = malloc(2 * (size_t)HELPER_STACK);
    int started = 0, status = 0;
    helper_spawn_t sp = { path, job_fd, out_fd, pipefd[1], stacks + HELPER_STACK, -1, 0 };
    if (job_fd >= 0 && out_fd >= 0 && pipefd[0] >= 0 && pipefd[1] >= 0 && stacks != NULL &&
        gray_write_all(out_fd, &res, sizeof res) == 0) {
        pid_t child = clone(helper_child, stacks + HELPER_STACK, CLONE_VM | CLONE_VFORK, &sp);
        if (child > 0) {
            while (waitpid(child, &status, __WCLONE) < 0 && errno == EINTR)
                ;
            started = sp.pid > 0 && !sp.exec_failed;
        }
    }
    free(stacks);
    if (job_fd >= 0)
        close(job_fd);
    if (pipefd[1] >= 0)
        close(pipefd[1]);       /* the helper holds the only write end now */
    if (!started) {
        if (out_fd >= 0)
            close(out_fd);
        if (pipefd[0] >= 0)
            close(pipefd[0]);
        return 1;
    }
    uint64_t deadline = mono_ns() + (uint64_t)GRAY_HELPER_SECONDS * 1000000000u;
    int rc = GRAY_OK;
    for (;;) {
        struct pollfd pfd = { pipefd[0], POLLIN, 0 };
        int n = poll(&pfd, 1, HELPER_POLL_MS);
        if (n > 0) {
            char c;
            if (read(pipefd[0], &c, 1) <= 0)
                break;          /* EOF: the helper has exited */
            continue;
        }
        if (n < 0 && errno != EINTR) {
            rc = GRAY_EIO;
            break;
        }
        if (atomic_load(&job->cancel) || mono_ns() > deadline) {
            rc = atomic_load(&job->cancel) ? GRAY_ECANCELED : GRAY_EIO;
            kill(sp.pid, SIGKILL);
            /* once it has gone (its exit closes the pipe), the files it
             * may have been writing go too: its own temporary name, and
             * the one write_file() gave it (its first write in a process) */
            char c, tmp[GRAY_IMAGE_PATH_MAX + 32], nested[GRAY_IMAGE_PATH_MAX + 80];
            while (poll(&pfd, 1, 1000) > 0 && read(pipefd[0], &c, 1) > 0)
                ;
            gray_image_tmp_name(tmp, sizeof tmp, job->path, (long)sp.pid, -1);
            gray_image_tmp_name(nested, sizeof nested, tmp, (long)sp.pid, 0);
            (void)unlink(nested);
            (void)unlink(tmp);
            break;
        }
    }
    close(pipefd[0]);
    if (rc == GRAY_OK && (pread(out_fd, &res, sizeof res, 0) != (ssize_t)sizeof res ||
                          res.magic != GRAY_HELPER_MAGIC))
        rc = GRAY_EIO;          /* it died before it said */
    close(out_fd);
    if (rc == GRAY_OK) {
        job->st = res.st;
        rc = res.rc;
    } else {
        memset(&job->st, 0, sizeof job->st);
        job->st.sys_errno = rc == GRAY_EIO ? ECHILD : 0;
    }
    job->st.helper = 1;
    return rc;
}
#endif

static void *job_run(void *arg)
{
    gray_image_job_t *job = arg;
    gray_big_defer(&job->defer);
    int in_thread = 1;
#ifdef __linux__
    /* With the helper, this thread stays at the worker's priority: it
     * copies the text into a memfd and starts the helper, whose clone and
     * execve take the worker's mmap_lock for a moment (exec_mmap reads
     * it). At nice 19 a preempted child held it while the workers waited
     * (make bench-lists: a worker blocked up to 70 ms); the helper lowers
     * its own priority once it runs its own memory. */
    char helper[GRAY_IMAGE_PATH_MAX + 1];
    if (job->path != NULL && helper_get(helper)) {
        int rc = helper_run(job, helper);
        if (rc != 1) {
            job->rc = rc;
            in_thread = 0;
        }
    }
    /* The compile in this thread runs at nice 19, not SCHED_IDLE. A
     * SCHED_IDLE thread preempted inside a syscall that holds the process's
     * mmap_lock (its mmap, madvise) does not run again while the workers
     * keep every core busy, and a worker that needs the lock (mmap, munmap,
     * brk) waits for it: make bench-lists on an idle 2-core machine
     * measured 68.8 ms of a worker blocked with SCHED_IDLE, 16.2 ms with
     * nice 19 (p99 added +62.6 ms against +28.9 ms). Nice 19 gets a slice
     * now and then, so a lock it holds comes back. */
    if (in_thread)
        (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), GRAY_JOB_NICE);
#endif
    if (!in_thread) {
        /* done by the helper */
    } else if (job->path != NULL) {
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
