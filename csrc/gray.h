/*
 * gray.h - the byte work behind lua-resty-gray.
 *
 * Every function takes the caller's buffer and its length, never allocates,
 * never keeps state between calls and never reads outside [buf, buf + len).
 * A negative return is a GRAY_E* code; gray_strerror() names it.
 *
 * Addresses: an IPv4 address is stored as its IPv4-mapped IPv6 form
 * (::ffff:a.b.c.d), so one 16-byte type, one range type and one set type
 * serve both families, and "::ffff:1.2.3.4" and "1.2.3.4" are one address.
 */
#ifndef GRAY_H
#define GRAY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GRAY_VERSION "0.1.0"

/* ---- limits ------------------------------------------------------------ */

#define GRAY_IP_TEXT_MAX   46    /* longest canonical text plus NUL (INET6_ADDRSTRLEN) */
#define GRAY_HOST_TEXT_MAX 64    /* longest "[v6]:port" / "a.b.c.d:port" we try to parse
                                    (nginx has no bound: only a port padded with
                                    zeros can be longer and still valid there) */
#define GRAY_MC_KEY_MAX    250   /* memcached's KEY_MAX_LENGTH */
#define GRAY_MC_LINE_MAX   1024  /* a reply line longer than this is malformed */
#define GRAY_MC_DATA_MAX   (1u << 30) /* a VALUE announcing more bytes is malformed */
#define GRAY_MC_OPAQUE_MAX 32    /* memcached's longest meta opaque token (O) */

/* ---- return codes -------------------------------------------------------- */

#define GRAY_OK         0
#define GRAY_EINVAL    -1   /* malformed input */
#define GRAY_EAGAIN    -2   /* incomplete: call again with more bytes */
#define GRAY_EADDR     -3   /* not an IP address in any accepted form */
#define GRAY_EPREFIX   -4   /* bad CIDR prefix length */
#define GRAY_ESPACE    -5   /* the caller's output buffer or array is too small */
#define GRAY_EDIGITS   -6   /* memcached: a number field is not plain decimal digits */
#define GRAY_ERANGE    -7   /* memcached: a number overflows its field */
#define GRAY_ELINE     -8   /* memcached: a line is not terminated by CRLF within GRAY_MC_LINE_MAX */
#define GRAY_EDATA     -9   /* memcached: the data block is not followed by CRLF */
#define GRAY_EKEY      -10  /* memcached: a key is empty, too long or has bad bytes */
#define GRAY_EUNASKED  -11  /* memcached: a VALUE (or meta reply) for a key that was not requested */
#define GRAY_EREPLY    -12  /* memcached: a reply line of an unknown kind */
#define GRAY_EMAC      -13  /* token: the MAC does not match (another secret, context, an edit) */
#define GRAY_EEXPIRED  -14  /* token: its expiry has passed */

/* Static, NUL-terminated text for a return code. */
const char *gray_strerror(int code);

/* GRAY_VERSION of the library actually loaded. */
const char *gray_version(void);

/* ---- addresses (ip.c) -------------------------------------------------- */

typedef struct gray_ip {
    uint8_t b[16];              /* network order; IPv4 as ::ffff:a.b.c.d */
} gray_ip_t;

/* Parses a bare address: strict dotted quad (no leading zeros, no octal, hex or
 * short forms) or any RFC 4291 IPv6 text form (embedded IPv4 allowed, no zone).
 * Returns GRAY_OK or GRAY_EADDR. */
int gray_ip_parse(const char *s, size_t len, gray_ip_t *out);

/* Parses the forms found in forwarding headers: a bare address, "a.b.c.d:port",
 * "[v6]" or "[v6]:port". A port is decimal, 1..65535, leading zeros allowed
 * (as nginx's ngx_atoi). "[v6]" without a port is taken here (peers, RFC 7239
 * Forwarded) but not by the X-Forwarded-For / X-Real-IP walk, as in nginx.
 * Surrounding spaces and tabs are not accepted here. */
int gray_ip_parse_host(const char *s, size_t len, gray_ip_t *out);

/* Writes the canonical text (dotted quad for IPv4 and IPv4-mapped, RFC 5952 for
 * IPv6) to buf without a NUL. Returns its length, or GRAY_ESPACE when cap is
 * below the length (cap >= GRAY_IP_TEXT_MAX always fits). */
int gray_ip_format(const gray_ip_t *ip, char *buf, size_t cap);

/* Parses with gray_ip_parse_host() and writes the canonical text: one call from
 * header text to memcached key. Returns the length or a negative code. */
int gray_ip_canonical(const char *s, size_t len, char *buf, size_t cap);

/* 1 when ip is IPv4 or IPv4-mapped, else 0. */
int gray_ip_is_v4(const gray_ip_t *ip);

/* ---- ranges and sets (ipset.c) ---------------------------------------- */

typedef struct gray_range {
    gray_ip_t lo;               /* first address, inclusive */
    gray_ip_t hi;               /* last address, inclusive */
} gray_range_t;

/* Parses "a.b.c.d/n" (n 0..32), "v6/n" (n 0..128) or a bare address (a full
 * length prefix) into out[0..*n). Host bits below the prefix are cleared. As
 * in nginx (ngx_cidr_match matches an IPv4-mapped peer as AF_INET and never
 * across families), a CIDR written in IPv6 covers no IPv4 peer: the block
 * ::ffff:0:0/96 is cut out of it. That leaves two ranges (::/0; out must
 * hold 2), one, or none (*n == 0 for "::ffff:10.0.0.0/104": nginx never
 * matches it). Returns GRAY_OK, 1 when host bits were set (and cleared),
 * GRAY_EADDR or GRAY_EPREFIX. */
int gray_cidr_parse(const char *s, size_t len, gray_range_t *out, size_t *n);

/* Sorts ranges and merges overlapping or adjacent ones in place; returns the new
 * count. Call once after filling the array; the set is then read-only. */
size_t gray_ipset_build(gray_range_t *ranges, size_t n);

