/* main.c - gray-admin's command line: options, the command, --help. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define ARGS_MAX 64                 /* positional arguments and --id options */

static const char USAGE[] =
"usage: gray-admin [options] <command> [arguments]\n"
"\n"
"Edits the memcached entries, lists and percentage that lua-resty-gray reads,\n"
"in the router's formats and with its key placement.\n"
"\n"
"Commands:\n"
"  add <ip|cidr|name:id> [target] [--ttl S]\n"
"      ip       an address entry: key <key-prefix><canonical address>\n"
"               (::ffff:1.2.3.4 is written as 1.2.3.4), value the target\n"
"      name:id  an identity entry, key as given (uid:42)\n"
"      cidr     a line of the ranges list (as 'ranges add'); no --ttl\n"
"      target   '1' (the default gray target, the default) or a target name\n"
"               of the router's targets option; --ttl S expires the entry\n"
"               after S seconds (0 = never, at most 2592000)\n"
"  remove <ip|cidr|name:id>   deletes the entry (a cidr: its ranges line)\n"
"  get <ip|cidr|name:id>      prints the entry's value (a cidr: its ranges\n"
"                             line); exit 1 when there is none\n"
"  ranges add <ip|cidr> [target]   adds or retargets a line of the ranges list\n"
"  ranges remove <ip|cidr>         removes its line(s)\n"
"  ranges list                     prints the list (parts joined)\n"
"  list <name> add <id> [target]   adds or retargets an id in gray:list:<name>\n"
"  list <name> remove <id>         removes it\n"
"  list <name> show                prints the list (parts joined)\n"
"  percent [N]     sets the percentage (0 to 100, at most two decimals);\n"
"                  without N prints it\n"
"  import <file>   bulk entries, one per line as add's arguments\n"
"                  ('<ip|cidr|name:id> [target] [--ttl S]'; '#' comments and\n"
"                  blank lines skipped; '-' reads stdin). Every line is checked\n"
"                  before anything is written; ranges lines are written in one\n"
"                  edit. Progress on stderr when it is a terminal.\n"
"  check <ip> [--id name=value ...] [--targets T] [--lists L]\n"
"                  prints what the router would decide and why: identity\n"
"                  entries (in the order given), the address entry, id lists,\n"
"                  the ranges list, the percentage and the bucket of the\n"
"                  identity key (the first --id, else the address), with the\n"
"                  router's targets and lists. The tester override (force) is\n"
"                  per request and not shown.\n"
"  token <target> --ttl D --secret-file F [--id NAME]\n"
"                  prints a signed override token for target (always, never\n"
"                  or a target name) valid for D (3600, 30m, 1h, 7d; at most\n"
"                  400d), keyed by the router's secret_file; with --id, a\n"
"                  signed-cookie value for identity NAME instead. Must be the\n"
"                  first argument after the options; needs no memcached.\n"
"\n"
"List edits read the list, change it and write it back with CAS, again on a\n"
"conflict (up to 100 times), so concurrent edits never lose a line. A list\n"
"over one memcached item is written in parts (<key>:<tag>:<i>) under the\n"
"header '#gray-parts <n> <tag>', as the router reads it; old parts expire\n"
"60 s after a rewrite.\n"
"\n"
"Options:\n"
"  --servers LIST      memcached servers, $gray_memcached syntax:\n"
"                      \"127.0.0.1:11211, [::1]:11212\"; hosts are IP addresses,\n"
"                      hashed as written: give the router the same text.\n"
"                      Else MEMCACHED_SERVERS (an invalid one is an error),\n"
"                      else 127.0.0.1:11211 (-v says which)\n"
"  --distribution M    key placement with several servers, as the router's\n"
"                      distribution: ketama (default), ketama-weighted\n"
"                      (weights written host:port/?N) or modula\n"
"  --key-prefix P      the router's key_prefix for address keys (default none)\n"
"  --ranges-key K      the router's ranges_key (default gray:ranges)\n"
"  --percent-key K     the router's percent_key (default gray:percent)\n"
"  --timeout MS        connect and I/O timeout (default 2000)\n"
"  --part-size BYTES   split lists above this size (default 921600)\n"
"  --ttl S             add, import: entry lifetime in seconds\n"
"  --id name=value     check: an identity (up to 4, in the router's order)\n"
"  --targets T         check: the router's targets, as $gray_targets\n"
"                      (\"v2=@server_v2, v3=@server_v3\", or just \"v2, v3\"); a\n"
"                      value naming none of them (nor 1 or stable) is stable\n"
"  --lists L           check: the router's id lists, as $gray_lists (\"dev\");\n"
"                      the lists of other identities are not read\n"
"  -v, --verbose       more messages on stderr\n"
"  -h, --help          this text\n"
"  --version           prints gray-admin <version>\n"
"\n"
"Exit status: 0 done, 1 get found nothing, 2 bad arguments (or server list),\n"
"3 memcached failed, 4 a list edit still conflicted after its retries.\n";

