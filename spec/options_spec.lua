-- gray.options and gray.util: a refused option comes back as a record that
-- names it (option, message, index, sep), so that gray.new says "gray.new:
-- option 'x' ..." and the drop-in "$gray_x ..." from the same data, without
-- rewriting a message. Hostile values carry another option's quoted name in
-- their text: the record, not the text, decides which option is named.

local harness = require "helpers.harness"
local util = require "gray.util"

describe("gray.util", function()
    after_each(harness.no_error_log)
    -- { input, items }
    local splits = {
        { "a", { "a" } },
        { "a,b", { "a", "b" } },
        { " a , b ,, c ", { "a", "b", "c" } },
        { "a b\tc\nd", { "a", "b", "c", "d" } },
        { "", {} },
        { " , ", {} },
    }
    for _, c in ipairs(splits) do
        it("splits " .. ("%q"):format(c[1]), function()
            assert.same(c[2], util.split_list(c[1]))
        end)
    end
    it("gives back a table, false or nil as it is", function()
        local t = { "x y" }
        assert.equal(t, util.split_list(t))
        assert.equal(false, util.split_list(false))
        assert.is_nil(util.split_list(nil))
        assert.equal(5, util.split_list(5))
    end)

    -- { the record's arguments, as Lua says it, as the drop-in says it }
    local texts = {
        { { "cache_ttl", "must be 0" }, "option 'cache_ttl' must be 0", "$v must be 0" },
        { { "targets", "must be x", "v2" }, "option 'targets[v2]' must be x", "$v[v2] must be x" },
        { { "servers", "bad", nil, ": " }, "option 'servers': bad", "$v: bad" },
        { { nil, "unknown option 'x'" }, "unknown option 'x'", "unknown option 'x'" },
    }
    for _, c in ipairs(texts) do
        it("words " .. c[2], function()
            local none, err = util.option_error(c[1][1], c[1][2], c[1][3], c[1][4])
            assert.is_nil(none)
            assert.equal(c[1][1], err.option)
            assert.equal(c[2], util.option_text(err))
            assert.equal(c[3], util.option_text(err, "$v"))
        end)
    end

    -- ms_left on a clock at 1000 s: { deadline, ms left (nil: none) }
    local lefts = {
        { 1001.5, 1500 },
        { 1000.002, 2 },
        { 1000.0009, nil },     -- less than 1 ms: none
        { 1000, nil },
        { 999, nil },           -- passed
        { -1e308, nil },
    }
    for _, c in ipairs(lefts) do
        it("counts " .. tostring(c[2]) .. " ms left before " .. c[1], function()
            local saved, updates = _G.ngx, 0
            local clock = 999
            _G.ngx = { now = function() return clock end,
                       update_time = function() updates = updates + 1; clock = 1000 end }
            package.loaded["gray.util"] = nil
            local ok, fresh = pcall(require, "gray.util")
            package.loaded["gray.util"], _G.ngx = util, saved
            assert(ok, fresh)
            -- by the clock read afresh, then by the cached clock (now fresh)
            local left = fresh.ms_left_fresh(c[1])
            assert.equal(1, updates)
            assert.near(c[2] or 0, left or 0, 1e-6)
            assert.equal(c[2] == nil, left == nil)
            left = fresh.ms_left(c[1])
            assert.near(c[2] or 0, left or 0, 1e-6)
            assert.equal(c[2] == nil, left == nil)
        end)
    end
end)

describe("gray.options", function()
    after_each(harness.no_error_log)
    local nginx

    setup(function()
        nginx = harness.nginx({ servers = [[
          server {
            listen 127.0.0.1:$PORT;
            uninitialized_variable_warn off;
            location @server { return 200 "stable\n"; }
            location /quoted-stable/ {
                set $gray_stable "@x option 'memcached'";
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /target-entry/ {
                set $gray_targets "v2=@v2, v3=bad";
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /servers/ {
                set $gray_memcached "127.0.0.1";
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location /trusted-quoted/ {
                set $gray_trusted "option'stable'";
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
        ]] .. harness.EVAL_LOCATION .. [[
          }
        ]] })
    end)

    teardown(function()
        if nginx then nginx:stop() end
    end)

    -- { options as Lua source, the record's option (or "nil") }
    local refused = {
        { "'x'", "nil" },
        { "{ bogus = 1 }", "nil" },
        { "{ read_timeout = 50 }", "read_timeout" },
        { "{ memcached = '127.0.0.1' }", "memcached" },
        { "{ memcached = { '127.0.0.1:1 127.0.0.1:2' } }", "memcached" },
        { "{ memcached = '127.0.0.1:1, 127.0.0.1:2', distribution = 'x' }", "distribution" },
        { "{ distribution = 'x' }", "distribution" },
        { "{ trusted = 5 }", "trusted" },
        { "{ trusted = \"option 'stable'\" }", "trusted" },
        { "{ client_headers = { \"option 'ids'\" } }", "client_headers" },
        { "{ stable = \"@x option 'memcached'\" }", "stable" },
        { "{ target = 5 }", "target" },
        { "{ targets = { v2 = \"option 'stable'\" } }", "targets" },
        { "{ targets = { stable = '@s' } }", "targets" },
        { "{ ids = \"option 'lists'\" }", "ids" },
        { "{ lists = 'uid' }", "lists" },
        { "{ ranges_key = 'a b' }", "ranges_key" },
        { "{ refresh_interval = 0 }", "refresh_interval" },
        { "{ refresh_timeout = 0 }", "refresh_timeout" },
        { "{ list_max = 1 }", "list_max" },
        { "{ force = \"option 'shm'\" }", "force" },
        { "{ force = 'header:X-Gray' }", "force" },
        { "{ force_from = \"option 'trusted'\" }", "force_from" },
        { "{ secret_file = '/nonexistent' }", "secret_file" },
        { "{ debug_header = 'a b' }", "debug_header" },
        { "{ metrics_shm = 5 }", "metrics_shm" },
        { "{ key_prefix = 'a b' }", "key_prefix" },
        { "{ cache_ttl = -1 }", "cache_ttl" },
        { "{ neg_ttl = -1 }", "neg_ttl" },
        { "{ stale_ttl = '1' }", "stale_ttl" },
        { "{ log_interval = 3601 }", "log_interval" },
        { "{ cache_size = 0.5 }", "cache_size" },
        { "{ shm = 5 }", "shm" },
        { "{ shm = 'gray_cache', cache_ttl = 0 }", "shm" },
        { "{ shm = 'nope' }", "shm" },
        { "{ timeout = 0 }", "timeout" },
        { "{ value_max = 0 }", "value_max" },
    }
    for _, c in ipairs(refused) do
        it("refuses " .. c[1] .. " with a record naming " .. c[2], function()
            local out = nginx:eval([[
                local gray, options = require "gray", require "gray.options"
                local opts = ]] .. c[1] .. [[

                local r, msg = gray.new(opts)
                local r2, rec = gray._new(opts)
                assert(r == nil and r2 == nil, "accepted")
                assert(type(rec) == "table", "not a record: " .. tostring(rec))
                -- the record is the message: gray.new's text is its wording
                assert(options.text(rec) == msg, options.text(rec) .. " ~= " .. msg)
                return tostring(rec.option) .. "|" .. msg
            ]]):gsub("\n$", "")
            local option, msg = out:match("^([^|]*)|(.*)$")
            assert.equal(c[2], option, out)
            assert.truthy(msg:find("^gray%.new: "), out)
            if option ~= "nil" then
                assert.truthy(msg:find("^gray%.new: option '" .. option:gsub("%p", "%%%0")), out)
            end
        end)
    end

    it("keeps the options it was not asked to check as given, the defaults filled in", function()
        local out = nginx:eval([[
            local options = require "gray.options"
            local o = assert(options.check({ cache_ttl = 3, targets = { v2 = "@v2" },
                                             lists = false }))
            return table.concat({ o.cache_ttl, o.neg_ttl, o.stable, o.targets.v2,
                                  tostring(o.lists), tostring(o.ids), o.timeout,
                                  tostring(o.force_var), tostring(o.secret) }, " ")
        ]])
        assert.equal("3 3 @server @v2 false false 50 false false\n", out)
    end)

    -- { location, what the drop-in's log line must hold }
    local dropin = {
        { "/quoted-stable/", "$gray_stable must be a named location ('@name') or a URI"
                             .. " ('/path'), got @x option 'memcached'" },
        { "/target-entry/", "$gray_targets[v3] must be a named location" },
        { "/servers/", "$gray_memcached: bad server '127.0.0.1'" },
        { "/trusted-quoted/", "$gray_trusted bad CIDR 'option'stable''" },
    }
    for _, c in ipairs(dropin) do
        it("the drop-in names the variable of the option at fault: " .. c[1], function()
            local res = nginx:get(c[1])
            assert.equal(200, res.status, res.body)
            assert.equal("stable\n", res.body)
            local log = nginx:error_log()
            local line = log:match("[^\n]*bad configuration[^\n]*" .. c[1]:gsub("%p", "%%%0")
                                   .. "[^\n]*")
            assert.truthy(line, log:sub(-2000))
            assert.truthy(line:find(c[2], 1, true), line)
            assert.falsy(line:find("option '", 1, true) and not c[2]:find("option '", 1, true),
                         "names a Lua option: " .. line)
        end)
    end
end)
