-- gray.metrics: Prometheus counters summed over the workers through a
-- shared dict, scraped from a real nginx while requests come in; a page that
-- answers from every worker (also one that routed nothing, and after a
-- reload); counts kept over a reload; a full dict that keeps its series and
-- says so; hostile label values; and off (nothing counted, nothing broken)
-- without the dict. Every page is checked against the exposition format.

local harness = require "helpers.harness"

local ROUTER = [[
    content_by_lua_block {
        local r = package.loaded.spec_metrics_router
        if not r then
            r = assert(require("gray").new({ memcached = "127.0.0.1:$MC",
                                             targets = { v2 = "@v2" },
                                             refresh_interval = 0.2 }))
            package.loaded.spec_metrics_router = r
        end
        return r:exec()
    }
]]

local function servers(with_metrics)
    return [[
      server {
        listen 127.0.0.1:$PORT;
        location / { ]] .. ROUTER .. [[ }
        location = /slow {
            # counts a decision 0.5 s after it came, its worker's counting
            # started before (?early) or after (?late) that wait
            content_by_lua_block {
                local m = require "gray.metrics"
                if ngx.var.args == "early" then
                    assert(m.enable("gray_metrics"))
                end
                ngx.sleep(0.5)
                assert(m.enable("gray_metrics"))
                m.decision("@server_test", { ["@server_test"] = "1" }, "ip", "cache")
                ngx.say("counted")
            }
        }
        location = /metrics {
            content_by_lua_block { require("gray.metrics").render() }
        }
        ]] .. harness.EVAL_LOCATION .. [[
        location @server      { return 200 "stable\n"; }
        location @server_test { return 200 "gray\n"; }
        location @v2          { return 200 "v2\n"; }
      }
    ]], with_metrics
end

-- sums the values of the series of a name whose labels contain `filter`
local function total(text, name, filter)
    local sum = 0
    for line in text:gmatch("[^\n]+") do
        local labels, v = line:match("^" .. name .. "(%b{}) (%d+)$")
        if labels and (not filter or labels:find(filter, 1, true)) then
            sum = sum + tonumber(v)
        end
    end
    return sum
end

-- The text exposition format's checker (what `promtool check metrics`
-- checks; Debian 12 has promtool only in the 96 MB prometheus package),
-- shared with outcome_spec: problems(text), and valid_page(text), which
-- asserts there are none and returns the page.
local exposition = require "helpers.exposition"
local exposition_problems = exposition.problems
local valid_page = exposition.valid_page

local function batch(nginx, n, ip)
    return nginx:batch("/", n, { "X-Real-IP: " .. ip })
end

-- Scrapes the page until pred(text) holds (each worker flushes its counts
-- every FLUSH s); returns the last text, whether or not it came, once
-- checked against the format.
local function scrape_until(nginx, pred)
    local text
    for _ = 1, 100 do
        text = nginx:get("/metrics").body
        if pred(text) then
            break
        end
        harness.sleep(0.05)
    end
    return valid_page(text)
end

-- The flush interval of the specs (1 s by default): a page is complete
-- FLUSH s after the requests, so the specs do not wait whole seconds.
local FLUSH = 0.1
local function http(dict, flush)
    return "lua_shared_dict gray_metrics " .. dict .. ";\n"
           .. "init_by_lua_block { require('gray.metrics').configure({ flush_interval = "
           .. (flush or FLUSH) .. " }) }"
end