/* 1 when ip lies in a set made by gray_ipset_build(), else 0. O(log n). */
int gray_ipset_contains(const gray_range_t *ranges, size_t n, const gray_ip_t *ip);

/* ---- valued range sets: the ranges list (rangelist.c, ipset.c) ---------- */

/* A ranges list is text: one "<address or CIDR> [<target name>]" per line,
 * LF or CRLF, fields split by spaces or tabs, '#' starts a comment, blank
 * lines allowed. It compiles in three calls, none of which allocates:
 * gray_ranges_room() bounds the entries (or gray_ranges_parse() with no room
 * counts them), the caller allocates them, gray_ranges_parse() fills them,
 * the caller allocates the set's arrays, and gray_rangeset_build() sorts the
 * entries and writes the set. The entries are scratch; the set keeps at most
 * 2 runs per IPv4 entry (5 bytes each), 2 per IPv6 entry (17 bytes each) and
 * an index of at most a byte per run. */

#define GRAY_TARGETS_MAX     255          /* target names a list may use */
#define GRAY_TARGET_NAME_MAX 64           /* bytes of one target name */
#define GRAY_RANGES_TEXT_MAX 0x7fffffffu  /* longest list text */
#define GRAY_RANGES_REPORT   8            /* line numbers kept per kind of skip */

/* One IPv4 range of the list: build input only. */
typedef struct gray_rentry4 {
    uint32_t lo;                /* first address, host order */
    uint32_t hi;                /* last address, inclusive */
    uint32_t line;              /* 1-based line number: of equal CIDRs the later wins */
    uint32_t target;            /* target index, 1..GRAY_TARGETS_MAX */
} gray_rentry4_t;

/* One IPv6 range (a CIDR written in IPv6 minus ::ffff:0:0/96: up to two). */
typedef struct gray_rentry6 {
    gray_ip_t lo;
    gray_ip_t hi;
    uint32_t line;
    uint16_t prefix;            /* the CIDR's prefix length: the longer wins */
    uint16_t target;
} gray_rentry6_t;

typedef struct gray_ranges_stats {
    uint32_t lines;             /* lines in the text */
    uint32_t taken;             /* lines compiled */
    uint32_t n4;                /* IPv4 entries needed (written up to cap4) */
    uint32_t n6;                /* IPv6 entries needed (written up to cap6) */
    uint32_t bad;               /* lines skipped as malformed */
    uint32_t unknown;           /* lines naming a target name not in names */
    uint32_t bad_lines[8];      /* the first GRAY_RANGES_REPORT bad line numbers */
    uint32_t unknown_lines[8];  /* the first GRAY_RANGES_REPORT unknown-name ones */
} gray_ranges_stats_t;

/* 1 when s is a target name: 1 to GRAY_TARGET_NAME_MAX bytes in
 * 0x21..0x7e, no '#', not "0" (a value that means no entry). The one rule
 * for the names of the router's targets, of list and range lines, and of
 * gray-admin's arguments. */
int gray_target_name_ok(const char *s, size_t len);

/* Parses a ranges list. names holds the known target names separated by
 * '\n': the k-th (from 1) has index k, and a line without a name gets 1.
 * A line is bad when its address is not an address or CIDR for
 * gray_cidr_parse(), covers no address (an IPv6-written CIDR inside
 * ::ffff:0:0/96), has a third field, or a name that is not a target name
 * (gray_target_name_ok); bad lines are skipped. A target name not in names
 * makes the line unknown: it gets index `unknown`, or is skipped when that
 * is 0. Writes at most cap4 / cap6 entries and counts all in *st. Returns
 * GRAY_OK, GRAY_ESPACE when an array was too small, or GRAY_EINVAL for
 * names that are empty, too many or hold one that is not a target name,
 * unknown over GRAY_TARGETS_MAX, or text over GRAY_RANGES_TEXT_MAX. */
int gray_ranges_parse(const char *text, size_t len, const char *names, size_t names_len,
                      uint32_t unknown, gray_rentry4_t *e4, size_t cap4, gray_rentry6_t *e6, size_t cap6,
                      gray_ranges_stats_t *st);

/* An upper bound of the entries gray_ranges_parse() writes for text, from a
 * quick pass that parses no address: one IPv4 entry per line whose first
 * field has no ':', one IPv6 entry per line whose first field has one, two
 * when that field may cover ::ffff:0:0/96 (see gray_cidr_parse()). */
void gray_ranges_room(const char *text, size_t len, size_t *room4, size_t *room6);

/* A compiled list: runs (maximal stretches of addresses with one answer)
 * in ascending order, each with the target of the most specific range
 * covering it (0: none), and per family an index over the bits after the
 * prefix that all its run starts share. */
typedef struct gray_run4 {
    uint8_t start[4];           /* first address, network order */
    uint8_t target;
} gray_run4_t;

typedef struct gray_run6 {
    gray_ip_t start;
    uint8_t target;
} gray_run6_t;

typedef struct gray_rangeset {
    gray_run4_t *v4;            /* room for 2 runs per IPv4 entry */
    gray_run6_t *v6;            /* room for 2 runs per IPv6 entry */
    uint32_t *v4_index;         /* gray_rangeset_index_len(v4's room) */
    uint32_t *v6_index;         /* gray_rangeset_index_len(v6's room) */
    uint32_t n4;                /* runs in use */
    uint32_t n6;
    uint8_t v4_skip;            /* index bits: [skip, skip + bits) of an address */
    uint8_t v4_bits;
    uint8_t v6_skip;
    uint8_t v6_bits;
} gray_rangeset_t;

/* The length of the index array for a family with room for runs runs. */
size_t gray_rangeset_index_len(size_t runs);

/* Sorts the entries in place and writes set's runs and indexes into the
 * arrays set points to, sized as the comments above say. Where ranges nest,
 * the most specific wins (the longest prefix); of equal ones, the later
 * line. Returns GRAY_OK, or GRAY_EINVAL when entries overlap without
 * nesting, nest deeper than CIDRs can, or carry a target outside
 * 1..GRAY_TARGETS_MAX. */
