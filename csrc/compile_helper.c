/* compile_helper.c - gray-compile: compiles one list image for a worker's
 * compile job (imagejob.c), in a process of its own, so that the compile
 * neither holds the worker's mmap_lock nor keeps the workers' scheduling
 * group busy. Started by the job's thread, never by hand:
 *   fd 3: the job, a memfd as gray_helper_job_t says (image_internal.h);
 *   fd 4: the result, a gray_helper_result_t written at offset 0;
 *   fd 5: a pipe's write end, closed when this process exits;
 *   argv[1]: none; the image's path is in the job.
 * It runs in a session of its own with its autogroup at nice 19 (where the
 * kernel has autogroups) and at nice 19; the image is renamed into place
 * only while the worker that asked lives. */
#define _GNU_SOURCE

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <poll.h>
#include <errno.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gray.h"
#include "image_internal.h"

#define HELPER_NICE 19
/* The helper's slice (EEVDF's request size, sched_setattr's sched_runtime
 * for a fair task, Linux 6.12 and later; 0: the kernel's): each time the
 * helper gets a CPU it holds it this long at most while the workers wait.
 * Earlier kernels ignore it. */
#ifndef GRAY_HELPER_SLICE_NS
#define GRAY_HELPER_SLICE_NS 100000
#endif
#define FD_KEEP_MAX GRAY_HELPER_FD_DONE     /* fds above it are the worker's: closed */

/* A session of its own: where the kernel groups tasks by session
 * (autogroup), a group of its own, whose weight nice 19 makes the least
 * (15 against 1024), so that the compile never keeps the workers' group
 * runnable: with the compile in a worker's thread (nice 19 only within the
 * workers' group), perf sched showed wrk's thread waiting 180 ms for a CPU
 * while that thread ran 136 ms of it. Where there are no autogroups (a
 * cgroup per service), nice 19 does the same within the cgroup. Not
 * SCHED_IDLE: the scheduler takes a CPU running only SCHED_IDLE tasks for
 * an idle one and wakes workers there, where the helper's group (not idle
 * itself) keeps the CPU for its slice (make bench-lists, quiet machine:
 * p99 added +10.0 to +10.4 ms with it, +2.6 ms without). */
static void lower_priority(void)
{
    (void)setsid();
    int fd = open("/proc/self/autogroup", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        static const char nice19[] = "19\n";
        (void)!write(fd, nice19, sizeof nice19 - 1);
        close(fd);
    }
    (void)setpriority(PRIO_PROCESS, 0, HELPER_NICE);
    if (GRAY_HELPER_SLICE_NS > 0) {
        /* struct sched_attr as SCHED_ATTR_SIZE_VER0 */
        struct {
            uint32_t size, policy;
            uint64_t flags;
            int32_t nice;
            uint32_t priority;
            uint64_t runtime, deadline, period;
        } attr;
        memset(&attr, 0, sizeof attr);
        attr.size = sizeof attr;
        attr.policy = 0;                    /* SCHED_OTHER */
        attr.nice = HELPER_NICE;
        attr.runtime = GRAY_HELPER_SLICE_NS;
        (void)syscall(SYS_sched_setattr, 0, &attr, 0u);
    }
}

static int finish(int rc, const gray_image_stats_t *st)
{
    gray_helper_result_t res;
    memset(&res, 0, sizeof res);
    res.magic = GRAY_HELPER_MAGIC;
    res.rc = rc;
    if (st != NULL)
        res.st = *st;
    if (pwrite(GRAY_HELPER_FD_OUT, &res, sizeof res, 0) != (ssize_t)sizeof res)
        return 1;
    return 0;
}

int main(int argc, char **argv)
{
    (void)argv;
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);  /* the job's thread blocked them all */
    (void)close_range(FD_KEEP_MAX + 1, ~0u, 0);
    if (argc != 1)
        return 2;
    lower_priority();

    struct stat sb;
    if (fstat(GRAY_HELPER_FD_JOB, &sb) != 0 || sb.st_size < (off_t)sizeof(gray_helper_job_t))
        return finish(GRAY_EINVAL, NULL);
    size_t size = (size_t)sb.st_size;
    const char *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, GRAY_HELPER_FD_JOB, 0);
    if (map == MAP_FAILED)
        return finish(GRAY_ENOMEM, NULL);
    gray_helper_job_t h;
    memcpy(&h, map, sizeof h);
    size_t off = sizeof h;
    /* every length checked against what is left before it is used */
    if (h.magic != GRAY_HELPER_MAGIC || h.nparts > GRAY_JOB_PIECES_MAX ||
        h.names_len > GRAY_NAMES_BYTES_MAX || h.nparts * sizeof(uint64_t) > size - off)
        return finish(GRAY_EINVAL, NULL);
    const char *lens = map + off;
    off += (size_t)h.nparts * sizeof(uint64_t);
    if (h.names_len > size - off)
        return finish(GRAY_EINVAL, NULL);
    const char *names = map + off;
    off += (size_t)h.names_len;
    gray_image_part_t *parts = calloc(h.nparts ? (size_t)h.nparts : 1, sizeof *parts);
    if (parts == NULL)
        return finish(GRAY_ENOMEM, NULL);
    for (size_t i = 0; i < h.nparts; i++) {
        uint64_t len;
        memcpy(&len, lens + i * sizeof len, sizeof len);
        if (len > size - off)
            return finish(GRAY_EINVAL, NULL);
        parts[i].buf = map + off;
        parts[i].len = (size_t)len;
        off += (size_t)len;
    }
    char path[GRAY_IMAGE_PATH_MAX + 1];
    size_t plen = size - off;
    if (plen == 0 || plen > GRAY_IMAGE_PATH_MAX || memchr(map + off, '\0', plen) != NULL)
        return finish(GRAY_EINVAL, NULL);
    memcpy(path, map + off, plen);
    path[plen] = '\0';
    /* The worker that asked: while it lives, the job's thread kills this
     * process when the job is freed; once it has died (a crash), another
     * worker may hold the lock and write a newer image, so this one is not
     * renamed over it. */
    int worker = (int)syscall(SYS_pidfd_open, (pid_t)h.worker, 0u);
    if (worker < 0)
        return finish(GRAY_ECANCELED, NULL);
    char tmp[GRAY_IMAGE_PATH_MAX + 32];
    int tn = gray_image_tmp_name(tmp, sizeof tmp, path, (long)getpid(), -1);
    if (tn < 0 || (size_t)tn >= sizeof tmp)
        return finish(GRAY_EINVAL, NULL);
    gray_image_stats_t st;
    memset(&st, 0, sizeof st);
    int rc = gray_image_compile_c(h.kind, parts, (size_t)h.nparts, names, (size_t)h.names_len,
                                  h.unknown, h.cas, tmp, &st, NULL);
    free(parts);
    if (rc == GRAY_OK) {
        struct pollfd pfd = { worker, POLLIN, 0 };
        if (poll(&pfd, 1, 0) != 0) {
            rc = GRAY_ECANCELED;            /* the worker has exited */
        } else if (rename(tmp, path) != 0) {
            st.sys_errno = errno;
            rc = GRAY_EIO;
        }
    }
    if (rc != GRAY_OK)
        (void)unlink(tmp);
    return finish(rc, &st);
}
