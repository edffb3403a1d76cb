-- fuzz.lua BINARY SEEDS OUT [TARGET...] - libFuzzer on each fuzz target in
-- turn (all of them when none is named): FUZZ_RUNS executions each when set
-- (libFuzzer -runs), else FUZZ_SECONDS (60) each. A run starts from the
-- target's seed corpus SEEDS/<target> (read only) and the inputs found so far
-- in OUT/fuzz-corpus/<target> (where new ones go), and writes a finding
-- (crash-*, leak-*, timeout-*, oom-*) to OUT/fuzz-findings/<target>/.
-- libFuzzer stops a target at its first finding; the next target runs anyway.
-- Inputs are cut at the target's max_len (MAX_LEN below: the longest input
-- its parser's limits make interesting; FUZZ_MAX_LEN overrides it for all).
-- An input running FUZZ_TIMEOUT (10) seconds is a finding: raise it for a
-- run at low priority on a busy machine (libFuzzer counts wall-clock time).
-- Then one table: executions, exec/s and seconds (wall clock), CPU seconds
-- (user + system: the machine may be shared), corpus and findings per
-- target, in OUT/fuzz-results.txt and as markdown in OUT/fuzz-results.md,
-- both rewritten after each target. Exits 1 when anything was found.
--
--   LUA_PATH='spec/?.lua;;' luajit tools/fuzz.lua build/fuzz csrc/test/corpus build ip dist
--   (make fuzz)

local harness = require "helpers.harness"

local quote, read_file = harness.quote, harness.read_file

local args = { ... }
local bin, seeds, out = args[1], args[2], args[3]
if not out then
    io.stderr:write("usage: luajit tools/fuzz.lua BINARY SEEDS OUT [TARGET...]\n")
    os.exit(2)
end

local function env(name)
    local v = os.getenv(name)
    return v ~= "" and v or nil
end

-- a command's output, trailing line breaks cut
local function output(cmd)
    local p = assert(io.popen(cmd))
    local s = p:read("*a")
    p:close()
    return (s:gsub("\n+$", ""))
end

