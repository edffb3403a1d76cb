-- Two nginx "nodes" on one memcached, for gray.halt's and gray.guard's
-- specs: node a runs the guard setting given (2 workers) and the backends
-- (stable, gray: the gray one as /mode?m= says on a's second port), node b
-- (no guard) proxies to a's backends. Load from wrk with 1000 clients.

local harness = require "helpers.harness"

local _M = {}

_M.REFRESH = 2           -- s: the lists' (and halts') refresh_interval default
local REPO = harness.sh("pwd"):gsub("%s+$", "")

-- the front of a node: $GUARD is its guard setting; $BACKEND the backends
local FRONT = [[
  log_by_lua_file $REPO/lua/gray/outcome.lua;
  server {
    listen 127.0.0.1:$PORT;
    location / {
        set $gray_memcached 127.0.0.1:$MC;
        set $gray_cache_ttl 300;
        set $gray_timeout 500ms;      # the machine is loaded: no store-error
        set $gray_guard "$GUARD";
        set $gray_force "header:X-Gray";
        set $gray_force_from "127.0.0.1";
        set $gray_debug_header "X-Gray-Debug";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location @server {
        proxy_set_header X-Backend stable;
        proxy_pass http://127.0.0.1:$BACKEND;
    }
    location @server_test {
        proxy_set_header X-Backend gray;
        proxy_pass http://127.0.0.1:$BACKEND;
    }
    location = /metrics {
        content_by_lua_block { require("gray.metrics").render() }
    }
    ]] .. harness.EVAL_LOCATION .. [[
  }
]]

-- the backends (node A's second port): the gray one as /mode says: "fail"
-- answers 500 to 20%, "slow" takes 200 ms more, "aa" behaves as stable
-- (1% 500s and 0..20 ms, both), else 200 at once
local BACKENDS = [[
  server {
    listen 127.0.0.1:$PORT2;
    location = /mode {
        content_by_lua_block {
            ngx.shared.spec_mode:set("mode", ngx.var.arg_m)
            ngx.say(ngx.var.arg_m)
        }
    }
    location / {
        content_by_lua_block {
            local mode = ngx.shared.spec_mode:get("mode")
            local gray = ngx.var.http_x_backend == "gray"
            if mode == "aa" then
                ngx.sleep(math.random() * 0.02)
                if math.random() < 0.01 then
                    return ngx.exit(500)
                end
            elseif gray and mode == "fail" and math.random() < 0.2 then
                return ngx.exit(500)
            elseif gray and mode == "slow" then
                ngx.sleep(0.2)
            end
            ngx.say(gray and "gray" or "stable")
        }
    }
  }
]]

local HTTP = [[
    lua_shared_dict gray_metrics 4m;
    lua_shared_dict spec_mode 64k;
]]

local function front(guard, backend)
    return FRONT:gsub("%$GUARD", guard):gsub("%$BACKEND", tostring(backend))
end

--- Starts two nodes on one memcached: a (guard, backends) and b (no guard).
function _M.two_nodes(mc, guard)
    local a = harness.nginx({ memcached_port = mc.port, workers = 2, http = HTTP,
                              servers = front(guard, "$PORT2") .. BACKENDS })
    local b = harness.nginx({ memcached_port = mc.port, workers = 2, http = HTTP,
                              servers = front("off", a.port2) })
    return a, b
end

--- wrk on node's front for seconds, clients from a pool of 1000 addresses
-- (X-Real-IP); returns its pid. opts.connections: wrk's connections (8);
-- opts.delay_ms: each connection waits that long before each request (wrk's
-- delay()), a lighter load (default: none, as fast as the node answers).
function _M.load(node, seconds, opts)
    opts = opts or {}
    local script = node.dir .. "/clients.lua"
    local f = assert(io.open(script, "w"))
    if opts.delay_ms then
        f:write("delay = function() return " .. tonumber(opts.delay_ms) .. " end\n")
    end
    f:write([[
        local n = 0
        request = function()
            n = n + 1
            local i = n % 1000
            return wrk.format(nil, nil, { ["X-Real-IP"] = "10.7." .. math.floor(i / 256) .. "."
                                          .. (i % 256) })
        end
    ]])
    f:close()
    local out = harness.sh("wrk -t1 -c" .. (opts.connections or 8) .. " -d" .. seconds
                           .. "s -s " .. script .. " http://127.0.0.1:" .. node.port .. "/ >"
                           .. node.dir .. "/wrk.out 2>&1 & echo $!")
    return assert(tonumber(out:match("(%d+)")), out)
end

function _M.stop_load(pid)
    if pid then
        harness.sh("kill " .. pid .. " 2>/dev/null; true")
    end
end

function _M.debug_of(node, ip, headers)
    headers = headers or {}
    headers["X-Real-IP"] = ip
    local res = node:get("/", { headers = headers })
    return res.headers["x-gray-debug"], res
end

-- an address in the percentage (50%) at node
function _M.in_percent(node)
    return harness.pick("10.9.0.%d", function(ip)
        return _M.debug_of(node, ip) == "@server_test; percent"
    end)
end

function _M.admin(mc, args)
    return harness.sh(REPO .. "/build/gray-admin --servers 127.0.0.1:" .. mc.port .. " " .. args
                      .. " 2>&1")
end

return _M