int gray_rangeset_build(gray_rangeset_t *set, gray_rentry4_t *e4, size_t n4,
                        gray_rentry6_t *e6, size_t n6);

/* The target index of the run holding ip, 0 when no range covers it.
 * O(log n), no allocation; set is only read. */
int gray_rangeset_find(const gray_rangeset_t *set, const gray_ip_t *ip);

/* The same for address text in any gray_ip_parse_host() form; GRAY_EADDR
 * when it is not an address. */
int gray_rangeset_find_text(const gray_rangeset_t *set, const char *s, size_t len);

/* ---- client address from forwarding headers (xff.c) --------------------- */

/* Why a walk ended. The client is always walk->addr. */
#define GRAY_STOP_PEER      0   /* the peer is not trusted: headers ignored */
#define GRAY_STOP_UNTRUSTED 1   /* the first untrusted address from the right */
#define GRAY_STOP_ALL       2   /* every address was trusted: the leftmost one */
#define GRAY_STOP_JUNK      3   /* an element that is not an address stopped the
                                   walk: the client is the last trusted address
                                   reached (the peer when it was the rightmost) */
#define GRAY_STOP_EMPTY     4   /* the header holds no element at all */

typedef struct gray_walk {
    gray_ip_t addr;             /* in: the socket peer; out: the client */
    uint32_t hops;              /* header elements taken on the way */
    int32_t stop;               /* GRAY_STOP_* */
} gray_walk_t;

/* Walks X-Forwarded-For from the right the way nginx's realip module does with
 * real_ip_recursive on, starting at walk->addr (the peer). As in nginx,
 * elements are split at ',' and ' ' (a tab is part of its element), empty
 * ones are skipped and "[v6]" without a port is not an address. Unlike
 * nginx, a separator at the very start splits too. Linear in len, no
 * allocation. Returns the stop reason (>= 0). */
int gray_xff_walk(const char *hdr, size_t len, const gray_range_t *trusted,
                  size_t ntrusted, gray_walk_t *walk);

/* The same walk over an RFC 7239 Forwarded header, using each element's "for"
 * parameter (token or quoted string). "unknown", "_obfuscated", an element
 * without "for" and a syntax error all count as a non-address element. */
int gray_forwarded_walk(const char *hdr, size_t len, const gray_range_t *trusted,
                        size_t ntrusted, gray_walk_t *walk);

/* Where gray_client_key() found the client. */
#define GRAY_FROM_PEER       0
#define GRAY_FROM_REAL_IP    1
#define GRAY_FROM_XFF        2
#define GRAY_FROM_FORWARDED  3

/* Added to gray_peer_key()'s length when the peer is a trusted proxy. */
#define GRAY_PEER_TRUSTED 0x10000

/* Added to a key's length when the input text is the canonical text itself,
 * byte for byte: nothing was written to buf, and the caller uses its own
 * copy (no new string on the hot path). */
#define GRAY_KEY_VERBATIM 0x20000

/* The canonical text of the socket peer into buf. Returns its length, plus
 * GRAY_KEY_VERBATIM when peer is that text already (buf untouched), plus
 * GRAY_PEER_TRUSTED when the peer is in the trusted set (only then are the
 * forwarding headers worth reading), or GRAY_EADDR / GRAY_ESPACE. */
int gray_peer_key(const char *peer, size_t len, const gray_range_t *trusted,
                  size_t ntrusted, char *buf, size_t cap);

/* The client from one header (X-Real-IP or X-Forwarded-For) of a peer
 * already known to be trusted, walked as gray_xff_walk() walks it. Returns
 * the canonical text's length in buf (plus GRAY_KEY_VERBATIM when the whole
 * header is that text, buf untouched), or 0 when no element is an address:
 * the walk took no hop and the client is the peer. */
int gray_header_key(const char *hdr, size_t len, const gray_range_t *trusted,
                    size_t ntrusted, char *buf, size_t cap);

/* The whole client choice in one call: when the peer is trusted, X-Real-IP
 * is walked as X-Forwarded-For is (as nginx does with real_ip_header
 * X-Real-IP) and decides when it took a hop; else (no X-Real-IP, or none of
 * its elements an address: our extension) X-Forwarded-For is walked, else
 * Forwarded; absent headers are NULL. Writes the canonical text of the
 * client to buf and returns its length, or a negative code when the peer is
 * not an address. *from tells the header used (GRAY_FROM_*), walk->stop and
 * walk->hops how a walk ended (GRAY_STOP_PEER when the peer is untrusted). */
int gray_client_key(const char *peer, size_t peer_len, const char *real_ip, size_t real_ip_len,
                    const char *xff, size_t xff_len, const char *fwd, size_t fwd_len,
                    const gray_range_t *trusted, size_t ntrusted, gray_walk_t *walk,
                    int32_t *from, char *buf, size_t cap);

/* ---- hashing (hash.c) ------------------------------------------------- */

/* libmemcached's default key hash (Jenkins one-at-a-time). A key lives on
 * server hash % nservers, as libmemcached's default distribution places it. */
uint32_t gray_hash_oaat(const char *key, size_t len);

#define GRAY_PERCENT_BUCKETS 10000   /* a percentage with two decimals */

/* MurmurHash3_x86_32 (Austin Appleby, SMHasher) of key: blocks read
 * little-endian at any alignment, so every platform agrees. */
uint32_t gray_murmur3_32(const char *key, size_t len, uint32_t seed);

/* The percentage bucket of an identity key ("uid:42", "192.168.2.20"):
 * murmur3 with seed 0, modulo GRAY_PERCENT_BUCKETS. A key is in when its
 * bucket < percent * 100, so raising the percentage only adds keys. */
uint32_t gray_percent_bucket(const char *key, size_t len);

/* ---- timed ramps (ramp.c) --------------------------------------------- */

