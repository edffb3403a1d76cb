-- report.lua RAW: make bench's report, from the raw figures bench.sh wrote,
-- one tab-separated line per measurement:
--
--   wrk <location> <round> <req/s> <router CPU us/req> <router CPU load %>
--   cg  <location> <process> <Ir> <requests> <memcached gets> <memcached conns>
--       <code hash: lua/, bench/*.lua and libgray.so; "-changed" if it
--        changed while the process ran>
--
-- instr/req per location: the median over its processes, their range, and
-- every process's value (an outlier process shows there). req/s: the best
-- round. Ratios are to plain's median (instr/req) or best (req/s).

local LOCS = { "plain", "exec-only", "reads-only", "api-router", "dropin",
               "dropin-nocache", "seed", "reads-ids", "api-ids", "api-nocache",
               "api-nocache-ids", "api-metrics", "dropin-set", "dropin-beside-set",
               "dropin-run", "dropin-beside-run" }
local LABEL = {
    plain = "plain", ["exec-only"] = "exec-only (floor)",
    ["reads-only"] = "reads-only (floor)", ["api-router"] = "api-router",
    dropin = "dropin (cache)", ["dropin-nocache"] = "dropin (ttl 0)", seed = "seed-style",
    ["reads-ids"] = "reads+2 ids (floor)", ["api-ids"] = "api, 2 ids",
    ["api-nocache"] = "api ttl 0, 1 key", ["api-nocache-ids"] = "api ttl 0, 3 keys",
    ["api-metrics"] = "api + metrics",
    ["dropin-set"] = "dropin, set here", ["dropin-beside-set"] = "dropin, set beside",
    ["dropin-run"] = "dropin, run here", ["dropin-beside-run"] = "dropin, run beside",
}
-- the aims, in instr/req
local DROPIN_MEDIAN_MAX = 1.30      -- x plain
local DROPIN_PROCESS_MAX = 1.36     -- x plain, every process
local ROUTER_WORK_MAX = 600         -- dropin - reads-only, medians
local PER_ID_MAX = 300              -- what one identity adds at a cache hit
local METRICS_MAX = 150             -- what counting adds (api-metrics - api-router)
local OUTLIER = 0.03                -- a process this far from its median is marked
local PER_LINE = 5                  -- processes per line

local raw = assert(arg[1], "usage: report.lua RAW")
local wrk, cg = {}, {}
for line in assert(io.open(raw)):lines() do
    local f = {}
    for field in line:gmatch("[^\t]+") do
        f[#f + 1] = field
    end
    if f[1] == "wrk" then
        local best = wrk[f[2]]
        local rps = tonumber(f[4])
        if not best or rps > best.rps then
            wrk[f[2]] = { rps = rps, cpu = tonumber(f[5]), load = tonumber(f[6]) }
        end
    elseif f[1] == "cg" then
        local runs = cg[f[2]] or {}
        cg[f[2]] = runs
        local n = tonumber(f[5])
        runs[#runs + 1] = { proc = tonumber(f[3]), ipr = tonumber(f[4]) / n,
                            gets = tonumber(f[6]), conns = tonumber(f[7]), n = n,
                            code = f[8] or "?" }
    else
        error("report.lua: bad line in " .. raw .. ": " .. line)
    end
end

local function median(runs)
    local v = {}
    for i, r in ipairs(runs) do
        v[i] = r.ipr
    end
    table.sort(v)
    local m = #v
    if m % 2 == 1 then
        return v[(m + 1) / 2], v[1], v[m]
    end
    return (v[m / 2] + v[m / 2 + 1]) / 2, v[1], v[m]
end

-- the locations measured (BENCH_LOCATIONS may leave some out)
local measured = {}
for _, loc in ipairs(LOCS) do
    if cg[loc] or wrk[loc] then
        assert(wrk[loc] and cg[loc], "report.lua: only some figures for " .. loc)
        measured[#measured + 1] = loc
    end
end
assert(cg.plain, "report.lua: no figures for plain")
LOCS = measured
local med, lo, hi = {}, {}, {}
for _, loc in ipairs(LOCS) do
    med[loc], lo[loc], hi[loc] = median(cg[loc])
end
local base, base_rps = med.plain, wrk.plain.rps

local function x(v, b)
    return string.format("%.2fx", v / (b or base))
end
local function x3(v)
    return string.format("%.3fx", v / base)
end
local function verdict(ok)
    return ok and "MET" or "NOT MET"
end

print(string.format("%-19s %9s %7s %15s %13s | %8s %7s %8s %10s", "location",
      "instr/req", "vs", "min-max", "vs plain", "req/s", "vs", "CPU", "memcached"))
print(string.format("%-19s %9s %7s %15s %13s | %8s %7s %8s %10s", "", "median", "plain",
      "instr/req", "min-max", "best", "plain", "us/req", "gets/req"))
for _, loc in ipairs(LOCS) do
    local runs, gets, n = cg[loc], 0, 0
    for _, r in ipairs(runs) do
        gets, n = gets + r.gets, n + r.n
    end
    print(string.format("%-19s %9.0f %7s %15s %13s | %8.0f %7s %8.1f %10.4f", LABEL[loc],
          med[loc], x(med[loc]), string.format("%.0f-%.0f", lo[loc], hi[loc]),
          x(lo[loc]) .. "-" .. x(hi[loc]), wrk[loc].rps, x(wrk[loc].rps, base_rps),
          wrk[loc].cpu, gets / n))
end
print("(CPU us/req: user+system time of the router process during its best wrk run;"
      .. " it counts the kernel's work too, which callgrind does not)")

print()
print(string.format("per process, in run order (instr/req, x plain's median; '!' more than"
                    .. " %d%% from the location's median; memcached gets in the batch):",
                    OUTLIER * 100))
for _, loc in ipairs(LOCS) do
    local cells = {}
    for _, r in ipairs(cg[loc]) do
        local mark = math.abs(r.ipr / med[loc] - 1) > OUTLIER and "!" or " "
        cells[#cells + 1] = string.format("%6.0f %s%s g%-4d", r.ipr, x(r.ipr), mark, r.gets)
    end
    for i = 1, #cells, PER_LINE do
        local line = string.format("  %-17s %s", i == 1 and loc or "",
                                   table.concat(cells, "  ", i, math.min(i + PER_LINE - 1, #cells)))
        print((line:gsub("%s+$", "")))
    end
end

-- lua/ edited during the run: say which processes ran which code
local codes, ncodes = {}, 0
for _, loc in ipairs(LOCS) do
    for _, r in ipairs(cg[loc]) do
        if not codes[r.code] then
            codes[r.code] = {}
            ncodes = ncodes + 1
        end
        local list = codes[r.code]
        list[#list + 1] = loc .. "#" .. r.proc
    end
end
if ncodes > 1 then
    print()
    print("WARNING: the code changed during the run (lua/, bench/*.lua, libgray.so);"
          .. " processes by code hash:")
    for code, list in pairs(codes) do
        print(string.format("  %-16s %s", code, table.concat(list, " ")))
    end
end

-- an aim or reference line needs its locations measured
local function have(...)
    for i = 1, select("#", ...) do
        if not med[select(i, ...)] then
            return false
        end
    end
    return true
end

print()
print("aims (instr/req):")
if have("dropin") then
    local worst, worst_proc = 0, nil
    for _, r in ipairs(cg.dropin) do
        if r.ipr > worst then
            worst, worst_proc = r.ipr, r.proc
        end
    end
    print(string.format("  drop-in median <= %.2fx plain: %s -> %s", DROPIN_MEDIAN_MAX,
          x3(med.dropin), verdict(med.dropin <= base * DROPIN_MEDIAN_MAX)))
    print(string.format("  no drop-in process above %.2fx plain: highest %s (process %d) -> %s",
          DROPIN_PROCESS_MAX, x3(worst), worst_proc,
          verdict(worst <= base * DROPIN_PROCESS_MAX)))
end
if have("dropin", "reads-only") then
    local work = med.dropin - med["reads-only"]
    print(string.format("  router's own work (dropin - reads-only, medians) <= %d: %.0f -> %s",
          ROUTER_WORK_MAX, work, verdict(work <= ROUTER_WORK_MAX)))
end
if have("api-ids", "reads-ids") and have("api-router", "reads-only") then
    local per_id = ((med["api-ids"] - med["reads-ids"])
                    - (med["api-router"] - med["reads-only"])) / 2
    print(string.format("  each identity at a cache hit, its header read aside ((api-ids -"
          .. " reads-ids) - (api-router - reads-only)) / 2 <= %d: %.0f -> %s", PER_ID_MAX,
          per_id, verdict(per_id <= PER_ID_MAX)))
end
if have("api-metrics", "api-router") then
    local cost = med["api-metrics"] - med["api-router"]
    print(string.format("  counting for gray.metrics (api-metrics - api-router) <= %d: %.0f -> %s",
          METRICS_MAX, cost, verdict(cost <= METRICS_MAX)))
end
print("for reference:")
if have("exec-only", "reads-only") then
    print(string.format("  floors: ngx.exec alone %s, with the two reads %s; the reads: %.0f"
          .. " instr/req", x(med["exec-only"]), x(med["reads-only"]),
          med["reads-only"] - med["exec-only"]))
end
if have("api-router", "reads-only") then
    print(string.format("  through the Lua API (api-router - reads-only): %.0f instr/req",
          med["api-router"] - med["reads-only"]))
end
if have("api-nocache", "api-nocache-ids") then
    print(string.format("  uncached, one multi-get: 1 key %.0f instr/req, 3 keys (address + 2"
          .. " identities) %.0f instr/req", med["api-nocache"], med["api-nocache-ids"]))
end
if have("dropin", "dropin-set", "dropin-beside-set") then
    print(string.format("  a $gray_* variable set in one location (vs dropin): where set %+.0f"
          .. " instr/req, in another location %+.0f (nginx warns there on every request)",
          med["dropin-set"] - med.dropin, med["dropin-beside-set"] - med.dropin))
end
if have("dropin", "dropin-run", "dropin-beside-run") then
    print(string.format("  the same as run()'s settings (vs dropin): where given %+.0f instr/req,"
          .. " in another location %+.0f", med["dropin-run"] - med.dropin,
          med["dropin-beside-run"] - med.dropin))
end
if have("dropin-nocache", "seed") then
    print(string.format("  uncached drop-in vs seed-style: %.0f%% fewer instr/req",
          (1 - med["dropin-nocache"] / med.seed) * 100))
end
