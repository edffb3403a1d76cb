-- What docs/internals.md's series table says of gray_memcached_errors_total's kinds against the
-- log's: the metric counts, by the memcached client's kind, only lookups
-- that got no answer. A value over value_max is an answer (no match): logged
-- as "value", not counted. A lookup the open breaker skips sends nothing:
-- logged ("marked down"), not counted. A refused connection is both.

local harness = require "helpers.harness"

local REPO = os.getenv("GRAY_REPO") or io.popen("pwd"):read("*l")

-- gray_memcached_errors_total{...kind="<kind>"...} summed over servers
local function errors(page, kind)
    local n = 0
    for line in page:gmatch("[^\n]+") do
        local v = line:match('^gray_memcached_errors_total{.-kind="' .. kind .. '".-} (%d+)$')
        n = n + (tonumber(v) or 0)
    end
    return n
end

describe("the documented metric and log kinds", function()
    it("hold: value and down are logged, not counted; network is both", function()
        -- the series table lives in docs/internals.md (the README links it)
        local doc = assert(harness.read_file(REPO .. "/docs/internals.md"))
        local row = doc:match("\n| `gray_memcached_errors_total` |[^\n]*") or ""
        assert.truthy(row:find("Not counted: a value over `value_max`", 1, true), row)
        assert.truthy(row:find("a lookup the open breaker skips", 1, true), row)

        local mc = harness.memcached()
        local down = harness.refused_port()
        local nginx
        finally(function()
            if nginx then nginx:stop() end
            mc:destroy()
        end)
        mc:set("127.0.0.1", string.rep("x", 2000))      -- over value_max (1024)
        local function dep(settings)
            return 'content_by_lua_block { require("gray.dep").run("' .. settings .. '") }'
        end
        nginx = harness.nginx({ http = "lua_shared_dict gray_metrics 1m;", servers = [[
            server {
                listen 127.0.0.1:$PORT;
                location /big { ]] .. dep("$gray_memcached 127.0.0.1:" .. mc.port
                                          .. "; $gray_cache_ttl 0; $gray_timeout 2000")
                                  .. [[ }
                location /down { ]] .. dep("$gray_memcached 127.0.0.1:" .. down
                                           .. "; $gray_cache_ttl 0; $gray_stale_ttl 0") .. [[ }
                location @server { return 200 "stable\n"; }
                location @server_test { return 200 "gray\n"; }
                location = /metrics { content_by_lua_block { require("gray.metrics").render() } }
            }
        ]] })
        assert.equal("stable\n", nginx:request("/big").body)      -- no match
        for _ = 1, 7 do         -- 5 refusals open the breaker; 2 lookups skipped
            assert.equal(200, nginx:request("/down").status)
        end
        local page = nginx:request("/metrics").body
        local log = nginx:error_log()
        assert.truthy(log:find("a value over value_max (1024 bytes)", 1, true), log)
        assert.equal(0, errors(page, "value"), page)
        assert.truthy(log:find("gray: memcached 127.0.0.1:" .. down .. " marked down", 1, true),
                      log)
        assert.equal(0, errors(page, "down"), page)
        -- every lookup that reached the down server is a network error, and
        -- those the open breaker skipped are not: 5 refusals and 2 skipped,
        -- or, when the 7 requests outlast the breaker's 1 s cooldown (nice
        -- 10 on a busy machine), a probe that failed too: 6 and 1
        local asked = tonumber(page:match('gray_memcached_requests_total{server="127%.0%.0%.1:'
                                          .. down .. '"} (%d+)'))
        assert.equal(asked, errors(page, "network"), page)
        assert.is_true(asked >= 5 and asked < 7, page)
    end)
end)
