-- Every documented $gray_* variable, defined alone and in pairs, in real
-- nginx and memcached: never a non-2xx answer (issue 12, "never 500"). The
-- drop-in's variables (gray.dep's VARS) are set with `set`, and given as a
-- location's own settings to run(), where nginx must warn of nothing (a
-- variable that some locations set is read, and warned about, in all the
-- others: nginx's rewrite module); the log variables ($gray_target_name,
-- $gray_reason) are each filled when defined alone.

local harness = require "helpers.harness"

-- A valid value for each variable of gray.dep's VARS. A row added there
-- needs one here (the spec says which).
local VALUES = {
    gray_memcached = "127.0.0.1:$MC",
    gray_trusted = "127.0.0.1",
    gray_client_headers = "X-Real-IP",
    gray_stable = "@server",
    gray_target = "@server_test",
    gray_cache_ttl = "2s",
    gray_timeout = "300ms",
    gray_targets = "v2=@v2",
    gray_ids = "uid=cookie:uid",
    gray_lists = "uid",
    gray_ranges_key = "gray:ranges",
    gray_percent_key = "gray:percent",
    gray_ramp_key = "gray:ramp",
    gray_upstreams = "stable=127.0.0.1:1, gray=127.0.0.1:2, v2=127.0.0.1:3",
    gray_force = "header:X-Gray",
    gray_debug_header = "X-Gray-Debug",
    gray_distribution = "modula",
    gray_shm = "gray_cache",
    gray_stale_ttl = "30s",
    gray_force_from = "127.0.0.1",
    gray_secret_file = "$REPO/spec/fixtures/test.secret",   -- a test-only secret
    gray_lists_dir = "/dev/shm/lua-resty-gray",
    gray_guard = "min_requests=100, window=30",
    gray_halt_key = "gray:halt",
}

-- Sets that are refused whatever the values (logged, routed to stable):
-- $gray_lists names identities, so it needs $gray_ids; the override
-- ($gray_force) needs who may use it ($gray_force_from or
-- $gray_secret_file). Returns the refusal's message, or nil.
local REFUSALS = {
    lists = "$gray_lists names 'uid', which is not one of the identities",
    force = "$gray_force needs 'force_from' (the testers' addresses) or",
}
local function refused(names)
    local set = {}
    for _, n in ipairs(names) do
        set[n] = true
    end
    if set.gray_lists and not set.gray_ids then
        return REFUSALS.lists
    elseif set.gray_force and not (set.gray_force_from or set.gray_secret_file) then
        return REFUSALS.force
    end
    return nil
end

local LOCATIONS = [[
    location @server      { return 200 "stable\n"; }
    location @server_test { return 200 "gray\n"; }
    location @v2          { return 200 "v2\n"; }
]]

