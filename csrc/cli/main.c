/* main.c - gray-admin's command line: one table of commands and one of
 * options, from which the parsing, the dispatch and --help come
 * (spec/admin_doc_spec.lua checks that gray-admin.1 documents exactly
 * these commands and options). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define ARGS_MAX 64                 /* positional arguments and --id options */
#define DONE     (-1)               /* an option's setter: exit 0 now (--help, --version) */

/* ---- the commands ---------------------------------------------------------- */

enum {
    TAKES_TTL   = 1,                /* --ttl */
    TAKES_CHECK = 2,                /* --id, --targets, --lists */
    OWN_ARGS    = 4,                /* parses what follows it itself (with its own
                                       options); first argument only; no memcached */
    TAKES_REASON = 8,               /* --reason */
};

typedef struct command {
    const char *name;               /* the first argument */
    cli_command_fn *fn;
    const char *usage;              /* one form of it */
    const char *help;               /* what that form does: lines of --help */
    unsigned flags;                 /* TAKES_*, OWN_ARGS */
} command_t;

/* In --help's order; a command with several forms has a row for each. */
static const command_t COMMANDS[] = {
    { "add", cli_cmd_add, "add <ip|cidr|name:id> [target] [--ttl S]",
      "ip       an address entry: key <key-prefix><canonical address>\n"
      "         (::ffff:1.2.3.4 is written as 1.2.3.4), value the target\n"
      "name:id  an identity entry, key as given (uid:42)\n"
      "cidr     a line of the ranges list (as 'ranges add'); no --ttl\n"
      "target   '1' (the default gray target, the default) or a target name\n"
      "         of the router's targets option; --ttl S expires the entry\n"
      "         after S seconds (0 = never, at most 2592000)", TAKES_TTL },
    { "remove", cli_cmd_remove, "remove <ip|cidr|name:id>",
      "deletes the entry (a cidr: its ranges line)", 0 },
    { "get", cli_cmd_get, "get <ip|cidr|name:id>",
      "prints the entry's value (a cidr: its ranges line); exit 1 when there\n"
      "is none", 0 },
    { "ranges", cli_cmd_ranges, "ranges add <ip|cidr> [target]",
      "adds or retargets a line of the ranges list", 0 },
    { "ranges", cli_cmd_ranges, "ranges remove <ip|cidr>",
      "removes its line(s)", 0 },
    { "ranges", cli_cmd_ranges, "ranges list",
      "prints the list (parts joined)", 0 },
    { "list", cli_cmd_list, "list <name> add <id> [target]",
      "adds or retargets an id in gray:list:<name>", 0 },
    { "list", cli_cmd_list, "list <name> remove <id>",
      "removes it", 0 },
    { "list", cli_cmd_list, "list <name> show",
      "prints the list (parts joined)", 0 },
    { "percent", cli_cmd_percent, "percent [N]",
      "sets the percentage (0 to 100, at most two decimals); without N\n"
      "prints it", 0 },
    { "ramp", cli_cmd_ramp, "ramp \"<schedule>\"",
      "starts a timed ramp now: writes <ramp-key> = '<unix seconds> <schedule>',\n"
      "the schedule as '5% 25%@10m 50%@30m 100%@1h' (the first step at once,\n"
      "then rising offsets in s, m or h; shares never fall), checked with the\n"
      "router's parser. While it exists each router takes the step in force\n"
      "from its own clock in place of the percentage (same buckets: nobody\n"
      "leaves as it rises); a halt of gray freezes it. Replaces a ramp there.", 0 },
    { "ramp", cli_cmd_ramp, "ramp stop",
      "deletes the ramp: the percentage is in force again", 0 },
    { "ramp", cli_cmd_ramp, "ramp",
      "prints the ramp: its start, the share in force and the next step", 0 },
    { "status", cli_cmd_status, "status [--targets T] [--lists L]",
      "prints what the routers read: the halts of gray and of the --targets\n"
      "names (since when, which node, why), the ramp (share in force, next\n"
      "step), the percentage, the ranges list and the --lists id lists\n"
      "(version: memcached's CAS; entries)", TAKES_CHECK },
    { "import", cli_cmd_import, "import <file>",
      "bulk entries, one per line as add's arguments\n"
      "('<ip|cidr|name:id> [target] [--ttl S]'; '#' comments and blank lines\n"
      "skipped; '-' reads stdin). Every line is checked before anything is\n"
      "written; ranges lines are written in one edit, holding the list's lock\n"
      "<key>:lock. Progress on stderr when it is a terminal.", 0 },
    { "check", cli_cmd_check, "check <ip> [--id name=value ...] [--targets T] [--lists L]",
      "prints what the router would decide and why: identity entries (in the\n"
      "order given), the address entry, id lists, the ranges list, the\n"
      "percentage (the ramp's share in force while there is one) and the bucket\n"
      "of the identity key (the first --id, else the address), with the\n"
      "router's targets and lists. The tester override\n"
      "(force) is per request and not shown.", TAKES_CHECK },
    { "token", cli_cmd_token, "token <target> --ttl D --secret-file F [--id NAME]",
      "prints a signed override token for target (always, never or a target\n"
      "name) valid for D (3600, 30m, 1h, 7d; at most 400d), keyed by the\n"
      "router's secret_file; with --id, a signed-cookie value for identity\n"
      "NAME instead. Must be the first argument after the options; needs no\n"
      "memcached.", OWN_ARGS },
    { "halt", cli_cmd_halt, "halt <target> [--reason TEXT]",
      "halts target (gray, the default one, or a name of the router's targets)\n"
      "on every node: adds <halt-key>:<target> = '<unix seconds> <node> <reason>'\n"
      "(node: gray-admin@<host>). Each router reads it within its\n"
      "refresh_interval and sends the target's requests to stable (reason\n"
      "halted; the tester override still reaches it). A halt already there\n"
      "stands and is printed.", TAKES_REASON },
    { "resume", cli_cmd_resume, "resume <target>",
      "deletes the halt of target: the routers route to it again within their\n"
      "refresh_interval. For gray, a ramp's start moves on by the halt's duration\n"
      "first (CAS): the ramp goes on from the step the halt froze", 0 },
};
#define NCOMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static const command_t *find_command(const char *name)
{
    for (size_t k = 0; k < NCOMMANDS; k++)
        if (strcmp(name, COMMANDS[k].name) == 0)
            return &COMMANDS[k];
    return NULL;
}

