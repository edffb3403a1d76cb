-- Routing by variable (gray/route.lua, router:upstream()): real nginx,
-- real memcached, `proxy_pass http://$gray_upstream` to upstream blocks of
-- backends on loopback. Entries, ranges, the ramp and the unknown-target
-- decision route as the content-phase drop-in does; a target without an
-- upstream is refused naming $gray_upstreams (and its requests reach the
-- stable upstream, never a 500).

local harness = require "helpers.harness"

describe("routing by variable (access phase)", function()
    local mc, nginx
    setup(function()
        mc = harness.memcached({})
        local b1, b2, b3 = harness.free_port(), harness.free_port(), harness.free_port()
        local servers = [[
  upstream app_v1 { server 127.0.0.1:B1; }
  upstream app_v2 { server 127.0.0.1:B2; }
  upstream app_v3 { server 127.0.0.1:B3; }
  # $gray_upstream declared by a map, not a `set` run per request (where a
  # location sets it too, its `set` wins there)
  map $host $gray_upstream { default app_v1; }
  server { listen 127.0.0.1:B1; location / { return 200 "v1 $http_x_real_ip\n"; } }
  server { listen 127.0.0.1:B2; location / { return 200 "v2 $http_x_real_ip\n"; } }
  server { listen 127.0.0.1:B3; location / { return 200 "v3 $http_x_real_ip\n"; } }
  server {
    listen 127.0.0.1:$PORT;
    set $gray_memcached "127.0.0.1:$MC";
    set $gray_trusted "127.0.0.1";
    set $gray_lists_dir "$LOGDIR/images";
    set $gray_debug_header "X-Gray-Debug";
    location / {
        set $gray_upstream app_v1;
        set $gray_upstreams "stable=app_v1, gray=app_v2, v3=app_v3";
        access_by_lua_file $REPO/lua/gray/route.lua;
        proxy_pass http://$gray_upstream;
    }
    location /refused/ {
        set $gray_upstream app_v1;
        set $gray_targets "v3=@v3, v4=@v4";
        set $gray_upstreams "stable=app_v1, gray=app_v2, v3=app_v3";
        access_by_lua_file $REPO/lua/gray/route.lua;
        proxy_pass http://$gray_upstream;
    }
    location /map/ {
        set $gray_upstreams "stable=app_v1, gray=app_v2, v3=app_v3";
        access_by_lua_file $REPO/lua/gray/route.lua;
        proxy_pass http://$gray_upstream;
    }
    location /map-run/ {
        access_by_lua_block {
            require("gray.dep").route("$gray_upstreams 'stable=app_v1, gray=app_v2, v3=app_v3'")
        }
        proxy_pass http://$gray_upstream;
    }
    location /unset/ {
        set $gray_upstream app_v1;
        access_by_lua_file $REPO/lua/gray/route.lua;
        proxy_pass http://$gray_upstream;
    }
    location /api/ {
        access_by_lua_block {
            local r = package.loaded.spec_route_api
            if not r then
                r = assert(require("gray").new({
                    memcached = "127.0.0.1:$MC", trusted = "127.0.0.1",
                    upstreams = "stable=app_v1, gray=app_v2, v3=app_v3",
                    lists_dir = "$LOGDIR/images",
                }))
                package.loaded.spec_route_api = r
            end
            local up, reason, name = r:upstream()
            ngx.header["X-Api"] = up .. " " .. reason .. " " .. name
            ngx.var.api_upstream = up
        }
        set $api_upstream "";
        proxy_pass http://$api_upstream;
    }
    location @v3 { return 200 "v3 location\n"; }
    location @v4 { return 200 "v4 location\n"; }
]] .. harness.EVAL_LOCATION .. [[
  }
]]
        servers = servers:gsub("B1", b1):gsub("B2", b2):gsub("B3", b3)
        nginx = harness.nginx({ memcached_port = mc.port, servers = servers })
    end)
    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)
    after_each(function()
        assert.same({}, nginx:bad_new_log_lines())
    end)

    local function get(path, ip)
        local res = nginx:get(path, { headers = { ["X-Real-IP"] = ip } })
        return res.status .. " " .. (res.body or ""):gsub("\n$", ""), res.headers
    end

    it("sends each client to the upstream of its decision", function()
        mc:set("198.51.100.1", "1")
        mc:set("198.51.100.3", "v3")
        mc:set("198.51.100.4", "v9")       -- names no target: stable, logged
        local cases = {
            { "198.51.100.1", "200 v2 198.51.100.1", "app_v2; ip" },
            { "198.51.100.3", "200 v3 198.51.100.3", "app_v3; ip" },
            { "198.51.100.2", "200 v1 198.51.100.2", "app_v1; default" },
            { "198.51.100.4", "200 v1 198.51.100.4", "app_v1; unknown-target" },
        }
        for _, c in ipairs(cases) do
            local got, headers = get("/", c[1])
            assert.equal(c[2], got)
            assert.equal(c[3], headers["x-gray-debug"])
        end
        assert.matches("names no target: 'v9'", nginx:new_log_lines())
    end)

    it("routes alike with $gray_upstream from a map and settings in route()", function()
        mc:set("198.51.100.11", "1")
        mc:set("198.51.100.13", "v3")
        for _, path in ipairs({ "/map/", "/map-run/" }) do
            local cases = {
                { "198.51.100.11", "200 v2 198.51.100.11", "app_v2; ip" },
                { "198.51.100.13", "200 v3 198.51.100.13", "app_v3; ip" },
                { "198.51.100.12", "200 v1 198.51.100.12", "app_v1; default" },
            }
            for _, c in ipairs(cases) do
                local got, headers = get(path, c[1])
                assert.equal(c[2], got, path)
                assert.equal(c[3], headers["x-gray-debug"], path)
            end
        end
    end)

    it("follows the ranges list and the ramp as the content-phase drop-in", function()
        mc:set("gray:ranges", "203.0.113.0/24 v3\n")
        harness.wait_for(function()
            return get("/", "203.0.113.9") == "200 v3 203.0.113.9"
        end, 5, "the ranges list")
        mc:set("gray:ramp", os.time() .. " 100%")
        harness.wait_for(function()
            return get("/", "192.0.2.77") == "200 v2 192.0.2.77"
        end, 5, "the ramp at 100%")
        local _, headers = get("/", "192.0.2.78")
        assert.equal("app_v2; percent", headers["x-gray-debug"])
        mc:cmd("delete gray:ramp\r\ndelete gray:ranges\r\n")
        harness.wait_for(function()
            return get("/", "192.0.2.77") == "200 v1 192.0.2.77"
        end, 5, "the ramp deleted")
    end)

    it("refuses a target without an upstream, naming $gray_upstreams; stable serves", function()
        nginx:new_log_lines()
        mc:set("198.51.100.9", "v4")
        assert.equal("200 v1 198.51.100.9", (get("/refused/", "198.51.100.9")))
        assert.equal("200 v1 198.51.100.1", (get("/refused/", "198.51.100.1")))
        local log = nginx:new_log_lines()
        assert.matches("%$gray_upstreams has no upstream for target 'v4'", log)
    end)

    it("without $gray_upstreams: logged naming it, $gray_upstream as set", function()
        nginx:new_log_lines()
        assert.equal("200 v1 198.51.100.1", (get("/unset/", "198.51.100.1")))
        assert.matches("gray/route.lua: %$gray_upstreams is not set", nginx:new_log_lines())
    end)

    it("router:upstream() names the upstream (the Lua API)", function()
        local got, headers = get("/api/", "198.51.100.3")
        assert.equal("200 v3 198.51.100.3", got)
        assert.equal("app_v3 ip v3", headers["x-api"])
        got, headers = get("/api/", "198.51.100.1")
        assert.equal("200 v2 198.51.100.1", got)
        assert.equal("app_v2 ip gray", headers["x-api"])
        got = get("/api/", "198.51.100.2")
        assert.equal("200 v1 198.51.100.2", got)
    end)

    -- gray.options in a worker: { options as Lua source, refusal or nil }
    local cases = {
        { "{ upstreams = 'stable=a, gray=b' }", nil },
        { "{ upstreams = 'stable=a, 1=b, v3=127.0.0.1:8080' }", nil },
        { "{ upstreams = { stable = 'a', gray = '[::1]:80' } }", nil },
        { "{ upstreams = 'stable=a' }", "option 'upstreams' has no upstream for target 'gray'" },
        { "{ upstreams = 'gray=b' }", "has no upstream for target 'stable'" },
        { "{ upstreams = 'stable=a, gray=b', targets = { v2 = '@v2', v5 = '@v5' } }",
          "has no upstream for targets 'v2', 'v5'" },
        { "{ upstreams = 'stable=a, gray=b c' }", "bad entry 'gray=b c'" },
        { "{ upstreams = 'stable=a, gray=b, gray=c' }", "names target 'gray' twice" },
        { "{ upstreams = 'stable=a, gray=http://x' }", "the upstream 'http://x', which is not" },
        { "{ upstreams = 'stable=a, gray=b, #x=c' }", "names '#x', which is not a target name" },
        { "{ upstreams = 5 }", "must be 'stable=app_v1, gray=app_v2, ...'" },
    }
    for i, c in ipairs(cases) do
        it("option upstreams, case " .. i .. ": " .. (c[2] or "taken"), function()
            local out = nginx:eval([[
                local options = require "gray.options"
                local opts = ]] .. c[1] .. [[
                opts.lists_dir = false
                local o, err = options.check(opts)
                if not o then return options.text(err) end
                return "taken " .. o.upstreams.stable .. " " .. o.upstreams.gray
            ]])
            if c[2] then
                assert.truthy(out:find(c[2], 1, true), out)
            else
                assert.matches("^taken %S+ %S+", out)
            end
        end)
    end
end)
