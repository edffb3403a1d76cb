-- wrk_load.lua - what the load benches on the spec harness (shm_load.lua,
-- soak.lua) share: the router's server block, wrk's walk over the client
-- addresses, the members' entries in memcached, and the results' file.
--
--   local wrk_load = require "wrk_load"   -- LUA_PATH='spec/?.lua;bench/?.lua;;'

local harness = require "helpers.harness"

local _M = {}

--- nginx's server block: the Lua API router (X-Real-IP from the trusted
-- loopback client; no ranges, percentage or ramp key; options: more of
-- new()'s options as Lua text, "" or ending in ", "), built once per
-- worker. Its locations answer "stable" .. answer .. "\n" and "gray" ..
-- answer .. "\n" (answer: text in nginx's syntax, "" for none).
function _M.server(options, answer)
    return [[
  server {
    listen 127.0.0.1:$PORT;
    location / {
        content_by_lua_block {
            local r = package.loaded.bench_router
            if not r then
                r = assert(require("gray").new({ memcached = "127.0.0.1:$MC",
                    ]] .. options .. [[client_headers = { "X-Real-IP" }, ranges_key = false,
                    percent_key = false, ramp_key = false }))
                package.loaded.bench_router = r
            end
            return r:exec()
        }
    }
    location @server      { return 200 "stable]] .. answer .. [[\n"; }
    location @server_test { return 200 "gray]] .. answer .. [[\n"; }
  }
]]
end

--- The start of a wrk script: request() sends client n's address in
-- X-Real-IP, n walking 0 .. clients - 1 and round again, each thread from
-- its own random start. address: a Lua expression (wrk's side) of the
-- address from n. The script's locals n and clients stay in scope for
-- what follows it; to do more in setup(thread), keep this setup and call it.
function _M.walk(clients, address)
    return [[
local n = 0
local clients = ]] .. clients .. [[

function setup(thread)
    thread:set("start", math.random(0, clients - 1))
end

function init()
    n = tonumber(wrk.thread:get("start")) or 0
end

function request()
    n = (n + 1) % clients
    return wrk.format(nil, "/", { ["X-Real-IP"] = ]] .. address .. [[ })
end
]]
end

--- The wrk script text written to a scratch file named name: its path.
function _M.script_file(name, text)
    local path = harness.tmpdir() .. "/" .. name
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    return path
end

--- Entry "1" for client 0 and every every-th client below clients (address(i):
-- client i's address), in one pipelined write; checked on client 0.
function _M.set_members(mc, clients, every, address)
    local sets = {}
    for i = 0, clients - 1, every do
        sets[#sets + 1] = "set " .. address(i) .. " 0 0 1 noreply\r\n1\r\n"
    end
    mc:cmd_file(table.concat(sets))
    assert(mc:get(address(0)) == "1", "memcached did not take the entries")
end

--- The results: text on stdout, and into path (build/..., when it can be
-- written).
function _M.write_results(text, path)
    io.write(text)
    local out = io.open(path, "wb")
    if out then
        out:write(text)
        out:close()
    end
end

return _M
