/*
 * cli.h - gray-admin: the memcached entries, lists and percentage that the
 * router reads, written with libmemcached in exactly the router's formats
 * (see lua/gray/lists.lua and the Targeting section of the README).
 */
#ifndef GRAY_CLI_H
#define GRAY_CLI_H

#include <stddef.h>
#include <stdint.h>

#include <libmemcached-1.0/memcached.h>

#include "../gray.h"

/* ---- limits and exit codes ---------------------------------------------- */

#define CLI_SERVERS_MAX   64        /* servers in --servers */
#define CLI_SERVERS_DEFAULT "127.0.0.1:11211" /* without --servers and MEMCACHED_SERVERS */
#define CLI_PART_BYTES    (900u * 1024u) /* a list value above this is split:
                                      memcached's item limit is 1 MB including
                                      the key and the item header */
#define CLI_PARTS_MAX     1024      /* the router reads at most this many parts */
#define CLI_LIST_WARN     (32u << 20) /* the router's default list_max */
#define CLI_OLD_PARTS_TTL 60        /* s an old part lives after a rewrite, for a
                                      router reading the previous version */
#define CLI_CAS_TRIES     100       /* read-change-write cycles before giving up */
#define CLI_READ_TRIES    5         /* reads of a list with a part missing */
#define CLI_TTL_MAX       2592000   /* memcached reads a larger exptime as a date */
#define CLI_ID_VALUE_MAX  200       /* the router ignores longer id values */
#define CLI_ID_NAME_MAX   32
#define CLI_TARGET_MAX    GRAY_TARGET_NAME_MAX

#define EXIT_NOTFOUND 1             /* get: no such entry */
#define EXIT_USAGE    2             /* bad arguments, a bad server list, or an
                                       import file that cannot be read */
#define EXIT_STORE    3             /* memcached failed */
#define EXIT_CONFLICT 4             /* CAS retries exhausted, or the list still
                                       locked by an import (<key>:lock) after
                                       the 60 s an edit waits for it */

/* ---- the connection and key names (store.c) ------------------------------ */

typedef struct cli_opts {
    const char *servers;            /* the $gray_memcached syntax */
    const char *servers_from;       /* "--servers" when given; NULL: cli_connect
                                       takes MEMCACHED_SERVERS, else servers */
    const char *distribution;       /* "ketama" (default), "ketama-weighted", "modula" */
    const char *key_prefix;         /* prepended to address keys ("") */
    const char *ranges_key;         /* "gray:ranges" */
    const char *percent_key;        /* "gray:percent" */
    const char *halt_key;           /* "gray:halt": halts are <halt_key>:<target> */
    const char *targets;            /* check: the router's targets ("v2=@a, v3"), or "" */
    const char *lists;              /* check: the router's lists ("dev, uid"), or "" */
    const char *ramp_key;           /* "gray:ramp" */
    unsigned timeout_ms;            /* connect and poll timeout */
    size_t part_bytes;              /* split lists above this (CLI_PART_BYTES) */
    int verbose;
} cli_opts_t;

/* Parses "host:port[, host:port...]" (IPv6 as [addr]:port, addresses only)
 * with the router's rule (gray_servers_parse) into hosts (as written, without
 * brackets: what libmemcached hashes), ports and weights. Returns the count,
 * or -1 with a message in err. */
int cli_parse_servers(const char *spec, char hosts[][GRAY_IP_TEXT_MAX], unsigned *ports,
                      unsigned *weights, int max, char *err, size_t errlen);

/* A libmemcached handle for opts (servers, distribution, timeouts), or NULL
 * after printing why. */
memcached_st *cli_connect(const cli_opts_t *opts);

/* A value read with memcached_get; value is malloc'd (NULL: not found). */
typedef struct cli_value {
    char *value;
    size_t len;
    uint64_t cas;
    uint32_t flags;                 /* memcached's client flags of the item */
} cli_value_t;

/* gets key: 0 (found or not: v->value NULL), or -1 after printing why. */
int cli_gets(memcached_st *mc, const char *key, cli_value_t *v);

/* The message for a failed call. */
const char *cli_mc_error(memcached_st *mc, memcached_return_t rc);

/* Deletes key: 0; EXIT_NOTFOUND when there was none, after printing
 * "gray-admin: <before><key><after>"; EXIT_STORE (printed) when memcached
 * failed. */
int cli_delete(memcached_st *mc, const char *key, const char *before, const char *after);

