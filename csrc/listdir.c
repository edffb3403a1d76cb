/* listdir.c - the node's list image directory: its checks, the lock file
 * that makes one worker per node the fetcher of a list, and the cleanup of
 * temporary files a dead compiler left and of images no worker uses. */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "gray.h"

int gray_dir_prepare(const char *path)
{
    if (path == NULL || path[0] != '/' || strlen(path) > GRAY_IMAGE_PATH_MAX - 64)
        return GRAY_EINVAL;
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return GRAY_EIO;
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return GRAY_EIO;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return GRAY_EIO;
    }
    /* ours alone: nobody else may plant an image we would map */
    if (sb.st_uid != geteuid() || (sb.st_mode & 077) != 0) {
        errno = EPERM;
        return GRAY_EIO;
    }
    if (access(path, W_OK | X_OK) != 0)
        return GRAY_EIO;
    return GRAY_OK;
}

/* Whether fd is still the file at path (not unlinked by a cleaner). */
static int same_file(int fd, const char *path)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

int gray_lock_try(const char *path)
{
    if (path == NULL)
        return GRAY_EINVAL;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return GRAY_EIO;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return e == EWOULDBLOCK ? GRAY_ELOCKED : GRAY_EIO;
    }
    /* a cleaner (gray_image_clean_stale) removed the file between our open
     * and our flock: this lock is of no one's; the next try makes anew */
    if (!same_file(fd, path)) {
        close(fd);
        return GRAY_ELOCKED;
    }
    (void)futimens(fd, NULL);
    return fd;
}

int gray_lock_touch(int fd)
{
    if (fd < 0)
        return GRAY_EINVAL;
    return futimens(fd, NULL) == 0 ? GRAY_OK : GRAY_EIO;
}

int gray_image_clean_stale(const char *dir, unsigned int max_age)
{
    if (dir == NULL || dir[0] != '/' || strlen(dir) > GRAY_IMAGE_PATH_MAX - 64)
        return GRAY_EINVAL;
    DIR *d = opendir(dir);
    if (d == NULL)
        return GRAY_EIO;
    int removed = 0;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n <= 5 || n > 250 || strcmp(e->d_name + n - 5, ".lock") != 0)
            continue;
        struct stat sb;
        if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode) ||
            sb.st_mtime > now - (time_t)max_age)
            continue;
        int fd = openat(dirfd(d), e->d_name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            continue;
        /* held: a worker fetches this list (and touches the file each
         * refresh); free and old: no worker has used it for max_age */
        struct stat now_sb;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &now_sb) == 0 &&
            now_sb.st_ino == sb.st_ino && now_sb.st_mtime <= now - (time_t)max_age) {
            char img[256];
            memcpy(img, e->d_name, n - 5);
            memcpy(img + n - 5, ".img", 5);
            /* a worker may have it mapped: its mapping stays valid */
            if (unlinkat(dirfd(d), img, 0) == 0)
                removed++;
            unlinkat(dirfd(d), e->d_name, 0);
        }
        close(fd);
    }
    closedir(d);
    return removed;
}

int gray_lock_release(int fd)
{
    if (fd < 0)
        return GRAY_EINVAL;
    return close(fd) == 0 ? GRAY_OK : GRAY_EIO;
}

/* "<base>.tmp.<pid>.<n>": the pid, or 0 when name is not such a file. */
static long tmp_pid(const char *name, const char *base, size_t blen)
{
    if (strncmp(name, base, blen) != 0 || strncmp(name + blen, ".tmp.", 5) != 0)
        return 0;
    char *end;
    long pid = strtol(name + blen + 5, &end, 10);
    if (pid <= 0 || *end != '.')
        return 0;
    return pid;
}

int gray_image_clean_tmp(const char *path)
{
    if (path == NULL)
        return GRAY_EINVAL;
    const char *slash = strrchr(path, '/');
    if (slash == NULL || slash[1] == '\0')
        return GRAY_EINVAL;
    size_t dlen = (size_t)(slash - path);
    if (dlen >= GRAY_IMAGE_PATH_MAX)
        return GRAY_EINVAL;
    char dir[GRAY_IMAGE_PATH_MAX + 1];
    memcpy(dir, path, dlen ? dlen : 1);
    dir[dlen ? dlen : 1] = '\0';
    const char *base = slash + 1;
    size_t blen = strlen(base);
    DIR *d = opendir(dir);
    if (d == NULL)
        return GRAY_EIO;
    int removed = 0;
    pid_t self = getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long pid = tmp_pid(e->d_name, base, blen);
        if (pid == 0)
            continue;
        /* a live compiler's file stays, unless it is this process's (the
         * caller runs no job on this path when it cleans) */
        if (pid != (long)self && (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}

unsigned int gray_euid(void)
{
    return (unsigned int)geteuid();
}
