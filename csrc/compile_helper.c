/* compile_helper.c - gray-compile: compiles one list image for a worker's
 * compile job (imagejob.c), in a process of its own, so that the compile
 * neither holds the worker's mmap_lock nor keeps the workers' scheduling
 * group busy. Started by the job's thread, never by hand:
 *   fd 3: the job, a memfd as gray_helper_job_t says (image_internal.h);
 *   fd 4: the result, a gray_helper_result_t written at offset 0;
 *   fd 5: a pipe's write end, closed when this process exits;
 *   argv[1]: none; the image's path is in the job.
 * A fetch job (gray_image_job_fetch) holds no text but the list's key and
 * the servers: this process reads the list from memcached itself
 * (libmemcached, placed by mcconn.c as gray-admin and the router place
 * keys), at its own low priority, so that the worker's event loop reads
 * none of its bytes; it says GRAY_HELPER_FETCHED on fd 5 once it has.
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
#include <time.h>
#include <unistd.h>

#include "gray.h"
#include "image_internal.h"
#include "cli/cli.h"

#define HELPER_NICE 19
/* The helper's slice (EEVDF's request size, sched_setattr's sched_runtime
 * for a fair task, Linux 6.12 and later; 0: the kernel's, about 1.4 ms
 * here): each time the helper gets a CPU it holds it this long at most
 * while others wait. Earlier kernels ignore it. */
#ifndef GRAY_HELPER_SLICE_NS
#define GRAY_HELPER_SLICE_NS 0
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
        /* struct sched_attr, SCHED_ATTR_SIZE_VER0 */
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

static char message[GRAY_JOB_MESSAGE_MAX + 1];     /* a fetch's failure */

static int finish(int rc, const gray_image_stats_t *st)
{
    gray_helper_result_t res;
    memset(&res, 0, sizeof res);
    res.magic = GRAY_HELPER_MAGIC;
    res.rc = rc;
    if (st != NULL)
        res.st = *st;
    memcpy(res.message, message, sizeof res.message);
    if (pwrite(GRAY_HELPER_FD_OUT, &res, sizeof res, 0) != (ssize_t)sizeof res)
        return 1;
    return 0;
}

/* ---- the fetch ------------------------------------------------------------ */

#define FETCH_PARTS_MAX GRAY_IMAGE_PARTS_MAX
/* SO_RCVBUF of the fetch's connection (0: the kernel's own, autotuned up
 * to MBs on loopback): 64 kB, so that memcached sends a list in bursts of
 * 64 kB, each when the nice-19 helper has read the last, not MBs at once
 * (their loopback softirqs land on the saturated cores in one go). make
 * bench-lists, p99 / max added, the 1M-line lists changing: +3.1 / -20.8,
 * +3.4 / +18.4, +3.0 / +7.9, +7.3 / +53.6, +3.8 / +63.0 ms with 64 kB;
 * +5.1 / +75.1, +3.3 / +54.3, +11.6 / +91.9 ms without. */
#ifndef GRAY_FETCH_RCVBUF
#define GRAY_FETCH_RCVBUF 65536
#endif
#define PARTS_PREFIX    "#gray-parts "

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The ms left before the deadline (at least 1), or 0 when none is left. */
static unsigned ms_left(uint64_t deadline)
{
    uint64_t t = mono_ns();
    if (t >= deadline)
        return 0;
    uint64_t ms = (deadline - t) / 1000000u;
    return ms == 0 ? 1 : ms > 600000 ? 600000 : (unsigned)ms;
}

/* Reads key (gets when cas is not NULL, else get) before the deadline: 1
 * with *out (malloc'd) and *len, 0 when memcached has no such key, -1
 * with message set. */
