-- Targeting (issue 7) end to end: identities, id lists, address ranges, the
-- sticky percentage, several targets and the tester override, through real
-- nginx (one instance, several routers) and real memcached processes.
--
-- Routers, built in the worker on first use from the CONF table below:
--   rules     every rule at once (cache_ttl 0: memcached is asked each time)
--   forceall  the same with the override in a cookie (spec/trust_spec.lua
--             has who may use it)
--   big       ranges only, against their own memcached (stopped in a case)
--   quiet     identities and a cached address against a memcached that
--             nothing else talks to and that logs every command line (-vv)
-- /r/<router>/ runs router:exec() (with the X-Gray-Debug response header),
-- /stats/<router> prints router:list_stats(); / is the classic dep.lua drop-in.

local harness = require "helpers.harness"
local gray_ffi = require "gray.ffi"

local INIT = [[
  init_by_lua_block {
    local gray = require "gray"
    local TARGETS = { v2 = "@server_v2" }
    local function rules(extra)
        local o = {
            memcached = "127.0.0.1:$MC", trusted = "127.0.0.1", targets = TARGETS,
            ids = "uid=cookie:uid, dev=header:X-Device-Id", lists = "dev",
            ranges_key = "t:rules:ranges", percent_key = "t:rules:percent",
            force = "header:X-Gray", force_from = "10.0.0.0/8", debug_header = "X-Gray-Debug",
            refresh_interval = 0.5, cache_ttl = 0,
            -- the rules, not time, are the subject: 2 s lookups, so that a
            -- loaded machine does not turn one into a store-error
            timeout = 2000,
        }
        for k, v in pairs(extra or {}) do
            o[k] = v
        end
        return o
    end
    local CONF = {
        rules = rules(),
        forceall = rules({ force = "cookie:gray", force_from = "10.0.0.0/8, 127.0.0.2" }),
        big = {
            memcached = "127.0.0.1:$MCL", trusted = "127.0.0.1", targets = TARGETS,
            ranges_key = "t:big", percent_key = false, ramp_key = false, refresh_interval = 0.5,
            refresh_timeout = 300, cache_ttl = 0, debug_header = "X-Gray-Debug",
        },
        quiet = {
            memcached = "127.0.0.1:$MCQ", trusted = "127.0.0.1", targets = TARGETS,
            ids = "uid=cookie:uid, dev=header:X-Device-Id, q=query:q",
            ranges_key = false, percent_key = false, ramp_key = false, halt_key = false,
            cache_ttl = 60, debug_header = "X-Gray-Debug", timeout = 2000,
        },
    }
    local routers = {}
    package.loaded.spec_targeting = {
        router = function(name)
            local r = routers[name]
            if not r then
                r = assert(gray.new(assert(CONF[name], name)))
                routers[name] = r
            end
            return r
        end,
    }
  }
]]

