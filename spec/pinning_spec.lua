-- Pinning to stable and unknown targets (issue 12), through real nginx and
-- memcached: a value `stable` in an entry, an id list line or a ranges line
-- sends the client to the stable location with the reason of the rule that
-- matched, whatever a later range or the percentage says; a value naming no
-- target does the same with reason unknown-target (logged once per 5 s);
-- a bad target name is refused at load with $gray_targets named; and two
-- target names for one location are labelled by the name the entry used.
--
-- Every client below is in the ranges' 10.0.0.0/8 (gray) and the
-- percentage is 100, so any rule that let the chain go on would answer gray.

local harness = require "helpers.harness"

local INIT = [[
  lua_shared_dict gray_cache 1m;
  init_by_lua_block {
    local gray = require "gray"
    local function opts(extra)
        local o = {
            memcached = "127.0.0.1:$MC", trusted = "127.0.0.1",
            targets = { v2 = "@server_v2", beta = "@server_v2" },
            ids = "uid=cookie:uid, dev=header:X-Device-Id", lists = "dev",
            ranges_key = "p:ranges", percent_key = "p:percent",
            debug_header = "X-Gray-Debug", refresh_interval = 0.2, cache_ttl = 0,
        }
        for k, v in pairs(extra) do
            o[k] = v
        end
        return o
    end
    local CONF = {
        pin = opts({}),
        -- every answer cached: a worker cache of one entry, and the shared one
        cached = opts({ cache_ttl = 60, cache_size = 1, shm = "gray_cache" }),
    }
    local routers = {}
    package.loaded.spec_pinning = function(name)
        local r = routers[name]
        if not r then
            r = assert(gray.new(assert(CONF[name], name)))
            routers[name] = r
        end
        return r
    end
  }
]]