/* ---- lists: read, edit, write back with CAS (listedit.c) ---------------- */

enum { LIST_RANGES = 1, LIST_IDS = 2 };

/* One change: the entry's normalised key and its line ("" when removing). */
typedef struct cli_edit {
    char *key;                      /* malloc'd */
    char *line;                     /* malloc'd, NULL: remove */
} cli_edit_t;

/* A ranges line's first field in normal form: the canonical network and
 * "/n" (no "/n" for a full-length prefix); a bare address in its canonical
 * text, as the router keys a client (::ffff:1.2.3.4 is 1.2.3.4). Returns
 * its length, or a
 * negative code (GRAY_EADDR, GRAY_EPREFIX, GRAY_EINVAL: covers no address
 * the router matches). out holds GRAY_IP_TEXT_MAX + 4. */
int cli_cidr_normal(const char *s, size_t len, char *out);

/* A list as read for an edit: its whole text (parts joined) and what
 * writing it back needs. */
typedef struct cli_list {
    const char *key;                /* set by the caller */
    char *text;                     /* malloc'd, NULL: no key */
    size_t len;
    uint64_t cas;                   /* of the key (the parts header when split) */
    int exists;
    char tag[32];                   /* the parts' tag when split, else "" */
    unsigned parts;                 /* the parts it is split in, 0: not split */
} cli_list_t;

/* Reads list->key with gets, parts joined, into list. Returns 0, or -1 on a
 * failure (printed; a part still missing after CLI_READ_TRIES reads is
 * one). Free with cli_list_free. */
int cli_list_read(memcached_st *mc, cli_list_t *list);
void cli_list_free(cli_list_t *list);

/* Applies edits (in order) to the list under key and writes it back with
 * CAS, split when over opts->part_bytes, retried on conflict; first waits
 * (at most 60 s) while an import holds the list's lock <key>:lock. kind says how
 * lines are keyed. *changed counts the lines added, replaced or removed.
 * Returns 0 or an EXIT_* code (printed). */
int cli_list_edit(memcached_st *mc, const cli_opts_t *opts, const char *key, int kind,
                  const cli_edit_t *edits, size_t nedits, size_t *changed);

/* As cli_list_edit, for an import: holds the list's lock <key>:lock (taken
 * with add, renewed, LOCK_TTL s; released when done) so that the one-line
 * edits, which wait for it, cannot starve it. */
int cli_list_edit_locked(memcached_st *mc, const cli_opts_t *opts, const char *key, int kind,
                         const cli_edit_t *edits, size_t nedits, size_t *changed);

/* The key of a line in a list of kind (normal form of its first field), into
 * out (cap >= 256); 0 for a blank, comment or unparsable line. */
size_t cli_line_key(int kind, const char *line, size_t len, char *out, size_t cap);

/* ---- the decision (check.c) ----------------------------------------------- */

/* The router's percentage: "0".."100", at most two decimals, spaces around
 * allowed. Returns percent * 100 (0..10000), or -1 when it is not one. */
long cli_parse_percent(const char *s, size_t len);

/* ---- arguments (args.c) --------------------------------------------------- */

/* Prints "gray-admin: " and fmt with arg (one %s) on stderr, and a pointer
 * to --help (or, while import checks a file, the line number, for the
 * first few bad lines only). Returns EXIT_USAGE. */
int cli_usage_error(const char *fmt, const char *arg);

/* The import file line that messages name from now on; 0: none. */
void cli_import_line(size_t line);

/* 1 when name is an identity / list name the router accepts: letters,
 * digits, '_' and '-', at most CLI_ID_NAME_MAX, holding a letter past 'f'
 * (or '_' or '-') so that "name:value" never reads as IPv6, and not "gray"
 * (whose keys are the router's own). */
int cli_id_name_ok(const char *name, size_t len);

/* 1 when s may be a target name: gray_target_name_ok(), the router's rule
 * ("1" or up to CLI_TARGET_MAX printable bytes without '#', not "0"). */
int cli_target_ok(const char *s);

/* 0 when target is NULL or cli_target_ok(), else EXIT_USAGE (printed). */
int cli_check_target(const char *target);

/* The message for cli_cidr_normal()'s error code about arg; EXIT_USAGE. */
int cli_cidr_error(int code, const char *arg);

enum { CLI_THING_ADDR = 1, CLI_THING_ID, CLI_THING_RANGE };

