-- make bench-image: the list images (image.c) for 1M ids and 1M ranges:
-- compile time (wall and the compiling thread's CPU), image bytes per
-- entry, the time a worker takes to map and check one, and lookups; beside
-- today's compile of the same text (lists.lua's id-list loop, run here as
-- it is written there, and new_rangeset for ranges) and its Lua heap.
--
--   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;' luajit bench/image_bench.lua [n]

local gray = require "gray.ffi"
local ffi = require "ffi"

local fmt = string.format
local concat = table.concat
local clock = os.clock

pcall(ffi.cdef, [[
typedef struct gray_bench_timespec { long tv_sec; long tv_nsec; } gray_bench_timespec_t;
int clock_gettime(int clk, gray_bench_timespec_t *tp);
]])
local ts = ffi.new("gray_bench_timespec_t")
local function now()
    ffi.C.clock_gettime(1, ts)   -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local N = tonumber(arg and arg[1]) or 1000000
local NAMES = { "1", "v2", "v3" }
local DIR = (io.open("/dev/shm/") and "/dev/shm" or "/tmp") .. "/gray-image-bench-"
            .. os.tmpname():match("[^/]+$")
os.execute("mkdir -p '" .. DIR .. "'")

local out = {}
local function say(...)
    local line = fmt(...)
    print(line)
    out[#out + 1] = line
end

local function heap_mb()
    collectgarbage("collect")
    collectgarbage("collect")
    return collectgarbage("count") / 1024
end

-- lists.lua's compile_list loop (a local function there, in a module that
-- needs nginx), as written there; decision_of_name and the log stand apart.
local DECISIONS = { ["1"] = "@gray1", v2 = "@gray2", v3 = "@gray3" }
local target_name_ok = gray.target_name_ok
local function decision_of_name(name)
    if name == "" then
        name = "1"
    end
    return DECISIONS[name] or (target_name_ok(name) and "unknown" or nil)
end
local function today_compile_list(text)
    local ids, bad, unknown, n = {}, 0, 0, 0
    for line in text:gmatch("[^\n]+") do
        local id, name, rest = line:match("^%s*([^%s#]%S*)%s*(%S*)%s*(%S*)")
        if id then
            if rest ~= "" or #id > 200 then
                bad = bad + 1
            else
                local decision = decision_of_name(name)
                if not decision then
                    bad = bad + 1
                else
                    if not ids[id] then
                        n = n + 1
                    end
                    ids[id] = decision
                    if decision == "unknown" then
                        unknown = unknown + 1
                    end
                end
            end
        end
    end
    return ids, n
end

-- the best of a few runs of f: wall seconds, f's results, CPU seconds
local function best_of(runs, f)
    local best, r, cpu
    for _ = 1, runs do
        collectgarbage("collect")
        local t0, c0 = now(), clock()
        r = { f() }
        local dt, dc = now() - t0, clock() - c0
        if not best or dt < best then
            best, cpu = dt, dc
        end
    end
    return best, r, cpu
end

local function map_times(path)
    local t_open = best_of(5, function()
        local img = assert(gray.image_open(path))
        gray.image_close(img)
    end)
    local t_verify = best_of(3, function()
        local img = assert(gray.image_open(path, true))
        gray.image_close(img)
    end)
    return t_open * 1e3, t_verify * 1e3
end

-- kind's image of text compiled (best of 3) into DIR, then mapped: its
-- path, the open image, compile's stats, wall s, map ms, map-and-verify ms
local function compile_image(kind, text)
    local path = DIR .. "/" .. kind
    local wall, r = best_of(3, function()
        return assert(gray.image_compile(kind, text, NAMES, 1, path))
    end)
    local t_open, t_verify = map_times(path)
    return path, assert(gray.image_open(path)), r[1], wall, t_open, t_verify
end

-- best_of(runs, f) for an f that builds one value: wall s, the value, CPU s,
-- and the Lua heap it holds (MB)
local function best_of_heap(runs, f)
    local h0 = heap_mb()
    local wall, r, cpu = best_of(runs, f)
    return wall, r[1], cpu, heap_mb() - h0
end

local function lookups(f, keys)
    local n = #keys
    local t0 = clock()
    local hits = 0
    for r = 1, 5 do
        for i = 1, n do
            if f(keys[i]) then
                hits = hits + r
            end
        end
    end
    return (clock() - t0) / (5 * n) * 1e9
end

math.randomseed(4242)
say("list images, %d entries (%s)", N, os.date("!%Y-%m-%d %H:%M UTC"))
say("")

-------------------------------------------------------------------------------
-- ids: 32 hex digits each, a third of them with a target name