local SERVERS = [[
  server {
    listen 127.0.0.1:$PORT;
    set $gray_target_name "";
    set $gray_reason "";

    location ~ ^/r/(\w+)/ {
        content_by_lua_block { package.loaded.spec_pinning(ngx.var[1]):exec() }
    }
    location /bad-hash/ {
        set $gray_memcached 127.0.0.1:$MC;
        set $gray_targets "v#2=@server_v2";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /bad-byte/ {
        set $gray_memcached 127.0.0.1:$MC;
        set $gray_targets "v2=@server_v2, $NONASCII=@server_v2";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /bad-stable/ {
        set $gray_memcached 127.0.0.1:$MC;
        set $gray_targets "stable=@server_v2";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location @server      { return 200 "stable $gray_target_name\n"; }
    location @server_test { return 200 "gray $gray_target_name\n"; }
    location @server_v2   { return 200 "v2 $gray_target_name\n"; }
  }
]]

local RANGES = table.concat({
    "10.0.0.0/8",               -- gray
    "10.5.0.0/16 stable",       -- pinned
    "10.6.0.0/16 v9",           -- a target this router does not have
    "10.7.0.0/16 v2",
}, "\n")

local LIST = table.concat({
    "# QA devices",
    "pin-d1 stable",
    "pin-d9 v9",
    "pin-d2",
}, "\n")

describe("pinning to stable", function()
    after_each(harness.no_error_log)
    local mc, nginx

    setup(function()
        mc = harness.memcached()
        nginx = harness.nginx({ http = INIT:gsub("%$MC", tostring(mc.port)),
                                servers = SERVERS:gsub("%$NONASCII", "v\195\169"),
                                memcached_port = mc.port })
        mc:set_many({
            ["p:ranges"] = RANGES, ["p:percent"] = "100", ["gray:list:dev"] = LIST,
            ["10.1.0.1"] = "stable", ["uid:pin-u1"] = "stable", ["dev:pin-d3"] = "1",
            ["10.1.0.5"] = "v9", ["uid:pin-u9"] = "v9",
            ["10.1.0.8"] = "beta", ["10.1.0.9"] = "v2",
        })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    -- GET path as client ip (X-Real-IP through the trusted 127.0.0.1), with
    -- the uid cookie and the X-Device-Id header when given: the debug
    -- header and the body ("<backend> <$gray_target_name>").
    local function ask(path, ip, uid, dev)
        local headers = { ["X-Real-IP"] = ip, ["X-Device-Id"] = dev }
        if uid then
            headers.Cookie = "uid=" .. uid
        end
        local res = nginx:get(path, { headers = headers, response_headers = true })
        assert.equal(200, res.status, res.body)
        return res.headers["x-gray-debug"], (res.body:gsub("\n$", ""))
    end

    -- wait for the first refresh of the lists (the first request starts it)
    local function ready(router)
        local t0 = os.time()
        while (ask("/r/" .. router .. "/", "10.7.0.1")) ~= "@server_v2; range" do
            assert(os.time() - t0 < 5, "the lists never compiled")
            harness.sleep(0.05)
        end
    end

    -- { name, ip, uid, dev, debug header, body }
    local cases = {
        { "an address entry stable beats a range and the percentage",
          "10.1.0.1", nil, nil, "@server; ip", "stable stable" },
        { "an identity entry stable beats a later identity's entry",
          "10.1.0.2", "pin-u1", "pin-d3", "@server; id:uid", "stable stable" },
        { "an id list line stable beats a range and the percentage",
          "10.1.0.3", nil, "pin-d1", "@server; list:dev", "stable stable" },
        { "a ranges line stable beats the enclosing range and the percentage",
          "10.5.0.1", nil, nil, "@server; range", "stable stable" },
        { "an address entry naming no target sends to stable",
          "10.1.0.5", nil, nil, "@server; unknown-target", "stable stable" },
        { "an identity entry naming no target sends to stable",
          "10.1.0.6", "pin-u9", "pin-d3", "@server; unknown-target", "stable stable" },
        { "an id list line naming no target sends to stable",
          "10.1.0.7", nil, "pin-d9", "@server; unknown-target", "stable stable" },
        { "a ranges line naming no target sends to stable",
          "10.6.0.1", nil, nil, "@server; unknown-target", "stable stable" },
        { "two names for one location: the entry's name beta",
          "10.1.0.8", nil, nil, "@server_v2; ip", "v2 beta" },
        { "two names for one location: the entry's name v2",
          "10.1.0.9", nil, nil, "@server_v2; ip", "v2 v2" },
        { "control: a listed id without a name is gray",
          "10.1.0.10", nil, "pin-d2", "@server_test; list:dev", "gray gray" },
        { "control: the enclosing range", "10.1.0.11", nil, nil, "@server_test; range", "gray gray" },
        { "control: outside every range, the percentage",
          "192.0.2.1", nil, nil, "@server_test; percent", "gray gray" },
    }

    for _, router in ipairs({ "pin", "cached" }) do
        describe("(router " .. router .. ")", function()
            setup(function() ready(router) end)

            for _, c in ipairs(cases) do
                it(c[1], function()
                    -- thrice: memcached, then the caches (worker and shared)
                    for _ = 1, 3 do
                        local debug, body = ask("/r/" .. router .. "/", c[2], c[3], c[4])
                        assert.same({ c[5], c[6] }, { debug, body })
                    end
                end)
            end
        end)
    end

    it("labels the shared cache's answers by the entry's name too", function()
        -- the worker's cache holds one entry: every other lookup of these
        -- two goes to the shared cache
        for _ = 1, 3 do
            assert.same({ "@server_v2; ip", "v2 beta" }, { ask("/r/cached/", "10.1.0.8") })
            assert.same({ "@server_v2; ip", "v2 v2" }, { ask("/r/cached/", "10.1.0.9") })
        end
    end)

    it("logs a value naming no target once per 5 s, not per request", function()
        for _ = 1, 5 do
            ask("/r/pin/", "10.1.0.5")
        end
        local log = nginx:error_log()
        local _, n = log:gsub("the value of 10%.1%.0%.5 names no target: 'v9'", "")
        -- one per router: pin and cached each logged it once
        assert.equal(2, n, log:sub(-3000))
        assert.same({}, harness.bad_log_lines(log))
    end)

    describe("a bad target name", function()
        for _, c in ipairs({
            { "/bad-hash/", "$gray_targets names 'v#2', which is not a target name" },
            { "/bad-byte/", "$gray_targets names 'v\195\169', which is not a target name" },
            { "/bad-stable/", "$gray_targets names 'stable', which is reserved" },
        }) do
            it("is refused at load, naming $gray_targets: " .. c[1], function()
                local debug, body = ask(c[1], "10.1.0.9")
                assert.is_nil(debug)
                assert.equal("stable ", body)
                local log = nginx:error_log()
                assert.truthy(log:find("bad configuration, sending everybody to the stable"
                                       .. " location: " .. c[2], 1, true), log:sub(-3000))
            end)
        end
    end)
end)