/* ---- the options ------------------------------------------------------------ */

/* What the options set. */
typedef struct parsed {
    cli_opts_t opts;
    cli_args_t args;
    const char *check_only;         /* an option given that only check takes */
} parsed_t;

typedef struct option {
    const char *name;               /* "--servers" */
    const char *alias;              /* "-v", or NULL */
    const char *arg;                /* the value's name; NULL: takes none */
    const char *help;               /* lines of --help */
    int (*set)(parsed_t *p, const char *value); /* 0, DONE or an exit code (printed) */
} option_t;

static int set_servers(parsed_t *p, const char *v)
{
    p->opts.servers = v;
    p->opts.servers_from = "--servers";
    return 0;
}

static int set_distribution(parsed_t *p, const char *v)
{
    p->opts.distribution = v;
    return 0;
}

static int set_key_prefix(parsed_t *p, const char *v)
{
    if (strlen(v) > 200 || (v[0] && !gray_mc_key_ok(v, strlen(v))))
        return cli_usage_error("bad --key-prefix '%s' (at most 200 bytes without"
                               " spaces or control bytes)", v);
    p->opts.key_prefix = v;
    return 0;
}

static int set_ranges_key(parsed_t *p, const char *v)
{
    if (!gray_mc_key_ok(v, strlen(v)))
        return cli_usage_error("bad --ranges-key '%s'", v);
    p->opts.ranges_key = v;
    return 0;
}

static int set_percent_key(parsed_t *p, const char *v)
{
    if (!gray_mc_key_ok(v, strlen(v)))
        return cli_usage_error("bad --percent-key '%s'", v);
    p->opts.percent_key = v;
    return 0;
}

static int set_halt_key(parsed_t *p, const char *v)
{
    if (!gray_mc_key_ok(v, strlen(v)))
        return cli_usage_error("bad --halt-key '%s'", v);
    p->opts.halt_key = v;
    return 0;
}

static int set_reason(parsed_t *p, const char *v)
{
    p->args.reason = v;
    return 0;
}

static int set_timeout(parsed_t *p, const char *v)
{
    long ms = cli_parse_count(v, 600000);
    if (ms < 1 || ms > 600000)
        return cli_usage_error("bad --timeout '%s' (milliseconds, 1 to 600000)", v);
    p->opts.timeout_ms = (unsigned)ms;
    return 0;
}

static int set_part_size(parsed_t *p, const char *v)
{
    long b = cli_parse_count(v, CLI_PART_BYTES);
    if (b < 64 || b > (long)CLI_PART_BYTES)
        return cli_usage_error("bad --part-size '%s' (bytes, 64 to 921600)", v);
    p->opts.part_bytes = (size_t)b;
    return 0;
}

static int set_ramp_key(parsed_t *p, const char *v)
{
    if (!gray_mc_key_ok(v, strlen(v)))
        return cli_usage_error("bad --ramp-key '%s'", v);
    p->opts.ramp_key = v;
    return 0;
}