/* A ramp schedule: "5% 25%@10m 50%@30m 100%@1h". Each step is a share (a
 * percentage as the percentage key takes it: digits, at most two decimals,
 * 0..100, then '%') and, but for the first (at 0, "@0s" allowed), '@' and
 * its offset from the start: digits and one unit, s, m or h. Steps are
 * split by spaces or tabs; offsets rise strictly and shares never fall (a
 * member of the share stays in it as it rises). A ramp value (the memcached
 * key gray:ramp) is "<start unix seconds> <schedule>". */
#define GRAY_RAMP_STEPS_MAX  64                 /* steps of one schedule */
#define GRAY_RAMP_TEXT_MAX   1024               /* bytes of one ramp value */
#define GRAY_RAMP_AT_MAX     (366u * 86400u)    /* latest offset: a year, in s */
#define GRAY_RAMP_START_MAX  99999999999LL      /* latest start (unix seconds) */

/* -30..-39: ramps */
#define GRAY_ESTEP     -30  /* ramp: a step is not "<share>%" or "<share>%@<offset><s|m|h>" */
#define GRAY_EORDER    -31  /* ramp: an offset does not rise, or a share falls */

typedef struct gray_ramp_step {
    uint32_t at;                /* s after the start */
    uint32_t share;             /* percent * 100: 0..GRAY_PERCENT_BUCKETS */
} gray_ramp_step_t;

/* Parses a schedule into steps[0..cap). Returns the number of steps (>= 1),
 * or GRAY_ESTEP, GRAY_EORDER, GRAY_ERANGE (a share over 100, an offset over
 * GRAY_RAMP_AT_MAX, a text over GRAY_RAMP_TEXT_MAX) or GRAY_ESPACE (more
 * steps than cap), with *err_at (when not NULL) the offset in s of the
 * step at fault. */
int gray_ramp_parse(const char *s, size_t len, gray_ramp_step_t *steps, size_t cap,
                    size_t *err_at);

/* Parses a ramp value: *start gets its start (1..GRAY_RAMP_START_MAX, else
 * GRAY_ERANGE; not digits then a space: GRAY_EINVAL), then as
 * gray_ramp_parse() on the rest (*err_at counts from the value's start). */
int gray_ramp_value_parse(const char *s, size_t len, int64_t *start, gray_ramp_step_t *steps,
                          size_t cap, size_t *err_at);

/* The step in force elapsed seconds after the start: the last whose offset
 * is <= elapsed (the first before the start: a clock behind the writer's). */
size_t gray_ramp_at(const gray_ramp_step_t *steps, size_t n, int64_t elapsed);

/* ---- server placement: libmemcached 1.1's distributions (dist.c) -------- */

#define GRAY_DIST_MODULA          0  /* hash % n: libmemcached's default */
#define GRAY_DIST_KETAMA          1  /* MEMCACHED_BEHAVIOR_KETAMA: 100 points a
                                        server, one-at-a-time hash */
#define GRAY_DIST_KETAMA_WEIGHTED 2  /* MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED: 160
                                        points a server of average weight, MD5 */

#define GRAY_DIST_SERVERS_MAX  4096
#define GRAY_DIST_HOST_MAX     1024  /* libmemcached's bound: < NI_MAXHOST (1025) */
#define GRAY_DIST_DEFAULT_PORT 11211 /* left out of the point names, as libmemcached does */

typedef struct gray_dist_server {
    const char *host;           /* the name as written: libmemcached hashes it, */
    uint32_t host_len;          /* not the address it resolves to */
    uint32_t port;              /* 0 is GRAY_DIST_DEFAULT_PORT */
    uint32_t weight;            /* ketama-weighted only; 0 is 1 */
} gray_dist_server_t;

typedef struct gray_dist_point {
    uint32_t value;             /* position on the circle */
    uint32_t server;            /* 0-based index into the build's server list */
} gray_dist_point_t;

typedef struct gray_dist {
    gray_dist_point_t *points;  /* in: the caller's array of gray_dist_room() */
    uint32_t room;              /* in: its length */
    uint32_t npoints;           /* out: points in use, sorted */
    uint32_t nservers;          /* out */
    int32_t mode;               /* out: GRAY_DIST_* */
} gray_dist_t;

/* The points a continuum of nservers needs in mode (0 for modula), or 0 for
 * a bad mode or count. */
size_t gray_dist_room(int mode, size_t nservers);

/* Builds d for servers[0..n) in libmemcached's server order (the order they
 * were added; we do not sort hosts). Returns GRAY_OK, GRAY_ESPACE when
 * d->room is too small, or GRAY_EINVAL for a bad mode, no or too many
 * servers, an empty or too long host, a host with a NUL, a port > 65535. */
int gray_dist_build(gray_dist_t *d, int mode, const gray_dist_server_t *servers, size_t n);

/* The key hash of mode: one-at-a-time, or MD5's first 4 bytes read
 * little-endian for ketama-weighted (libmemcached sets it so). */
uint32_t gray_dist_hash(int mode, const char *key, size_t len);

/* The 0-based server for a hash: hash % n, or the first point at or after
 * hash on the circle (the first point past the last one). O(log points):
 * *probes (when not NULL) gets the points compared. GRAY_EINVAL for an
 * unbuilt d. */
int gray_dist_find(const gray_dist_t *d, uint32_t hash, uint32_t *probes);

/* The 0-based server of key, as memcached_generate_hash() returns it. */
int gray_dist_server(const gray_dist_t *d, const char *key, size_t len);

/* ---- the server list: one spelling rule for the router and gray-admin --- */

#define GRAY_SERVER_WEIGHT_MAX 100000  /* host:port/?N: N is 1..this */

/* One server of a list, as offsets into the list text. The host is kept as
 * written (without the brackets): libmemcached hashes the name it is given,
 * never a canonical form of it (spec/dist_spec.lua), so both sides must give
 * ketama the same text, and neither may rewrite it. */
