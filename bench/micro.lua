-- make microbench: each job through gray.ffi (the C core, as users call it)
-- beside bench/lua_baseline.lua (pure Lua) on the same inputs, in one run.
-- Answers are compared first; timings are the best of several rounds.

local gray_ffi = require "gray.ffi"
local base = require "lua_baseline"

local clock = os.clock
local ROUNDS = 7
local TARGET_SECONDS = 0.1

local function ns_per_op(fn, inputs)
    local n_inputs = #inputs
    -- calibrate: enough iterations for TARGET_SECONDS
    local iters = 1000
    while true do
        local t0 = clock()
        for i = 1, iters do
            fn(inputs[i % n_inputs + 1])
        end
        if clock() - t0 > TARGET_SECONDS / 4 then
            break
        end
        iters = iters * 2
    end
    local best = math.huge
    for _ = 1, ROUNDS do
        local t0 = clock()
        for i = 1, iters do
            fn(inputs[i % n_inputs + 1])
        end
        local dt = (clock() - t0) / iters * 1e9
        if dt < best then
            best = dt
        end
    end
    return best
end

local trusted_cidrs = { "127.0.0.0/8", "10.0.0.0/8", "::1", "2001:db8::/32" }
local cset = assert(gray_ffi.new_ipset(trusted_cidrs))
local lset = base.new_set(trusted_cidrs)

local function xff_with(hops)
    local t = { "203.0.113.7" }
    for i = 2, hops do
        t[i] = "10.0." .. (i % 250) .. "." .. (i % 200 + 1)
    end
    return table.concat(t, ", ")
end

