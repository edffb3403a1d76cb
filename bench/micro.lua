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
if failed then
    os.exit(1)
end
