-- gray (the router) and gray/dep.lua (the drop-in), end to end: real
-- memcached, real nginx with Debian's lua module, requests with curl.

local harness = require "helpers.harness"

local SERVERS = [[
  server {
    listen 127.0.0.1:$PORT;
    listen [::1]:$PORT;
    # the $gray_* variables set in some locations only (see the README)
    uninitialized_variable_warn off;
    large_client_header_buffers 4 256k;     # room for a 10,000-element XFF
    set $gray_memcached 127.0.0.1:$MC;

    # where routing, not time, is the subject: 2 s lookups, so that a loaded
    # machine does not turn one into a store-error (/down/, /hung/ and
    # /garbage/ keep the default)
    location / {
        set $gray_timeout 2000;
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /nocache/ {
        set $gray_timeout 2000;
        set $gray_cache_ttl 0;
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /strict/ {
        set $gray_timeout 2000;
        set $gray_cache_ttl 0;
        set $gray_trusted "127.0.0.1";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /custom/ {
        set $gray_timeout 2000;
        set $gray_cache_ttl 0;
        set $gray_stable "@alt";
        set $gray_target "@alt_test";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /down/ {
        set $gray_memcached 127.0.0.1:$DOWN;
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /hung/ {
        set $gray_memcached 127.0.0.1:$HUNG;
        set $gray_cache_ttl 0;
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /garbage/ {
        set $gray_memcached 127.0.0.1:$PORT2;
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /badconf/ {
        set $gray_trusted "300.1.1.1/8";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }

    # decide() where cosockets are disabled: nil, err on a cache miss
    location /phases/ {
        set_by_lua_block $set_result {
            local r = package.loaded.spec_phase_router
                      or assert(require("gray").new({ memcached = "127.0.0.1:$MC",
                                                      cache_ttl = 0 }))
            package.loaded.spec_phase_router = r
            local target, err = r:decide()
            return tostring(target) .. " " .. tostring(err)
        }
        header_filter_by_lua_block {
            local target, err = package.loaded.spec_phase_router:decide()
            package.loaded.spec_header_filter_result = tostring(target) .. " " .. tostring(err)
        }
        return 200 "$set_result\n";
    }

    location @server      { return 200 "stable\n"; }
    location @server_test { return 200 "gray\n"; }
    location @alt         { return 200 "alt\n"; }
    location @alt_test    { return 200 "alt-gray\n"; }
  }

  # a port that answers memcached commands with HTTP errors: garbage
  server {
    listen 127.0.0.1:$PORT2;
]] .. harness.EVAL_LOCATION .. [[
    location / { return 400; }
  }
]]

-- a request's answer must come back within the read timeout (50 ms by
-- default) plus room for curl, nginx and a loaded 2-core machine
local LATENCY_BOUND = 0.5

describe("gray router in nginx", function()
    after_each(harness.no_error_log)
    local mc, hung, nginx, down_port

    setup(function()
        mc = harness.memcached()
        hung = harness.memcached()
        down_port = harness.refused_port()
        local servers = SERVERS:gsub("%$DOWN", tostring(down_port))
                               :gsub("%$HUNG", tostring(hung.port))
        nginx = harness.nginx({ servers = servers, memcached_port = mc.port })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
        if hung then hung:destroy() end
    end)

    local function get(path, headers, extra)
        local opts = extra or {}
        opts.headers = headers
        local res = nginx:get(path, opts)
        return res.status, res.body:gsub("\n$", ""), res.time
    end

    describe("the classic dep.lua walk-through, step by step", function()
        it("sends an unknown client to @server, then to @server_test once its address is set", function()
            local client = { ["X-Real-IP"] = "192.168.2.20" }    -- via a trusted proxy
            local status, body = get("/", client)
            assert.equal(200, status)
            assert.equal("stable", body)

            mc:set("192.168.2.20", "1")      -- set 192.168.2.20 0 0 1 / 1
            -- the answer above is cached for a second (negative entry)
            local seen_gray_at
            local t0 = os.time()
            for _ = 1, 40 do
                status, body = get("/", client)
                assert.equal(200, status)
                if body == "gray" then
                    seen_gray_at = os.time()
                    break
                end
                harness.sleep(0.1)
            end
            assert.equal("gray", body)
            assert.is_true(seen_gray_at - t0 <= 2, "gray after more than about a second")
        end)

        it("keeps a cached answer for the TTL, then follows memcached", function()
            local client = { ["X-Real-IP"] = "192.168.2.21" }
            mc:set("192.168.2.21", "1")
            local _, body = get("/", client)
            assert.equal("gray", body)
            mc:set("192.168.2.21", "0")
            _, body = get("/", client)
            assert.equal("gray", body)       -- cached
            -- polled: the entry expires about a second after it was stored
            for _ = 1, 60 do
                harness.sleep(0.05)
                _, body = get("/", client)
                if body ~= "gray" then break end
            end
            assert.equal("stable", body)
        end)
    end)

    describe("client address", function()
        setup(function()
            mc:set_many({ ["203.0.113.7"] = "1", ["2001:db8::7"] = "1", ["127.0.0.1"] = "0",
                          ["::1"] = "1" })
        end)

        -- { name, headers, expected body, curl options }
        local cases = {
            { "X-Real-IP from a trusted proxy", { ["X-Real-IP"] = "203.0.113.7" }, "gray" },
            { "X-Real-IP with spaces and a port", { ["X-Real-IP"] = " 203.0.113.7:8080 " }, "gray" },
            { "X-Real-IP junk falls back to X-Forwarded-For",
              { ["X-Real-IP"] = "junk", ["X-Forwarded-For"] = "203.0.113.7" }, "gray" },
            { "XFF with one address", { ["X-Forwarded-For"] = "203.0.113.7" }, "gray" },
            { "XFF through a trusted hop", { ["X-Forwarded-For"] = "203.0.113.7, 127.0.0.1" }, "gray" },
            { "XFF through several trusted hops",
              { ["X-Forwarded-For"] = "198.51.100.1, 203.0.113.7, 127.0.0.5, ::1, 127.0.0.9" }, "gray" },
            { "XFF: the rightmost untrusted address wins",
              { ["X-Forwarded-For"] = "203.0.113.7, 198.51.100.1" }, "stable" },
            { "XFF with odd spacing and empty elements",
              { ["X-Forwarded-For"] = " ,203.0.113.7 ,  127.0.0.1 ,, " }, "gray" },
            -- nginx splits at ',' and ' ' only: a tab is part of an element,
            -- so "\t127.0.0.1" is junk and the walk stops at the peer
            { "XFF with a tab glued to an element (junk, as in nginx)",
              { ["X-Forwarded-For"] = "203.0.113.7,\t127.0.0.1" }, "stable" },
            { "XFF with IPv6 in a long form", { ["X-Forwarded-For"] = "2001:DB8:0:0:0:0:0:7" }, "gray" },
            { "XFF with bracketed IPv6 and a port", { ["X-Forwarded-For"] = "[2001:db8::7]:443" }, "gray" },
            { "X-Real-IP IPv4-mapped", { ["X-Real-IP"] = "::FFFF:203.0.113.7" }, "gray" },
            { "XFF IPv4-mapped in hex with a port", { ["X-Forwarded-For"] = "[::ffff:cb00:7107]:80" }, "gray" },
            { "two XFF header lines, joined by nginx",
              { ["X-Forwarded-For"] = { "203.0.113.7", "127.0.0.1" } }, "gray" },
            { "XFF 'unknown' stops the walk at the trusted peer",
              { ["X-Forwarded-For"] = "203.0.113.7, unknown" }, "stable" },
            { "no header: the peer itself", {}, "stable" },
            { "the IPv6 loopback peer is trusted and used as key", {}, "gray", { host = "::1" } },
            { "headers through the IPv6 loopback peer", { ["X-Real-IP"] = "203.0.113.7" }, "gray",
              { host = "::1" } },
        }
        for _, c in ipairs(cases) do
            it(c[1], function()
                local status, body = get("/nocache/", c[2], c[4])
                assert.equal(200, status)
                assert.equal(c[3], body)
            end)
        end

        describe("with only 127.0.0.1 trusted", function()
            local spoof = {
                { "XFF from 127.0.0.2 is ignored", { ["X-Forwarded-For"] = "203.0.113.7" },
                  "127.0.0.2", "stable" },
                { "X-Real-IP from 127.0.0.2 is ignored", { ["X-Real-IP"] = "203.0.113.7" },
                  "127.0.0.2", "stable" },
                { "XFF through 127.0.0.1 counts", { ["X-Forwarded-For"] = "203.0.113.7" },
                  "127.0.0.1", "gray" },
                { "a spoofed trusted hop inside XFF does not help",
                  { ["X-Forwarded-For"] = "203.0.113.7, 127.0.0.2" }, "127.0.0.1", "stable" },
            }
            for _, c in ipairs(spoof) do
                it(c[1], function()
                    local status, body = get("/strict/", c[2], { interface = c[3] })
                    assert.equal(200, status)
                    assert.equal(c[4], body)
                end)
            end

            it("a spoofing client is keyed by its own address", function()
                mc:set("127.0.0.2", "1")
                local _, body = get("/strict/", { ["X-Forwarded-For"] = "198.51.100.1" },
                                    { interface = "127.0.0.2" })
                assert.equal("gray", body)
                mc:cmd("delete 127.0.0.2\r\n")
            end)
        end)

        it("uses $gray_stable and $gray_target", function()
            local _, body = get("/custom/", { ["X-Real-IP"] = "203.0.113.7" })
            assert.equal("alt-gray", body)
            _, body = get("/custom/", { ["X-Real-IP"] = "198.51.100.1" })
            assert.equal("alt", body)
        end)
    end)

    describe("hostile header values", function()
        local junk = {
            { "a space", " " },
            { "a memcached command", "flush_all" },
            { "an address then a command", "1.2.3.4 flush_all" },
            { "a delete command", "delete 203.0.113.7" },
            { "300 bytes", string.rep("A", 300) },
            { "300 bytes of digits and dots", string.rep("1.", 150) },
            { "control bytes", "1.2.3.4\t\1\2" },
            { "a quote and a semicolon", "\"1.2.3.4\";for=1" },
            { "a zone id", "fe80::1%eth0" },
            { "10,000 elements", string.rep("127.0.0.1, ", 9999) .. "127.0.0.1" },
        }
        for _, c in ipairs(junk) do
            it("answers 200 for " .. c[1] .. " and leaves memcached intact", function()
                mc:set("203.0.113.7", "1")
                for _, header in ipairs({ "X-Real-IP", "X-Forwarded-For" }) do
                    local status, body = get("/nocache/", { [header] = c[2] })
                    assert.equal(200, status, header)
                    assert.is_truthy(body == "stable" or body == "gray", header .. ": " .. body)
                end
                assert.equal("1", mc:get("203.0.113.7"))
            end)
        end
    end)

    describe("memcached trouble never takes the site down", function()
        -- several requests go through one curl (harness Nginx:sequence)
        it("refused: 200 from @server, quickly, every time", function()
            local reqs = {}
            for i = 1, 20 do
                reqs[i] = { "/down/", headers = { ["X-Real-IP"] = "203.0.113.7" } }
            end
            for i, res in ipairs(nginx:sequence(reqs)) do
                assert.equal(200, res.status, "request " .. i)
                assert.equal("stable\n", res.body)
                assert.is_true(res.time < LATENCY_BOUND, "took " .. res.time .. " s")
            end
        end)

        it("logs the failures at most once per few seconds, not per request", function()
            local reqs = {}
            for i = 1, 100 do
                reqs[i] = { "/down/",
                            headers = { ["X-Real-IP"] = "198.51.100." .. math.random(1, 250) } }
            end
            for i, res in ipairs(nginx:sequence(reqs)) do
                assert.equal(200, res.status, "request " .. i)
            end
            local log = nginx:error_log()
            local ours = select(2, log:gsub("gray: connect to 127.0.0.1:" .. down_port, ""))
            assert.is_true(ours >= 1 and ours <= 3, ours .. " router log lines")
            -- nginx itself logs each failed connect; the breaker keeps them few
            local core = select(2, log:gsub("connect%(%) failed", ""))
            assert.is_true(core <= 15, core .. " connect() failures logged")
        end)

        it("hung (accepts, never answers): 200 from @server within the read timeout", function()
            hung:set("10.1.1.1", "1")
            local _, body = get("/hung/", { ["X-Real-IP"] = "10.1.1.1" })
            assert.equal("gray", body)
            hung:signal("STOP")
            finally(function() hung:signal("CONT") end)
            for i = 1, 8 do
                local status, b, time = get("/hung/", { ["X-Real-IP"] = "10.2.2." .. i })
                assert.equal(200, status)
                assert.equal("stable", b)
                assert.is_true(time < LATENCY_BOUND, "request " .. i .. " took " .. time .. " s")
            end
        end)

        it("during an outage a recently cached answer is still used", function()
            -- 10.1.1.1 was answered "1" before the server hung
            local status, body, time = get("/hung/", { ["X-Real-IP"] = "10.1.1.1" })
            assert.equal(200, status)
            assert.equal("gray", body)
            assert.is_true(time < LATENCY_BOUND)
        end)

        it("slow then back: answers again after the breaker's cool-down", function()
            hung:signal("CONT")
            hung:set("10.3.3.3", "1")
            local body
            for _ = 1, 100 do
                _, body = get("/hung/", { ["X-Real-IP"] = "10.3.3.3" })
                if body == "gray" then break end
                harness.sleep(0.05)
            end
            assert.equal("gray", body)
        end)

        it("garbage (an HTTP server): 200 from @server", function()
            for _ = 1, 5 do
                local status, body, time = get("/garbage/", { ["X-Real-IP"] = "203.0.113.8" })
                assert.equal(200, status)
                assert.equal("stable", body)
                assert.is_true(time < LATENCY_BOUND)
            end
        end)

        it("restarted: the next request gets the new process's answer", function()
            mc:set("203.0.113.9", "1")
            local _, body = get("/nocache/", { ["X-Real-IP"] = "203.0.113.9" })
            assert.equal("gray", body)         -- leaves a pooled connection
            mc:stop()
            assert(mc:start())
            mc:set("203.0.113.9", "1")
            local status
            status, body = get("/nocache/", { ["X-Real-IP"] = "203.0.113.9" })
            assert.equal(200, status)
            assert.equal("gray", body)
        end)

        -- Above, nginx closes the pooled connection when the old process's
        -- FIN arrives, before the request: the lookup connects afresh and the
        -- retry never runs (the case passes without it). Here the worker
        -- sees no event between its lookups: it waits, blocked, while the
        -- spec restarts memcached, so the last lookup takes the two dead
        -- pooled connections in turn and only a try on a fresh one answers.
        it("restarted between lookups of one request: the retries reach the new process",
           function()
            local dir = harness.tmpdir()
            finally(function() harness.sh("rm -rf " .. harness.quote(dir)) end)
            mc:set("203.0.113.10", "1")
            local code = ([[
                -- no list reads in the background: the lookups' connections alone
                local r = assert(require("gray").new({ memcached = "127.0.0.1:$MC",
                    cache_ttl = 0, timeout = 2000, ranges_key = false, percent_key = false,
                    ramp_key = false, halt_key = false }))
                ngx.req.set_header("X-Real-IP", "203.0.113.10")
                -- two lookups at once: two connections in the pool
                local function decide() return table.concat({ r:decide() }, " ") end
                local t1, t2 = ngx.thread.spawn(decide), ngx.thread.spawn(decide)
                local a = select(2, ngx.thread.wait(t1)) .. ", " .. select(2, ngx.thread.wait(t2))
                io.open("$DIR/pooled", "w"):close()
                -- no yield: the old connections' FINs wait in the kernel
                os.execute("i=0; while [ ! -e $DIR/restarted ] && [ $i -lt 1000 ];"
                           .. " do sleep 0.01; i=$((i+1)); done")
                return a .. " | " .. decide()
            ]]):gsub("%$MC", tostring(mc.port)):gsub("%$DIR", dir)
            local conn = assert(harness.tcp("127.0.0.1", nginx.port2, 30))
            finally(function() conn:close() end)
            assert(conn:send("POST /eval HTTP/1.0\r\nContent-Length: " .. #code .. "\r\n\r\n"
                             .. code))
            harness.wait_for(function() return harness.read_file(dir .. "/pooled") end, 10,
                             "the first lookup")
            mc:stop()
            assert(mc:start())
            mc:set("203.0.113.10", "1")
            io.open(dir .. "/restarted", "w"):close()
            local reply = conn:receive_all()
            assert.equal("@server_test ip memcached, @server_test ip memcached"
                         .. " | @server_test ip memcached",
                         reply:match("\r\n\r\n(.-)\n?$"), reply)
        end)

        it("decide() in set_by_lua and header_filter: nil, err naming the phase, no throw",
           function()
            local res = nginx:get("/phases/", { headers = { ["X-Real-IP"] = "203.0.113.77" } })
            assert.equal(200, res.status)
            assert.truthy(res.body:find("^nil gray: decide%(%) needs cosockets.-not in set"),
                          res.body)
            -- one worker: the header filter left its result where /eval reads it
            local out = nginx:eval("return package.loaded.spec_header_filter_result", nginx.port2)
            assert.truthy(out:find("^nil gray: decide%(%) needs cosockets.-not in header_filter"),
                          out)
            local log = nginx:error_log()
            assert.falsy(log:find("API disabled", 1, true), log:sub(-1500))
        end)

        it("a bad configuration routes to @server and is logged once", function()
            for _ = 1, 10 do
                local status, body = get("/badconf/", {})
                assert.equal(200, status)
                assert.equal("stable", body)
            end
            local log = nginx:error_log()
            assert.equal(1, select(2, log:gsub("bad configuration", "")))
            -- the message names the nginx variable the user wrote, not the Lua option
            assert.truthy(log:find("$gray_trusted", 1, true), log)
        end)
    end)

    describe("gray.new and decide() in a worker", function()
        local function eval(code)
            return (nginx:eval(code:gsub("%$MC", tostring(mc.port))
                                  :gsub("%$DOWN", tostring(down_port)), nginx.port2)
                         :gsub("\n$", ""))
        end

        it("reports where an answer came from", function()
            mc:set("127.0.0.1", "1")
            local out = eval([[
                local gray = require "gray"
                local r = assert(gray.new({ memcached = "127.0.0.1:$MC", timeout = 2000 }))
                local a = table.concat({ r:decide() }, " ")
                local b = table.concat({ r:decide() }, " ")
                return a .. " | " .. b
            ]])
            assert.equal("@server_test ip memcached | @server_test ip cache", out)
            mc:set("127.0.0.1", "0")
        end)

        -- exec() runs on every request: as the router's own field it is one
        -- slot read in the trace, not a walk through the metatable
        it("has exec as the router's own field, gray.exec", function()
            local out = eval([[
                local gray = require "gray"
                local r = assert(gray.new({ memcached = "127.0.0.1:$MC" }))
                return tostring(rawget(r, "exec") == gray.exec)
            ]])
            assert.equal("true", out)
        end)

        it("serves an expired cached answer as stale when memcached fails", function()
            mc:set("127.0.0.1", "1")
            local out = eval([[
                local r = assert(require("gray").new({ memcached = "127.0.0.1:$MC",
                    cache_ttl = 0.1 }))
                local a = table.concat({ r:decide() }, " ")
                ngx.sleep(0.2)
                r.mc.servers[1].port = $DOWN        -- memcached goes away
                local b = table.concat({ r:decide() }, " ")
                return a .. " | " .. b
            ]])
            assert.equal("@server_test ip memcached | @server_test ip stale", out)
            mc:set("127.0.0.1", "0")
        end)

        it("says store-error, then store-down once the breaker opens", function()
            local out = eval([[
                local gray = require "gray"
                local r = assert(gray.new({ memcached = "127.0.0.1:$DOWN", breaker_failures = 2 }))
                local t = {}
                for i = 1, 3 do
                    local target, reason = r:decide()
                    t[i] = target .. " " .. reason
                end
                return table.concat(t, ", ")
            ]])
            assert.equal("@server store-error, @server store-error, @server store-down", out)
        end)

        -- { name, options as Lua source, text the error must contain }
        local bad = {
            { "an unknown option", "{ bogus = 1 }", "unknown option 'bogus'" },
            { "options that are not a table", "'x'", "options must be a table" },
            { "a memcached without port", "{ memcached = '127.0.0.1' }", "option 'memcached'" },
            { "a memcached port out of range", "{ memcached = '127.0.0.1:70000' }",
              "option 'memcached'" },
            { "a bad trusted CIDR", "{ trusted = { '10.0.0.0/33' } }", "option 'trusted'" },
            { "a trusted entry that is not an address", "{ trusted = 'proxy.local' }",
              "option 'trusted'" },
            { "a stable location without @ or /", "{ stable = 'server' }", "option 'stable'" },
            { "a target that is a number", "{ target = 5 }", "option 'target'" },
            { "a bad location in targets", "{ targets = { ['2'] = 'x y' } }", "targets[2]" },
            { "a target name holding '#'", "{ targets = { ['v#2'] = '@v2' } }",
              "option 'targets' names 'v#2', which is not a target name" },
            { "a target name with a non-ASCII byte", "{ targets = { ['v\\195\\169'] = '@v2' } }",
              "option 'targets' names 'v\195\169', which is not a target name" },
            { "a target name with a space", "{ targets = { ['v 2'] = '@v2' } }",
              "option 'targets' names 'v 2'" },
            { "a target name of 65 bytes", "{ targets = { [('v'):rep(65)] = '@v2' } }",
              "option 'targets' names 'vvvv" },
            { "the target name 0", "{ targets = { ['0'] = '@v2' } }",
              "option 'targets' names '0'" },
            { "the reserved target name stable", "{ targets = { stable = '@v2' } }",
              "option 'targets' names 'stable', which is reserved" },
            { "252 target names (with 1, gray, stable and unknown targets: over 255)",
              "(function() local t = {} for i = 1, 252 do t['t' .. i] = '@t' end"
              .. " return { targets = t } end)()", "option 'targets' has more than 251 names" },
            { "a target named gray (the default target's name)", "{ targets = { gray = '@t' } }",
              "option 'targets' names 'gray', which is reserved" },
            { "a target named 1", "{ targets = { ['1'] = '@t' } }",
              "option 'targets' names '1', which is reserved" },
            { "a guard that is not a setting", "{ guard = 'yes' }",
              "option 'guard' bad setting 'yes'" },
            { "a guard window over 60 s", "{ guard = 'window=61' }",
              "option 'guard' window must be an integer from 1 to 60" },
            { "a guard without halts", "{ guard = 'on', halt_key = false }",
              "option 'guard' needs 'halt_key'" },
            { "a halt_key with a space", "{ halt_key = 'a b' }", "option 'halt_key'" },
            { "a target name no halt key can end",
              "{ halt_key = ('k'):rep(245), targets = { abcdef = '@t' } }",
              "option 'targets' names 'abcdef', which cannot end a memcached key" },
            { "an unknown client header", "{ client_headers = { 'X-Client' } }",
              "option 'client_headers'" },
            { "a negative cache_ttl", "{ cache_ttl = -1 }", "option 'cache_ttl'" },
            { "a cache_ttl that is a string", "{ cache_ttl = '1' }", "option 'cache_ttl'" },
            { "a zero cache_size", "{ cache_size = 0 }", "option 'cache_size'" },
            { "a key_prefix with a space", "{ key_prefix = 'a b' }", "option 'key_prefix'" },
            { "a zero timeout", "{ timeout = 0 }", "option 'timeout'" },
            { "a timeout over a minute", "{ timeout = 60001 }", "option 'timeout'" },
            { "the old read_timeout", "{ read_timeout = 50 }", "'timeout' (ms) bounds" },
            { "a zero value_max", "{ value_max = 0 }", "option 'value_max'" },
            { "a pool_size that is not a number", "{ pool_size = 'many' }", "option 'pool_size'" },
        }
        for _, c in ipairs(bad) do
            it("refuses " .. c[1], function()
                local out = eval("local r, err = require('gray').new(" .. c[2] .. ")\n"
                                 .. "return tostring(r) .. ' ' .. tostring(err)")
                assert.truthy(out:find("^nil "), out)
                assert.truthy(out:find(c[3], 1, true), out)
            end)
        end

        it("accepts every default and documented option", function()
            local out = eval([[
                local gray = require "gray"
                local r, err = gray.new({
                    memcached = { "127.0.0.1:$MC" }, trusted = "10.0.0.0/8, ::1",
                    client_headers = { "Forwarded" }, stable = "/stable", target = "@t",
                    targets = { ["2"] = "@t2" }, key_prefix = "gray:", cache_ttl = 0,
                    neg_ttl = 5, stale_ttl = 0, cache_size = 10, log_interval = 1,
                    timeout = 10, value_max = 64,
                    pool_size = 4, keepalive_timeout = 1000, breaker_failures = 3,
                    breaker_cooldown = 0.5,
                })
                return tostring(r ~= nil) .. " " .. tostring(err)
            ]])
            assert.equal("true nil", out)
        end)

        it("joins several Forwarded lines: a line added by a proxy is not skipped", function()
            mc:set("203.0.113.5", "1")
            local code = [[
                local r = assert(require("gray").new({ memcached = "127.0.0.1:$MC",
                    client_headers = { "Forwarded" }, cache_ttl = 0 }))
                return table.concat({ r:client_key(), (r:decide()) }, " ")
            ]]
            code = code:gsub("%$MC", tostring(mc.port))
            -- the client wrote the first line; the trusted proxy added the second
            local out = nginx:eval(code, nginx.port2,
                                   { Forwarded = { "for=198.51.100.66", "for=203.0.113.5" } })
            assert.equal("203.0.113.5 @server_test", (out:gsub("\n$", "")))
            out = nginx:eval(code, nginx.port2, { Forwarded = "for=203.0.113.5" })
            assert.equal("203.0.113.5 @server_test", (out:gsub("\n$", "")))
        end)

        it("keys with key_prefix and maps extra values to targets", function()
            mc:set("gray:127.0.0.1", "2")
            local out = eval([[
                local r = assert(require("gray").new({ memcached = "127.0.0.1:$MC",
                    key_prefix = "gray:", targets = { ["2"] = "@second" } }))
                return table.concat({ r:decide() }, " ")
            ]])
            assert.equal("@second ip memcached", out)
        end)
    end)

    it("leaves error.log free of global-variable warnings, alerts and crits", function()
        local bad = harness.bad_log_lines(nginx:error_log())
        assert.same({}, bad)
    end)
end)

describe("log variables", function()
    after_each(harness.no_error_log)
    local mc, nginx

    setup(function()
        mc = harness.memcached()
        mc:set("203.0.113.40", "1")
        mc:set("203.0.113.41", "v2")
        nginx = harness.nginx({ memcached_port = mc.port, http = [[
            log_format gray '$http_x_real_ip $gray_target_name $gray_reason';
        ]], servers = [[
          server {
            listen 127.0.0.1:$PORT;
            set $gray_target_name "";
            set $gray_reason "";
            access_log $LOGDIR/gray.log gray;
            location / {
                content_by_lua_block {
                    local r = package.loaded.spec_log_router
                    if not r then
                        -- (2 s: a lookup's time is not the subject here)
                        r = assert(require("gray").new({ memcached = "127.0.0.1:$MC",
                                                         targets = { v2 = "@v2" },
                                                         timeout = 2000 }))
                        package.loaded.spec_log_router = r
                    end
                    return r:exec()
                }
            }
            location @server      { return 200 "stable\n"; }
            location @server_test { return 200 "gray\n"; }
            location @v2          { return 200 "v2\n"; }
          }
        ]] })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    it("fills $gray_target_name and $gray_reason for log_format when they are defined", function()
        for _, ip in ipairs({ "203.0.113.40", "203.0.113.41", "203.0.113.42" }) do
            assert.equal(200, nginx:get("/", { headers = { ["X-Real-IP"] = ip } }).status)
        end
        local log
        for _ = 1, 20 do
            log = harness.read_file(nginx.dir .. "/gray.log") or ""
            if select(2, log:gsub("\n", "")) >= 3 then break end
            harness.sleep(0.1)
        end
        assert.truthy(log:find("203.0.113.40 gray ip\n", 1, true), log)
        assert.truthy(log:find("203.0.113.41 v2 ip\n", 1, true), log)
        assert.truthy(log:find("203.0.113.42 stable default\n", 1, true), log)
    end)
end)
