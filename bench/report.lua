-- report.lua: make bench's report and chart, from the raw figures
-- bench/bench.lua gathers (also written to build/bench-raw.tsv), one
-- tab-separated line per measurement:
--
--   wrk <location> <round> <req/s> <router CPU us/req> <router CPU load %>
--   cg  <location> <process> <Ir> <requests> <memcached gets> <memcached conns>
--       <code hash: lua/, bench/*.lua and libgray.so; "-changed" if it
--        changed while the process ran>
--
-- instr/req per location: the median over its processes, their range, and
-- every process's value (an outlier process shows there). req/s: the best
-- round. Ratios are to the row's plain reference (bench/locations.lua: plain,
-- or plain-ids for the rows whose requests carry the id headers): its median
-- (instr/req) or best (req/s). The chart (SVG): a bar per row, its median,
-- the processes' range as a whisker, plain's median marked.
--
--   require("report").render(lines, header) -> text, svg
--   LUA_PATH='bench/?.lua;;' luajit bench/report.lua build/bench-raw.tsv [TITLE]
--       (prints the table again, writes build/bench.svg)

local LOCATIONS = require "locations"

-- the aims, in instr/req
local DROPIN_MEDIAN_MAX = 1.30      -- x plain
local DROPIN_PROCESS_MAX = 1.36     -- x plain, every process
local ROUTER_WORK_MAX = 600         -- dropin - reads-only, medians
local PER_ID_MAX = 300              -- what one identity adds at a cache hit
local METRICS_MAX = 150             -- what counting adds (api-metrics - api-router)
local OUTLIER = 0.03                -- a process this far from its median is marked
local PER_LINE = 5                  -- processes per line
-- issue 16's aims for a cache miss, x the row's plain reference
local MISS_1KEY_MAX = 1.85
local MISS_3KEYS_MAX = 2.10

local function parse(lines)
    local wrk, cg = {}, {}
    for _, line in ipairs(lines) do
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
        elseif line ~= "" then
            error("report.lua: bad line: " .. line)
        end
    end
    return wrk, cg
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

local function fmt(...)
    return string.format(...)
end

local function verdict(ok)
    return ok and "MET" or "NOT MET"
end

-- the SVG chart: a bar per row (median instr/req), the processes' range as
-- a whisker, plain's median as a dashed line
local function chart(rows, med, lo, hi, base_of, title)
    local W, LABEL_W, ROW_H, TOP, RIGHT = 980, 330, 22, 48, 170
    local max = 0
    for _, loc in ipairs(rows) do
        max = math.max(max, hi[loc.name])
    end
    max = max * 1.02
    local plot = W - LABEL_W - RIGHT
    local function xpos(v)
        return LABEL_W + v / max * plot
    end
    local H = TOP + #rows * ROW_H + 30
    local out = {
        fmt('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d"'
            .. ' font-family="sans-serif" font-size="12">', W, H, W, H),
        fmt('<rect width="%d" height="%d" fill="white"/>', W, H),
        fmt('<text x="10" y="18" font-size="14" font-weight="bold">%s</text>', title),
        '<text x="10" y="36" fill="#555">instructions per request (callgrind, median of fresh'
        .. ' processes; whisker: their range), x the row\'s plain proxy_pass</text>',
    }
    for i, loc in ipairs(rows) do
        local name = loc.name
        local y = TOP + (i - 1) * ROW_H
        local color = "#4a7ab5"
        if name:find("^plain") then
            color = "#555555"
        elseif loc.label:find("floor") then
            color = "#a8a8a8"
        elseif (loc.client or "fixed") ~= "fixed" or name:find("nocache")
               or name == "classic" then
            color = "#d08a3c"
        end
        local label = loc.label:gsub("&", "&amp;"):gsub("<", "&lt;")
        out[#out + 1] = fmt('<text x="%d" y="%d" text-anchor="end">%s</text>', LABEL_W - 8,
                            y + 15, label)
        out[#out + 1] = fmt('<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>', LABEL_W,
                            y + 4, xpos(med[name]) - LABEL_W, ROW_H - 8, color)
        out[#out + 1] = fmt('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="black"/>',
                            xpos(lo[name]), xpos(hi[name]), y + ROW_H / 2, y + ROW_H / 2)
        out[#out + 1] = fmt('<text x="%.1f" y="%d">%.0f  %.2fx</text>', xpos(hi[name]) + 6,
                            y + 15, med[name], med[name] / med[base_of(loc)])
    end
    if med.plain then
        local x = xpos(med.plain)
        out[#out + 1] = fmt('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#c0392b"'
                            .. ' stroke-dasharray="4 3"/>', x, x, TOP - 4, H - 24)
        out[#out + 1] = fmt('<text x="%.1f" y="%d" fill="#c0392b" text-anchor="middle">plain'
                            .. ' %.0f</text>', x, H - 10, med.plain)
    end
    out[#out + 1] = "</svg>"
    return table.concat(out, "\n") .. "\n"
end

local _M = {}

function _M.render(lines, header)
    local wrk, cg = parse(lines)
    local buf = { header or "", "" }
    local function say(s)
        buf[#buf + 1] = s
    end

    -- the rows measured (BENCH_LOCATIONS may leave some out)
    local rows = {}
    for _, loc in ipairs(LOCATIONS) do
        if cg[loc.name] or wrk[loc.name] then
            assert(wrk[loc.name] and cg[loc.name], "report.lua: only some figures for " .. loc.name)
            rows[#rows + 1] = loc
        end
    end
    assert(cg.plain, "report.lua: no figures for plain")
    local med, lo, hi = {}, {}, {}
    for _, loc in ipairs(rows) do
        med[loc.name], lo[loc.name], hi[loc.name] = median(cg[loc.name])
    end
    local function base_of(loc)
        return loc.base or "plain"
    end
    local base = med.plain
    local function x(v, b)
        return fmt("%.2fx", v / (b or base))
    end
    local function x3(v)
        return fmt("%.3fx", v / base)
    end

    say(fmt("%-42s %9s %7s %15s %13s | %8s %7s %8s %10s", "location", "instr/req", "vs",
            "min-max", "vs plain", "req/s", "vs", "CPU", "memcached"))
    say(fmt("%-42s %9s %7s %15s %13s | %8s %7s %8s %10s", "", "median", "plain", "instr/req",
            "min-max", "best", "plain", "us/req", "gets/req"))
    for _, loc in ipairs(rows) do
        local name, b = loc.name, base_of(loc)
        local gets, n = 0, 0
        for _, r in ipairs(cg[name]) do
            gets, n = gets + r.gets, n + r.n
        end
        say(fmt("%-42s %9.0f %7s %15s %13s | %8.0f %7s %8.1f %10.4f", loc.label, med[name],
                x(med[name], med[b]), fmt("%.0f-%.0f", lo[name], hi[name]),
                x(lo[name], med[b]) .. "-" .. x(hi[name], med[b]), wrk[name].rps,
                x(wrk[name].rps, wrk[b].rps), wrk[name].cpu, gets / n))
    end
    say("(vs plain: the rows with the id headers against plain-ids, the others against plain;"
        .. " CPU us/req: user+system time of the router process during its best wrk run;"
        .. " it counts the kernel's work too, which callgrind does not)")

    say("")
    say(fmt("per process, in run order (instr/req, x plain's median; '!' more than %d%% from"
            .. " the location's median; memcached gets in the batch):", OUTLIER * 100))
    for _, loc in ipairs(rows) do
        local cells = {}
        for _, r in ipairs(cg[loc.name]) do
            local mark = math.abs(r.ipr / med[loc.name] - 1) > OUTLIER and "!" or " "
            cells[#cells + 1] = fmt("%6.0f %s%s g%-4d", r.ipr, x(r.ipr, med[base_of(loc)]), mark,
                                    r.gets)
        end
        for i = 1, #cells, PER_LINE do
            local line = fmt("  %-17s %s", i == 1 and loc.name or "",
                             table.concat(cells, "  ", i, math.min(i + PER_LINE - 1, #cells)))
            say((line:gsub("%s+$", "")))
        end
    end

    -- lua/ edited during the run: say which processes ran which code
    local codes, ncodes = {}, 0
    for _, loc in ipairs(rows) do
        for _, r in ipairs(cg[loc.name]) do
            if not codes[r.code] then
                codes[r.code] = {}
                ncodes = ncodes + 1
            end
            local list = codes[r.code]
            list[#list + 1] = loc.name .. "#" .. r.proc
        end
    end
    if ncodes > 1 then
        say("")
        say("WARNING: the code changed during the run (lua/, bench/*.lua, libgray.so);"
            .. " processes by code hash:")
        for code, list in pairs(codes) do
            say(fmt("  %-16s %s", code, table.concat(list, " ")))
        end
    end

    -- an aim or reference line needs its rows measured
    local function have(...)
        for i = 1, select("#", ...) do
            if not med[select(i, ...)] then
                return false
            end
        end
        return true
    end

    say("")
    say("aims (instr/req):")
    if have("dropin") then
        local worst, worst_proc = 0, nil
        for _, r in ipairs(cg.dropin) do
            if r.ipr > worst then
                worst, worst_proc = r.ipr, r.proc
            end
        end
        say(fmt("  drop-in median <= %.2fx plain: %s -> %s", DROPIN_MEDIAN_MAX, x3(med.dropin),
                verdict(med.dropin <= base * DROPIN_MEDIAN_MAX)))
        say(fmt("  no drop-in process above %.2fx plain: highest %s (process %d) -> %s",
                DROPIN_PROCESS_MAX, x3(worst), worst_proc,
                verdict(worst <= base * DROPIN_PROCESS_MAX)))
    end
    if have("dropin", "reads-only") then
        local work = med.dropin - med["reads-only"]
        say(fmt("  router's own work (dropin - reads-only, medians) <= %d: %.0f -> %s",
                ROUTER_WORK_MAX, work, verdict(work <= ROUTER_WORK_MAX)))
    end
    if have("api-ids", "reads-ids") and have("api-router", "reads-only") then
        local per_id = ((med["api-ids"] - med["reads-ids"])
                        - (med["api-router"] - med["reads-only"])) / 2
        say(fmt("  each identity at a cache hit, its header read aside ((api-ids - reads-ids) -"
                .. " (api-router - reads-only)) / 2 <= %d: %.0f -> %s", PER_ID_MAX, per_id,
                verdict(per_id <= PER_ID_MAX)))
    end
    if have("api-metrics", "api-router") then
        local cost = med["api-metrics"] - med["api-router"]
        say(fmt("  counting for gray.metrics (api-metrics - api-router) <= %d: %.0f -> %s",
                METRICS_MAX, cost, verdict(cost <= METRICS_MAX)))
    end
    -- a cache miss: 1 key and 3 keys per request, against the row's plain
    for _, aim in ipairs({ { "1 key", MISS_1KEY_MAX, { "dropin-nocache", "api-nocache",
                                                       "dropin-distinct" } },
                           { "3 keys", MISS_3KEYS_MAX, { "api-nocache-ids",
                                                         "api-distinct-ids" } } }) do
        local cells, all = {}, true
        for _, name in ipairs(aim[3]) do
            local loc
            for _, l in ipairs(rows) do
                loc = l.name == name and l or loc
            end
            if loc then
                local b = base_of(loc)
                local ratio = med[name] / med[b]
                all = all and ratio <= aim[2]
                cells[#cells + 1] = fmt("%s %.2fx%s", name, ratio,
                                        b == "plain" and "" or " (vs " .. b .. ")")
            end
        end
        if #cells > 0 then
            say(fmt("  a cache miss, %s per request <= %.2fx plain: %s -> %s", aim[1], aim[2],
                    table.concat(cells, ", "), verdict(all)))
        end
    end
    say("for reference:")
    if have("exec-only", "reads-only") then
        say(fmt("  floors: ngx.exec alone %s, with the two reads %s; the reads: %.0f instr/req",
                x(med["exec-only"]), x(med["reads-only"]), med["reads-only"] - med["exec-only"]))
    end
    if have("api-router", "reads-only") then
        say(fmt("  through the Lua API (api-router - reads-only): %.0f instr/req",
                med["api-router"] - med["reads-only"]))
    end
    if have("api-nocache", "api-nocache-ids") then
        say(fmt("  uncached, one multi-get: 1 key %.0f instr/req, 3 keys (address + 2"
                .. " identities) %.0f instr/req", med["api-nocache"], med["api-nocache-ids"]))
    end
    if have("floor-get1", "dropin-distinct") then
        say(fmt("  a miss, 1 key, new clients: the drop-in %.0f, its floor (a pooled get) %.0f:"
                .. " %+.0f instr/req above the floor (%s vs %s plain)", med["dropin-distinct"],
                med["floor-get1"], med["dropin-distinct"] - med["floor-get1"],
                x(med["dropin-distinct"]), x(med["floor-get1"])))
    end
    if have("floor-get3", "api-distinct-ids", "plain-ids") then
        local b = med["plain-ids"]
        say(fmt("  a miss, 3 keys, new clients: the Lua API %.0f, its floor (a pooled get of 3"
                .. " keys) %.0f: %+.0f instr/req above the floor (%s vs %s plain-ids)",
                med["api-distinct-ids"], med["floor-get3"],
                med["api-distinct-ids"] - med["floor-get3"], x(med["api-distinct-ids"], b),
                x(med["floor-get3"], b)))
    end
    if have("dropin", "dropin-set", "dropin-beside-set") then
        say(fmt("  a $gray_* variable set in one location (vs dropin): where set %+.0f"
                .. " instr/req, in another location %+.0f (nginx warns there on every request)",
                med["dropin-set"] - med.dropin, med["dropin-beside-set"] - med.dropin))
    end
    if have("dropin", "dropin-run", "dropin-beside-run") then
        say(fmt("  the same as run()'s settings (vs dropin): where given %+.0f instr/req, in"
                .. " another location %+.0f", med["dropin-run"] - med.dropin,
                med["dropin-beside-run"] - med.dropin))
    end
    if have("dropin-nocache", "classic") then
        say(fmt("  uncached drop-in vs the classic dep.lua script: %.0f%% fewer instr/req",
                (1 - med["dropin-nocache"] / med.classic) * 100))
    end
    local title = (header or ""):match("^[^\n]*")
    return table.concat(buf, "\n") .. "\n", chart(rows, med, lo, hi, base_of, title)
end

-- as a script: the report again from a raw file
if ... ~= "report" then
    local path = assert(arg[1], "usage: luajit bench/report.lua build/bench-raw.tsv")
    local lines = {}
    for line in assert(io.open(path)):lines() do
        lines[#lines + 1] = line
    end
    local text, svg = _M.render(lines, arg[2] or "lua-resty-gray bench, from " .. path)
    io.write(text)
    local f = assert(io.open("build/bench.svg", "wb"))
    f:write(svg)
    f:close()
end

return _M
