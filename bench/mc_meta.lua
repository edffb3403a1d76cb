-- bench/mc_meta.lua: the replies of bench/mc_meta.c decoded through gray.ffi
-- (the C decoder, the FFI call, the value strings and the result table),
-- as the client does on a lookup.
--
--   luajit bench/mc_meta.lua CASE N    decodes CASE's reply N times (for
--                                      callgrind: bench/mc_meta_bench.lua takes
--                                      the difference of N and 2N runs)
local gray_ffi = require "gray.ffi"

local K1, K2, K3 = "203.0.113.7", "uid:8412937", "dev:4f9a2c71e0"
local KEYS3 = K1 .. " " .. K2 .. " " .. K3
local M3 = gray_ffi.META_PIPELINE + gray_ffi.META_VALUE + gray_ffi.META_QUIET

local get1 = gray_ffi.mc_decode_get1
local meta1 = gray_ffi.mc_decode_meta1
local get = gray_ffi.mc_decode_get
local meta = gray_ffi.mc_decode_meta

local CASES = {
    ["get-1-hit"] = function(r) return get1(r, K1) end,
    ["mg-1-hit"] = function(r) return meta1(r, K1, true) end,
    ["get-1-miss"] = function(r) return get1(r, K1) end,
    ["mg-1-miss"] = function(r) return meta1(r, K1, true) end,
    ["get-3-hit"] = function(r) return get(r, KEYS3, 3) end,
    ["mg-3-hit"] = function(r) return meta(r, KEYS3, 3, M3) end,
    ["get-3-1hit"] = function(r) return get(r, KEYS3, 3) end,
    ["mg-3-1hit"] = function(r) return meta(r, KEYS3, 3, M3) end,
}
local REPLIES = {
    ["get-1-hit"] = "VALUE " .. K1 .. " 0 1\r\n1\r\nEND\r\n",
    ["mg-1-hit"] = "VA 1\r\n1\r\n",
    ["get-1-miss"] = "END\r\n",
    ["mg-1-miss"] = "EN\r\n",
    ["get-3-hit"] = "VALUE " .. K1 .. " 0 1\r\n1\r\nVALUE " .. K2 .. " 0 2\r\nv2\r\nVALUE "
                    .. K3 .. " 0 2\r\nv3\r\nEND\r\n",
    ["mg-3-hit"] = "VA 1 O0\r\n1\r\nVA 2 O1\r\nv2\r\nVA 2 O2\r\nv3\r\nMN\r\n",
    ["get-3-1hit"] = "VALUE " .. K2 .. " 0 2\r\nv2\r\nEND\r\n",
    ["mg-3-1hit"] = "VA 2 O1\r\nv2\r\nMN\r\n",
}

local name, n = arg[1], tonumber(arg[2])
local fn, reply = CASES[name], REPLIES[name]
if not fn or not n then
    io.stderr:write("usage: mc_meta.lua CASE N (CASE: a row of bench/mc_meta.c's)\n")
    os.exit(2)
end
-- the two decoders must agree before anything is timed
local a = fn(reply)
assert(a ~= nil, name .. ": no result")
for _ = 1, n do
    fn(reply)
end