typedef struct gray_server_spec {
    uint32_t item_off;          /* the whole item: host:port[/?N] */
    uint32_t item_len;
    uint32_t name_len;          /* host:port, from item_off (no weight) */
    uint32_t host_off;          /* the host as written, without brackets */
    uint32_t host_len;
    uint32_t port;              /* 1..65535 */
    uint32_t weight;            /* 1..GRAY_SERVER_WEIGHT_MAX, 1 when not written */
} gray_server_spec_t;

/* Parses a server list ("$gray_memcached" syntax): items host:port or
 * host:port/?N, separated by commas and white space. The host is an IP
 * address in gray_ip_parse()'s forms (no names, no leading zeros in IPv4):
 * IPv6 text (any text with ':') in brackets, nothing else in brackets.
 * Returns the count (1..cap) into out, or a negative code, with the item at
 * fault in *bad (item_len 0 for an empty list): GRAY_EINVAL no server or
 * not host:port, GRAY_EADDR the host, GRAY_ERANGE port or weight out of
 * range, GRAY_ESPACE more than cap servers. gray_server_error() says it in
 * words. */
int gray_servers_parse(const char *s, size_t len, gray_server_spec_t *out, size_t cap,
                       gray_server_spec_t *bad);

/* The reason for a gray_servers_parse() code, for "bad server '...' (<reason>)". */
const char *gray_server_error(int code);

/* MD5 (RFC 1321) of data into digest. */
void gray_md5(const char *data, size_t len, uint8_t digest[16]);

/* ---- memcached text protocol (mc.c) ------------------------------------ */

/* 1 when key may be sent as a memcached key: 1..GRAY_MC_KEY_MAX bytes, no byte
 * <= 0x20 and no 0x7f. Every key the library sends passes through here. */
int gray_mc_key_ok(const char *key, size_t len);

/* One-line reply kinds. */
#define GRAY_MC_STORED        1
#define GRAY_MC_NOT_STORED    2
#define GRAY_MC_EXISTS        3
#define GRAY_MC_NOT_FOUND     4
#define GRAY_MC_DELETED       5
#define GRAY_MC_TOUCHED       6
#define GRAY_MC_OK            7
#define GRAY_MC_END           8
#define GRAY_MC_ERROR         9
#define GRAY_MC_CLIENT_ERROR 10
#define GRAY_MC_SERVER_ERROR 11
#define GRAY_MC_VERSION      12
#define GRAY_MC_NUMBER       13   /* incr/decr: the line is a decimal number */
#define GRAY_MC_VA           14   /* meta: "VA <size> <flags>*", a hit and its value */
#define GRAY_MC_HD           15   /* meta: "HD <flags>*", a hit without a value */
#define GRAY_MC_EN           16   /* meta: "EN <flags>*", a miss */
#define GRAY_MC_MN           17   /* meta: "MN", the end of a pipeline ("mn") */

typedef struct gray_mc_line {
    int32_t kind;               /* GRAY_MC_* */
    uint32_t msg_off;           /* the text after the keyword (error message, */
    uint32_t msg_len;           /* version, digits of a number), into buf */
    uint64_t number;            /* the value of a GRAY_MC_NUMBER line */
} gray_mc_line_t;

/* Decodes one reply line at the start of buf. Returns the bytes consumed
 * (through CRLF), GRAY_EAGAIN when the line is not complete yet, or an error. */
int gray_mc_parse_line(const char *buf, size_t len, gray_mc_line_t *line);

typedef struct gray_mc_value {
    uint32_t key_off;           /* the key, into buf */
    uint32_t key_len;
    uint32_t data_off;          /* the data block, into buf */
    uint32_t data_len;
    uint32_t flags;
    uint32_t has_cas;           /* 1 when the VALUE line carried a cas unique */
    uint64_t cas;
} gray_mc_value_t;

/* Decodes a whole reply to "get"/"gets": VALUE blocks then END, or one error
 * line (ERROR, CLIENT_ERROR, SERVER_ERROR). keys/keys_len is the list of keys
 * that was requested, separated by single spaces exactly as sent (NULL: not
 * checked); values must answer them in order, each at most once, as memcached
 * does: anything else is GRAY_EUNASKED. *nvals holds the capacity of vals on entry and
 * the count decoded on return; line->kind is GRAY_MC_END for a value reply or
 * the error kind. Returns the bytes consumed, or GRAY_EAGAIN with *need set to
 * the least number of further bytes that can complete the reply (>= 1), or an
 * error code. Nothing is copied: offsets point into buf. */
int gray_mc_parse_get(const char *buf, size_t len, const char *keys, size_t keys_len,
                      gray_mc_value_t *vals, size_t *nvals, gray_mc_line_t *line,
                      size_t *need);

/* ---- signed tokens (token.c) -------------------------------------------- */

/* A token is "<subject>.<expiry>.<mac>": the subject (a target name, an
 * identity's value) is 1..GRAY_TOKEN_SUBJECT_MAX bytes in 0x21..0x7e ('.'
 * allowed: the token is split from the right), the expiry a unix time in
 * decimal, the MAC the base64url text (no padding) of HMAC-SHA256 (OpenSSL's
 * libcrypto) keyed by the secret over the context, a NUL, then
 * "<subject>.<expiry>" as written. The context ("force", "id:<name>") keeps a
 * token for one use from passing for another. */

#define GRAY_TOKEN_SUBJECT_MAX   200
#define GRAY_TOKEN_CONTEXT_MAX   64
#define GRAY_TOKEN_EXPIRY_DIGITS 12              /* expiry <= GRAY_TOKEN_EXPIRY_LAST */
#define GRAY_TOKEN_EXPIRY_LAST   999999999999LL
#define GRAY_TOKEN_MAC_LEN       43              /* base64url of 32 bytes, unpadded */
#define GRAY_TOKEN_MAX           257             /* subject, '.', expiry, '.', MAC */
#define GRAY_SECRET_MIN 16                       /* bytes of a secret, after trimming */
#define GRAY_SECRET_MAX 1024

