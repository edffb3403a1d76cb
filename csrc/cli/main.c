/* main.c - gray-admin's command line: one table of commands and one of
 * options, from which the parsing, the dispatch, --help and the man page's
 * COMMANDS section (--man; the Makefile builds build/gray-admin.1 from
 * gray-admin.1.in and it) come. spec/admin_doc_spec.lua checks the page. */
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
    const char *more;               /* the man page's further sentences, or NULL */
    unsigned flags;                 /* TAKES_*, OWN_ARGS */
} command_t;

/* In --help's order; a command with several forms has a row for each.
 * usage and help are written once for --help and the man page (--man):
 * <x> is a placeholder (italic in the page), other words of usage are
 * literal (bold); help is what --help prints, more what only the page adds. */
static const command_t COMMANDS[] = {
    { "add", cli_cmd_add, "add <ip|cidr|name:id> [<target>] [--ttl <S>]",
      "<ip> writes the address entry (key: the key prefix, then the\n"
      "canonical address; ::ffff:1.2.3.4 is written 1.2.3.4); <name>:<id>\n"
      "writes the identity entry as given (uid:42); <cidr> adds a line of the\n"
      "ranges list (as 'ranges add'; no --ttl). <target> is 1 (the default\n"
      "gray target, the default) or a target name of the router's targets\n"
      "option; --ttl <S> expires the entry after <S> seconds (0: never, at\n"
      "most 2592000)",
      NULL, TAKES_TTL },
    { "remove", cli_cmd_remove, "remove <ip|cidr|name:id>",
      "deletes the entry (a cidr: its ranges line)", NULL, 0 },
    { "get", cli_cmd_get, "get <ip|cidr|name:id>",
      "prints the entry's value (a cidr: its ranges line); exit status 1 when\n"
      "there is none", NULL, 0 },
    { "ranges", cli_cmd_ranges, "ranges add <ip|cidr> [<target>]",
      "adds or retargets a line of the ranges list", NULL, 0 },
    { "ranges", cli_cmd_ranges, "ranges remove <ip|cidr>",
      "removes its line(s)", NULL, 0 },
    { "ranges", cli_cmd_ranges, "ranges list",
      "prints the list, parts joined", NULL, 0 },
    { "list", cli_cmd_list, "list <name> add <id> [<target>]",
      "adds or retargets an id in gray:list:<name>", NULL, 0 },
    { "list", cli_cmd_list, "list <name> remove <id>",
      "removes it", NULL, 0 },
    { "list", cli_cmd_list, "list <name> show",
      "prints the list, parts joined", NULL, 0 },
    { "percent", cli_cmd_percent, "percent [<N>]",
      "sets the percentage (0 to 100, at most two decimals); without <N>\n"
      "prints it", NULL, 0 },
    { "ramp", cli_cmd_ramp, "ramp \"<schedule>\"",
      "starts a timed ramp now: writes <ramp-key> (default gray:ramp) as\n"
      "'<unix-seconds> <schedule>', the schedule checked with the router's own\n"
      "parser. A schedule is steps split by spaces, such as\n"
      "\"5% 25%@10m 50%@30m 100%@1h\": a share (0 to 100, at most two decimals,\n"
      "then %) and, from the second step on, @ and its offset from the start\n"
      "in s, m or h. Offsets rise strictly and shares never fall; at most 64\n"
      "steps. While the key exists each router takes the step in force from\n"
      "its own clock in place of the percentage (same buckets: nobody leaves\n"
      "as it rises); a halt of gray freezes it. Replaces a ramp there (its\n"
      "clock starts again)", NULL, 0 },
    { "ramp", cli_cmd_ramp, "ramp stop",
      "deletes the ramp: the percentage is in force again", NULL, 0 },
    { "ramp", cli_cmd_ramp, "ramp",
      "prints the ramp: its start, the share in force and the next step", NULL, 0 },
    { "status", cli_cmd_status, "status [--targets <T>] [--lists <L>]",
      "prints what the routers read: the halts of gray and of the --targets\n"
      "names (since when, which node, why), the ramp (the share in force and\n"
      "the next step, or the share a halt froze), the percentage, the ranges\n"
      "list and the id lists of --lists (version: memcached's CAS; entries,\n"
      "compiled as the router compiles them)", NULL, TAKES_CHECK },
    { "import", cli_cmd_import, "import <file>",
      "bulk entries, one per line as add's arguments\n"
      "('<ip|cidr|name:id> [<target>] [--ttl <S>]'); lines starting with # and\n"
      "blank lines are skipped; - reads standard input. Every line is checked\n"
      "before anything is written; ranges lines are written in one edit,\n"
      "holding the list's lock <key>:lock. Progress goes to standard error\n"
      "when it is a terminal",
      "The lock makes one-line edits wait for the import instead of racing it.",
      0 },
    { "check", cli_cmd_check, "check <ip> [--id <name>=<value> ...] [--targets <T>] [--lists <L>]",
      "prints what the router would decide for a request from <ip> and why:\n"
      "identity entries (in the order given), the address entry, id lists,\n"
      "the ranges list, the percentage (the ramp's share in force while there\n"
      "is one) and the bucket of the identity key (the first --id, else the\n"
      "address), with the router's targets and lists. The tester override\n"
      "(force) is per request and not shown",
      "--targets and --lists take the router's settings of those names\n"
      "($gray_targets, $gray_lists), so that check follows the router's rules\n"
      "exactly.", TAKES_CHECK },
    { "token", cli_cmd_token, "token <target> --ttl <D> --secret-file <F> [--id <NAME>]",
      "prints a signed override token for <target> (always, never or a target\n"
      "name) valid for <D> (3600, 30m, 1h, 7d; at most 400d), keyed by the\n"
      "router's secret_file <F>; with --id, a signed-cookie value for identity\n"
      "<NAME> instead. Must be the first argument after the options; needs no\n"
      "memcached",
      "The token is an HMAC-SHA256 with the secret read from <F>, the router's\n"
      "$gray_secret_file; the --id value is that of a signed-cookie identity\n"
      "of $gray_ids.", OWN_ARGS },
    { "halt", cli_cmd_halt, "halt <target> [--reason <TEXT>]",
      "halts <target> (gray, the default one, or a name of the router's\n"
      "targets) on every node: adds <halt-key>:<target> =\n"
      "'<unix-seconds> <node> <reason>' on one line (node: gray-admin@<host>).\n"
      "Each router reads it within its refresh_interval and sends the target's\n"
      "requests to stable (reason halted; the tester override still reaches\n"
      "it). A halt already there stands and is printed", NULL, TAKES_REASON },
    { "resume", cli_cmd_resume, "resume <target>",
      "deletes the halt of <target>: the routers route to it again within\n"
      "their refresh_interval. For gray, a ramp's start (<ramp-key>) first\n"
      "moves on by the halt's duration, with CAS: the ramp goes on from the\n"
      "step the halt froze, its later steps that much later",
      "The time moved is first claimed on the halt, written back with CAS, its\n"
      "value unchanged and the claim's time in its flags: a resume run again\n"
      "(after a failed delete) or two at once move the ramp by each second of\n"
      "the halt once.", 0 },
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
static int print_man(parsed_t *p, const char *v);

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
    /* not in --help: the Makefile builds build/gray-admin.1 with it */
    { "--man", NULL, NULL, NULL, print_man },
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
        if (o->help == NULL)
            continue;
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

/* ---- --man: the man page's COMMANDS section --------------------------------- */

static int word_char(char c)
{
    return c == '-' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* text as roff text lines: <x> in italics (without the brackets; its | and :
 * upright), options (--x) in bold, and in usage (a .TP tag) every other word
 * too; \ and - escaped, a line's leading . or ' made text, leading blanks
 * dropped. */
static void put_roff(const char *text, int usage)
{
    int bol = 1, italic = 0, bold = 0;
    for (const char *p = text; *p; p++) {
        char c = *p;
        int word = !italic && word_char(c)
                   && (usage || bold || (c == '-' && p[1] == '-'
                                         && (p == text || !word_char(p[-1]))));
        if (bold && !word) {
            fputs("\\fR", stdout);
            bold = 0;
        }
        if (bol && (c == ' ' || c == '\t'))
            continue;
        if (bol && (c == '.' || c == '\''))
            fputs("\\&", stdout);
        bol = c == '\n';
        if (c == '<' && !italic) {
            fputs("\\fI", stdout);
            italic = 1;
        } else if (c == '>' && italic) {
            fputs("\\fR", stdout);
            italic = 0;
        } else {
            if (word && !bold) {
                fputs("\\fB", stdout);
                bold = 1;
            }
            if (italic && (c == '|' || c == ':'))
                printf("\\fR%c\\fI", c);
            else if (c == '\\')
                fputs("\\e", stdout);
            else if (c == '-')
                fputs("\\-", stdout);
            else
                putchar(c);
        }
    }
    if (bold || italic)
        fputs("\\fR", stdout);
}

/* .SH COMMANDS: for each row a paragraph tagged with its usage, its help as
 * a sentence (capitalised, with its full stop), then its more. */
static int print_man(parsed_t *p, const char *v)
{
    (void)p;
    (void)v;
    puts(".SH COMMANDS");
    for (size_t k = 0; k < NCOMMANDS; k++) {
        const command_t *c = &COMMANDS[k];
        size_t n = strlen(c->help);
        puts(".TP");
        put_roff(c->usage, 1);
        putchar('\n');
        if (c->help[0] >= 'a' && c->help[0] <= 'z') {
            putchar(c->help[0] - 'a' + 'A');
            put_roff(c->help + 1, 0);
        } else {
            put_roff(c->help, 0);
        }
        puts(n > 0 && c->help[n - 1] == '.' ? "" : ".");
        if (c->more) {
            put_roff(c->more, 0);
            putchar('\n');
        }
    }
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
