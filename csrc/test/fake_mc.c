/* fake_mc.c - a scriptable hostile memcached for the specs (build/fake-mc).
 *
 *   fake-mc -m MODE [-H 127.0.0.1|::1] [-p PORT] [-i MS] [-b BYTES] [-n LENGTH]
 *           [-f CHAR] [-k KEY,KEY...] [-v VALUE] [-t SECONDS]
 *
 * Listens on a loopback address only (-H, default 127.0.0.1; -p 0, the
 * default, lets the kernel pick the port), forks one child per connection and
 * answers each "get <key>\r\n" line by MODE:
 *
 *   trickle-line  "VALUE <key> 0 1", then B fill bytes every I ms, never a CRLF
 *   trickle-data  "VALUE <key> 0 N\r\n" at once, then the N data bytes B every
 *                 I ms, then "\r\nEND\r\n"
 *   drip          the whole valid reply "VALUE <key> 0 N\r\n<N>\r\nEND\r\n",
 *                 header included, B bytes every I ms
 *   big           the same reply, all at once
 *   garbage       bytes no memcached sends ("\x00\xff<garbage \x7f>\r\n") at once
 *   valid         "VALUE <key> 0 <len>\r\n<VALUE>\r\nEND\r\n" for a key listed
 *                 in -k, "END\r\n" (a miss) for any other; "gets <key>" the
 *                 same with cas 42 (a memcached without the meta protocol)
 *
 * Defaults: -i 10, -b 1 (drip: -i 1 -b 64), -n 1000000, -f 0, -v 1,
 * -t 300. The N data bytes are the key, then the fill byte up to N: every
 * key gets its own value (a cache of raw values cannot share one interned
 * string), and none is a gray value ("1"), so a router sends such a client
 * to the stable location. Other commands (mg, mn...) get "ERROR\r\n", as
 * memcached < 1.6 answers them; a request line longer than REQ_MAX ends the
 * connection.
 *
 * stdout, one line per event (the harness reads it):
 *   ready <host> <port> <mode>        listening
 *   accept <conn>                     a connection (numbered from 1)
 *   get <conn> <key>                  a request (gets <conn> <key> for gets)
 *   refused <conn> <command>          a command answered ERROR
 *   sent <conn> <bytes>               a reply sent in full
 *   gone <conn> <bytes>               the peer left (bytes of the reply sent)
 * SIGTERM (or -t seconds) ends the server; its children die with it. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define REQ_MAX     2048        /* one request line, CRLF included */
#define KEY_MAX     250         /* memcached's KEY_MAX_LENGTH */
#define CHUNK_MAX   65536       /* the largest single send */
#define HEADER_MAX  (KEY_MAX + 64)
#define LOG_MAX     (KEY_MAX + 64)

enum mode { TRICKLE_LINE, TRICKLE_DATA, DRIP, BIG, VALID, GARBAGE };

static const struct { const char *name; enum mode mode; } modes[] = {
    {"trickle-line", TRICKLE_LINE}, {"trickle-data", TRICKLE_DATA}, {"drip", DRIP},
    {"big", BIG}, {"valid", VALID}, {"garbage", GARBAGE},
};

static struct {
    enum mode mode;
    const char *mode_name;
    long interval_ms;
    size_t bytes;               /* per tick */
    uint64_t length;            /* N */
    char fill;
    const char *keys;           /* valid: comma-separated */
    const char *value;          /* valid: the answer */
    long lifetime_s;
} cfg;

static volatile sig_atomic_t stopping;
static pid_t server_pid;
static char fill_buf[CHUNK_MAX];

/* Writes one event line to stdout in a single write(2): the children share
 * the parent's file, and whole lines do not interleave. */