/* The length of a secret file's text without its trailing blanks (spaces,
 * tabs, CR, LF), or GRAY_EINVAL when that is under GRAY_SECRET_MIN or over
 * GRAY_SECRET_MAX bytes. The router and gray-admin both key with it. */
int gray_secret_len(const char *s, size_t len);

/* Writes the token for subject, valid before expiry (unix seconds), to buf.
 * Returns its length, GRAY_ESPACE when cap is too small (GRAY_TOKEN_MAX
 * always fits), or GRAY_EINVAL for a bad context, key, subject or expiry. */
int gray_token_make(const char *ctx, size_t ctx_len, const char *key, size_t key_len,
                    const char *subject, size_t subject_len, int64_t expiry,
                    char *buf, size_t cap);

/* Checks tok[0..len) against the key and context at time now: returns the
 * subject's length (the subject is tok[0..n)) and its expiry in *expiry
 * (when not NULL), or GRAY_EINVAL (not a token), GRAY_EMAC (compared in
 * constant time) or GRAY_EEXPIRED (expiry <= now). Reads nothing outside
 * tok, allocates nothing. */
int gray_token_check(const char *ctx, size_t ctx_len, const char *key, size_t key_len,
                     const char *tok, size_t len, int64_t now, int64_t *expiry);

/* ---- memcached meta protocol (mc.c) ------------------------------------ */

/* What the "mg" requests asked, for gray_mc_parse_meta()'s mode. */
#define GRAY_META_PIPELINE 1    /* several mg then "mn": the reply ends at MN;
                                   without it, at the first reply */
#define GRAY_META_VALUE    2    /* "v": a hit is VA with a data block, else HD */
#define GRAY_META_QUIET    4    /* "q": a miss sends nothing (EN is refused) */

/* gray_mc_meta_t.has: the tokens a reply carried */
#define GRAY_META_HAS_CAS    1  /* c */
#define GRAY_META_HAS_FLAGS  2  /* f */
#define GRAY_META_HAS_KEY    4  /* k */
#define GRAY_META_HAS_OPAQUE 8  /* O */

typedef struct gray_mc_meta {
    int32_t kind;               /* GRAY_MC_VA or GRAY_MC_HD */
    uint32_t index;             /* the request answered: its position in keys, from 0 */
    uint32_t req_off;           /* its key, into keys (0, 0 when keys is NULL) */
    uint32_t req_len;
    uint32_t has;               /* GRAY_META_HAS_* */
    uint32_t key_off;           /* the k token, into buf */
    uint32_t key_len;
    uint32_t data_off;          /* VA's data block, into buf (0, 0 for HD) */
    uint32_t data_len;
    uint32_t opaque_off;        /* the O token, into buf */
    uint32_t opaque_len;
    uint32_t flags;             /* the f token */
    uint64_t cas;               /* the c token */
} gray_mc_meta_t;

/* Decodes the replies to "mg <key> <flags>*" requests: one (mode without
 * GRAY_META_PIPELINE) or several ended by "mn" (up to MN). keys/keys_len is
 * the list of keys requested, single spaces between them (NULL: not checked;
 * index is then the reply's position). Replies answer the requests in order:
 * an O token is the request's position in decimal, a k token its key; a
 * reply with neither answers the next request. Without GRAY_META_QUIET every
 * request answers before MN; with it, misses are skipped (ask for k or O).
 * Hits (VA/HD) fill vals; *nvals holds the capacity on entry and the count on
 * return. line->kind is MN (pipeline), VA/HD/EN (one mg), or an error line
 * (ERROR, CLIENT_ERROR, SERVER_ERROR: the decode stops there). Returns the
 * bytes consumed, GRAY_EAGAIN with *need set as for gray_mc_parse_get, or an
 * error code: GRAY_EUNASKED for a reply that matches no request, GRAY_EREPLY
 * for one of a kind that was not asked for. Nothing is copied. */
int gray_mc_parse_meta(const char *buf, size_t len, const char *keys, size_t keys_len,
                       int mode, gray_mc_meta_t *vals, size_t *nvals, gray_mc_line_t *line,
                       size_t *need);

/* Writes the pipeline "mg <key> <flags> O<i>\r\n" for each key of keys (single
 * spaces between them, as gray_mc_parse_meta() takes them; i its position from
 * 0), then "mn\r\n", to out. flags as sent (e.g. "v q"; may be empty). Returns
 * the length, GRAY_EINVAL for a key gray_mc_key_ok() refuses (an empty one
 * too), or GRAY_ESPACE when cap is short. */
int gray_mc_meta_request(const char *keys, size_t keys_len, const char *flags, size_t flags_len,
                         char *out, size_t cap);

/* The request path's pipeline: "mg <key> v q O<i>\r\n" for each of the
 * (at most GRAY_MC_LIST_MAX) keys k1..k5 that is not NULL, in that order (i
 * its position among them from 0), then "mn\r\n", to out. The keys come
 * separate (no joined list to build) and already checked by the caller
 * with gray_mc_key_ok(): only their lengths are checked here. Returns the
 * length, GRAY_EINVAL for no key or a length out of 1..GRAY_MC_KEY_MAX, or
 * GRAY_ESPACE when cap is short. */
#define GRAY_MC_LIST_MAX   5
int gray_mc_meta_list(const char *k1, size_t l1, const char *k2, size_t l2, const char *k3,
                      size_t l3, const char *k4, size_t l4, const char *k5, size_t l5,
                      char *out, size_t cap);
/* ---- compiled list images (image.c, idlist.c, imagejob.c) -------------- */

/* A list image is one flat byte buffer holding a compiled id list or ranges
 * list: a fixed header, the target names, then the list's arrays, found by
 * offsets only (no pointers), each section 8-byte aligned, integers in the
 * compiling machine's byte order (an image never leaves its node). One
 * process compiles it to "<path>.tmp.<pid>.<n>" and renames that into
 * place; every worker maps the file read-only and looks up in the mapped
 * bytes. An image is never written in place: a new one is a new file. */

