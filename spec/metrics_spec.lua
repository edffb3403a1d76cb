-- gray.metrics: Prometheus counters summed over the workers through a
-- shared dict, scraped from a real nginx with two workers while requests
-- come in; and off (nothing counted, nothing broken) without the dict.

local harness = require "helpers.harness"

local ROUTER = [[
    content_by_lua_block {
        local r = package.loaded.spec_metrics_router
        if not r then
            r = assert(require("gray").new({ memcached = "127.0.0.1:$MC",
                                             targets = { v2 = "@v2" } }))
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
        location = /metrics {
            content_by_lua_block { require("gray.metrics").render() }
        }
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

local function batch(nginx, n, ip)
    return nginx:batch("/", n, { "X-Real-IP: " .. ip })
end

-- Scrapes the page until pred(text) holds (each worker flushes its counts
-- every second); returns the last text, whether or not it came.
local function scrape_until(nginx, pred)
    local text
    for _ = 1, 100 do
        text = nginx:get("/metrics").body
        if pred(text) then
            break
        end
        harness.sleep(0.05)
    end
    return text
end

describe("gray.metrics", function()
    local mc, nginx

    setup(function()
        mc = harness.memcached()
        mc:set_many({ ["203.0.113.60"] = "1", ["203.0.113.61"] = "v2" })
        nginx = harness.nginx({ memcached_port = mc.port, workers = 2,
                                http = "lua_shared_dict gray_metrics 1m;",
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
        local gray = total(text, "gray_decisions_total", 'target="1",reason="ip"')
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
        -- the routers refresh their lists every 2 s once they have served
        nginx:get("/", { headers = { ["X-Real-IP"] = "192.0.2.1" } })
        local function gauge(text, name, key)
            return tonumber(text:match("\n" .. name .. '{key="' .. key:gsub("%p", "%%%0")
                                       .. '"} ([%d.e+]+)'))
        end
        -- the gauges are written at once, the compile counter by the next
        -- once-a-second flush
        local text = scrape_until(nginx, function(t)
            return gauge(t, "gray_list_entries", "gray:ranges")
                   and gauge(t, "gray_percent", "gray:percent")
                   and total(t, "gray_list_compiles_total", 'key="gray:ranges"') >= 1
        end)
        assert.equal(3, gauge(text, "gray_list_entries", "gray:ranges"), text)
        assert.equal(12.5, gauge(text, "gray_percent", "gray:percent"), text)
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
                   and gauge(t, "gray_percent", "gray:percent") == 0
        end)
        assert.equal(0, gauge(text, "gray_list_entries", "gray:ranges"), text)
        assert.equal(0, gauge(text, "gray_list_version", "gray:ranges"), text)
        assert.equal(0, gauge(text, "gray_percent", "gray:percent"), text)
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
end)

describe("gray.metrics without the shared dict", function()
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