static int set_ttl(parsed_t *p, const char *v)
{
    p->args.ttl = cli_parse_count(v, CLI_TTL_MAX);
    if (p->args.ttl < 0)
        return cli_usage_error("bad --ttl '%s' (seconds, 0 to 2592000)", v);
    return 0;
}

static int set_id(parsed_t *p, const char *v)
{
    if (p->args.nids == ARGS_MAX)
        return cli_usage_error("%s", "too many --id");
    p->args.ids[p->args.nids++] = (char *)v;
    return 0;
}

static int set_targets(parsed_t *p, const char *v)
{
    p->opts.targets = v;
    p->check_only = "--targets";
    return 0;
}

static int set_lists(parsed_t *p, const char *v)
{
    p->opts.lists = v;
    p->check_only = "--lists";
    return 0;
}

static int set_verbose(parsed_t *p, const char *v)
{
    (void)v;
    p->opts.verbose = 1;
    return 0;
}

static int print_help(parsed_t *p, const char *v);

static int print_version(parsed_t *p, const char *v)
{
    (void)p;
    (void)v;
    puts("gray-admin " GRAY_VERSION);
    return DONE;
}

/* In --help's order. */
static const option_t OPTIONS[] = {
    { "--servers", NULL, "LIST",
      "memcached servers, $gray_memcached syntax:\n"
      "\"127.0.0.1:11211, [::1]:11212\"; hosts are IP addresses,\n"
      "hashed as written: give the router the same text.\n"
      "Else MEMCACHED_SERVERS (an invalid one is an error),\n"
      "else " CLI_SERVERS_DEFAULT " (-v says which)", set_servers },
    { "--distribution", NULL, "M",
      "key placement with several servers, as the router's\n"
      "distribution: ketama (default), ketama-weighted\n"
      "(weights written host:port/?N) or modula", set_distribution },
    { "--key-prefix", NULL, "P",
      "the router's key_prefix for address keys (default none)", set_key_prefix },
    { "--ranges-key", NULL, "K", "the router's ranges_key (default gray:ranges)",
      set_ranges_key },
    { "--percent-key", NULL, "K", "the router's percent_key (default gray:percent)",
      set_percent_key },
    { "--halt-key", NULL, "K", "the router's halt_key (default gray:halt)", set_halt_key },
    { "--reason", NULL, "TEXT", "halt: why (one line, in the halt's value)", set_reason },
    { "--timeout", NULL, "MS", "connect and I/O timeout (default 2000)", set_timeout },
    { "--part-size", NULL, "BYTES", "split lists above this size (default 921600)",
      set_part_size },
    { "--ramp-key", NULL, "K", "the router's ramp_key (default gray:ramp)", set_ramp_key },
    { "--ttl", NULL, "S", "add, import: entry lifetime in seconds", set_ttl },
    { "--id", NULL, "name=value", "check: an identity (up to 4, in the router's order)",
      set_id },
    { "--targets", NULL, "T",
      "check, status: the router's targets, as $gray_targets\n"
      "(\"v2=@server_v2, v3=@server_v3\", or just \"v2, v3\"); a\n"
      "value naming none of them (nor 1 or stable) is stable", set_targets },
    { "--lists", NULL, "L",
      "check, status: the router's id lists, as $gray_lists (\"dev\");\n"
      "the lists of other identities are not read", set_lists },
    { "--verbose", "-v", NULL, "more messages on stderr", set_verbose },
    { "--help", "-h", NULL, "this text", print_help },
    { "--version", NULL, NULL, "prints gray-admin <version>", print_version },
};
#define NOPTIONS (sizeof OPTIONS / sizeof OPTIONS[0])

/* ---- --help ------------------------------------------------------------------- */

/* text's lines, the first after what is already on the line, the others
 * indented by indent. */
static void print_lines(const char *text, int indent)
{
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (p != text)
            printf("%*s", indent, "");
        printf("%.*s\n", (int)n, p);
        p += n + (nl != NULL);
    }
}