local SERVERS = [[
  server {
    listen 127.0.0.1:$PORT;
    uninitialized_variable_warn off;    # $gray_* set in some locations only
    # the rules, not time, are the subject (cache_ttl 0 in /dep/: each
    # request asks memcached): 2 s lookups in every drop-in location, so
    # that a loaded machine does not turn one into a store-error
    set $gray_timeout 2000;

    # the classic dep.lua configuration (its memcached port and the
    # timeout above aside)
    location / {
        set $gray_memcached 127.0.0.1:$MC;
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    # the drop-in with every new variable
    location /dep/ {
        set $gray_memcached 127.0.0.1:$MC;
        set $gray_trusted 127.0.0.1;
        set $gray_cache_ttl 0;
        set $gray_targets "v2=@server_v2";
        set $gray_ids "uid=cookie:uid, dev=header:X-Device-Id";
        set $gray_lists "dev";
        set $gray_ranges_key "t:rules:ranges";
        set $gray_percent_key "t:rules:percent";
        set $gray_force "header:X-Gray";
        set $gray_force_from "10.0.0.0/8";
        set $gray_debug_header "X-Gray-Debug";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /dep-off/ {
        set $gray_memcached 127.0.0.1:$MC;
        set $gray_trusted 127.0.0.1;
        set $gray_cache_ttl 0;
        set $gray_ranges_key off;
        set $gray_percent_key off;
        set $gray_debug_header "X-Gray-Debug";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location ~ ^/r/(\w+)/ {
        content_by_lua_block {
            package.loaded.spec_targeting.router(ngx.var[1]):exec()
        }
    }
    location ~ ^/stats/(\w+)$ {
        content_by_lua_block {
            local s = package.loaded.spec_targeting.router(ngx.var[1]):list_stats()
            local lists = {}
            for name, n in pairs(s.lists) do
                lists[#lists + 1] = name .. ":" .. n
            end
            table.sort(lists)
            ngx.say("ranges=", s.ranges, " percent=", s.percent, " compiles=", s.compiles,
                    " refreshes=", s.refreshes, " lists=", table.concat(lists, ","))
        }
    }
    location @server      { return 200 "stable\n"; }
    location @server_test { return 200 "gray\n"; }
    location @server_v2   { return 200 "v2\n"; }
]] .. harness.EVAL_LOCATION .. [[
  }
]]

-- body -> location
local LOCATION = { stable = "@server", gray = "@server_test", v2 = "@server_v2" }

-- t:rules:percent is 30: buckets below 3000 are in
local PERCENT = 30
local function is_in(key)
    return gray_ffi.bucket(key) < PERCENT * 100
end

local now = harness.now

local pick = harness.pick

local function count(text, pattern)
    local n = 0
    for _ in text:gmatch(pattern) do
        n = n + 1
    end
    return n
end

describe("targeting through nginx and memcached", function()
    after_each(harness.no_error_log)
    local mc, mcl, mcq, nginx

    setup(function()
        mc = harness.memcached()
        mcl = harness.memcached()
        mcq = harness.memcached({ verbose = true })
        local init = INIT:gsub("%$MCL", tostring(mcl.port)):gsub("%$MCQ", tostring(mcq.port))
                         :gsub("%$MC", tostring(mc.port))
        nginx = harness.nginx({ http = init, servers = SERVERS, memcached_port = mc.port })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
        if mcl then mcl:destroy() end
        if mcq then mcq:destroy() end
    end)

    -- A request: req.ip (X-Real-IP, via the trusted 127.0.0.1), req.uid
    -- (cookie), req.dev (X-Device-Id), req.force (X-Gray), req.cookie (more
    -- cookie text), req.from (the local address to connect from). Returns
    -- the status, the body and the X-Gray-Debug header.
    local function request(path, req)
        local headers, cookies = {}, {}
        headers["X-Real-IP"] = req.ip
        headers["X-Device-Id"] = req.dev
        headers["X-Gray"] = req.force
        cookies[#cookies + 1] = req.uid and "uid=" .. req.uid
        cookies[#cookies + 1] = req.cookie
        if #cookies > 0 then
            headers.Cookie = table.concat(cookies, "; ")
        end
        local res = nginx:get(path, { headers = headers, interface = req.from,
                                      response_headers = true })
        return res.status, (res.body:gsub("\n$", "")), res.headers["x-gray-debug"]
    end

    local function stats(router)
        local res = nginx:get("/stats/" .. router)
        assert.equal(200, res.status, res.body)
        local s = {}
        for k, v in res.body:gmatch("(%w+)=(%S*)") do
            s[k] = tonumber(v) or v
        end
        local lists = {}
        for name, n in s.lists:gmatch("(%w+):(%d+)") do
            lists[name] = tonumber(n)
        end
        s.lists = lists
        return s
    end

    -- Polls stats(router) until pred(stats) holds; returns the stats and
    -- the seconds it took, or fails after `seconds`.
    local function wait_stats(router, pred, seconds, what)
        local t0 = now()
        local s
        repeat
            s = stats(router)
            if pred(s) then
                return s, now() - t0
            end
            harness.sleep(0.05)
        until now() - t0 > seconds
        error("timed out waiting for " .. what .. "; last stats of " .. router .. ": "
              .. nginx:get("/stats/" .. router).body)
    end

    describe("rules and their precedence", function()
        -- ip: which address block the client is in (none: no range),
        -- uid/dev: the identity is sent, set: the memcached entries
        -- (uid, dev, ip -> value), listed: the dev id's line in
        -- gray:list:dev names this target, pct: the percentage's identity
        -- key (the first identity present, else the address) is in and
        -- every other key the request has is out (false: the reverse), so a
        -- router hashing the wrong key would answer otherwise.
        local cases = {
            { "force alone: always", ip = "none", force = "always",
              want = "gray", reason = "force" },
            { "force alone: a target name", ip = "none", force = "v2",
              want = "v2", reason = "force" },
            { "force over every other rule: never", uid = true, dev = true, ip = "v2",
              set = { uid = "1", dev = "v2", ip = "1" }, listed = "1", pct = true, force = "never",
              want = "stable", reason = "force" },
            { "force naming no target is no override", ip = "none", force = "v9",
              want = "stable", reason = "default" },
            { "id:uid alone", uid = true, ip = "none", set = { uid = "1" },
              want = "gray", reason = "id:uid" },
            { "id:uid over id:dev, ip, list, range, percent", uid = true, dev = true, ip = "v2",
              set = { uid = "1", dev = "v2", ip = "v2" }, listed = "v2", pct = true,
              want = "gray", reason = "id:uid" },
            { "id:dev alone", dev = true, ip = "none", set = { dev = "v2" },
              want = "v2", reason = "id:dev" },
            { "id:dev over ip, list, range, percent", dev = true, ip = "gray",
              set = { dev = "v2", ip = "1" }, listed = "1", pct = true,
              want = "v2", reason = "id:dev" },
            { "an id entry 0 falls through to the next rule", uid = true, ip = "none",
              set = { uid = "0", ip = "1" }, want = "gray", reason = "ip" },
            { "an empty id entry falls through to the next rule", uid = true, ip = "none",
              set = { uid = "", ip = "v2" }, want = "v2", reason = "ip" },
            { "ip alone", ip = "none", set = { ip = "1" },
              want = "gray", reason = "ip" },
            { "ip alone, IPv6", ip = "v6none", set = { ip = "v2" },
              want = "v2", reason = "ip" },
            { "ip over list, range, percent", dev = true, ip = "gray",
              set = { ip = "v2" }, listed = "1", pct = true,
              want = "v2", reason = "ip" },
            { "an ip entry 0 falls through to the next rule", ip = "gray", set = { ip = "0" },
              want = "gray", reason = "range" },
            { "list:dev alone", dev = true, ip = "none", listed = "1",
              want = "gray", reason = "list:dev" },
            { "list:dev over range, percent", dev = true, ip = "gray", listed = "v2", pct = true,
              want = "v2", reason = "list:dev" },
            { "range alone", ip = "gray",
              want = "gray", reason = "range" },
            { "range alone: IPv6, a named target", ip = "v6",
              want = "v2", reason = "range" },
            { "range over percent", ip = "v2", pct = true,
              want = "v2", reason = "range" },
            { "a range line naming an unknown target sends to stable", ip = "v9", pct = true,
              want = "stable", reason = "unknown-target" },
            { "percent by the first identity present (uid)", uid = true, dev = true, ip = "none",
              pct = true, want = "gray", reason = "percent" },
            { "percent by the first identity present (dev, no uid)", dev = true, ip = "none",
              pct = true, want = "gray", reason = "percent" },
            { "percent by the address without identities", ip = "none", pct = true,
              want = "gray", reason = "percent" },
            { "default: the identity's key is out, its raw value and the address in",
              uid = true, ip = "none", pct = false, want = "stable", reason = "default" },
            { "default: nothing matches", ip = "none",
              want = "stable", reason = "default" },
            { "default: IPv6 outside every range", ip = "v6none",
              want = "stable", reason = "default" },
        }

        -- address blocks: t:rules:ranges below holds v2, gray, v6 and v9
        local BLOCKS = {
            none = "10.9.%d.%%d", v2 = "10.1.%d.%%d", gray = "10.2.%d.%%d", v9 = "10.3.%d.%%d",
            v6 = "2001:db8:1:%x::%%x", v6none = "2001:db8:2:%x::%%x",
        }
        local RANGES = table.concat({
            "# the rules router's ranges",
            "10.1.0.0/16 v2",
            "10.2.0.0/16",
            "",
            "2001:db8:1::/48 v2",
            "10.3.0.0/16 v9",
            "not-an-address",
            "10.4.0.0/33",
        }, "\n")

        setup(function()
            local listed, values = {}, {}
            for i, c in ipairs(cases) do
                local pct = c.pct or false
                local pkind = c.uid and "uid" or c.dev and "dev" or "ip"
                -- whether a key must be in the percentage
                local function side(kind)
                    if kind == pkind then
                        return pct
                    end
                    return not pct
                end
                c.ip = pick(BLOCKS[c.ip]:format(i), function(v)
                    return is_in(v) == side("ip")
                end)
                if c.dev then
                    c.dev = pick("d" .. i .. "-%d", function(v)
                        return is_in("dev:" .. v) == side("dev") and is_in(v) == not pct
                    end)
                end
                if c.uid then
                    c.uid = pick("u" .. i .. "-%d", function(v)
                        return is_in("uid:" .. v) == pct and is_in(v) == not pct
                    end)
                end
                for kind, value in pairs(c.set or {}) do
                    local key = kind == "ip" and c.ip or kind .. ":" .. c[kind]
                    assert(values[key] == nil, "two cases set " .. key)
                    values[key] = value
                end
                if c.listed then
                    listed[#listed + 1] = c.dev .. (c.listed == "1" and "" or " " .. c.listed)
                end
            end
            values["t:rules:ranges"] = RANGES
            values["t:rules:percent"] = tostring(PERCENT)
            values["gray:list:dev"] = "# devices\n" .. table.concat(listed, "\n") .. "\n"
            mc:set_many(values)            -- one connection for them all
            request("/r/rules/", { ip = "10.9.0.1" })          -- starts the refresh
            wait_stats("rules", function(s)
                return s.ranges == 4 and s.percent == PERCENT and s.lists.dev == #listed
            end, 5, "the rules router's lists")
        end)

        for _, c in ipairs(cases) do
            it(c[1] .. ": " .. c.want .. ", reason " .. c.reason, function()
                local status, body, debug = request("/r/rules/", c)
                assert.equal(200, status)
                assert.equal(LOCATION[c.want] .. "; " .. c.reason, debug)
                assert.equal(c.want, body)
            end)
        end

        it("logs the ranges' bad lines and unknown targets once, with line numbers", function()
            -- one router has compiled the list so far (it is not recompiled)
            local log = nginx:error_log()
            local lines = {}
            for line in log:gmatch("[^\n]*t:rules:ranges:[^\n]*") do
                lines[#lines + 1] = line
            end
            assert.equal(1, #lines, log:sub(-3000))
            assert.truthy(lines[1]:find("2 bad lines (7, 8)", 1, true), lines[1])
            assert.truthy(lines[1]:find("1 lines naming an unknown target (6: their addresses go"
                                        .. " to the stable location)", 1, true), lines[1])
        end)

        describe("several targets", function()
            it("routes 1 to the target, a name to its location", function()
                mc:set("10.9.200.1", "1")
                mc:set("10.9.200.2", "v2")
                local _, body1, debug1 = request("/r/rules/", { ip = "10.9.200.1" })
                local _, body2, debug2 = request("/r/rules/", { ip = "10.9.200.2" })
                assert.same({ "gray", "@server_test; ip", "v2", "@server_v2; ip" },
                            { body1, debug1, body2, debug2 })
            end)

            it("sends an unknown name to stable and logs it once, not per request", function()
                local ip = pick("10.9.201.%d", function(v) return is_in(v) end)
                mc:set(ip, "v9")
                for _ = 1, 5 do
                    local status, body, debug = request("/r/rules/", { ip = ip })
                    assert.same({ 200, "stable", "@server; unknown-target" },
                                { status, body, debug })
                end
                local log = nginx:error_log()
                assert.equal(1, count(log, "the value of " .. ip:gsub("%.", "%%.")
                                           .. " names no target: 'v9'"), log:sub(-3000))
            end)
        end)

        describe("the tester override", function()
            it("counts from a client in force_from, through the trusted peer", function()
                local ip = pick("10.9.202.%d", function(v) return not is_in(v) end)
                mc:set(ip, "1")
                local _, body, debug = request("/r/rules/", { ip = ip, force = "never" })
                assert.same({ "stable", "@server; force" }, { body, debug })
            end)

            it("is ignored from an untrusted peer (127.0.0.2), whose own entry decides", function()
                mc:set("127.0.0.2", "1")
                local status, body, debug = request("/r/rules/", { from = "127.0.0.2",
                                                                   force = "never" })
                assert.same({ 200, "gray", "@server_test; ip" }, { status, body, debug })
                -- and "always" does not make an untrusted stable client gray
                mc:set("127.0.0.2", "0")
                status, body, debug = request("/r/rules/", { from = "127.0.0.2",
                                                             force = "always" })
                assert.equal(200, status)
                assert.is_not.equal("force", debug:match("; (.*)"))
                assert.equal(is_in("127.0.0.2") and "gray" or "stable", body)
            end)

            it("counts from a peer in force_from, here from a cookie", function()
                mc:set("127.0.0.2", "1")
                local _, body, debug = request("/r/forceall/", { from = "127.0.0.2",
                                                                 cookie = "gray=never" })
                assert.same({ "stable", "@server; force" }, { body, debug })
                _, body, debug = request("/r/forceall/", { from = "127.0.0.2", cookie = "gray=v2" })
                assert.same({ "v2", "@server_v2; force" }, { body, debug })
                -- the header is not its source
                _, body, debug = request("/r/forceall/", { from = "127.0.0.2", force = "never" })
                assert.same({ "gray", "@server_test; ip" }, { body, debug })
            end)
        end)

        describe("the drop-in's variables", function()
            local function case(name)
                for _, c in ipairs(cases) do
                    if c[1] == name then
                        return c
                    end
                end
                error(name)
            end

            setup(function()
                -- the router's first request starts its refresh, which
                -- loads the lists in the background: wait for a range
                local c = case("range over percent")
                local body
                for _ = 1, 60 do
                    body = select(2, request("/dep/", c))
                    if body == "v2" then
                        break
                    end
                    harness.sleep(0.05)
                end
                assert.equal("v2", body)
            end)

            -- the rules cases the drop-in at /dep/ (the same settings as
            -- variables) must answer alike
            for _, name in ipairs({ "force over every other rule: never",
                                    "id:uid over id:dev, ip, list, range, percent",
                                    "id:dev alone", "ip over list, range, percent",
                                    "list:dev over range, percent", "range over percent",
                                    "range alone: IPv6, a named target",
                                    "percent by the first identity present (uid)",
                                    "default: the identity's key is out, its raw value and"
                                    .. " the address in" }) do
                it("/dep/: " .. name, function()
                    local c = case(name)
                    local status, body, debug = request("/dep/", c)
                    assert.same({ 200, c.want, LOCATION[c.want] .. "; " .. c.reason },
                                { status, body, debug })
                end)
            end

            it("$gray_ranges_key off and $gray_percent_key off: no range, no percentage",
               function()
                local c = case("range over percent")
                local _, body, debug = request("/dep-off/", c)
                assert.same({ "stable", "@server; default" }, { body, debug })
                c = case("percent by the address without identities")
                _, body, debug = request("/dep-off/", c)
                assert.same({ "stable", "@server; default" }, { body, debug })
            end)
        end)
    end)

    describe("a 100,000-line range list split over the item limit", function()
        -- 60,000 IPv4 addresses 11.0.0.0 + 7i, 20,000 /24s 12.a.b.0,
        -- 19,999 IPv6 /64s 2001:db8:<i>::, and 13.0.0.0/8 for v2
        local function v4(n)       -- 11.0.0.0 + n
            return ("11.%d.%d.%d"):format(math.floor(n / 65536), math.floor(n / 256) % 256,
                                          n % 256)
        end
        local function big_list(last_line)
            local lines = {}
            for i = 0, 59999 do
                lines[#lines + 1] = v4(i * 7)
            end
            for i = 0, 19999 do
                lines[#lines + 1] = ("12.%d.%d.0/24"):format(math.floor(i / 256), i % 256)
            end
            for i = 0, 19998 do
                lines[#lines + 1] = ("2001:db8:%x::/64"):format(i)
            end
            lines[#lines + 1] = last_line
            return table.concat(lines, "\n") .. "\n"
        end

        -- writes the list as two parts under a new tag, then the header
        local function write_split(text, tag)
            local cut = text:find("\n", math.floor(#text / 2), true)
            local parts = { text:sub(1, cut), text:sub(cut + 1) }
            for i, part in ipairs(parts) do
                assert.is_true(#part < 1000 * 1000, "part " .. i .. " is " .. #part .. " bytes")
                mcl:set("t:big:" .. tag .. ":" .. i, part)
            end
            mcl:set("t:big", "#gray-parts 2 " .. tag)
        end

        local function route(ip)
            local status, body, debug = request("/r/big/", { ip = ip })
            assert.equal(200, status)
            return body .. " " .. debug
        end

        local INSIDE = {
            { "11.0.0.7", "gray @server_test; range" },           -- line 2
            { v4(7 * 59999), "gray @server_test; range" },        -- line 60,000
            { "12.3.4.200", "gray @server_test; range" },         -- inside 12.3.4.0/24
            { "12.78.31.1", "gray @server_test; range" },         -- the last /24, 12.78.31.0
            { "2001:db8:abc::1234", "gray @server_test; range" },
            { "2001:db8:4e1e:0:ffff::1", "gray @server_test; range" }, -- the last /64
            { "13.200.1.1", "v2 @server_v2; range" },
        }
        local OUTSIDE = { "11.0.0.8", v4(7 * 59999 + 1), "12.78.32.1", "2001:db8:4e1f::1",
                          "2001:db9::1", "14.1.1.1" }

        it("is picked up within the refresh interval (0.5 s) and looked up", function()
            local text = big_list("13.0.0.0/8 v2")
            assert.is_true(#text > 1024 * 1024, #text .. " bytes")
            route("11.0.0.8")                   -- the router's first request starts its timer
            write_split(text, "a")
            local s, took = wait_stats("big", function(st) return st.ranges == 100000 end, 10,
                                       "the split list")
            -- the refresh interval, then the helper's compile at nice 19:
            -- milliseconds on an idle node, 2.3 s seen in a clean-clone
            -- make test whose lanes kept both cores busy
            assert.is_true(took < 0.5 + 5.0, "took " .. took .. " s")
            assert.equal(1, s.compiles)
            for _, c in ipairs(INSIDE) do
                assert.equal(c[2], route(c[1]), c[1])
            end
            for _, ip in ipairs(OUTSIDE) do
                assert.equal("stable @server; default", route(ip), ip)
            end
        end)

        -- waits for n refreshes after those of stats s (each reads the key)
        local function refreshes_after(s, n, what)
            return wait_stats("big", function(st) return st.refreshes >= s.refreshes + n end, 5,
                              what)
        end

        it("is not recompiled while unchanged, and recompiled once when it changes", function()
            local s0 = stats("big")
            local s1 = refreshes_after(s0, 2, "two refreshes")
            assert.is_true(s1.refreshes >= s0.refreshes + 2, s0.refreshes .. " " .. s1.refreshes)
            assert.equal(s0.compiles, s1.compiles)

            -- one line changes: 13.0.0.0/8 v2 becomes 14.0.0.0/8
            write_split(big_list("14.0.0.0/8"), "b")
            local sc = wait_stats("big", function(st) return st.compiles > s1.compiles end, 5,
                                  "the changed list")
            assert.equal("gray @server_test; range", route("14.1.1.1"))
            assert.equal("stable @server; default", route("13.200.1.1"))
            -- two more refreshes of the changed list compile nothing
            local s2 = refreshes_after(sc, 2, "two refreshes after the change")
            assert.equal(s1.compiles + 1, s2.compiles)
            assert.equal(100000, s2.ranges)
        end)

        it("keeps the last good set while memcached hangs, and over a missing part", function()
            local s0 = stats("big")
            mcl:signal("STOP")
            local ok, err = pcall(function()
                -- a refresh under way at the STOP may still succeed: wait
                -- for one that failed (and one more)
                local s1 = wait_stats("big", function(st)
                    return st.refreshes >= s0.refreshes + 2 and nginx:error_log():find(
                        "refreshing t:big failed, the last copy stays", 1, true)
                end, 5, "a failed refresh")
                assert.is_true(s1.refreshes >= s0.refreshes + 1, s0.refreshes .. " "
                                                                 .. s1.refreshes)
                assert.same({ 100000, s0.compiles }, { s1.ranges, s1.compiles })
                -- the address entry times out, the range still decides
                assert.equal("gray @server_test; range", route("14.1.1.1"))
            end)
            mcl:signal("CONT")
            assert(ok, err)
            assert.truthy(nginx:error_log():find("refreshing t:big failed, the last copy stays",
                                                 1, true))

            -- a header naming parts that are not there
            mcl:set("t:big", "#gray-parts 2 gone")
            wait_stats("big", function()
                return nginx:error_log():find("t:big: part t:big:gone:1 is missing", 1, true)
            end, 5, "the missing part to be noticed")
            local s2 = stats("big")
            assert.same({ 100000, s0.compiles }, { s2.ranges, s2.compiles })
            assert.equal("gray @server_test; range", route("14.1.1.1"))
        end)

        it("is cleared when its key is deleted", function()
            assert.truthy(mcl:cmd("delete t:big\r\n"):find("^DELETED"))
            wait_stats("big", function(st) return st.ranges == 0 end, 5, "the list to clear")
            assert.equal("stable @server; default", route("14.1.1.1"))
            assert.equal("stable @server; default", route("11.0.0.7"))
        end)
    end)

    describe("memcached traffic", function()
        local function cmd_get()
            return tonumber(mcq:cmd("stats\r\n"):match("STAT cmd_get (%d+)"))
        end

        -- the command lines memcached received after a log offset
        local function gets_since(offset)
            local lines = {}
            for line in mcq:log():sub(offset + 1):gmatch("[^\n]+") do
                local command = line:match("^<%d+ (gets? .*)$") or line:match("^<%d+ (m[gn].*)$")
                if command then
                    lines[#lines + 1] = command
                end
            end
            return lines
        end

        it("asks for three uncached keys (address + two ids) in one request, then none", function()
            mcq:set("dev:trip-dev", "v2")
            local req = { ip = "198.51.100.77", uid = "trip-u", dev = "trip-dev" }
            local offset, before = #mcq:log(), cmd_get()
            local status, body, debug = request("/r/quiet/", req)
            assert.same({ 200, "v2", "@server_v2; id:dev" }, { status, body, debug })
            -- one pipeline of meta gets (issue 16), O: each key's position
            assert.same({ "mg uid:trip-u v q O0", "mg dev:trip-dev v q O1",
                          "mg 198.51.100.77 v q O2", "mn" }, gets_since(offset))
            assert.equal(3, cmd_get() - before)

            -- every key cached: nothing is sent
            offset, before = #mcq:log(), cmd_get()
            status, body, debug = request("/r/quiet/", req)
            assert.same({ 200, "v2", "@server_v2; id:dev" }, { status, body, debug })
            assert.same({}, gets_since(offset))
            assert.equal(0, cmd_get() - before)

            -- one new identity: only its key goes out
            req.uid = "trip-u2"
            offset, before = #mcq:log(), cmd_get()
            status, body = request("/r/quiet/", req)
            assert.same({ 200, "v2" }, { status, body })
            assert.same({ "get uid:trip-u2" }, gets_since(offset))
            assert.equal(1, cmd_get() - before)
        end)

        describe("junk identity values", function()
            local IP = "192.0.2.99"

            setup(function()
                mcq:set("canary", "alive")
                -- the address's miss is cached: a request sends only its ids
                request("/r/quiet/", { ip = IP })
            end)

            -- { name, request fields, query string }
            local junk = {
                { "an empty cookie", { cookie = "uid=" } },
                { "an empty query argument", {}, "q=" },
                { "a 201-byte cookie", { uid = ("u"):rep(201) } },
                { "a 201-byte header", { dev = ("d"):rep(201) } },
                { "a 201-byte query argument", {}, "q=" .. ("q"):rep(201) },
                { "a header with a space", { dev = "a b" } },
                { "a cookie with a space", { cookie = "uid=a b" } },
                { "a header with a tab", { dev = "a\tb" } },
                { "a header with a control byte", { dev = "a\1flush_all" } },
                { "a header with DEL", { dev = "a\127b" } },
            }
            for _, c in ipairs(junk) do
                it(c[1] .. " is never sent, and the request answers", function()
                    local req = c[2]
                    req.ip = IP
                    local offset, before = #mcq:log(), cmd_get()
                    local status, body, debug = request("/r/quiet/?" .. (c[3] or ""), req)
                    assert.same({ 200, "stable", "@server; default" }, { status, body, debug })
                    assert.same({}, gets_since(offset))
                    assert.equal(0, cmd_get() - before)
                end)
            end

            it("CR LF flush_all (through a raw query string) is never sent", function()
                local offset, before = #mcq:log(), cmd_get()
                -- no HTTP request can carry it (nginx answers 400), but the
                -- args variable takes it raw, as a module rewriting them might
                local out = nginx:eval([[
                    ngx.var.args = "q=\r\nflush_all"
                    ngx.req.set_header("X-Real-IP", "]] .. IP .. [[")
                    local r = package.loaded.spec_targeting.router("quiet")
                    local target, reason = r:decide()
                    return tostring(ngx.var.arg_q == "\r\nflush_all") .. " " .. target .. " "
                           .. reason
                ]])
                assert.equal("true @server default\n", out)
                assert.same({}, gets_since(offset))
                assert.equal(0, cmd_get() - before)
            end)

            it("a 200-byte value is sent (the limit is 200), as one key", function()
                local v = ("k"):rep(200)
                local offset, before = #mcq:log(), cmd_get()
                local status, body = request("/r/quiet/", { ip = IP, dev = v })
                assert.same({ 200, "stable" }, { status, body })
                assert.same({ "get dev:" .. v }, gets_since(offset))
                assert.equal(1, cmd_get() - before)
            end)

            it("left memcached's data intact", function()
                assert.equal("alive", mcq:get("canary"))
                assert.equal("v2", mcq:get("dev:trip-dev"))
                assert.is_nil(mcq:log():find("flush_all", 1, true))
            end)
        end)

        -- An oversized value under one identity (5 KB, over value_max and
        -- over the whole multi-get's byte limit) comes before the address's
        -- value in the reply, which is then never read: the address's entry
        -- is unknown, not "not gray", and must not be cached as such.
        it("an oversized identity value does not decide or poison the address's entry", function()
            local ip = "192.0.2.150"
            mcq:set(ip, "1")
            mcq:set("uid:huge", ("x"):rep(5000))
            local status, body, debug = request("/r/quiet/", { ip = ip, uid = "huge" })
            assert.equal(200, status)
            assert.truthy(debug == "@server_test; ip" or debug == "@server; store-error",
                          "the address's entry was never read, yet: " .. body .. ", " .. debug)
            -- the address alone: gray, whatever the first request cached
            status, body, debug = request("/r/quiet/", { ip = ip })
            assert.same({ 200, "gray", "@server_test; ip" }, { status, body, debug })
        end)
    end)

    describe("the classic dep.lua configuration", function()
        it("routes by `set <ip> 0 0 1` / `1` as before, and nothing else", function()
            mc:set("192.168.2.20", "1")
            mc:set("192.168.2.22", "0")
            local res = nginx:get("/", { headers = { ["X-Real-IP"] = "192.168.2.20" },
                                         response_headers = true })
            assert.same({ 200, "gray\n" }, { res.status, res.body })
            assert.is_nil(res.headers["x-gray-debug"])       -- off by default
            -- no override unless configured
            res = nginx:get("/", { headers = { ["X-Real-IP"] = "192.168.2.21",
                                               ["X-Gray"] = "always" } })
            assert.same({ 200, "stable\n" }, { res.status, res.body })
            res = nginx:get("/", { headers = { ["X-Real-IP"] = "192.168.2.22" } })
            assert.same({ 200, "stable\n" }, { res.status, res.body })
            -- the default list keys are absent: nothing to report
            harness.sleep(0.3)
            local log = nginx:error_log()
            assert.is_nil(log:find("gray:ranges", 1, true), log:sub(-2000))
            assert.is_nil(log:find("gray:percent", 1, true), log:sub(-2000))
        end)
    end)

    it("leaves error.log free of global-variable warnings, alerts and crits", function()
        assert.same({}, harness.bad_log_lines(nginx:error_log()))
    end)
end)