-- gray.dep's VARS names, read from the module itself.
local function var_names()
    local nginx = harness.nginx({ servers = [[
      server {
        listen 127.0.0.1:$PORT;
        ]] .. harness.EVAL_LOCATION .. [[
      }
    ]] })
    local ok, out = pcall(nginx.eval, nginx, [[
        local names = {}
        for i, var in ipairs(require("gray.dep").VARS) do names[i] = var[1] end
        return table.concat(names, " ")
    ]])
    nginx:stop()
    assert(ok, out)
    local names = {}
    for name in out:gmatch("%S+") do
        assert(VALUES[name], "spec/vars_spec.lua: add a valid value for $" .. name .. " to VALUES")
        names[#names + 1] = name
    end
    return names
end

-- Every variable alone, then every pair: { path, names }.
local function subsets(names)
    local list = {}
    for i = 1, #names do
        list[#list + 1] = { "/a/" .. i, { names[i] } }
    end
    for i = 1, #names do
        for j = i + 1, #names do
            list[#list + 1] = { "/p/" .. i .. "_" .. j, { names[i], names[j] } }
        end
    end
    return list
end

-- GET every path once on one keepalive connection (one curl), with the
-- headers of a gray client; the answers, "<status> <path>" in order.
local function get_all(nginx, paths)
    local cfg = nginx.dir .. "/all.cfg"
    local f = assert(io.open(cfg, "wb"))
    f:write('header = "X-Real-IP: 192.0.2.10"\nheader = "Cookie: uid=42"\n')
    for _, p in ipairs(paths) do
        f:write('url = "http://127.0.0.1:', nginx.port, p, '"\noutput = "/dev/null"\n')
    end
    f:close()
    local out = harness.sh("curl -s --config " .. cfg .. " -w '%{http_code} %{url_effective}\\n'")
    local answers = {}
    for status, url in out:gmatch("(%d+) (%S+)\n") do
        answers[#answers + 1] = status .. " " .. url:match("^http://[^/]+(.*)$")
    end
    assert(#answers == #paths, "curl answered " .. #answers .. " of " .. #paths .. ": "
                               .. out:sub(1, 2000))
    return answers
end

local function non_2xx(answers)
    local bad = {}
    for _, a in ipairs(answers) do
        if not a:find("^2%d%d ") then
            bad[#bad + 1] = a
        end
    end
    return bad
end

-- error.log lines at warn level or worse, but for the expected refusals and
-- the default memcached (127.0.0.1:11211, where the cases without
-- $gray_memcached look; nothing may listen there)
local function unexpected_lines(log)
    local bad = {}
    for line in log:gmatch("[^\n]+") do
        if line:find("%[warn%]") or line:find("%[error%]") or line:find("%[alert%]")
           or line:find("%[crit%]") or line:find("%[emerg%]") then
            if not (line:find(REFUSALS.lists, 1, true) or line:find(REFUSALS.force, 1, true)
                    or line:find("127.0.0.1:11211", 1, true)
                    or line:find("connect() failed (111: Connection refused)", 1, true)) then
                bad[#bad + 1] = line
            end
        end
    end
    return bad
end

describe("every $gray_* variable alone and in pairs", function()
    after_each(harness.no_error_log)
    local mc, names, cases

    setup(function()
        mc = harness.memcached()
        mc:set("192.0.2.10", "1")
        names = var_names()
        cases = subsets(names)
    end)

    teardown(function()
        if mc then mc:destroy() end
    end)

    local function paths()
        local list = {}
        for i, c in ipairs(cases) do
            list[i] = c[1]
        end
        return list
    end

    it("set with `set`: never a non-2xx answer", function()
        -- all subsets in one nginx: each location reads the variables the
        -- others set, so nginx's warning is off here (see the next test)
        local locs = {}
        for _, c in ipairs(cases) do
            local sets = {}
            for _, n in ipairs(c[2]) do
                sets[#sets + 1] = "set $" .. n .. ' "' .. VALUES[n] .. '";'
            end
            locs[#locs + 1] = "location = " .. c[1] .. " { " .. table.concat(sets, " ")
                              .. " content_by_lua_file $REPO/lua/gray/dep.lua; }"
        end
        local nginx = harness.nginx({ memcached_port = mc.port, log_level = "warn",
                                      http = "lua_shared_dict gray_cache 1m;", servers = [[
          server {
            listen 127.0.0.1:$PORT;
            uninitialized_variable_warn off;
            ]] .. table.concat(locs, "\n") .. LOCATIONS .. [[
          }
        ]] })
        finally(function() nginx:stop() end)
        local answers = get_all(nginx, paths())
        assert.same({}, non_2xx(answers))
        assert.same({}, unexpected_lines(nginx:error_log()))
    end)

    it("given to run() as a location's settings: never a non-2xx answer, nothing warned",
       function()
        local locs = {}
        for _, c in ipairs(cases) do
            local items = {}
            for _, n in ipairs(c[2]) do
                items[#items + 1] = "$" .. n .. " " .. VALUES[n]
            end
            locs[#locs + 1] = "location = " .. c[1] .. ' { content_by_lua_block {'
                              .. ' require("gray.dep").run("' .. table.concat(items, "; ")
                              .. '") } }'
        end
        local nginx = harness.nginx({ memcached_port = mc.port, log_level = "warn",
                                      http = "lua_shared_dict gray_cache 1m;", servers = [[
          server {
            listen 127.0.0.1:$PORT;
            location = /plain { content_by_lua_file $REPO/lua/gray/dep.lua; }
            ]] .. table.concat(locs, "\n") .. LOCATIONS .. [[
          }
        ]] })
        finally(function() nginx:stop() end)
        local list = paths()
        table.insert(list, 1, "/plain")
        list[#list + 1] = "/plain"
        local answers = get_all(nginx, list)
        assert.same({}, non_2xx(answers))
        assert.same({}, unexpected_lines(nginx:error_log()))
        -- and each case's settings were the ones applied: the refused ones
        -- were logged, once per worker
        local expected, n = 0, 0
        for _, c in ipairs(cases) do
            if refused(c[2]) then
                expected = expected + 1
            end
        end
        for line in nginx:error_log():gmatch("[^\n]+") do
            if line:find("bad configuration", 1, true)
               and (line:find(REFUSALS.lists, 1, true) or line:find(REFUSALS.force, 1, true)) then
                n = n + 1
            end
        end
        assert.equal(expected, n)
    end)
end)

describe("a location's own settings (run) beside locations without", function()
    after_each(harness.no_error_log)
    local mc, nginx

    setup(function()
        mc = harness.memcached()
        nginx = harness.nginx({ memcached_port = mc.port, log_level = "warn", servers = [[
          server {
            listen 127.0.0.1:$PORT;
            location / { content_by_lua_file $REPO/lua/gray/dep.lua; }
            location /b {
                content_by_lua_block {
                    require("gray.dep").run("$gray_memcached 127.0.0.1:$MC; $gray_cache_ttl 0")
                }
            }
            location /c {
                content_by_lua_block {
                    require("gray.dep").run([=[
                        set $gray_memcached "127.0.0.1:$MC";
                        set $gray_debug_header X-Gray-Debug;
                    ]=])
                }
            }
            location /bad {
                content_by_lua_block { require("gray.dep").run("$gray_cache_tll 0") }
            }
          ]] .. LOCATIONS .. [[
          }
        ]] })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    it("applies them there only, and nginx warns of nothing anywhere", function()
        local ip = { ["X-Real-IP"] = "198.51.100.5" }
        mc:set("198.51.100.5", "1")
        for _ = 1, 3 do
            -- /: memcached at 127.0.0.1:11211 (the default), not this one
            local res = nginx:get("/", { headers = ip })
            assert.equal(200, res.status)
            res = nginx:get("/b", { headers = ip })
            assert.equal("gray\n", res.body)
        end
        -- ttl 0 at /b: memcached's change is seen at once
        mc:set("198.51.100.5", "0")
        assert.equal("stable\n", nginx:get("/b", { headers = ip }).body)
        -- /c: `set` lines as they are written in nginx.conf
        mc:set("198.51.100.5", "1")
        local res = nginx:get("/c", { headers = ip, response_headers = true })
        assert.equal("gray\n", res.body)
        assert.equal("@server_test; ip", res.headers["x-gray-debug"])
        local log = nginx:error_log()
        assert.falsy(log:find("uninitialized", 1, true), log)
        assert.falsy(log:find("[warn]", 1, true), log)
    end)

    it("refuses a setting it does not know: stable, logged naming it", function()
        for _ = 1, 3 do
            assert.equal("stable\n", nginx:get("/bad", { headers = { ["X-Real-IP"] = "1.2.3.4" } })
                                     .body)
        end
        local log = nginx:error_log()
        local _, n = log:gsub("bad setting '%$gray_cache_tll 0'", "")
        assert.equal(1, n, log)
    end)
end)

describe("the log variables", function()
    after_each(harness.no_error_log)
    local mc

    setup(function()
        mc = harness.memcached()
        mc:set("192.0.2.10", "1")
    end)

    teardown(function()
        if mc then mc:destroy() end
    end)

    -- { defined, the log_format, what a gray client's line reads }
    local cases = {
        { { "gray_reason" }, "$gray_reason", "ip" },
        { { "gray_target_name" }, "$gray_target_name", "gray" },
        { { "gray_target_name", "gray_reason" }, "$gray_target_name $gray_reason", "gray ip" },
    }
    for _, c in ipairs(cases) do
        it("$" .. table.concat(c[1], " and $") .. " alone: 200, and filled", function()
            local sets = {}
            for _, n in ipairs(c[1]) do
                sets[#sets + 1] = "set $" .. n .. ' "";'
            end
            local nginx = harness.nginx({ memcached_port = mc.port, log_level = "warn",
                http = "log_format gray '" .. c[2] .. "';", servers = [[
              server {
                listen 127.0.0.1:$PORT;
                access_log $LOGDIR/access.log gray;
                set $gray_memcached 127.0.0.1:$MC;
                ]] .. table.concat(sets, " ") .. [[
                location / { content_by_lua_file $REPO/lua/gray/dep.lua; }
                ]] .. LOCATIONS .. [[
              }
            ]] })
            finally(function() nginx:stop() end)
            assert.equal("3 200", nginx:batch("/", 3, { "X-Real-IP: 192.0.2.10" }))
            -- the access log is written after the response: wait for it
            local log
            for _ = 1, 50 do
                log = harness.read_file(nginx.dir .. "/access.log") or ""
                if select(2, log:gsub("\n", "")) >= 3 then break end
                harness.sleep(0.05)
            end
            assert.equal(string.rep(c[3] .. "\n", 3), log)
            assert.same({}, unexpected_lines(nginx:error_log()))
        end)
    end
end)
