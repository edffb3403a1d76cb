-- mc_meta_bench.lua - `make bench-meta`: get vs mg, bytes on the wire and
-- the C decoder's instructions per lookup (callgrind: a run of 2N decodes
-- less a run of N, so start-up and set-up cancel out), in C alone
-- (bench/mc_meta.c, built as build/mc-meta-bench) and through gray.ffi
-- (bench/mc_meta.lua). See bench/mc_meta.c for the cases.
--
--   LUA_PATH='spec/?.lua;;' luajit bench/mc_meta_bench.lua [BIN]   (make bench-meta)
--
-- Settings (environment): MC_META_N (20000), LUAJIT (luajit).

local harness = require "helpers.harness"

local sh, quote = harness.sh, harness.quote
local BIN = arg[1] or "build/mc-meta-bench"
local N = tonumber(os.getenv("MC_META_N") or "20000")
local LUAJIT = os.getenv("LUAJIT") or "luajit"

if select(2, sh("command -v valgrind")) ~= 0 then
    io.stderr:write("bench-meta: valgrind is missing (tools/deps.sh bench)\n")
    os.exit(1)
end

-- Ir of a whole run of a command
local function instructions(cmd, env)
    local out = sh((env or "") .. "valgrind --tool=callgrind --callgrind-out-file=/dev/null " .. cmd
                   .. " 2>&1 >/dev/null")
    return assert(tonumber(out:match("Collected : (%d+)")), "callgrind: " .. out)
end

-- (Ir of 2n lookups - Ir of n) / n
local function per_lookup(n, cmd, env)
    return math.floor((instructions(cmd .. " " .. 2 * n, env) - instructions(cmd .. " " .. n, env))
                      / n)
end

local lua_cases = harness.read_file("bench/mc_meta.lua") or ""
local row = "%-14s %9s %9s %9s %10s %10s"
print(row:format("case", "request", "reply", "total", "C instr", "Lua instr"))
for line in sh(BIN):gmatch("[^\n]+") do
    local name, req, reply, total = line:match("^(%S+)%s+(%S+)%s+(%S+)%s+(%S+)")
    if name and name ~= "case" then
        local n = name == "gets-cas-1MB" and 20 or N
        local c = per_lookup(n, BIN .. " " .. quote(name))
        local lua = "-"
        if lua_cases:find('"' .. name .. '"', 1, true) then
            -- LuaJIT's traces form a little differently run to run (a 3-key
            -- loop may become its own trace): the median of 3 fresh processes
            local runs = {}
            for i = 1, 3 do
                runs[i] = per_lookup(N, LUAJIT .. " bench/mc_meta.lua " .. quote(name),
                                     "LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;' ")
            end
            table.sort(runs)
            lua = runs[2]
        end
        print(row:format(name, req, reply, total, c, lua))
        io.stdout:flush()
    end
end
print("bytes: request and reply on the wire; C instr: gray_mc_parse_get/_meta per lookup;")
print("Lua instr: gray.ffi's decode (FFI call, value strings, result table) per lookup,")
print("the median of 3 processes")
