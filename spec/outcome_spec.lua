-- gray.outcome: what each target answered, counted in the log phase of a
-- real nginx (2 workers) in front of a real backend, routed by a real
-- memcached: counts by target and status class that add up to the requests
-- sent, $upstream_status over the response's status (an intercepted 500
-- served as 200, a refused connection retried on a backup: "502, 200"), the
-- histogram, the window accessor, the drop-in (router:exec()) and the Lua
-- API (decide(), then outcome.note()), and a page that passes the format
-- checker. Requests that no router noted (the page itself, the backend's
-- own, with log_by_lua_file at http level) are not counted.

local harness = require "helpers.harness"
local exposition = require "helpers.exposition"

local GRAY_IP, V2_IP, STABLE_IP = "203.0.113.1", "203.0.113.2", "198.51.100.7"
local SLOW = 0.6        -- s the gray backend takes on /slow

-- (at http level: every request of both servers runs it)
local SERVERS = [[
  log_by_lua_file $REPO/lua/gray/outcome.lua;
  upstream v2_backend {
      server 127.0.0.1:1 max_fails=0;                 # refused: 502, then the backup
      server 127.0.0.1:$PORT2 backup;
  }
  server {
    listen 127.0.0.1:$PORT;
    location / {
        set $gray_memcached 127.0.0.1:$MC;
        # routing is not the subject: 2 s lookups, so that a loaded machine
        # does not turn one into a store-error (a count off by one)
        set $gray_timeout 2000;
        set $gray_cache_ttl 300;
        set $gray_targets "v2=@server_v2";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /api/ {
        set $be stable;
        access_by_lua_block {
            local r = package.loaded.spec_outcome_router
            if not r then
                r = assert(require("gray").new({ memcached = "127.0.0.1:$MC",
                                                 cache_ttl = 300, timeout = 2000 }))
                package.loaded.spec_outcome_router = r
            end
            local location = assert(r:decide())
            local name = location == "@server_test" and "gray" or "stable"
            ngx.var.be = name
            require("gray.outcome").note(name)
        }
        proxy_set_header X-Backend $be;
        proxy_pass http://127.0.0.1:$PORT2;
    }
    location @server {
        proxy_set_header X-Backend stable;
        proxy_pass http://127.0.0.1:$PORT2;
    }
    location @server_test {
        proxy_set_header X-Backend gray;
        proxy_pass http://127.0.0.1:$PORT2;
    }
    location @server_v2 {
        proxy_set_header X-Backend gray;
        proxy_pass http://v2_backend;
        proxy_next_upstream error http_502;
        proxy_intercept_errors on;
        error_page 500 =200 /sorry;
    }
    location = /sorry { internal; return 200 "sorry\n"; }
    location = /metrics {
        content_by_lua_block { require("gray.metrics").render() }
    }
    ]] .. harness.EVAL_LOCATION .. [[
  }
  server {
    # the backends: stable answers 200; gray 500 on .../fail, 200 after
    # SLOW s on .../slow, else 200
    listen 127.0.0.1:$PORT2;
    location / {
        content_by_lua_block {
            local gray = ngx.var.http_x_backend == "gray"
            local uri = ngx.var.uri
            if gray and uri:find("fail", 1, true) then
                ngx.status = 500
                ngx.say("gray failed")
                return
            elseif gray and uri:find("slow", 1, true) then
                ngx.sleep(]] .. SLOW .. [[)
            end
            ngx.say(gray and "gray" or "stable")
        }
    }
  }
]]

local HTTP = [[
    lua_shared_dict gray_metrics 1m;
    init_by_lua_block { require("gray.metrics").configure({ flush_interval = 0.1 }) }
]]

-- the value of one series (exact key) on the page, or nil
local function sample(text, key)
    local i = text:find("\n" .. key .. " ", 1, true)
    return i and tonumber(text:match("^(%S+)", i + #key + 2))
end

local function total(text, name)
    local sum = 0
    for v in text:gmatch("\n" .. name .. "%b{} (%S+)") do
        sum = sum + tonumber(v)
    end
    return sum
end

-- reads_upstream_status() of the worker that answers, once it has read
-- nginx.conf (a timer at its start)
local function reads_upstream(nginx)
    local got
    local deadline = harness.now() + 2
    repeat
        got = nginx:eval([[
            local reads, why = require("gray.outcome").reads_upstream_status()
            return tostring(reads) .. " " .. why
        ]])
        if not got:find("not read yet", 1, true) or harness.now() > deadline then
            return got
        end
        harness.sleep(0.05)
    until false
end

describe("gray.outcome", function()
    after_each(harness.no_error_log)
    local mc, nginx

    setup(function()
        mc = harness.memcached()
        mc:set_many({ [GRAY_IP] = "1", [V2_IP] = "v2" })
        nginx = harness.nginx({ memcached_port = mc.port, workers = 2,
                                http = HTTP,
                                servers = SERVERS })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    local function send(path, n, ip, want)
        assert.equal(want or (n .. " 200"), nginx:batch(path, n, { "X-Real-IP: " .. ip }))
    end

    -- the slow ones side by side (each takes SLOW s)
    local function send_concurrent(path, n, ip)
        assert.equal(n .. " 200", nginx:concurrent(path, n, { "X-Real-IP: " .. ip }))
    end

    it("counts each target's answers by class and time, $upstream_status first", function()
        -- nginx.conf has an error_page (@server_v2)
        local reads = reads_upstream(nginx)
        assert.truthy(reads:find("^true .* uses error_page\n$"), reads)
        -- the drop-in
        send("/ok", 30, GRAY_IP)
        send("/fail", 10, GRAY_IP, "10 500")
        send_concurrent("/slow", 5, GRAY_IP)
        send("/ok", 40, STABLE_IP)
        send("/fail", 5, STABLE_IP)
        -- v2: refused then the backup ("502, 200"); its 500s intercepted
        -- and served as 200: still 5xx
        send("/ok", 6, V2_IP)
        send("/fail", 4, V2_IP)
        -- the Lua API
        send("/api/ok", 8, GRAY_IP)
        send("/api/fail", 2, GRAY_IP, "2 500")
        send("/api/ok", 5, STABLE_IP)
        local SENT = 30 + 10 + 5 + 40 + 5 + 6 + 4 + 8 + 2 + 5
        local text
        for _ = 1, 100 do
            text = nginx:get("/metrics").body
            if total(text, "gray_responses_total") >= SENT then
                break
            end
            harness.sleep(0.05)
        end
        exposition.valid_page(text)
        assert.equal(SENT, total(text, "gray_responses_total"), text)
        local function class(target, c)
            return sample(text, 'gray_responses_total{target="' .. target .. '",class="' .. c .. '"}')
        end
        assert.equal(30 + 5 + 8, class("gray", "2xx"), text)
        assert.equal(10 + 2, class("gray", "5xx"), text)
        assert.equal(40 + 5 + 5, class("stable", "2xx"), text)
        assert.is_nil(class("stable", "5xx"), text)
        assert.equal(6, class("v2", "2xx"), text)
        assert.equal(4, class("v2", "5xx"), text)       -- the client saw 200
        -- the histogram: every request once, the slow ones above SLOW
        local function bucket(target, le)
            return sample(text, 'gray_response_seconds_bucket{target="' .. target .. '",le="'
                                .. le .. '"}')
        end
        assert.equal(55, sample(text, 'gray_response_seconds_count{target="gray"}'), text)
        assert.equal(55, bucket("gray", "+Inf"), text)
        assert.equal(50, bucket("gray", "0.5"), text)
        assert.equal(55, bucket("gray", "1"), text)
        assert.equal(50, sample(text, 'gray_response_seconds_count{target="stable"}'), text)
        assert.equal(10, sample(text, 'gray_response_seconds_count{target="v2"}'), text)
        local sum = sample(text, 'gray_response_seconds_sum{target="gray"}')
        assert.truthy(sum >= 5 * SLOW and sum < 5 * SLOW + 50 * 0.5, text)
        assert.truthy(text:find("# TYPE gray_response_seconds histogram", 1, true), text)
        assert.truthy(text:find("# TYPE gray_responses_total counter", 1, true), text)

        -- the window: the same counts, a p95 among the slow ones
        local got = nginx:eval([[
            local o = require "gray.outcome"
            local out = {}
            for _, t in ipairs({ "gray", "stable", "v2", "none" }) do
                local n, e, p95 = o.window(t, 60)
                out[#out + 1] = t .. " " .. n .. " " .. e .. " " .. tostring(p95)
            end
            return table.concat(out, "\n")
        ]])
        local n, e, p95 = got:match("^gray (%d+) (%d+) (%S+)")
        assert.equal("55", n, got)
        assert.equal("12", e, got)
        -- rank 52.25 of 55: in the (0.5, 1] bucket that holds the 5 slow ones
        assert.near(0.5 + 0.5 * (0.95 * 55 - 50) / 5, tonumber(p95), 1e-9, got)
        n, e, p95 = got:match("\nstable (%d+) (%d+) (%S+)")
        assert.equal("50", n, got)
        assert.equal("0", e, got)
        assert.truthy(tonumber(p95) <= 0.5, got)
        assert.truthy(got:find("\nv2 10 4 ", 1, true), got)
        assert.truthy(got:find("\nnone 0 0 nil", 1, true), got)
        -- it slides: nothing in the last second, a while later (within 3 s)
        local deadline = harness.now() + 3
        repeat
            got = nginx:eval([[
                local o = require "gray.outcome"
                local n1, e1 = o.window("gray", 1)
                local n60, e60 = o.window("gray")
                return n1 .. " " .. e1 .. " " .. n60 .. " " .. e60
            ]])
            if got:find("^0 0 ") or harness.now() > deadline then
                break
            end
            harness.sleep(0.1)
        until false
        assert.equal("0 0 55 12\n", got)
        local log = nginx:error_log()
        assert.same({}, harness.bad_log_lines(log))
        -- no error but v2's refused first server
        for line in log:gmatch("[^\n]*%[error%][^\n]*") do
            assert.truthy(line:find('connect() failed (111: Connection refused) while connecting'
                                    .. ' to upstream', 1, true)
                          and line:find('upstream: "http://127.0.0.1:1/', 1, true), line)
        end
    end)

    it("refuses a bad window argument with the argument named", function()
        local got = nginx:eval([[
            local o = require "gray.outcome"
            local ok1, e1 = pcall(o.window, "1", 0)
            local ok2, e2 = pcall(o.window, "1", 61)
            local ok3, e3 = pcall(o.window, nil)
            return tostring(ok1 or ok2 or ok3) .. "\n" .. e1 .. "\n" .. e2 .. "\n" .. e3
        ]])
        assert.truthy(got:find("^false\n"), got)
        assert.truthy(got:find("seconds must be a number from 1 to 60", 1, true), got)
        assert.truthy(got:find("name must be a target name", 1, true), got)
    end)
end)

describe("gray.outcome without the metrics dict", function()
    after_each(harness.no_error_log)
    local mc, nginx

    setup(function()
        mc = harness.memcached()
        mc:set(GRAY_IP, "1")
        nginx = harness.nginx({ memcached_port = mc.port, servers = SERVERS })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    it("routes as usual, counts nothing and logs nothing", function()
        assert.equal("20 200", nginx:batch("/ok", 20, { "X-Real-IP: " .. GRAY_IP }))
        assert.equal("5 500", nginx:batch("/api/fail", 5, { "X-Real-IP: " .. GRAY_IP }))
        assert.equal("nil no lua_shared_dict gray_metrics\n", nginx:eval([[
            local n, err = require("gray.outcome").window("gray")
            return tostring(n) .. " " .. tostring(err)
        ]]))
        local log = nginx:error_log()
        assert.same({}, harness.bad_log_lines(log))
        assert.falsy(log:find("%[error%]"), log)
    end)
end)

describe("gray.outcome over a reload, from a log_by_lua_block", function()
    after_each(harness.no_error_log)
    local mc, nginx
    local N = 300

    setup(function()
        mc = harness.memcached()
        mc:set(GRAY_IP, "1")
        -- the block form at server level; a flush every 60 s: counts reach
        -- the dict only when their worker exits
        local servers = SERVERS:gsub("  log_by_lua_file %$REPO/lua/gray/outcome.lua;\n", "", 1)
                               :gsub("listen 127.0.0.1:%$PORT;\n", "%0    log_by_lua_block {"
                                     .. " require(\"gray.outcome\").log() }\n", 1)
        assert(not servers:find("log_by_lua_file", 1, true))
        nginx = harness.nginx({ memcached_port = mc.port, workers = 2, servers = servers,
            http = "lua_shared_dict gray_metrics 1m;\n init_by_lua_block {"
                   .. " require('gray.metrics').configure({ flush_interval = 60 }) }" })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    it("loses no count: the exiting workers flush theirs", function()
        assert.equal(N .. " 200", nginx:batch("/ok", N, { "X-Real-IP: " .. GRAY_IP }))
        assert.equal("10 500", nginx:batch("/fail", 10, { "X-Real-IP: " .. GRAY_IP }))
        nginx:reload()
        local text
        for _ = 1, 100 do
            text = nginx:get("/metrics").body
            if total(text, "gray_responses_total") >= N + 10 then
                break
            end
            harness.sleep(0.05)
        end
        exposition.valid_page(text)
        assert.equal(N, sample(text, 'gray_responses_total{target="gray",class="2xx"}'), text)
        assert.equal(10, sample(text, 'gray_responses_total{target="gray",class="5xx"}'), text)
        assert.equal(N + 10, sample(text, 'gray_response_seconds_count{target="gray"}'), text)
        assert.equal("310 10\n", nginx:eval([[
            local n, e = require("gray.outcome").window("gray", 10)
            return n .. " " .. e
        ]]))
        assert.same({}, harness.bad_log_lines(nginx:error_log()))
    end)
end)

describe("gray.outcome.configure({ upstream_status = false })", function()
    local mc, nginx

    setup(function()
        mc = harness.memcached()
        mc:set_many({ [GRAY_IP] = "1", [V2_IP] = "v2" })
        nginx = harness.nginx({ memcached_port = mc.port, servers = SERVERS,
            http = "lua_shared_dict gray_metrics 1m;\n init_by_lua_block {"
                   .. " require('gray.metrics').configure({ flush_interval = 0.1 })"
                   .. " require('gray.outcome').configure({ upstream_status = false }) }" })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    it("counts the response's status alone (an intercepted 500 served as 200: 2xx)", function()
        assert.equal("false configure({ upstream_status = false })\n", reads_upstream(nginx))
        assert.equal("10 500", nginx:batch("/fail", 10, { "X-Real-IP: " .. GRAY_IP }))
        assert.equal("4 200", nginx:batch("/fail", 4, { "X-Real-IP: " .. V2_IP }))
        local text
        for _ = 1, 100 do
            text = nginx:get("/metrics").body
            if total(text, "gray_responses_total") >= 14 then
                break
            end
            harness.sleep(0.05)
        end
        assert.equal(10, sample(text, 'gray_responses_total{target="gray",class="5xx"}'), text)
        -- what the client got: the upstream's 500 is not seen
        assert.equal(4, sample(text, 'gray_responses_total{target="v2",class="2xx"}'), text)
        assert.is_nil(sample(text, 'gray_responses_total{target="v2",class="5xx"}'), text)
    end)

    it("refuses a bad option with the option named", function()
        local got = nginx:eval([[
            local o = require "gray.outcome"
            local ok1, e1 = pcall(o.configure, { upstream_status = "no" })
            local ok2, e2 = pcall(o.configure, "off")
            return tostring(ok1 or ok2) .. "\n" .. e1 .. "\n" .. e2
        ]])
        assert.truthy(got:find("^false\n"), got)
        assert.truthy(got:find("upstream_status must be true or false", 1, true), got)
        assert.truthy(got:find("opts must be a table", 1, true), got)
    end)
end)

-- the directives that make the two statuses differ are in no file here:
-- v2's 500s pass through, and its refused first server ("502, 200") ends
-- in the backup's 200 either way
local PLAIN_SERVERS = SERVERS:gsub("\n        proxy_intercept_errors on;\n        error_page 500 =200 /sorry;", "", 1)
assert(not PLAIN_SERVERS:find("error_page", 1, true))

describe("gray.outcome where nginx.conf needs no $upstream_status", function()
    after_each(harness.no_error_log)
    local mc, nginx

    setup(function()
        mc = harness.memcached()
        mc:set_many({ [GRAY_IP] = "1", [V2_IP] = "v2" })
        nginx = harness.nginx({ memcached_port = mc.port, workers = 2, http = HTTP,
                                servers = PLAIN_SERVERS })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    local function send(path, n, ip, want)
        assert.equal(want or (n .. " 200"), nginx:batch(path, n, { "X-Real-IP: " .. ip }))
    end

    it("skips the read and counts what each target answered, every worker's", function()
        local got = reads_upstream(nginx)
        assert.truthy(got:find("^false " .. nginx.conf:gsub("%p", "%%%0")
                               .. " and its includes use none of error_page, "), got)
        send("/ok", 30, GRAY_IP)
        send("/fail", 10, GRAY_IP, "10 500")
        send("/ok", 20, STABLE_IP)
        send("/fail", 5, STABLE_IP)
        send("/ok", 6, V2_IP)                   -- "502, 200": 200 either way
        send("/fail", 4, V2_IP, "4 500")
        send("/api/fail", 3, GRAY_IP, "3 500")
        local SENT = 30 + 10 + 20 + 5 + 6 + 4 + 3
        local text
        for _ = 1, 100 do
            text = nginx:get("/metrics").body
            if total(text, "gray_responses_total") >= SENT then
                break
            end
            harness.sleep(0.05)
        end
        exposition.valid_page(text)
        assert.equal(SENT, total(text, "gray_responses_total"), text)
        local function class(target, c)
            return sample(text, 'gray_responses_total{target="' .. target .. '",class="' .. c .. '"}')
        end
        assert.equal(30, class("gray", "2xx"), text)
        assert.equal(10 + 3, class("gray", "5xx"), text)
        assert.equal(20 + 5, class("stable", "2xx"), text)
        assert.equal(6, class("v2", "2xx"), text)
        assert.equal(4, class("v2", "5xx"), text)
        assert.equal(43, sample(text, 'gray_response_seconds_count{target="gray"}'), text)
        assert.equal("43 13\n", nginx:eval([[
            local n, e = require("gray.outcome").window("gray", 60)
            return n .. " " .. e
        ]]))
        assert.same({}, harness.bad_log_lines(nginx:error_log()))
    end)
end)

describe("gray.outcome reads $upstream_status", function()
    after_each(harness.no_error_log)
    local mc, dir
    local started = {}

    setup(function()
        mc = harness.memcached()
        mc:set(GRAY_IP, "1")
        dir = harness.tmpdir()
        os.execute("mkdir -p " .. dir .. "/conf.d")
        local f = assert(io.open(dir .. "/conf.d/pages.conf", "wb"))
        f:write("error_page 404 /404.html;\n")
        f:close()
    end)

    teardown(function()
        for _, n in ipairs(started) do n:stop() end
        if mc then mc:destroy() end
        os.execute("rm -rf " .. dir)
    end)

    local function start(http)
        local n = harness.nginx({ memcached_port = mc.port, servers = PLAIN_SERVERS,
                                  http = "lua_shared_dict gray_metrics 1m;\n" .. http })
        started[#started + 1] = n
        return n
    end

    it("where an included file uses error_page", function()
        local n = start("include " .. dir .. "/conf.d/*.conf;")
        local got = reads_upstream(n)
        assert.truthy(got:find("^true .* %(or an include%) uses error_page\n$"), got)
    end)

    it("under lua_code_cache off, not per request (a VM each): once a worker", function()
        local n = start("lua_code_cache off;")
        local got = {}
        for k = 1, 4 do
            got[k] = n:eval([[
                local reads, why = require("gray.outcome").reads_upstream_status()
                return tostring(reads) .. " " .. why
            ]])
        end
        for k = 2, 4 do
            assert.truthy(got[k]:find("^true loaded again in this worker within 60 s"), got[k])
        end
        -- nginx's own alert for lua_code_cache off, and nothing else
        local bad = harness.bad_log_lines(n:new_log_lines())
        assert.equal(1, #bad, table.concat(bad, "\n"))
        assert.truthy(bad[1]:find("lua_code_cache is off", 1, true), bad[1])
    end)

    it("as configure() says, whatever nginx.conf uses", function()
        local n = start("init_by_lua_block { require('gray.outcome')"
                        .. ".configure({ upstream_status = true }) }")
        assert.equal("true configure({ upstream_status = true })\n", reads_upstream(n))
        -- and decided in init_by_lua when loaded there
        n = start("init_by_lua_block { require('gray.outcome') }")
        assert.truthy(reads_upstream(n):find("^false .* use none of "))
    end)
end)