#define GRAY_IMAGE_IDS         1           /* kind: "id [target]" lines */
#define GRAY_IMAGE_RANGES      2           /* kind: "address|CIDR [target]" lines */
#define GRAY_IMAGE_FORMAT      1           /* the layout version written and read */
#define GRAY_IMAGE_REPORT      8           /* bad / unknown line numbers kept */
#define GRAY_ID_MAX            200         /* longest id (bytes); longer is a bad line */
#define GRAY_IMAGE_PARTS_MAX   1024        /* parts of one split list */
#define GRAY_IMAGE_PATH_MAX    4000        /* longest image path */
#define GRAY_IMAGE_VERIFY      1           /* gray_image_open flag: check every byte */

/* -20..-29: list images */
#define GRAY_ENOMEM    -20  /* out of memory */
#define GRAY_EIO       -21  /* a file could not be written, renamed, read or mapped */
#define GRAY_EIMAGE    -22  /* not a list image of this format (magic, version, kind) */
#define GRAY_ECORRUPT  -23  /* a truncated or corrupt list image */
#define GRAY_ECANCELED -24  /* a compile job was canceled */
#define GRAY_ELOCKED   -25  /* gray_lock_try(): another process holds the lock */

/* One piece of a list's text. Parts are joined with a line break after any
 * non-empty part that does not end with one, so no line spans two parts. */
typedef struct gray_image_part {
    const char *buf;
    size_t len;
} gray_image_part_t;

typedef struct gray_image_stats {
    uint32_t lines;             /* lines in the (joined) text */
    uint32_t taken;             /* lines compiled */
    uint32_t entries;           /* ids: distinct ids; ranges: lines compiled */
    uint32_t runs;              /* ranges: runs in the set; ids: 0 */
    uint32_t bad;               /* lines skipped as malformed */
    uint32_t unknown;           /* lines naming a target name not in names */
    uint32_t bad_lines[8];      /* the first GRAY_IMAGE_REPORT bad line numbers */
    uint32_t unknown_lines[8];  /* the first GRAY_IMAGE_REPORT unknown-name ones */
    uint32_t ntargets;          /* target names in the image */
    int32_t sys_errno;          /* errno of a GRAY_EIO, else 0 */
    uint64_t bytes;             /* the image's size */
    uint64_t wall_ns;           /* compile time, wall clock */
    uint64_t cpu_ns;            /* compile time, the compiling thread's CPU */
    uint32_t helper;            /* a job's compile: 1 in the helper process, 0 in
                                   the job's thread (gray_image_helper) */
    uint32_t reserved;
} gray_image_stats_t;

/* The image's hash of bytes: 64 bits, 8 bytes a step (murmur3's 64-bit
 * mixing); ids are found by it and the body checksum is it. */
uint64_t gray_image_hash(const char *buf, size_t len);

/* Compiles a list into a new image in memory (mapped for it: give it back
 * with gray_image_free_buf()). kind is GRAY_IMAGE_IDS or GRAY_IMAGE_RANGES; the
 * text is parts[0..nparts) joined as gray_image_part_t says; cas (the list's
 * memcached CAS) is stored as the image's version.
 * Both kinds: one entry per line, LF or CRLF, fields split by spaces, tabs
 * and CRs (for ids also VT and FF, as Lua's %s split them), '#' starts a
 * comment anywhere, blank lines are skipped, a third field or a name that
 * is not a target name (gray_target_name_ok) makes a bad line. Ids:
 * 1..GRAY_ID_MAX bytes, any bytes but those; of equal ids the later line
 * wins. Ranges: as gray_ranges_parse().
 * names: the target names separated by '\n' (the k-th, from 1, has index k,
 * a line without a name gets 1), each a target name (else GRAY_EINVAL), as
 * gray_ranges_parse() takes them; or NULL/0: collected from the list
 * itself, index 1 = "1", then each other name in order of first use (up to
 * GRAY_TARGETS_MAX). A name not in names makes the line unknown: it gets
 * index `unknown` (which may be past the names: the caller's "unknown
 * target"), or is skipped when that is 0. Returns GRAY_OK, GRAY_EINVAL (bad
 * kind, names, unknown over GRAY_TARGETS_MAX, sizes), GRAY_ENOMEM or
 * GRAY_ECANCELED; st is filled. */
int gray_image_build(int kind, const gray_image_part_t *parts, size_t nparts,
                     const char *names, size_t names_len, uint32_t unknown, uint64_t cas,
                     void **out, size_t *out_len, gray_image_stats_t *st);

void gray_image_free_buf(void *buf);

/* gray_image_build(), then the image written to "<path>.tmp.<pid>.<n>" and
 * renamed onto path (atomic for readers). Blocks: for tests, tools and
 * threads. GRAY_EIO with st->sys_errno when the file fails. */
int gray_image_compile(int kind, const gray_image_part_t *parts, size_t nparts,
                       const char *names, size_t names_len, uint32_t unknown, uint64_t cas,
                       const char *path, gray_image_stats_t *st);

/* ---- compiling off the event loop (imagejob.c) ---- */

typedef struct gray_image_job gray_image_job_t;
typedef struct gray_image gray_image_t;

#define GRAY_JOB_RUNNING 1      /* gray_image_poll(): not done yet */

/* A job built in steps, so that no call copies a whole list: a new job
 * (names and path copied, path NULL: in memory; GRAY_EINVAL, GRAY_ENOMEM), then each part added
 * as it arrives (its bytes copied; a part may come in several slices cut
 * after a line break: they are joined as parts are), then run:
 * gray_image_compile() in a detached thread at nice 19, all signals blocked in it (GRAY_EIO
 * when no thread starts). A job not run is freed by gray_image_job_free(). */
int gray_image_job_new(int kind, const char *names, size_t names_len, uint32_t unknown,
                       uint64_t cas, const char *path, gray_image_job_t **out);
int gray_image_job_add(gray_image_job_t *job, const char *buf, size_t len);
int gray_image_job_run(gray_image_job_t *job);