do
    -- every 10th id is kept for the lookups (the Lua heap figure shares them)
    local lines, sample, id_bytes = {}, {}, 0
    for i = 1, N do
        local id = fmt("%08x%08x%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff),
                       math.random(0, 0x7fffffff), i)
        if i % 10 == 0 then
            sample[#sample + 1] = id
        end
        id_bytes = id_bytes + #id
        local t = math.random(3)
        lines[i] = t == 1 and id or id .. " " .. NAMES[t]
    end
    local text = concat(lines, "\n")
    lines = nil   -- luacheck: ignore
    local path, img, st, wall, t_open, t_verify = compile_image("ids", text)
    local t_lua, ids, c_lua, lua_heap = best_of_heap(1, function()
        return today_compile_list(text)
    end)

    local ns_img = lookups(function(k) return gray.image_find_id(img, k) end, sample)
    local ns_lua = lookups(function(k) return ids[k] end, sample)
    local absent = {}
    for i = 1, #sample do
        absent[i] = "x" .. sample[i]:sub(2)
    end
    local ns_img_miss = lookups(function(k) return gray.image_find_id(img, k) end, absent)
    local ns_lua_miss = lookups(function(k) return ids[k] end, absent)

    say("1M ids (%d bytes of text, ids of 32 bytes)", #text)
    say("  C image compile:      %7.0f ms wall (best of 3), %4.0f ms thread CPU", wall * 1e3,
        st.cpu_ms)
    say("  today (lists.lua):    %7.0f ms wall in the worker, %4.0f ms CPU, %5.1f MB of Lua heap",
        t_lua * 1e3, c_lua * 1e3, lua_heap)
    say("  image: %d bytes: %.1f bytes per id, %.1f beside the id's bytes (<= 32 asked)",
        st.bytes, st.bytes / st.entries, (st.bytes - id_bytes) / st.entries)
    say("  map and check:        %7.2f ms (index only), %.1f ms with every byte verified",
        t_open, t_verify)
    say("  lookup, listed:       %7.0f ns image_find_id (FFI), %.0f ns Lua table", ns_img, ns_lua)
    say("  lookup, not listed:   %7.0f ns image_find_id (FFI), %.0f ns Lua table", ns_img_miss,
        ns_lua_miss)
    say("  (the Lua table's keys are interned strings already; a request's value is not)")
    gray.image_close(img)
    os.remove(path)
end
collectgarbage("collect")

-------------------------------------------------------------------------------
-- ranges: 90% IPv4 (prefixes 16..32, half of them /32), 10% IPv6

do
    local lines = {}
    for i = 1, N do
        local t = math.random(3)
        local line
        if math.random() < 0.9 then
            local a = math.random(0, 0xffffffff)
            local p = math.random() < 0.5 and 32 or math.random(16, 31)
            line = fmt("%d.%d.%d.%d/%d", math.floor(a / 16777216) % 256,
                       math.floor(a / 65536) % 256, math.floor(a / 256) % 256, a % 256, p)
        else
            line = fmt("2001:db8:%x:%x::/64", math.random(0, 0xffff), math.random(0, 0xffff))
        end
        lines[i] = t == 1 and line or line .. " " .. NAMES[t]
    end
    local text = concat(lines, "\n")
    local path, img, st, wall, t_open, t_verify = compile_image("ranges", text)
    local t_today, set, c_today, today_heap = best_of_heap(3, function()
        return assert(gray.new_rangeset(text, NAMES))
    end)

    local sample = {}
    for i = 1, 100000 do
        local a = math.random(0, 0xffffffff)
        sample[i] = fmt("%d.%d.%d.%d", math.floor(a / 16777216) % 256,
                        math.floor(a / 65536) % 256, math.floor(a / 256) % 256, a % 256)
    end
    local ns_img = lookups(function(k) return gray.image_find_ip(img, k) end, sample)
    local ns_set = lookups(function(k) return gray.rangeset_find(set, k) end, sample)

    say("")
    say("1M ranges (%d bytes of text)", #text)
    say("  C image compile:      %7.0f ms wall (best of 3), %4.0f ms thread CPU", wall * 1e3,
        st.cpu_ms)
    say("  today (new_rangeset): %7.0f ms wall in the worker, %4.0f ms CPU, %5.1f MB (%d bytes"
        .. " of set)", t_today * 1e3, c_today * 1e3, today_heap, set.bytes)
    say("  image: %d bytes, %d runs: %.1f bytes per line", st.bytes, st.runs,
        st.bytes / st.entries)
    say("  map and check:        %7.2f ms (index only), %.1f ms with every byte verified",
        t_open, t_verify)
    say("  lookup:               %7.0f ns image_find_ip (FFI), %.0f ns rangeset_find", ns_img,
        ns_set)
    gray.image_close(img)
    os.remove(path)
end

os.execute("rm -rf '" .. DIR .. "'")
local f = io.open("build/bench-image-results.txt", "w")
if f then
    f:write(concat(out, "\n"), "\n")
    f:close()
end