static void event(const char *fmt, ...)
{
    char line[LOG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t rc = write(STDOUT_FILENO, line, (size_t)n);
    (void)rc;
}

static void on_term(int sig)
{
    (void)sig;
    stopping = 1;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- one connection (a child) ------------------------------------------ */

typedef struct conn {
    int fd;
    unsigned long id;
    char in[REQ_MAX];
    size_t in_len;
} conn_t;

/* Reads what the peer sent into c->in. Returns 0, or -1 when the peer has
 * gone (EOF, error) or sent more than a request line can hold. */
static int read_some(conn_t *c)
{
    if (c->in_len == sizeof c->in)
        return -1;
    ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
    if (n < 0 && errno == EINTR)
        return 0;
    if (n <= 0)
        return -1;
    c->in_len += (size_t)n;
    return 0;
}

/* Waits ms milliseconds, taking in whatever the peer sends meanwhile (with
 * until_input, only until something comes). Returns -1 when the peer goes
 * away (or the server does). */
static int wait_ms(conn_t *c, long ms, int until_input)
{
    long long until = now_ms() + ms;
    for (;;) {
        if (stopping || getppid() != server_pid)
            return -1;
        long long left = until - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int rc = poll(&p, 1, (int)left);
        if (rc < 0 && errno != EINTR)
            return -1;
        if (rc > 0 && read_some(c) < 0)
            return -1;
        if (rc > 0 && until_input)
            return 0;
    }
}

static int send_all(conn_t *c, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* A reply is a header, N fill bytes and a trailer, seen as one byte stream;
 * the bytes from paced_from on go out cfg.bytes at a time, cfg.interval_ms
 * apart. len UINT64_MAX: the fill never ends. */
typedef struct reply {
    char header[HEADER_MAX];
    size_t hlen;
    const char *key;            /* the first data bytes */
    size_t klen;
    uint64_t n;
    const char *trailer;
    size_t tlen;
    uint64_t paced_from;
} reply_t;

/* Copies stream bytes [off, off + len) of r into dst. */
static void stream_copy(const reply_t *r, uint64_t off, char *dst, size_t len)
{
    while (len > 0) {
        size_t k;
        if (off < r->hlen) {
            k = r->hlen - (size_t)off;
            k = k < len ? k : len;
            memcpy(dst, r->header + off, k);
        } else if (off - r->hlen < r->klen && off - r->hlen < r->n) {
            size_t d = (size_t)(off - r->hlen);
            k = r->klen - d < len ? r->klen - d : len;
            k = k < r->n - d ? k : (size_t)(r->n - d);
            memcpy(dst, r->key + d, k);
        } else if (off - r->hlen < r->n) {
            uint64_t left = r->n - (off - r->hlen);
            k = left < len ? (size_t)left : len;
            memset(dst, cfg.fill, k);
        } else {
            size_t t = (size_t)(off - r->hlen - r->n);
            k = r->tlen - t < len ? r->tlen - t : len;
            memcpy(dst, r->trailer + t, k);
        }
        dst += k;
        off += k;
        len -= k;
    }
}

static int send_reply(conn_t *c, const reply_t *r)
{
    uint64_t total = r->n == UINT64_MAX ? UINT64_MAX : r->hlen + r->n + r->tlen;
    uint64_t off = 0;
    while (off < total) {
        uint64_t k = total - off;
        if (off < r->paced_from) {
            k = r->paced_from - off < k ? r->paced_from - off : k;
            k = k < CHUNK_MAX ? k : CHUNK_MAX;
        } else {
            if (wait_ms(c, cfg.interval_ms, 0) < 0)
                break;
            k = k < cfg.bytes ? k : cfg.bytes;
        }
        stream_copy(r, off, fill_buf, (size_t)k);
        if (send_all(c, fill_buf, (size_t)k) < 0)
            break;
        off += k;
    }
    if (off < total) {
        event("gone %lu %llu", c->id, (unsigned long long)off);
        return -1;
    }
    event("sent %lu %llu", c->id, (unsigned long long)off);
    return 0;
}

static int listed(const char *key, size_t klen)
{
    const char *p = cfg.keys;
    while (p && *p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == klen && memcmp(p, key, klen) == 0)
            return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

static int answer_get(conn_t *c, const char *key, size_t klen, int with_cas)
{
    static const char end[] = "\r\nEND\r\n", garbage[] = "\x00\xff<garbage \x7f>\r\n";
    reply_t r = {.n = cfg.length, .trailer = end, .tlen = sizeof end - 1};
    int kl = (int)klen;
    event("%s %lu %.*s", with_cas ? "gets" : "get", c->id, kl, key);

    switch (cfg.mode) {
    case TRICKLE_LINE:
        r.hlen = (size_t)snprintf(r.header, sizeof r.header, "VALUE %.*s 0 1", kl, key);
        r.n = UINT64_MAX;
        r.tlen = 0;
        r.paced_from = r.hlen;
        break;
    case TRICKLE_DATA:
    case DRIP:
    case BIG:
        r.hlen = (size_t)snprintf(r.header, sizeof r.header, "VALUE %.*s 0 %llu\r\n", kl, key,
                                  (unsigned long long)cfg.length);
        r.key = key;
        r.klen = klen;
        r.paced_from = cfg.mode == DRIP ? 0
                       : cfg.mode == TRICKLE_DATA ? r.hlen : UINT64_MAX;
        break;
    case GARBAGE:
        r.hlen = sizeof garbage - 1;        /* the NUL byte counted */
        memcpy(r.header, garbage, r.hlen);
        r.n = 0;
        r.tlen = 0;
        r.paced_from = UINT64_MAX;
        break;
    case VALID:
        if (!listed(key, klen)) {
            if (send_all(c, "END\r\n", 5) < 0)
                return -1;
            event("sent %lu 5", c->id);
            return 0;
        }
        r.hlen = (size_t)snprintf(r.header, sizeof r.header, "VALUE %.*s 0 %zu%s\r\n%s", kl,
                                  key, strlen(cfg.value), with_cas ? " 42" : "", cfg.value);
        r.n = 0;
        r.paced_from = UINT64_MAX;
        break;
    }
    return send_reply(c, &r);
}

/* Answers one complete request line (CRLF excluded). */
static int answer(conn_t *c, const char *line, size_t len)
{
    int with_cas = len > 5 && memcmp(line, "gets ", 5) == 0;
    if (with_cas || (len > 4 && memcmp(line, "get ", 4) == 0)) {
        size_t skip = with_cas ? 5 : 4;
        const char *key = line + skip;
        const char *sp = memchr(key, ' ', len - skip);
        size_t klen = sp ? (size_t)(sp - key) : len - skip;   /* first key only */
        if (klen > 0 && klen <= KEY_MAX)
            return answer_get(c, key, klen, with_cas);
        return send_all(c, "CLIENT_ERROR bad key\r\n", 22);
    }
    const char *sp = memchr(line, ' ', len);
    int wl = (int)(sp ? (size_t)(sp - line) : len);
    event("refused %lu %.*s", c->id, wl > 16 ? 16 : wl, line);
    return send_all(c, "ERROR\r\n", 7);
}

static void serve(conn_t *c)
{
    event("accept %lu", c->id);
    for (;;) {
        char *eol = c->in_len > 0 ? memchr(c->in, '\n', c->in_len) : NULL;
        if (eol == NULL) {
            if (wait_ms(c, 1000, 1) < 0)
                break;
            continue;
        }
        size_t used = (size_t)(eol - c->in) + 1;
        size_t len = used - 1;
        if (len > 0 && c->in[len - 1] == '\r')
            len--;
        char line[REQ_MAX];
        memcpy(line, c->in, len);
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        if (answer(c, line, len) < 0)
            break;
    }
    close(c->fd);
}

/* ---- the listener --------------------------------------------------------- */

static int usage(const char *why)
{
    fprintf(stderr, "fake-mc: %s\nusage: fake-mc -m trickle-line|trickle-data|drip|big|valid|garbage"
            " [-H 127.0.0.1|::1] [-p port] [-i ms] [-b bytes] [-n length] [-f char]"
            " [-k key,key...] [-v value] [-t seconds]\n", why);
    return 2;
}

static int number(const char *s, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* A socket bound to a loopback address, listening. */
static int listen_on(const char *host, long port, char *shown, size_t shown_len)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127)
            return -1;
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        sl = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr))
            return -1;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        sl = sizeof *a6;
    } else {
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 128) < 0) {
        perror("fake-mc: bind/listen");
        close(fd);
        return -1;
    }
    sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    unsigned p = ss.ss_family == AF_INET ? ntohs(a4->sin_port) : ntohs(a6->sin6_port);
    snprintf(shown, shown_len, "%s %u", host, p);
    return fd;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long long port = 0, v;
    int opt, have_mode = 0, set_i = 0, set_b = 0;
    cfg.interval_ms = 10;
    cfg.bytes = 1;
    cfg.length = 1000000;
    cfg.fill = '0';
    cfg.value = "1";
    cfg.lifetime_s = 300;

    while ((opt = getopt(argc, argv, "m:H:p:i:b:n:f:k:v:t:")) != -1) {
        switch (opt) {
        case 'm':
            for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
                if (strcmp(optarg, modes[i].name) == 0) {
                    cfg.mode = modes[i].mode;
                    cfg.mode_name = modes[i].name;
                    have_mode = 1;
                }
            }
            if (!have_mode)
                return usage("unknown mode");
            break;
        case 'H': host = optarg; break;
        case 'p':
            if (number(optarg, 0, 65535, &port) < 0)
                return usage("bad -p");
            break;
        case 'i':
            if (number(optarg, 0, 60000, &v) < 0)
                return usage("bad -i");
            cfg.interval_ms = (long)v;
            set_i = 1;
            break;
        case 'b':
            if (number(optarg, 1, CHUNK_MAX, &v) < 0)
                return usage("bad -b");
            cfg.bytes = (size_t)v;
            set_b = 1;
            break;
        case 'n':
            if (number(optarg, 0, LLONG_MAX, &v) < 0)
                return usage("bad -n");
            cfg.length = (uint64_t)v;
            break;
        case 'f':
            if (strlen(optarg) != 1 || optarg[0] == '\r' || optarg[0] == '\n')
                return usage("bad -f (one byte, not CR or LF)");
            cfg.fill = optarg[0];
            break;
        case 'k': cfg.keys = optarg; break;
        case 'v':
            if (strlen(optarg) > KEY_MAX)
                return usage("bad -v (too long)");
            cfg.value = optarg;
            break;
        case 't':
            if (number(optarg, 1, 86400, &v) < 0)
                return usage("bad -t");
            cfg.lifetime_s = (long)v;
            break;
        default:
            return usage("bad option");
        }
    }
    if (!have_mode || optind != argc)
        return usage(have_mode ? "extra arguments" : "-m is required");
    if (cfg.mode == DRIP) {
        cfg.interval_ms = set_i ? cfg.interval_ms : 1;
        cfg.bytes = set_b ? cfg.bytes : 64;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_flags = SA_NOCLDWAIT;             /* children reap themselves */
    sigaction(SIGCHLD, &sa, NULL);
    sa.sa_flags = 0;                        /* no SA_RESTART: accept() returns EINTR */
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    char shown[128];
    int lfd = listen_on(host, (long)port, shown, sizeof shown);
    if (lfd < 0)
        return usage("cannot listen (the host must be a loopback address)");
    server_pid = getpid();
    event("ready %s %s", shown, cfg.mode_name);

    long long stop_at = now_ms() + cfg.lifetime_s * 1000LL;
    unsigned long next_id = 1;
    while (!stopping && now_ms() < stop_at) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0)
            continue;
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        conn_t c = {.fd = fd, .id = next_id++};
        pid_t pid = fork();
        if (pid == 0) {
            sa.sa_handler = SIG_DFL;            /* a child just dies */
            sigaction(SIGTERM, &sa, NULL);
            sigaction(SIGINT, &sa, NULL);
#ifdef __linux__
            prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
            close(lfd);
            if (getppid() == server_pid)        /* the server may be gone already */
                serve(&c);
            _exit(0);
        }
        close(fd);
    }
    close(lfd);
    /* the children: SIGTERM to the process group would hit the harness's
     * shell too, so each child watches its parent (PDEATHSIG, getppid) */
    return 0;
}