/* What add/remove/get's first argument names. */
typedef struct cli_thing {
    int kind;                       /* CLI_THING_* */
    char key[GRAY_MC_KEY_MAX + 1];  /* the entry key, or the normal CIDR */
} cli_thing_t;

/* An address (its key: key prefix and canonical text), a CIDR (its normal
 * form) or name:id (the key as given; never the ranges or percent key or
 * one of their parts). 0 or EXIT_USAGE (printed). */
int cli_classify(const cli_opts_t *opts, const char *arg, cli_thing_t *t);

/* "<first field>[ <target>]": a list line (malloc'd, NULL: no memory). */
char *cli_list_line(const char *first, const char *target);

/* A decimal number of at most 9 digits, 0..max; -1 when it is not one. */
long cli_parse_count(const char *s, long max);

/* ---- commands (commands.c, import.c, check.c, token.c) --------------------- */

/* What a command is given: its positional arguments (pos[0] is the command;
 * for token, what follows it, its own options included) and the options
 * only some commands take. */
typedef struct cli_args {
    char **pos;
    int npos;
    long ttl;                       /* add: --ttl S, -1: not given */
    char **ids;                     /* check: --id name=value, in order */
    int nids;
    const char *reason;             /* halt: --reason TEXT, NULL: not given */
} cli_args_t;

/* One import line (import.c). */
typedef struct import_line {
    int kind;                   /* CLI_THING_*, 0: blank or comment */
    char key[GRAY_MC_KEY_MAX + 1];  /* the entry key, or the normal CIDR */
    const char *target;         /* into the line; NULL: "1" */
    long ttl;                   /* -1: none */
} import_line_t;

/* Checks an import line (len bytes, NUL-terminated; cut up in place; len
 * -2: longer than the limit) as add's arguments: 0 with *out (kind 0: a
 * blank or comment line), or EXIT_USAGE after naming the line. */
int cli_import_parse_line(const cli_opts_t *opts, char *line, long len, import_line_t *out);

/* A command (main.c's table): returns the exit code, having printed what
 * went wrong. mc is NULL for token, which needs no memcached. */
typedef int cli_command_fn(memcached_st *mc, const cli_opts_t *opts, const cli_args_t *args);

cli_command_fn cli_cmd_add, cli_cmd_remove, cli_cmd_get, cli_cmd_ranges, cli_cmd_list,
    cli_cmd_percent, cli_cmd_import;

/* check <ip> [--id name=value ...] (check.c): prints what the router would
 * decide for the address and the identities. */
cli_command_fn cli_cmd_check;

/* token <subject> --ttl D --secret-file F [--id NAME] (token.c): no
 * memcached, the secret file is all it reads. */
cli_command_fn cli_cmd_token;

/* ramp ["<schedule>"|stop], status (ramp.c): the timed ramp's key, written
 * as "<now> <schedule>" or deleted; what the routers read, printed. */
cli_command_fn cli_cmd_ramp, cli_cmd_status;

/* The share in force of the ramp (ramp_key) now, as the routers take it
 * (percent * 100; frozen at the halt's time while gray is halted), printed
 * as a line of check; -1 when there is none (or it does not parse), -2 on
 * a failure (printed). */
long cli_ramp_share(memcached_st *mc, const cli_opts_t *opts);
/* Before the resume of gray, halted since halted_at (unix seconds): the
 * ramp (ramp_key), if any, has its start moved on by the halt's duration,
 * written with CAS, so that the routers go on from the step frozen at the
 * halt's time (now - start becomes halted_at - start) and its later steps
 * come that much later; a line says so. 0, or EXIT_STORE (printed). */
int cli_ramp_resume(memcached_st *mc, const cli_opts_t *opts, int64_t halted_at);
/* A halt value's time, "<unix seconds> <node> <reason>", as the routers
 * read it (gray.halt.since): digits first, then a blank; 0 when it has none. */
int64_t cli_halt_at(const char *value);
/* halt <target> [--reason TEXT], resume <target> (halt.c): the fleet-wide
 * halt key <halt_key>:<target>, added or deleted (resume gray: the ramp's
 * clock moved on first, cli_ramp_resume). */
cli_command_fn cli_cmd_halt, cli_cmd_resume;

/* Sets an entry: value target ("1" when NULL), ttl seconds (0: none). */
int cli_set_entry(memcached_st *mc, const char *key, const char *target, long ttl);

#endif /* GRAY_CLI_H */