/* A job made with path NULL builds the image in memory (for a worker whose
 * image directory cannot be used). Once it is done (GRAY_OK), this opens
 * that image: *out owns the memory, gray_image_close() frees it. GRAY_EINVAL
 * for a job not done, failed, written to a file or already taken. */
int gray_image_job_image(gray_image_job_t *job, gray_image_t **out);

/* The three at once: starts gray_image_compile() in a thread. The parts (their bytes too), names and path are copied: the caller's
 * memory may go away while the thread runs (an nginx worker's Lua VM is
 * closed at its exit). *out gets the job. GRAY_EINVAL, GRAY_ENOMEM, or
 * GRAY_EIO when no thread starts. */
int gray_image_compile_start(int kind, const gray_image_part_t *parts, size_t nparts,
                             const char *names, size_t names_len, uint32_t unknown,
                             uint64_t cas, const char *path, gray_image_job_t **out);

/* GRAY_JOB_RUNNING, or the compile's result (GRAY_OK or an error code)
 * with *st filled (st may be NULL). Never blocks. */
int gray_image_poll(gray_image_job_t *job, gray_image_stats_t *st);

/* A job with an image path compiles in a helper process, gray-compile (the
 * executable beside the loaded libgray.so), not in the job's thread: its
 * own session, its autogroup at nice 19 and nice 19, so that on a busy
 * node the compile neither shares the worker's mmap_lock nor keeps the
 * workers' scheduling group busy. The job's thread hands it the text in a
 * memfd and waits for it (GRAY_HELPER_SECONDS at most: then it is killed
 * and the job fails; a freed job kills it too). Where it cannot start (no
 * such file, no memfd) the thread compiles as before.
 * gray_image_helper(path) sets the executable (NULL: the default beside the
 * library, "": none, compile in the thread; tests); returns the one in use
 * (NULL: none). */
#define GRAY_HELPER_SECONDS 120
const char *gray_image_helper(const char *path, int set);

/* Frees a finished job and returns GRAY_OK. A running one is asked to stop
 * (its result becomes GRAY_ECANCELED at its next check) and stays: this
 * returns GRAY_JOB_RUNNING and the caller frees it (and keeps the text
 * alive) until a call returns GRAY_OK. */
int gray_image_job_free(gray_image_job_t *job);

/* ---- mapped images (image.c) ---- */


/* Maps path read-only and checks it: size, magic, format, kind, the
 * header's checksum, every section inside the file and the bucket indexes
 * in order (O(buckets), no pass over the entries); with GRAY_IMAGE_VERIFY
 * also the body's checksum (a pass over every byte). *out gets the handle.
 * GRAY_EIO (with errno set), GRAY_EIMAGE, GRAY_ECORRUPT, GRAY_ENOMEM. */
int gray_image_open(const char *path, int flags, gray_image_t **out);

/* The same over an image in memory (8-byte aligned, kept alive and
 * unchanged by the caller until gray_image_close()). */
int gray_image_open_mem(const void *buf, size_t len, int flags, gray_image_t **out);

/* Reads only the header of the image at path: its CAS into *cas and its
 * kind (> 0) returned, or a negative code. For "has it changed?" checks. */
int gray_image_peek(const char *path, uint64_t *cas);

void gray_image_close(gray_image_t *img);

/* Lookups in the mapped bytes, no allocation, O(1) expected (a bucket of a
 * few entries, O(log n) at worst): the target index (1..ntargets, or the
 * compile's unknown index), 0 when not listed. find_id on a ranges image, or find_ip on an id image, is
 * GRAY_EINVAL; find_text is GRAY_EADDR for text that is not an address. */
int gray_image_find_id(const gray_image_t *img, const char *id, size_t len);
int gray_image_find_ip(const gray_image_t *img, const gray_ip_t *ip);
int gray_image_find_text(const gray_image_t *img, const char *s, size_t len);

/* The CAS the image was compiled from; its kind; what its compile counted
 * (wall_ns / cpu_ns / sys_errno are 0 here). */
uint64_t gray_image_version(const gray_image_t *img);
int gray_image_kind(const gray_image_t *img);
void gray_image_info(const gray_image_t *img, gray_image_stats_t *st);

/* Target name k (1..ntargets) into *len, or NULL. Points into the image. */
const char *gray_image_target(const gray_image_t *img, uint32_t k, size_t *len);

/* ---- the node's image directory (listdir.c) ---- */

/* Creates path (absolute) with mode 0700 if it is missing, then checks it
 * is a directory of this user's alone (no group or other bits) that it may
 * write. GRAY_OK, GRAY_EINVAL (not absolute, too long) or GRAY_EIO (errno
 * set: EPERM for a directory someone else could write). */
int gray_dir_prepare(const char *path);

/* Opens (creating, 0600) the lock file at path and takes flock(LOCK_EX)
 * without waiting: the fd (>= 0) while held, GRAY_ELOCKED when another open
 * file holds it, GRAY_EIO. The kernel frees it when the process dies. */
int gray_lock_try(const char *path);
int gray_lock_release(int fd);

/* Sets the held lock file's mtime to now: the holder says, each refresh,
 * that the list is in use (gray_image_clean_stale() spares it). */
int gray_lock_touch(int fd);

/* Removes the images of dir no process has used for max_age seconds: for
 * each "<name>.lock" older than that whose flock is free, "<name>.img"
 * then the lock file (a worker that still maps the image keeps its
 * mapping). Returns the images removed, or GRAY_EINVAL / GRAY_EIO. */
int gray_image_clean_stale(const char *dir, unsigned int max_age);

/* Removes "<path>.tmp.<pid>.<n>" files left by dead processes (and by this
 * one: call it with no job of yours running on path). Returns how many,
 * or GRAY_EINVAL / GRAY_EIO. */
int gray_image_clean_tmp(const char *path);

/* The process's effective user id (in a worker: the workers' user), which
 * names the default image directory. */
unsigned int gray_euid(void);

#ifdef __cplusplus
}
#endif

#endif /* GRAY_H */