static int fetch_value(memcached_st *mc, const char *key, uint64_t deadline, uint64_t max_bytes,
                       char **out, size_t *len, uint64_t *cas)
{
    *out = NULL;
    unsigned left = ms_left(deadline);
    if (left == 0) {
        snprintf(message, sizeof message, "fetch: timeout (the refresh's deadline)");
        return -1;
    }
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, left);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, left);
    memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_SUPPORT_CAS, cas != NULL);
    const char *keys[1] = { key };
    size_t lens[1] = { strlen(key) };
    memcached_return_t rc = memcached_mget(mc, keys, lens, 1);
    int found = 0;
    memcached_result_st *res;
    while (rc == MEMCACHED_SUCCESS && (res = memcached_fetch_result(mc, NULL, &rc)) != NULL) {
        size_t n = memcached_result_length(res);
        if (!found && memcached_result_key_length(res) == lens[0] &&
            memcmp(memcached_result_key_value(res), key, lens[0]) == 0) {
            found = 1;
            if (n > max_bytes) {
                snprintf(message, sizeof message, "%s: %zu bytes, over the list's limit (%llu)",
                         key, n, (unsigned long long)max_bytes);
                memcached_result_free(res);
                return -1;
            }
            *out = malloc(n ? n : 1);
            if (*out == NULL) {
                snprintf(message, sizeof message, "out of memory");
                memcached_result_free(res);
                return -1;
            }
            memcpy(*out, memcached_result_value(res), n);
            *len = n;
            if (cas != NULL)
                *cas = memcached_result_cas(res);
        }
        memcached_result_free(res);
    }
    if (rc != MEMCACHED_END && rc != MEMCACHED_SUCCESS && rc != MEMCACHED_NOTFOUND) {
        snprintf(message, sizeof message, "%s: %s", key, cli_mc_error(mc, rc));
        free(*out);
        *out = NULL;
        return -1;
    }
    return found;
}

/* Reads the list under key: its value, or a split list's parts (the
 * router's format, lists.lua), into *parts (each malloc'd) and *nparts,
 * with the CAS of the key. GRAY_OK, or GRAY_EFETCH / GRAY_ENOMEM with
 * message set. */