static int print_help(parsed_t *p, const char *v)
{
    (void)p;
    (void)v;
    fputs("usage: gray-admin [options] <command> [arguments]\n"
          "\n"
          "Edits the memcached entries, lists and percentage that lua-resty-gray reads,\n"
          "in the router's formats and with its key placement.\n"
          "\n"
          "Commands:\n", stdout);
    for (size_t k = 0; k < NCOMMANDS; k++) {
        printf("  %s\n      ", COMMANDS[k].usage);
        print_lines(COMMANDS[k].help, 6);
    }
    fputs("\n"
          "List edits read the list, change it and write it back with CAS, again on a\n"
          "conflict (up to 100 times), so concurrent edits never lose a line. An edit\n"
          "first waits while an import holds the list's lock <key>:lock (at most 60 s).\n"
          "A list over one memcached item is written in parts (<key>:<tag>:<i>) under\n"
          "the header '#gray-parts <n> <tag>', as the router reads it; old parts\n"
          "expire 60 s after a rewrite.\n"
          "\n"
          "Options:\n", stdout);
    for (size_t k = 0; k < NOPTIONS; k++) {
        const option_t *o = &OPTIONS[k];
        char head[64];
        snprintf(head, sizeof head, "%s%s%s%s%s", o->alias ? o->alias : "",
                 o->alias ? ", " : "", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        printf("  %-20s", head);
        if (strlen(head) >= 20)
            printf("\n%22s", "");
        print_lines(o->help, 22);
    }
    fputs("\n"
          "Exit status: 0 done, 1 get found nothing, 2 bad arguments (or server list,\n"
          "or an import file that cannot be read), 3 memcached failed, 4 a list edit\n"
          "still conflicted after its retries, or the list was still locked by an\n"
          "import after 60 s.\n", stdout);
    return DONE;
}

/* ---- parsing and dispatch ---------------------------------------------------- */

/* The option argv[*i] names ("--name value", "--name=value", or the alias):
 * its row and in *value its value (NULL: none), or NULL when none does. */
static const option_t *find_option(int argc, char **argv, int *i, const char **value,
                                   int *missing)
{
    const char *a = argv[*i];
    *missing = 0;
    for (size_t k = 0; k < NOPTIONS; k++) {
        const option_t *o = &OPTIONS[k];
        size_t nl = strlen(o->name);
        if (o->arg == NULL) {
            if (strcmp(a, o->name) == 0 || (o->alias && strcmp(a, o->alias) == 0)) {
                *value = NULL;
                return o;
            }
            continue;
        }
        if (strncmp(a, o->name, nl) != 0 || (a[nl] != '=' && a[nl] != '\0'))
            continue;
        if (a[nl] == '=') {
            *value = a + nl + 1;
        } else if (*i + 1 >= argc) {
            *missing = 1;
            return o;
        } else {
            *value = argv[++*i];
        }
        return o;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    char *pos[ARGS_MAX], *ids[ARGS_MAX];
    parsed_t p = {
        .opts = {
            .servers = CLI_SERVERS_DEFAULT, .distribution = "ketama", .key_prefix = "",
            .ranges_key = "gray:ranges", .percent_key = "gray:percent", .targets = "",
            .halt_key = "gray:halt",
            .lists = "", .timeout_ms = 2000, .part_bytes = CLI_PART_BYTES, .verbose = 0,
            .ramp_key = "gray:ramp",
        },
        .args = { .pos = pos, .npos = 0, .ttl = -1, .ids = ids, .nids = 0, .reason = NULL },
    };
    int dashdash = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (dashdash || a[0] != '-' || strcmp(a, "-") == 0) {
            const command_t *own = p.args.npos == 0 ? find_command(a) : NULL;
            if (own && (own->flags & OWN_ARGS)) {
                cli_args_t rest = { .pos = argv + i + 1, .npos = argc - i - 1, .ttl = -1 };
                return own->fn(NULL, &p.opts, &rest);
            }
            if (p.args.npos == ARGS_MAX)
                return cli_usage_error("%s", "too many arguments");
            pos[p.args.npos++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            dashdash = 1;
            continue;
        }
        const char *v = NULL;
        int missing;
        const option_t *o = find_option(argc, argv, &i, &v, &missing);
        if (o == NULL)
            return cli_usage_error("unknown option '%s'", a);
        if (missing)
            return cli_usage_error("option %s needs a value", o->name);
        int rc = o->set(&p, v);
        if (rc != 0)
            return rc == DONE ? 0 : rc;
    }
    if (p.args.npos == 0)
        return cli_usage_error("%s", "no command given");
    const command_t *cmd = find_command(pos[0]);
    if (cmd == NULL)
        return cli_usage_error("unknown command '%s'", pos[0]);
    if (p.args.ttl >= 0 && !(cmd->flags & TAKES_TTL))
        return cli_usage_error("%s", "--ttl is for add (and inside import files)");
    if (p.args.nids > 0 && !(cmd->flags & TAKES_CHECK))
        return cli_usage_error("%s", "--id is for check");
    if (p.args.reason && !(cmd->flags & TAKES_REASON))
        return cli_usage_error("%s", "--reason is for halt");
    if (p.check_only && !(cmd->flags & TAKES_CHECK))
        return cli_usage_error("%s is for check", p.check_only);

    memcached_st *mc = cli_connect(&p.opts);
    if (mc == NULL)
        return EXIT_USAGE;
    int rc = cmd->fn(mc, &p.opts, &p.args);
    memcached_free(mc);
    return rc;
}
