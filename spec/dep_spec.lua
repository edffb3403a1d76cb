-- gray/dep.lua, the drop-in: its nginx variables, their syntax and messages,
-- and its fallbacks (a bad setting, a libgray.so that cannot be loaded), end
-- to end through real nginx and memcached.

local harness = require "helpers.harness"

local LOCATIONS = [[
    location @server      { return 200 "stable\n"; }
    location @server_test { return 200 "gray\n"; }
    location @alt         { return 200 "alt\n"; }
    location @alt_test    { return 200 "alt-gray\n"; }
]]

local function body_of(nginx, path, headers)
    local res = nginx:get(path, { headers = headers })
    assert.equal(200, res.status, res.body)
    return (res.body:gsub("\n$", ""))
end

describe("dep.lua configured through nginx variables", function()
    after_each(harness.no_error_log)
    local mc, nginx

    setup(function()
        mc = harness.memcached()
        nginx = harness.nginx({ memcached_port = mc.port, http = [[
            # $gray_target from a map without a default: reads "" when no
            # entry matches, and must keep being read afterwards
            map $http_x_pick $gray_target { alt "@alt_test"; }
            lua_shared_dict gray_cache 1m;
        ]], servers = [[
          server {
            listen 127.0.0.1:$PORT;
            uninitialized_variable_warn off;
            set $gray_memcached 127.0.0.1:$MC;
            set $gray_cache_ttl 0;
            location / { content_by_lua_file $REPO/lua/gray/dep.lua; }
            location /none/ {
                set $gray_trusted none;
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /xff-only/ {
                set $gray_client_headers "X-Forwarded-For";
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /peer-only/ {
                set $gray_client_headers none;
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /ttl-1s/ {
                set $gray_cache_ttl 1s;
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /ttl-500ms/ {
                set $gray_cache_ttl 500ms;
                set $gray_timeout 80ms;
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /bad-ttl/ {
                set $gray_cache_ttl 1x;
                set $gray_stable @alt;
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /bad-timeout/ {
                set $gray_timeout 5m;
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /shm/ {
                set $gray_shm gray_cache;
                set $gray_cache_ttl 1s;
                set $gray_stale_ttl 5s;
                set $gray_debug_header X-Gray-Debug;
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /bad-shm/ {
                set $gray_shm nope;
                set $gray_cache_ttl 1s;
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /bad-stale/ {
                set $gray_stale_ttl 1x;
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /bad-guard/ {
                set $gray_guard "error_delta=2";
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /bad-halt-key/ {
                set $gray_halt_key "a b";
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /bad-headers/ {
                set $gray_client_headers "X-Client-IP";
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
        ]] .. LOCATIONS .. [[
          }
          server {
            listen 127.0.0.1:$PORT2;
        ]] .. harness.EVAL_LOCATION .. [[
          }
        ]] })
        mc:set("203.0.113.7", "1")
        mc:set("198.51.100.1", "1")
        mc:set("127.0.0.1", "0")
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    local function body(path, headers)
        return body_of(nginx, path, headers)
    end

    it("follows a mapped $gray_target request by request", function()
        local client = { ["X-Real-IP"] = "203.0.113.7" }
        assert.equal("gray", body("/", client))             -- map: "" -> default
        client["X-Pick"] = "alt"
        assert.equal("alt-gray", body("/", client))
        client["X-Pick"] = "other"
        assert.equal("gray", body("/", client))
        client["X-Pick"] = "alt"
        assert.equal("alt-gray", body("/", client))
    end)

    it("trusts no proxy with $gray_trusted none", function()
        assert.equal("stable", body("/none/", { ["X-Real-IP"] = "203.0.113.7" }))
        assert.equal("gray", body("/", { ["X-Real-IP"] = "203.0.113.7" }))
    end)

    describe("$gray_client_headers", function()
        -- { location, headers, expected }
        local cases = {
            { "/", { ["X-Real-IP"] = "203.0.113.7", ["X-Forwarded-For"] = "198.51.100.9" },
              "gray" },
            { "/xff-only/", { ["X-Real-IP"] = "203.0.113.7", ["X-Forwarded-For"] = "198.51.100.9" },
              "stable" },
            { "/xff-only/", { ["X-Real-IP"] = "198.51.100.9", ["X-Forwarded-For"] = "198.51.100.1" },
              "gray" },
            { "/peer-only/", { ["X-Real-IP"] = "203.0.113.7" }, "stable" },
            { "/peer-only/", { ["X-Forwarded-For"] = "203.0.113.7" }, "stable" },
        }
        for _, c in ipairs(cases) do
            it(c[1] .. " with " .. harness.quote(next(c[2])) .. " -> " .. c[3], function()
                assert.equal(c[3], body(c[1], c[2]))
            end)
        end
    end)

    it("accepts nginx time syntax in $gray_cache_ttl and $gray_timeout", function()
        assert.equal("gray", body("/ttl-1s/", { ["X-Real-IP"] = "203.0.113.7" }))
        assert.equal("gray", body("/ttl-500ms/", { ["X-Real-IP"] = "203.0.113.7" }))
        assert.falsy(nginx:error_log():find("bad configuration", 1, true))
    end)

    describe("a bad setting", function()
        -- { location, the variable the message must name }
        local cases = {
            { "/bad-ttl/", "$gray_cache_ttl: bad time '1x'", "alt" },
            { "/bad-timeout/", "$gray_timeout", "stable" },
            { "/bad-headers/", "$gray_client_headers has 'X-Client-IP'", "stable" },
            { "/bad-shm/", "$gray_shm names no lua_shared_dict 'nope'", "stable" },
            { "/bad-stale/", "$gray_stale_ttl: bad time '1x'", "stable" },
            { "/bad-guard/", "$gray_guard error_delta must be a number from 0 to 1", "stable" },
            { "/bad-halt-key/", "$gray_halt_key must be a memcached key or false", "stable" },
        }
        for _, c in ipairs(cases) do
            it(c[1] .. ": routes to the stable location, logged once naming " .. c[2], function()
                for _ = 1, 5 do
                    assert.equal(c[3], body(c[1], { ["X-Real-IP"] = "203.0.113.7" }))
                end
                local log = nginx:error_log()
                local _, n = log:gsub("bad configuration[^\n]*" .. c[2]:gsub("%p", "%%%0"), "")
                assert.equal(1, n, log:sub(-1500))
                assert.falsy(log:find("option '", 1, true), "names a Lua option")
            end)
        end
    end)

    it("shares decisions through $gray_shm, and reads $gray_stale_ttl", function()
        assert.equal("gray", body("/shm/", { ["X-Real-IP"] = "198.51.100.1" }))
        -- the router of that location: its options came from the variables
        local out = nginx:eval([=[
            local dep = require "gray.dep"
            local vals = {}
            for i, var in ipairs(dep.VARS) do
                vals[i] = ({ gray_shm = "gray_cache", gray_stale_ttl = "2m",
                             gray_cache_ttl = "1s" })[var[1]]
            end
            local opts = assert(dep.options(vals))
            local r = assert(require("gray").new(opts))
            return opts.shm .. " " .. opts.stale_ttl .. " " .. tostring(r.shared ~= false)
        ]=], nginx.port2)
        assert.equal("gray_cache 120 true", (out:gsub("\n$", "")))
        -- the decision is in the dict: the shared key for that address
        out = nginx:eval([[
            local n = 0
            for _, k in ipairs(ngx.shared.gray_cache:get_keys(0)) do
                if k:find(":198.51.100.1", 1, true) then n = n + 1 end
            end
            return n
        ]], nginx.port2)
        assert.equal("1", (out:gsub("\n$", "")))
    end)

    describe("parse_time", function()
        -- { text, bare unit in seconds, seconds or nil }
        local cases = {
            { "1", 1, 1 }, { "0", 1, 0 }, { "0.5", 1, 0.5 }, { ".25", 1, 0.25 },
            { "50", 0.001, 0.05 }, { "500ms", 1, 0.5 }, { "1s", 0.001, 1 },
            { "2m", 1, 120 }, { "1h", 1, 3600 }, { "1m30s", 1, 90 }, { "1m 30s", 1, 90 },
            { "1d", 1, 86400 }, { "1w", 1, 604800 },
            { "", 1, nil }, { "1x", 1, nil }, { "s", 1, nil }, { "-1", 1, nil },
            { "1.5s", 1, nil }, { "1s1s", 1, nil }, { "0x10", 1, nil }, { "1e3", 1, nil },
            { " 1s", 1, 1 }, { "1s ", 1, 1 }, { "ms", 1, nil }, { "1 s", 1, nil },
        }
        for _, c in ipairs(cases) do
            it(string.format("%q", c[1]) .. " -> " .. tostring(c[3]), function()
                local out = nginx:eval(string.format(
                    "return tostring(require('gray.dep').parse_time(%q, %s))", c[1], c[2]),
                    nginx.port2)
                out = out:gsub("\n$", "")
                if c[3] == nil then
                    assert.equal("nil", out)
                else
                    assert.is_true(math.abs(tonumber(out) - c[3]) < 1e-9, out)
                end
            end)
        end
    end)

    it("is a module too: require 'gray.dep' has run() and _VERSION", function()
        local out = nginx:eval([[
            local dep = require "gray.dep"
            return type(dep.run) .. " " .. dep._VERSION .. " " .. require("gray")._VERSION
        ]], nginx.port2)
        assert.equal("function 0.1.0 0.1.0", (out:gsub("\n$", "")))
    end)

    it("leaves error.log free of global-variable warnings, alerts and crits", function()
        assert.same({}, harness.bad_log_lines(nginx:error_log()))
    end)
end)

describe("dep.lua when libgray.so cannot be loaded", function()
    after_each(harness.no_error_log)
    local nginx

    setup(function()
        -- no ";;": the default cpath must not find an installed copy
        nginx = harness.nginx({ package_cpath = "/nonexistent-gray/?.so", servers = [[
          server {
            listen 127.0.0.1:$PORT;
            location / { content_by_lua_file $REPO/lua/gray/dep.lua; }
            location /alt/ {
                set $gray_stable @alt;
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /run-alt/ {
                content_by_lua_block { require("gray.dep").run("$gray_stable @alt") }
            }
        ]] .. LOCATIONS .. [[
          }
        ]] })
    end)

    teardown(function()
        if nginx then nginx:stop() end
    end)

    it("sends every request to the stable location and logs the cause once", function()
        for _ = 1, 10 do
            assert.equal("stable", body_of(nginx, "/", { ["X-Real-IP"] = "203.0.113.7" }))
            assert.equal("alt", body_of(nginx, "/alt/", {}))
            assert.equal("alt", body_of(nginx, "/run-alt/", {}))
        end
        local log = nginx:error_log()
        local _, n = log:gsub("cannot load the router", "")
        assert.equal(1, n, log:sub(-2000))
        -- the real cause, with the paths tried
        assert.truthy(log:find("libgray.so not found", 1, true), log:sub(-2000))
        assert.truthy(log:find("/nonexistent-gray/libgray.so", 1, true), log:sub(-2000))
        assert.falsy(log:find("attempt to index", 1, true), log:sub(-2000))
        assert.same({}, harness.bad_log_lines(log))
    end)
end)