static int fetch_list(const gray_helper_job_t *h, const char *key, const char *servers,
                      const char *distribution, gray_image_part_t **parts, size_t *nparts,
                      uint64_t *cas, gray_image_stats_t *st)
{
    static char hosts[CLI_SERVERS_MAX][GRAY_IP_TEXT_MAX];
    static unsigned ports[CLI_SERVERS_MAX], weights[CLI_SERVERS_MAX];
    char err[200];
    uint64_t t0 = mono_ns();
    *parts = NULL;
    *nparts = 0;
    int n = cli_parse_servers(servers, hosts, ports, weights, CLI_SERVERS_MAX, err, sizeof err);
    memcached_st *mc = n < 0 ? NULL : cli_mc_new(hosts, ports, weights, n, distribution,
                                                 ms_left(h->fetch_deadline_ns) + 1, err,
                                                 sizeof err);
    if (mc == NULL) {
        snprintf(message, sizeof message, "servers: %s", err);
        return GRAY_EFETCH;
    }
    if (GRAY_FETCH_RCVBUF > 0)
        memcached_behavior_set(mc, MEMCACHED_BEHAVIOR_SOCKET_RECV_SIZE, GRAY_FETCH_RCVBUF);
    gray_image_part_t *p = calloc(FETCH_PARTS_MAX, sizeof *p);
    if (p == NULL) {
        memcached_free(mc);
        snprintf(message, sizeof message, "out of memory");
        return GRAY_ENOMEM;
    }
    char *value;
    size_t len = 0;
    int rc = GRAY_EFETCH;
    int got = fetch_value(mc, key, h->fetch_deadline_ns, h->max_bytes, &value, &len, cas);
    if (got == 0)
        snprintf(message, sizeof message, "not in memcached (deleted meanwhile)");
    if (got <= 0)
        goto out;
    st->fetch_parts = 1;
    st->fetch_bytes = len;
    size_t pre = sizeof PARTS_PREFIX - 1;
    if (len < pre || memcmp(value, PARTS_PREFIX, pre) != 0) {
        p[0].buf = value;                   /* the list itself */
        p[0].len = len;
        *nparts = 1;
        rc = GRAY_OK;
        goto out;
    }
    /* "#gray-parts <n> <tag>": as lists.lua reads it ("^#gray%-parts
     * (%d+) (%S+)" on the first line) */
    size_t i = pre, count = 0, digits = 0;
    while (i < len && value[i] >= '0' && value[i] <= '9' && digits < 6) {
        count = count * 10 + (size_t)(value[i] - '0');
        i++;
        digits++;
    }
    size_t tag = i + 1, tag_end = tag;
    if (digits > 0 && i < len && value[i] == ' ')
        while (tag_end < len && value[tag_end] != ' ' && value[tag_end] != '\n' &&
               value[tag_end] != '\r' && value[tag_end] != '\t' && value[tag_end] != '\v' &&
               value[tag_end] != '\f')
            tag_end++;
    if (digits == 0 || (i < len && digits == 6 && value[i] >= '0' && value[i] <= '9') ||
        i >= len || value[i] != ' ' || tag_end == tag || count < 1 ||
        count > FETCH_PARTS_MAX || strlen(key) + 1 + (tag_end - tag) + 8 > GRAY_FETCH_KEY_MAX) {
        size_t show = 0;
        while (show < len && show < 60 && value[show] != '\n')
            show++;
        snprintf(message, sizeof message, "bad parts header '%.*s'", (int)show, value);
        free(value);
        goto out;
    }
    char part_key[GRAY_FETCH_KEY_MAX + 1];
    int plen = snprintf(part_key, sizeof part_key, "%s:%.*s:", key, (int)(tag_end - tag),
                        value + tag);
    free(value);
    uint64_t total = 0;
    for (size_t k = 1; k <= count; k++) {
        snprintf(part_key + plen, sizeof part_key - (size_t)plen, "%zu", k);
        if (!gray_mc_key_ok(part_key, strlen(part_key))) {
            snprintf(message, sizeof message, "parts: refused to send an invalid memcached key");
            goto out;
        }
        char *part;
        size_t part_len = 0;
        got = fetch_value(mc, part_key, h->fetch_deadline_ns, h->max_bytes, &part, &part_len,
                          NULL);
        if (got == 0)
            snprintf(message, sizeof message, "part %s is missing", part_key);
        if (got <= 0)
            goto out;
        p[*nparts].buf = part;
        p[*nparts].len = part_len;
        (*nparts)++;
        total += part_len;
        st->fetch_parts++;
        st->fetch_bytes += part_len;
        if (total > h->max_bytes) {
            snprintf(message, sizeof message, "the parts hold over the list's limit (%llu bytes)",
                     (unsigned long long)h->max_bytes);
            goto out;
        }
    }
    rc = GRAY_OK;
out:
    memcached_free(mc);
    st->fetch_ns = mono_ns() - t0;
    if (rc != GRAY_OK) {
        for (size_t k = 0; k < *nparts; k++)
            free((void *)(uintptr_t)p[k].buf);
        free(p);
        *nparts = 0;
        return rc;
    }
    *parts = p;
    return GRAY_OK;
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
    /* a fetch job: the key, the servers and the distribution, as C strings */
    int fetch = h.fetch_deadline_ns != 0;
    char key[GRAY_FETCH_KEY_MAX + 1], servers[GRAY_FETCH_SERVERS_MAX + 1], dist[16];
    if (fetch) {
        if (h.nparts != 0 || h.key_len == 0 || h.key_len > GRAY_FETCH_KEY_MAX ||
            h.servers_len == 0 || h.servers_len > GRAY_FETCH_SERVERS_MAX ||
            h.distribution_len == 0 || h.distribution_len >= sizeof dist ||
            (size_t)h.key_len + h.servers_len + h.distribution_len > size - off)
            return finish(GRAY_EINVAL, NULL);
        memcpy(key, map + off, h.key_len);
        key[h.key_len] = '\0';
        off += h.key_len;
        memcpy(servers, map + off, h.servers_len);
        servers[h.servers_len] = '\0';
        off += h.servers_len;
        memcpy(dist, map + off, h.distribution_len);
        dist[h.distribution_len] = '\0';
        off += h.distribution_len;
        if (!gray_mc_key_ok(key, h.key_len) || strlen(servers) != h.servers_len)
            return finish(GRAY_EINVAL, NULL);
    }
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
    int tn = snprintf(tmp, sizeof tmp, "%s.tmp.%ld.h", path, (long)getpid());
    if (tn < 0 || (size_t)tn >= sizeof tmp)
        return finish(GRAY_EINVAL, NULL);
    gray_image_stats_t st;
    memset(&st, 0, sizeof st);
    size_t nparts = (size_t)h.nparts;
    uint64_t cas = h.cas;
    if (fetch) {
        free(parts);
        int frc = fetch_list(&h, key, servers, dist, &parts, &nparts, &cas, &st);
        if (frc != GRAY_OK)
            return finish(frc, &st);
        /* read: the compile's own deadline from now (imagejob.c) */
        static const char fetched = GRAY_HELPER_FETCHED;
        if (write(GRAY_HELPER_FD_DONE, &fetched, 1) != 1)
            return finish(GRAY_EIO, &st);
    }
    gray_image_stats_t fst = st;
    int rc = gray_image_compile_c(h.kind, parts, nparts, names, (size_t)h.names_len,
                                  h.unknown, cas, tmp, &st, NULL);
    st.fetch_parts = fst.fetch_parts;
    st.fetch_bytes = fst.fetch_bytes;
    st.fetch_ns = fst.fetch_ns;
    if (fetch)
        for (size_t i = 0; i < nparts; i++)
            free((void *)(uintptr_t)parts[i].buf);
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