describe("the exposition checker of this spec", function()
    after_each(harness.no_error_log)
    it("passes a good page and flags each fault", function()
        local good = '# HELP a_total x\n# TYPE a_total counter\na_total{k="v\\\\x\\"\\n\xc3\xa9"} 1\n'
                     .. '# TYPE b gauge\nb 0.125\nb{k="1"} -1e-05\nb{k="2"} NaN\nc{} +Inf 123\n'
        assert.same({}, exposition_problems(good))
        local bad = {
            'a{k="\xff"} 1\n',                      -- not UTF-8
            'a{k="\xc0\xaf"} 1\n',                  -- overlong
            'a{k="\xed\xa0\x80"} 1\n',              -- surrogate
            'a{k="\xe6\x97"} 1\n',                  -- cut short
            'a{k="x\\q"} 1\n',                      -- bad escape
            'a{k="x\ry"} 1\n',                      -- control byte
            'a{k="x} 1\n',                          -- unterminated
            'a{1k="x"} 1\n',                        -- label name
            'a{k="x",k="y"} 1\n',                   -- label twice
            'a{k="x"} 1\na{k="x"} 2\n',             -- series twice
            '1a 1\n',                               -- metric name
            'a 0x10\n', 'a 1.2.3\n', 'a\n', 'a 1 x\n',   -- values
            'a 1\nb 1\na 2\n',                      -- apart
            'a 1\n# TYPE a gauge\n',                -- TYPE after samples
            '# TYPE a gauge\n# TYPE a gauge\na 1\n',
            '# TYPE a foo\na 1\n',
            '# TYPE a counter\na 1\n',              -- counter without _total
            '# TYPE a_total gauge\na_total 1\n',    -- gauge with _total
            '# TYPE a_total counter\na_total -1\n',
            'a 1',                                  -- no final newline
        }
        for i, page in ipairs(bad) do
            assert.is_true(#exposition_problems(page) > 0, "case " .. i .. ": " .. page)
        end
    end)
end)

describe("gray.metrics", function()
    after_each(harness.no_error_log)
    local mc, nginx

    setup(function()
        mc = harness.memcached()
        mc:set_many({ ["203.0.113.60"] = "1", ["203.0.113.61"] = "v2" })
        nginx = harness.nginx({ memcached_port = mc.port, workers = 2, http = http("1m"),
                                servers = (servers(true)) })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    it("counts every decision over both workers, scraped while requests come in", function()
        -- 400 requests in the background while the page is scraped
        local cfg, marker = nginx.dir .. "/bg.cfg", nginx.dir .. "/bg.done"
        local f = assert(io.open(cfg, "wb"))
        for _ = 1, 400 do
            f:write('url = "http://127.0.0.1:', nginx.port, '/"\noutput = "/dev/null"\n')
        end
        f:close()
        harness.sh("(curl -s -H 'X-Real-IP: 198.51.100.9' --config " .. cfg
                   .. " >/dev/null 2>&1; echo done >" .. marker .. ") >/dev/null 2>&1 & true")
        local scrapes = 0
        repeat
            local page = nginx:get("/metrics")
            assert.equal(200, page.status)
            scrapes = scrapes + 1
            harness.sleep(0.05)
        until harness.read_file(marker) or scrapes > 200
        assert.truthy(harness.read_file(marker), "the background load did not finish")

        assert.truthy(batch(nginx, 300, "203.0.113.60"):find("300 200", 1, true))
        assert.truthy(batch(nginx, 200, "203.0.113.61"):find("200 200", 1, true))
        assert.truthy(batch(nginx, 100, "203.0.113.62"):find("100 200", 1, true))
        -- the requests are done: the total reaches 1000 once each worker
        -- has flushed its last counts (an overcount fails the checks below)
        local text = scrape_until(nginx, function(t)
            return total(t, "gray_decisions_total") >= 1000
        end)
        local gray = total(text, "gray_decisions_total", 'target="gray",reason="ip"')
        local v2 = total(text, "gray_decisions_total", 'target="v2",reason="ip"')
        local stable = total(text, "gray_decisions_total", 'target="stable"')
        assert.equal(300, gray, text)
        assert.equal(200, v2, text)
        assert.equal(500, stable, text)      -- 100, and the 400 in the background
        assert.equal(1000, total(text, "gray_decisions_total"), text)
        assert.truthy(text:find("# TYPE gray_decisions_total counter", 1, true), text)
        -- memcached was asked, and about which server
        assert.truthy(total(text, "gray_memcached_requests_total",
                            'server="127.0.0.1:' .. mc.port .. '"') >= 4, text)
    end)

    it("shows each list's version, entries and the percentage in use", function()
        mc:set("gray:ranges", "198.51.100.0/24\n2001:db8::/32 v2\n192.0.2.7\n")
        mc:set("gray:percent", "12.5")
        -- the routers refresh their lists every 0.2 s once they have served
        nginx:get("/", { headers = { ["X-Real-IP"] = "192.0.2.1" } })
        local function gauge(text, name, key)
            return tonumber(text:match("\n" .. name .. '{key="' .. key:gsub("%p", "%%%0")
                                       .. '"} ([%d.e+]+)'))
        end
        -- the gauges are written at once, the compile counter by the next
        -- once-a-second flush
        local text = scrape_until(nginx, function(t)
            return gauge(t, "gray_list_entries", "gray:ranges")
                   and gauge(t, "gray_sticky_ratio", "gray:percent")
                   and total(t, "gray_list_compiles_total", 'key="gray:ranges"') >= 1
        end)
        assert.equal(3, gauge(text, "gray_list_entries", "gray:ranges"), text)
        assert.equal(0.125, gauge(text, "gray_sticky_ratio", "gray:percent"), text)
        -- the version is the CAS of the copy compiled
        local cas = tonumber(mc:cmd("gets gray:ranges\r\n"):match("^VALUE %S+ %d+ %d+ (%d+)"))
        assert.is_number(cas)
        assert.equal(cas, gauge(text, "gray_list_version", "gray:ranges"), text)
        assert.truthy(text:find("# TYPE gray_list_version gauge", 1, true), text)
        assert.truthy(total(text, "gray_list_compiles_total", 'key="gray:ranges"') >= 1, text)
        -- a change is a new version
        mc:set("gray:ranges", "198.51.100.0/24\n")
        text = scrape_until(nginx, function(t)
            return gauge(t, "gray_list_entries", "gray:ranges") == 1
        end)
        assert.equal(1, gauge(text, "gray_list_entries", "gray:ranges"), text)
        assert.is_true(gauge(text, "gray_list_version", "gray:ranges") > cas, text)
        -- a deleted list is no list: its gauges drop to 0
        mc:cmd("delete gray:ranges\r\ndelete gray:percent\r\n")
        text = scrape_until(nginx, function(t)
            return gauge(t, "gray_list_entries", "gray:ranges") == 0
                   and gauge(t, "gray_sticky_ratio", "gray:percent") == 0
        end)
        assert.equal(0, gauge(text, "gray_list_entries", "gray:ranges"), text)
        assert.equal(0, gauge(text, "gray_list_version", "gray:ranges"), text)
        assert.equal(0, gauge(text, "gray_sticky_ratio", "gray:percent"), text)
    end)

    it("counts memcached errors by kind and shows the breaker", function()
        mc:signal("STOP")
        finally(function() mc:signal("CONT") end)
        for i = 1, 6 do
            nginx:get("/", { headers = { ["X-Real-IP"] = "192.0.2." .. i } })
        end
        mc:signal("CONT")
        local text = scrape_until(nginx, function(t)
            return total(t, "gray_memcached_errors_total", 'kind="timeout"') >= 1
                   and total(t, "gray_decisions_total", 'reason="store-') >= 1
        end)
        assert.truthy(total(text, "gray_memcached_errors_total", 'kind="timeout"') >= 1, text)
        assert.truthy(total(text, "gray_decisions_total", 'reason="store-') >= 1, text)
    end)

    -- label value sent -> what the page shows between the quotes: valid
    -- UTF-8 kept, \\, \" and \n escaped, any other byte that is not valid
    -- UTF-8 (or a control byte) written as the text \xNN
    local LABELS = {
        { "plain", "plain" },
        { 'q"uote', 'q\\"uote' },
        { "back\\slash", "back\\\\slash" },
        { "new\nline", "new\\nline" },
        { "caf\xc3\xa9", "caf\xc3\xa9" },                        -- é
        { "\xe6\x97\xa5\xe6\x9c\xac", "\xe6\x97\xa5\xe6\x9c\xac" },  -- 日本
        { "smile\xf0\x9f\x98\x80", "smile\xf0\x9f\x98\x80" },    -- U+1F600
        { "bad\xff", "bad\\\\xff" },
        { "lone\x80", "lone\\\\x80" },
        { "cut\xc3", "cut\\\\xc3" },
        { "cut3\xe6\x97", "cut3\\\\xe6\\\\x97" },
        { "overlong\xc0\xaf", "overlong\\\\xc0\\\\xaf" },
        { "overlong3\xe0\x80\xaf", "overlong3\\\\xe0\\\\x80\\\\xaf" },
        { "surrogate\xed\xa0\x80", "surrogate\\\\xed\\\\xa0\\\\x80" },
        { "big\xf4\x90\x80\x80", "big\\\\xf4\\\\x90\\\\x80\\\\x80" },
        { "\xff\xfe", "\\\\xff\\\\xfe" },
        { "cr\rnul\0tab\tdel\127", "cr\\\\x0dnul\\\\x00tab\\\\x09del\\\\x7f" },
        { 'all\xff"\\\n\xc3\xa9', 'all\\\\xff\\"\\\\\\n\xc3\xa9' },
    }

    it("makes every label value valid UTF-8 and the page valid", function()
        -- straight through the module: the router may refuse such names
        -- before they reach it, list keys and servers come from elsewhere
        local code = { 'local m = require "gray.metrics"', 'assert(m.enable("gray_metrics"))' }
        for i, case in ipairs(LABELS) do
            local v = ("%q"):format(case[1]):gsub("\\\n", "\\n"):gsub("\r", "\\r")
            code[#code + 1] = ('m.decision("@h%d", { ["@h%d"] = %s }, "ip", "memcached")')
                              :format(i, i, v)
            code[#code + 1] = ('m.set("gray_list_entries", { key = %s }, %d)'):format(v, i)
        end
        code[#code + 1] = "return m.text()"
        local text = valid_page(nginx:eval(table.concat(code, "\n")))
        for i, case in ipairs(LABELS) do
            local want = case[2]
            assert.truthy(text:find('gray_decisions_total{target="' .. want
                                    .. '",reason="ip",source="memcached"} 1\n', 1, true),
                          "target " .. i .. ": " .. text)
            assert.truthy(text:find('gray_list_entries{key="' .. want .. '"} ' .. i .. "\n",
                                    1, true), "key " .. i .. ": " .. text)
        end
        -- and so is every page scraped from any worker
        for _ = 1, 4 do
            valid_page(nginx:get("/metrics").body)
        end
        assert.same({}, harness.bad_log_lines(nginx:error_log()))
    end)

    it("writes values as the format has them: integers in full, NaN, +Inf, -Inf", function()
        local text = valid_page(nginx:eval([[
            local m = require "gray.metrics"
            assert(m.enable("gray_metrics"))
            for key, v in pairs({ big = 2 ^ 52 + 1, e15 = 1e15, neg = -3, ratio = 0.125,
                                  nan = 0 / 0, inf = math.huge, ninf = -math.huge }) do
                m.set("gray_list_version", { key = "v-" .. key }, v)
            end
            return m.text()
        ]]))
        for key, shown in pairs({ big = "4503599627370497", e15 = "1000000000000000",
                                  neg = "-3", ratio = "0.125", nan = "NaN", inf = "+Inf",
                                  ninf = "-Inf" }) do
            assert.truthy(text:find('\ngray_list_version{key="v-' .. key .. '"} ' .. shown .. "\n",
                                    1, true), key .. ": " .. text)
        end
    end)

    it("names its series as Prometheus does: base units, ratios, _total counters", function()
        local text = scrape_until(nginx, function(t)
            return t:find("gray_list_compile_seconds", 1, true) ~= nil
        end)
        local types = {}
        for name, kind in text:gmatch("# TYPE (%S+) (%S+)") do
            types[name] = kind
        end
        assert.equal("counter", types.gray_decisions_total, text)
        assert.equal("counter", types.gray_metrics_dropped_total, text)
        assert.equal("gauge", types.gray_list_compile_seconds, text)
        for name, kind in pairs(types) do
            assert.equal(kind == "counter", name:find("_total$") ~= nil, name)
            -- no unit other than the base ones, no percentage
            assert.falsy(name:find("_ms$") or name:find("_milliseconds$") or name:find("percent"),
                         name)
        end
        for v in text:gmatch('\ngray_sticky_ratio{[^}]*} (%S+)') do
            assert.truthy(tonumber(v) >= 0 and tonumber(v) <= 1, text)
        end
    end)
end)

describe("gray.metrics without the shared dict", function()
    after_each(harness.no_error_log)
    local mc, nginx

    setup(function()
        mc = harness.memcached()
        mc:set("203.0.113.60", "1")
        nginx = harness.nginx({ memcached_port = mc.port, servers = (servers(false)) })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    it("counts nothing, routes as usual and says why the page is empty", function()
        assert.equal("gray\n", nginx:get("/", { headers = { ["X-Real-IP"] = "203.0.113.60" } }).body)
        local page = nginx:get("/metrics")
        assert.equal(200, page.status)
        assert.truthy(page.body:find("metrics are off", 1, true), page.body)
        assert.same({}, harness.bad_log_lines(nginx:error_log()))
    end)
end)

describe("gray.metrics over a reload", function()
    after_each(harness.no_error_log)
    local mc, nginx
    local N = 1000

    setup(function()
        mc = harness.memcached()
        mc:set("203.0.113.60", "1")
        -- a flush every 60 s: within the spec, counts reach the dict only
        -- from a scrape of the worker that holds them, or when it exits
        nginx = harness.nginx({ memcached_port = mc.port, workers = 4, http = http("1m", 60),
                                servers = (servers(true)) })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    it("answers from every worker, routed or not, and loses no count", function()
        -- no worker has routed yet: all 20 scrapes answer from the dict
        for i = 1, 20 do
            local page = nginx:get("/metrics")
            assert.equal(200, page.status)
            assert.falsy(page.body:find("metrics are off", 1, true), "scrape " .. i)
            assert.truthy(page.body:find("\ngray_metrics_dropped_total 0\n", 1, true),
                          "scrape " .. i .. ": " .. page.body)
            valid_page(page.body)
        end
        -- N requests on one connection, so one worker holds them, unflushed
        assert.equal(N .. " 200", batch(nginx, N, "203.0.113.60"))
        local pid = nginx:pid()
        nginx:reload()
        assert.equal(pid, nginx:pid())
        -- the old workers flush as they exit; every new worker's page has them
        local text = scrape_until(nginx, function(t)
            return total(t, "gray_decisions_total") >= N
        end)
        -- every decision counted once, whatever it was: under load one of
        -- the N lookups timed out (the default 50 ms) and was counted as
        -- stable/store-error, which is not what this test is about
        assert.equal(N, total(text, "gray_decisions_total"), text)
        for i = 1, 20 do
            local page = nginx:get("/metrics")
            assert.equal(200, page.status)
            assert.equal(N, total(valid_page(page.body), "gray_decisions_total"),
                         "scrape " .. i .. ": " .. page.body)
        end
        assert.same({}, harness.bad_log_lines(nginx:error_log()))
    end)

    it("counts what requests in flight count after their worker's last flush", function()
        local before = total(nginx:get("/metrics").body, "gray_decisions_total")
        for _, when in ipairs({ "early", "late" }) do
            harness.sh("(curl -s http://127.0.0.1:" .. nginx.port .. "/slow?" .. when .. " >"
                       .. nginx.dir .. "/" .. when .. ".out 2>&1) >/dev/null 2>&1 & true")
        end
        harness.sleep(0.2)          -- they are in, waiting
        nginx:reload()              -- their workers flush, then wait for them
        local text = scrape_until(nginx, function(t)
            return total(t, "gray_decisions_total") >= before + 2
        end)
        -- a decision is counted before its answer leaves, and on a busy
        -- machine curl writes its file later: waited for (10 s at most)
        for _, when in ipairs({ "early", "late" }) do
            local path = nginx.dir .. "/" .. when .. ".out"
            pcall(harness.wait_for, function()
                return harness.read_file(path) == "counted\n"
            end, 10, path)
            assert.equal("counted\n", harness.read_file(path))
        end
        assert.equal(before + 2, total(text, "gray_decisions_total"), text)
        assert.same({}, harness.bad_log_lines(nginx:error_log()))
    end)
end)

describe("gray.metrics with a full dict", function()
    after_each(harness.no_error_log)
    local nginx

    setup(function()
        nginx = harness.nginx({ workers = 1, http = http("32k"), servers = [[
          server {
            listen 127.0.0.1:$PORT;
            location = /metrics {
                content_by_lua_block { require("gray.metrics").render() }
            }
            ]] .. harness.EVAL_LOCATION .. [[
          }
        ]] })
    end)

    teardown(function()
        if nginx then nginx:stop() end
    end)

    -- counts one decision for each of targets prefix..from to prefix..to,
    -- sets the gauge g{key="k"} to gauge; returns the page
    local function count(prefix, from, to, gauge)
        return nginx:eval(([[
            local m = require "gray.metrics"
            assert(m.enable("gray_metrics"))
            for i = %d, %d do
                m.decision("@%s" .. i, { ["@%s" .. i] = "%s" .. i }, "ip", "memcached")
            end
            m.set("gray_list_entries", { key = "%s" }, %d)
            return m.text()
        ]]):format(from, to, prefix, prefix, prefix, gauge and "k" or prefix, gauge or 1))
    end

    it("keeps the series it has, counts and logs what it cannot take", function()
        local A = 10
        local text = valid_page(count("a", 1, A, 1))
        for i = 1, A do
            assert.equal(1, total(text, "gray_decisions_total", '"a' .. i .. '"'), text)
        end
        assert.equal("0", text:match("\ngray_metrics_dropped_total (%d+)\n"), text)
        -- 300 more series do not fit in 32k
        text = valid_page(count("b", 1, 300))
        local dropped = tonumber(text:match("\ngray_metrics_dropped_total (%d+)\n"))
        assert.truthy(dropped and dropped > 0, text)
        -- the first series are all there and still count; the gauge is set
        text = valid_page(count("a", 1, A, 5))
        for i = 1, A do
            assert.equal(2, total(text, "gray_decisions_total", '"a' .. i .. '"'), text)
        end
        assert.truthy(text:find('\ngray_list_entries{key="k"} 5\n', 1, true), text)
        -- a new series is refused again, counted, and not logged again
        text = valid_page(count("c", 1, 50))
        assert.truthy(tonumber(text:match("\ngray_metrics_dropped_total (%d+)\n")) > dropped, text)
        local log = nginx:error_log()
        local _, lines = log:gsub("lua_shared_dict gray_metrics is full", "")
        assert.truthy(lines >= 1 and lines <= 2, log)
        assert.same({}, harness.bad_log_lines(log))
    end)
end)