/* The value of option argv[*i] ("--name value" or "--name=value"), or NULL. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t nl = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, nl) != 0)
        return NULL;
    if (a[nl] == '=')
        return a + nl + 1;
    if (a[nl] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        cli_usage_error("option %s needs a value", name);
        exit(EXIT_USAGE);
    }
    return argv[++*i];
}

int main(int argc, char **argv)
{
    cli_opts_t opts = {
        .servers = CLI_SERVERS_DEFAULT, .distribution = "ketama", .key_prefix = "",
        .ranges_key = "gray:ranges", .percent_key = "gray:percent", .targets = "",
        .lists = "", .timeout_ms = 2000,
        .part_bytes = CLI_PART_BYTES, .verbose = 0,
    };
    char *pos[ARGS_MAX], *ids[ARGS_MAX];
    int npos = 0, nids = 0, dashdash = 0;
    const char *check_only = NULL;      /* an option given that only check takes */
    long ttl = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (dashdash || a[0] != '-' || strcmp(a, "-") == 0) {
            if (npos == 0 && strcmp(a, "token") == 0)       /* own options: token.c */
                return cli_cmd_token(argc - i - 1, argv + i + 1);
            if (npos == ARGS_MAX)
                return cli_usage_error("%s", "too many arguments");
            pos[npos++] = argv[i];
        } else if (strcmp(a, "--") == 0) {
            dashdash = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(USAGE, stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            puts("gray-admin " GRAY_VERSION);
            return 0;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            opts.verbose = 1;
        } else if ((v = opt_value(argc, argv, &i, "--servers"))) {
            opts.servers = v;
            opts.servers_from = "--servers";
        } else if ((v = opt_value(argc, argv, &i, "--distribution"))) {
            opts.distribution = v;
        } else if ((v = opt_value(argc, argv, &i, "--key-prefix"))) {
            if (strlen(v) > 200 || (v[0] && !gray_mc_key_ok(v, strlen(v))))
                return cli_usage_error("bad --key-prefix '%s' (at most 200 bytes without"
                                       " spaces or control bytes)", v);
            opts.key_prefix = v;
        } else if ((v = opt_value(argc, argv, &i, "--ranges-key"))) {
            if (!gray_mc_key_ok(v, strlen(v)))
                return cli_usage_error("bad --ranges-key '%s'", v);
            opts.ranges_key = v;
        } else if ((v = opt_value(argc, argv, &i, "--percent-key"))) {
            if (!gray_mc_key_ok(v, strlen(v)))
                return cli_usage_error("bad --percent-key '%s'", v);
            opts.percent_key = v;
        } else if ((v = opt_value(argc, argv, &i, "--timeout"))) {
            long ms = cli_parse_count(v, 600000);
            if (ms < 1 || ms > 600000)
                return cli_usage_error("bad --timeout '%s' (milliseconds, 1 to 600000)", v);
            opts.timeout_ms = (unsigned)ms;
        } else if ((v = opt_value(argc, argv, &i, "--part-size"))) {
            long b = cli_parse_count(v, CLI_PART_BYTES);
            if (b < 64 || b > (long)CLI_PART_BYTES)
                return cli_usage_error("bad --part-size '%s' (bytes, 64 to 921600)", v);
            opts.part_bytes = (size_t)b;
        } else if ((v = opt_value(argc, argv, &i, "--ttl"))) {
            ttl = cli_parse_count(v, CLI_TTL_MAX);
            if (ttl < 0)
                return cli_usage_error("bad --ttl '%s' (seconds, 0 to 2592000)", v);
        } else if ((v = opt_value(argc, argv, &i, "--targets"))) {
            opts.targets = v;
            check_only = "--targets";
        } else if ((v = opt_value(argc, argv, &i, "--lists"))) {
            opts.lists = v;
            check_only = "--lists";
        } else if ((v = opt_value(argc, argv, &i, "--id"))) {
            if (nids == ARGS_MAX)
                return cli_usage_error("%s", "too many --id");
            ids[nids++] = (char *)v;
        } else {
            return cli_usage_error("unknown option '%s'", a);
        }
    }
    if (npos == 0)
        return cli_usage_error("%s", "no command given");
    const char *cmd = pos[0];
    static const char *const COMMANDS[] = {
        "add", "remove", "get", "ranges", "list", "percent", "import", "check", NULL,
    };
    int known = 0;
    for (int k = 0; COMMANDS[k]; k++)
        known |= strcmp(cmd, COMMANDS[k]) == 0;
    if (!known)
        return cli_usage_error("unknown command '%s'", cmd);
    if (ttl >= 0 && strcmp(cmd, "add") != 0)
        return cli_usage_error("%s", "--ttl is for add (and inside import files)");
    if (nids > 0 && strcmp(cmd, "check") != 0)
        return cli_usage_error("%s", "--id is for check");
    if (check_only && strcmp(cmd, "check") != 0)
        return cli_usage_error("%s is for check", check_only);
    if (strcmp(cmd, "check") == 0 && npos != 2)
        return cli_usage_error("%s", "check: expected check <ip> [--id name=value ...]");

    memcached_st *mc = cli_connect(&opts);
    if (mc == NULL)
        return EXIT_USAGE;
    int rc;
    if (strcmp(cmd, "add") == 0)
        rc = cli_cmd_add(mc, &opts, pos, npos, ttl);
    else if (strcmp(cmd, "remove") == 0)
        rc = cli_cmd_remove_or_get(mc, &opts, pos, npos, 0);
    else if (strcmp(cmd, "get") == 0)
        rc = cli_cmd_remove_or_get(mc, &opts, pos, npos, 1);
    else if (strcmp(cmd, "ranges") == 0)
        rc = cli_cmd_ranges(mc, &opts, pos, npos);
    else if (strcmp(cmd, "list") == 0)
        rc = cli_cmd_list(mc, &opts, pos, npos);
    else if (strcmp(cmd, "percent") == 0)
        rc = cli_cmd_percent(mc, &opts, pos, npos);
    else if (strcmp(cmd, "import") == 0)
        rc = cli_cmd_import(mc, &opts, pos, npos);
    else
        rc = cli_check(mc, &opts, pos[1], ids, nids);
    memcached_free(mc);
    return rc;
}