-- the names in a directory, as ls lists them
local function names(dir)
    local t = {}
    for name in output("ls " .. quote(dir) .. " 2>/dev/null"):gmatch("[^\n]+") do
        t[#t + 1] = name
    end
    return t
end

-- The longest input worth feeding each target. Longer inputs only repeat
-- what shorter ones reach, at a higher cost per execution (most checks are
-- linear in the input, the naive references quadratic). Limits past these
-- lengths (a 1,025-byte server host, a 4,097-byte import line) are covered
-- by long seeds, which make test's replay runs whole.
local MAX_LEN = {
    ip = 96,                    -- GRAY_HOST_TEXT_MAX 64, "[v6]:port"
    hash = 128,                 -- murmur3: every alignment and tail
    dist = 256,                 -- 4 servers, hosts < 256 bytes
    cli_args = 320,             -- name:id, 32 + 1 + 200 bytes
    token = 400,                -- GRAY_TOKEN_MAX 257
    ipset = 512, servers = 512, cli_import = 512,
    ranges = 512, image = 512,  -- dozens of lines; ids up to GRAY_ID_MAX 200
    mc_get = 1200, mc_line = 1200, mc_meta = 1200,     -- GRAY_MC_LINE_MAX 1024
    ramp = 1100,                -- GRAY_RAMP_TEXT_MAX 1024: 64 steps and a start
}
local MAX_LEN_OTHER = 1024      -- the headers: xff, forwarded, client

local runs, seconds = env("FUZZ_RUNS"), env("FUZZ_SECONDS") or "60"
local mode, limit
if runs then
    mode, limit = runs .. " executions per target", "-runs=" .. runs
else
    mode, limit = seconds .. "s per target", "-max_total_time=" .. seconds
end

-- CPU seconds (user + system) of the children waited for so far: theirs
-- and their own children's, from /proc (fields cutime, cstime, in ticks)
local TICKS = tonumber(output("getconf CLK_TCK")) or 100
local function cpu_used()
    local stat = assert(read_file("/proc/self/stat"))
    local fields = {}
    for f in stat:match("%) (.*)$"):gmatch("%S+") do
        fields[#fields + 1] = f
    end
    -- after the command's name: state is field 3, cutime 16, cstime 17
    return (tonumber(fields[14]) + tonumber(fields[15])) / TICKS
end

local targets = { select(4, ...) }
if #targets == 0 then
    targets = names(seeds)
end

local results, markdown = out .. "/fuzz-results.txt", out .. "/fuzz-results.md"
os.execute("mkdir -p " .. quote(out))
local started = os.date("!%Y-%m-%d %H:%M UTC")
local cores = output("nproc")
local rows = {}

-- both tables from the rows so far (after each target: a run cut short
-- still leaves the targets it finished)
local function tables(note)
    local head = "libFuzzer, " .. mode .. " (started " .. started .. ", " .. cores .. " cores"
                 .. note .. ")"
    local txt = { head, ("%-12s %14s %10s %9s %9s %8s %9s %s"):format("target", "executions",
                  "exec/s", "seconds", "cpu-s", "corpus", "findings", "max_len") }
    local md = { head, "", "| target | executions | exec/s | seconds | CPU seconds | max_len |"
                 .. " corpus | findings |", "|---|---:|---:|---:|---:|---:|---:|---:|" }
    local e, t, c, f = 0, 0, 0, 0
    for _, r in ipairs(rows) do
        txt[#txt + 1] = ("%-12s %14d %10d %9d %9d %8d %9d %d"):format(r.target, r.execs, r.rate,
                        r.took, r.cpu, r.corpus, r.found, r.len)
        md[#md + 1] = ("| %s | %d | %d | %d | %d | %d | %d | %d |"):format(r.target, r.execs,
                      r.rate, r.took, r.cpu, r.len, r.corpus, r.found)
        e, t, c, f = e + r.execs, t + r.took, c + r.cpu, f + r.found
    end
    txt[#txt + 1] = ("%-12s %14d %10s %9d %9d %8s %9d"):format("total", e, "", t, c, "", f)
    md[#md + 1] = ("| total | %d | | %d | %d | | | %d |"):format(e, t, c, f)
    for path, lines in pairs({ [results] = txt, [markdown] = md }) do
        local fh = assert(io.open(path, "w"))
        fh:write(table.concat(lines, "\n"), "\n")
        fh:close()
    end
end

local total_found = 0
for _, t in ipairs(targets) do
    if not output("test -d " .. quote(seeds .. "/" .. t) .. " && echo yes"):find("yes") then
        io.stderr:write("fuzz.lua: no seed corpus " .. seeds .. "/" .. t .. "\n")
        os.exit(2)
    end
    local corpus, findings = out .. "/fuzz-corpus/" .. t, out .. "/fuzz-findings/" .. t
    local log = out .. "/fuzz-" .. t .. ".log"
    local len = tonumber(env("FUZZ_MAX_LEN")) or MAX_LEN[t] or MAX_LEN_OTHER
    os.execute("mkdir -p " .. quote(corpus) .. " " .. quote(findings))
    local before = #names(findings)
    print(("fuzz: %s, %s, max_len %d (log %s)"):format(t, mode, len, log))
    io.stdout:flush()
    local t0, c0 = os.time(), cpu_used()
    -- a finding is a non-zero exit: counted below, not fatal here
    os.execute(("FUZZ_TARGET=%s %s %s -max_len=%d -timeout=%s -rss_limit_mb=2048"
                .. " -print_final_stats=1 -artifact_prefix=%s %s %s >%s 2>&1"):format(
               quote(t), quote(bin), limit, len, quote(env("FUZZ_TIMEOUT") or "10"),
               quote(findings .. "/"), quote(corpus), quote(seeds .. "/" .. t), quote(log)))
    local took = os.time() - t0
    local cpu = math.floor(cpu_used() - c0 + 0.5)
    local text = "\n" .. (read_file(log) or "")
    local execs = tonumber(text:match(".*\nstat::number_of_executed_units: *(%d+)"))
    if not execs then
        for n in text:gmatch("\n#(%d+)") do
            execs = tonumber(n)
        end
    end
    execs = execs or 0
    local found = #names(findings) - before
    total_found = total_found + found
    if found > 0 then
        local n = 0
        for line in text:gmatch("[^\n]+") do
            if n < 3 and (line:find("invariant broken", 1, true) or line:find("ERROR: ", 1, true)
                          or line:find("CHECK(", 1, true)) then
                print("    " .. t .. ": " .. line)
                n = n + 1
            end
        end
    end
    rows[#rows + 1] = {
        target = t, execs = execs, took = took, cpu = cpu, corpus = #names(corpus),
        -- exec/s over the whole run (libFuzzer's own figure leaves out loading)
        rate = math.floor(execs / (took > 0 and took or 1)), found = found, len = len,
    }
    tables(", running")
end

tables(", finished " .. os.date("!%Y-%m-%d %H:%M UTC"))
io.write(read_file(results))
if total_found > 0 then
    io.stderr:write(("fuzz: %d finding(s): %s/fuzz-findings/<target>/ (replay one:"
                     .. " FUZZ_TARGET=<target> %s <file>)\n"):format(total_found, out, bin))
    os.exit(1)
end
