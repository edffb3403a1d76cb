-- The status page (gray.status) in real nginx with real memcached, its
-- traffic routed by variable (gray/route.lua) to two upstreams, the gray
-- one answering 500 to a quarter of its requests; then read as JSON and
-- loaded in a real headless browser (Debian's chromium): the page shows
-- per target requests/s, the 5xx ratio and p95, the halt with its reason,
-- the ramp with its next step, the lists, and refreshes itself.
-- GRAY_STATUS_SCREENSHOT=docs/status.png writes the README's screenshot.

local harness = require "helpers.harness"

local sh, quote = harness.sh, harness.quote
local REPO = os.getenv("GRAY_REPO") or (sh("pwd"):gsub("%s+$", ""))

local function chromium()
    for _, bin in ipairs({ "chromium", "chromium-browser" }) do
        local _, code = sh("command -v " .. bin)
        if code == 0 then
            return bin
        end
    end
    error("chromium is not installed (tools/deps.sh test installs it)")
end

describe("the status page", function()
    local mc, nginx, profile
    local HALT_REASON = "5xx ratio 0.25 over stable's 0.00 (p<0.001)"

    setup(function()
        mc = harness.memcached({})
        local t = os.time()
        mc:set("gray:ramp", (t - 5) .. " 10% 50%@1h 100%@2h")
        mc:set("gray:ranges", "10.0.0.0/8 v2\n192.168.0.0/16\n# a comment\n")
        mc:set("gray:halt:v2", (t - 30) .. " node-b " .. HALT_REASON)
        local values = {}
        for i = 1, 40 do
            values["203.0.113." .. i] = "1"
            values["198.51.100." .. i] = "stable"
        end
        mc:set_many(values)
        nginx = harness.nginx({ memcached_port = mc.port, http = [[
  lua_shared_dict gray_metrics 1m;
  init_by_lua_block {
    -- gray.halt reads the halts from memcached where this version has it;
    -- without it, a stand-in giving the same record as gray:halt:v2
    if not pcall(require, "gray.halt") then
        package.loaded["gray.halt"] = {
            record = function(name)
                if name == "v2" then
                    return { at = ]] .. (t - 30) .. [[, node = "node-b",
                             reason = "]] .. HALT_REASON .. [[" }
                end
            end,
        }
    end
  }
]], servers = [[
  upstream app_v1 { server 127.0.0.1:$PORT2; }
  upstream app_v2 { server 127.0.0.1:$PORT2; }
  server {
    listen 127.0.0.1:$PORT2;
    location /err/ { return 500 "boom\n"; }
    location / { return 200 "ok\n"; }
  }
  server {
    listen 127.0.0.1:$PORT;
    log_by_lua_file $REPO/lua/gray/outcome.lua;
    set $gray_memcached "127.0.0.1:$MC";
    set $gray_trusted "127.0.0.1";
    set $gray_timeout 2s;       # exact counts on a busy machine
    set $gray_lists_dir "$LOGDIR/images";
    location / {
        set $gray_upstream app_v1;
        set $gray_upstreams "stable=app_v1, gray=app_v2, v2=app_v2";
        access_by_lua_file $REPO/lua/gray/route.lua;
        proxy_pass http://$gray_upstream;
    }
    location = /status {
        content_by_lua_block { require("gray.status").render({ refresh = 2 }) }
    }
  }
]] })
        profile = harness.tmpdir()
    end)
    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)
    after_each(function()
        assert.same({}, nginx:bad_new_log_lines())
    end)

    local function json()
        local res = nginx:get("/status?format=json")
        assert.equal(200, res.status)
        assert.matches("^application/json", res.headers["content-type"])
        return res.body
    end

    it("counts the traffic by target and gives it as JSON", function()
        for i = 1, 40 do
            local path = i <= 10 and "/err/" .. i or "/ok/" .. i
            local res = nginx:get(path, { headers = { ["X-Real-IP"] = "203.0.113." .. i } })
            assert.equal(i <= 10 and 500 or 200, res.status)
            res = nginx:get("/ok/" .. i, { headers = { ["X-Real-IP"] = "198.51.100." .. i } })
            assert.equal(200, res.status)
        end
        -- the workers' counts reach the dict at their next flush (1 s)
        local body
        harness.wait_for(function()
            body = json()
            return body:find('"name":"gray","p95":[%d.e-]+,"requests":40,') ~= nil
                   and body:find('"name":"stable","p95":[%d.e-]+,"requests":40,') ~= nil
        end, 5, "the counts in the status JSON: " .. tostring(body))
        -- 10 of gray's 40 answered 500; stable none; 40 requests in 60 s
        assert.matches('"error_ratio":0.25,"errors":10,"halt":false,"name":"gray"', body)
        assert.matches('"error_ratio":0,"errors":0,"halt":false,"name":"stable"', body)
        assert.matches('"rps":0.666667', body)
        assert.matches('"halt":{"node":"node%-b","reason":"5xx ratio 0.25 over stable\'s 0.00'
                       .. ' %(p<0.001%)","since":%d+},"name":"v2"', body)
        assert.matches('"ramp":{"frozen":false,"key":"gray:ramp","next_at":%d+,"next_share":50,'
                       .. '"share":10,"start":%d+,"step":1,"steps":%[{"at":0,"share":1000},'
                       .. '{"at":3600,"share":5000},{"at":7200,"share":10000}%]}', body)
        assert.matches('{"entries":2,"key":"gray:ranges","kind":"ranges","version":"%d+"}', body)
        assert.matches('"percent":10,"percent_key":"gray:percent"', body)
    end)

    it("shows it in a real browser, refreshing itself", function()
        local url = "http://127.0.0.1:" .. nginx.port .. "/status"
        local cmd = chromium() .. " --headless --no-sandbox --disable-gpu --no-first-run"
                    .. " --user-data-dir=" .. quote(profile) .. " --window-size=1100,860"
        local dom, code = sh(cmd .. " --dump-dom " .. quote(url) .. " 2>/dev/null")
        assert.equal(0, code, dom)
        assert.matches('<meta http%-equiv="refresh" content="2">', dom)
        -- a row per target: stable, gray (the default target), v2
        local rows = {}
        for name, cells in dom:gmatch('<tr data%-target="([^"]+)">(.-)</tr>') do
            rows[#rows + 1] = name
            if name == "gray" then
                assert.matches('<td class="n">0.67</td><td class="n">25.00%%</td>', cells)
                assert.matches("routed", cells)
            elseif name == "v2" then
                assert.matches("halted", cells)
                assert.matches("by node%-b", cells)
                assert.matches("5xx ratio 0.25 over stable's 0.00 %(p&lt;0.001%)", cells)
            elseif name == "stable" then
                assert.matches('<td class="n">0.00%%</td>', cells)
            end
        end
        assert.same({ "stable", "gray", "v2" }, rows)
        assert.matches('Share in force <b id="share">10.00%%</b> %(step 1 of 3%)', dom)
        assert.matches('<p id="next">Next: <b>50.00%%</b> at [%d%- :]+ UTC %(in 59m%d%ds%)', dom)
        assert.matches("<td>gray:ranges</td><td>ranges</td><td class=\"n\">%d+</td>"
                       .. "<td class=\"n\">2</td>", dom)
        -- the screenshot: a PNG of the page
        local png = os.getenv("GRAY_STATUS_SCREENSHOT") or (profile .. "/status.png")
        if not png:find("^/") then
            png = REPO .. "/" .. png
        end
        local out
        out, code = sh(cmd .. " --hide-scrollbars --screenshot=" .. quote(png) .. " "
                       .. quote(url) .. " 2>&1")
        assert.equal(0, code, out)
        local head = assert(harness.read_file(png), "no screenshot at " .. png):sub(1, 8)
        assert.equal("\137PNG\r\n\26\n", head)
    end)

    it("shows the ramp frozen by a halt of gray, since the halt's time", function()
        local since = os.time() - 20
        mc:set("gray:halt:gray", since .. " node-c spec: frozen ramp")
        local body
        harness.wait_for(function()
            nginx:get("/", { headers = { ["X-Real-IP"] = "198.51.100.1" } })   -- a refresh
            body = json()
            return body:find('"frozen":true', 1, true) ~= nil
        end, 6, "the halt in the status JSON: " .. tostring(body))
        assert.matches('"ramp":{"frozen":true,"frozen_since":' .. since .. ',"key":"gray:ramp",'
                       .. '"share":10,', body)
        local html = nginx:get("/status").body
        assert.matches('frozen by the halt of gray since [%d%- :]+ UTC', html)
        assert.matches("No next step while halted: after the resume the ramp goes on", html)
        mc:cmd("delete gray:halt:gray\r\n")
        harness.wait_for(function()
            nginx:get("/", { headers = { ["X-Real-IP"] = "198.51.100.1" } })
            return json():find('"frozen":false', 1, true) ~= nil
        end, 6, "the resume in the status JSON")
    end)
end)