local function get_reply(n)
    local t, keys = {}, {}
    for i = 1, n do
        local key = "192.168." .. math.floor(i / 250) .. "." .. (i % 250)
        keys[i] = key
        t[#t + 1] = "VALUE " .. key .. " 0 1\r\n" .. (i % 2) .. "\r\n"
    end
    t[#t + 1] = "END\r\n"
    return table.concat(t), table.concat(keys, " ")
end

local reply1 = "VALUE 192.168.2.20 0 1\r\n1\r\nEND\r\n"
local reply100, keys100 = get_reply(100)

local jobs = {
    { name = "canonical IPv4",
      inputs = { "192.168.2.20", "10.0.0.1", "203.0.113.255", "8.8.8.8" },
      c = gray_ffi.canonical_ip, lua = base.canonical },
    { name = "canonical IPv6",
      inputs = { "2001:0DB8:0000:0000:0001:0000:0000:0001", "::ffff:192.168.2.20",
                 "fe80::1:2:3:4", "2001:db8:85a3::8a2e:370:7334" },
      c = gray_ffi.canonical_ip, lua = base.canonical },
}

for _, hops in ipairs({ 1, 5, 50 }) do
    jobs[#jobs + 1] = {
        name = "forwarded walk, " .. hops .. " hop" .. (hops > 1 and "s" or ""),
        inputs = { xff_with(hops) },
        c = function(xff) return (gray_ffi.client_ip(cset, "127.0.0.1", nil, xff)) end,
        lua = function(xff) return base.xff_client(lset, "127.0.0.1", xff) end,
    }
end

jobs[#jobs + 1] = {
    name = "decode get, 1 value",
    inputs = { reply1 },
    c = function(buf) return (gray_ffi.mc_decode_get1(buf, "192.168.2.20")) end,
    lua = function(buf) return (base.decode_get1(buf)) end,
}
jobs[#jobs + 1] = {
    name = "decode get, 100 values",
    inputs = { reply100 },
    c = function(buf) return (gray_ffi.mc_decode_get(buf, keys100)) end,
    lua = function(buf) return (base.decode_get(buf)) end,
    same = function(a, b)
        for k, v in pairs(b) do
            if a[k] ~= v then
                return false
            end
        end
        for k in pairs(a) do
            if not b[k] then return false end
        end
        return true
    end,
}

-- murmur3 of 40-byte keys
local keys40 = {}
for i = 1, 8 do
    keys40[i] = ("uid:%036d"):format(i * 7919)
end
jobs[#jobs + 1] = {
    name = "murmur3, 40-byte key",
    inputs = keys40,
    c = gray_ffi.murmur3, lua = base.murmur3,
}

-- A ranges list of RANGE_LINES mixed IPv4/IPv6 CIDRs, some nested, with
-- three targets, and PROBES lookups: half of them addresses of listed lines,
-- half random addresses (mostly in no range).
local RANGE_LINES = 1000000
local PROBES = 16384
local NAMES = { "1", "v2", "v3" }

local function random_v4()
    return ("%d.%d.%d.%d"):format(math.random(0, 255), math.random(0, 255),
                                  math.random(0, 255), math.random(0, 255))
end

local function random_v6()
    return ("%x:%x:%x:%x:%x:%x:%x:%x"):format(math.random(0x2000, 0x3fff),
                                              math.random(0, 0xffff), math.random(0, 0xffff),
                                              math.random(0, 0xffff), math.random(0, 0xffff),
                                              math.random(0, 0xffff), math.random(0, 0xffff),
                                              math.random(0, 0xffff))
end

local V4_PREFIXES = { 12, 16, 20, 22, 24, 24, 24, 26, 28, 30, 32, 32, 32, 32 }
local V6_PREFIXES = { 24, 32, 40, 48, 48, 56, 64, 64, 96, 112, 124, 128, 128 }

math.randomseed(20240607)
local lines, addrs = {}, {}
for i = 1, RANGE_LINES do
    local addr, prefix
    if i % 2 == 0 then
        addr, prefix = random_v4(), V4_PREFIXES[math.random(#V4_PREFIXES)]
    else
        addr, prefix = random_v6(), V6_PREFIXES[math.random(#V6_PREFIXES)]
    end
    local t = math.random(3)
    addrs[i] = addr
    lines[i] = addr .. "/" .. prefix .. (t > 1 and " " .. NAMES[t] or "")
end
local range_text = table.concat(lines, "\n")
lines = nil -- luacheck: ignore 311
local probes = {}
for i = 1, PROBES do
    if i % 2 == 0 then
        probes[i] = addrs[math.random(RANGE_LINES)]
    else
        probes[i] = i % 4 == 1 and random_v4() or random_v6()
    end
end
-- The probes anew, after the list's strings are gone: packed together as a
-- request's fresh address would be, not scattered over the list's heap.
local packed = table.concat(probes, " ")
probes, addrs = nil, nil -- luacheck: ignore 311
collectgarbage()
collectgarbage()
probes = {}
for addr in packed:gmatch("%S+") do
    probes[#probes + 1] = addr
end
packed = nil -- luacheck: ignore 311

local function seconds(fn, runs)
    local best, result = math.huge, nil
    for _ = 1, runs do
        collectgarbage()
        local t0 = clock()
        result = fn()
        best = math.min(best, clock() - t0)
    end
    return best, result
end

local c_compile, range_cset = seconds(function()
    return assert(gray_ffi.new_rangeset(range_text, NAMES))
end, 3)
local lua_mem0 = collectgarbage("count")
local lua_taken
local lua_compile, range_lset = seconds(function()
    local set, taken = base.new_ranges(range_text, NAMES)
    lua_taken = taken
    return set
end, 1)
local lua_kb = collectgarbage("count") - lua_mem0

jobs[#jobs + 1] = {
    name = "range lookup, 1M CIDRs",
    inputs = probes,
    c = function(addr) return gray_ffi.rangeset_find(range_cset, addr) end,
    lua = function(addr) return base.ranges_find(range_lset, addr) end,
}

print(string.format("%s, %s", jit and jit.version or _VERSION, gray_ffi.lib_path))
print(string.format("%-26s %12s %12s %9s", "job", "C ns/op", "Lua ns/op", "Lua/C"))
local failed = false
for _, job in ipairs(jobs) do
    for _, input in ipairs(job.inputs) do
        local a, b = job.c(input), job.lua(input)
        local same = job.same and job.same(a, b) or a == b
        if not same then
            print("MISMATCH in " .. job.name .. " for " .. input:sub(1, 60) .. ": C "
                  .. tostring(a) .. ", Lua " .. tostring(b))
            failed = true
        end
    end
    local c_ns = ns_per_op(job.c, job.inputs)
    local lua_ns = ns_per_op(job.lua, job.inputs)
    print(string.format("%-26s %12.1f %12.1f %8.1fx", job.name, c_ns, lua_ns, lua_ns / c_ns))
end

print()
print(string.format("compile %d-line ranges list (%.1f MB of text): C %.0f ms, Lua %.0f ms (%.1fx)",
                    RANGE_LINES, #range_text / 1e6, c_compile * 1e3, lua_compile * 1e3,
                    lua_compile / c_compile))
print(string.format("  C: %d lines taken, %d bad, %d runs, %.1f MB kept (%.1f bytes per line);"
                    .. " Lua tables: %.1f MB", range_cset.count, range_cset.bad, range_cset.runs,
                    range_cset.bytes / 1e6, range_cset.bytes / range_cset.count, lua_kb / 1024))
local hits = 0
for _, addr in ipairs(probes) do
    hits = hits + (gray_ffi.rangeset_find(range_cset, addr) and 1 or 0)
end
print(string.format("  lookups: %d probes, %d%% of them in a range", PROBES, hits * 100 / PROBES))
if range_cset.count ~= RANGE_LINES or lua_taken ~= RANGE_LINES then
    print("MISMATCH: lines taken: C " .. range_cset.count .. ", Lua " .. lua_taken .. ", of "
          .. RANGE_LINES)
    failed = true
end

if failed then
    os.exit(1)
end
