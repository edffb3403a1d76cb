-- locations: make bench's rows, the one list. bench/bench.lua measures them
-- in this order, bench/report.lua prints them in this order, and
-- BENCH_LOCATIONS picks among their names.
--
-- Each row:
--   name      the row's name (BENCH_LOCATIONS, the raw figures)
--   label     what the report and the chart call it
--   body      the directives of `location = /r` ($REPO: the repository)
--   beside    another location in the same server (or none)
--   http      more http-level directives (or none)
--   gray_vars true where the nginx.conf defines or names a $gray_* variable:
--             the bench refuses any other row's nginx.conf that does
--   want      X-Gray-Target for the gray address (192.0.2.10, memcached
--             says "1") and for another one (10.9.9.9, not in memcached)
--   client    what each request of a batch carries: "fixed" (X-Real-IP
--             192.0.2.10: one client, its decision cached), "distinct"
--             (X-Real-IP of a client not seen before, from 100,000),
--             "distinct-ids" (the same plus X-Uid and X-Dev: 2 ids each)
--   batch     X-Gray-Target every request of a batch must get (default:
--             want.gray; distinct clients are in no memcached entry)
--   base      the plain row its ratio is to: "plain", or "plain-ids" for
--             the rows whose requests carry the two id headers too
--   warns     a warning the router's error.log may show (the row measures it)

local DROPIN = "content_by_lua_file $REPO/lua/gray/dep.lua;"
local STABLE = { gray = "stable", other = "stable" }
local ROUTED = { gray = "test", other = "stable" }

local function api(name)
    return "content_by_lua_block {\n"
           .. "                (package.loaded.api_routers or require(\"api_routers\"))(\""
           .. name .. "\"):exec()\n            }"
end

-- the single Lua API router of bench/api_router.lua
local API_ROUTER = "content_by_lua_block {\n"
                   .. "                (package.loaded.api_router or require(\"api_router\")):exec()"
                   .. "\n            }"

-- routing by variable: $gray_upstream set in the access phase, proxied to
-- without an internal redirect (upstreams "stable" and "test", bench.lua)
local ROUTE_TAIL = "\n            add_header X-Gray-Target $gray_upstream always;"
                   .. "\n            proxy_pass http://$gray_upstream;"

local function floor(fn)
    return "content_by_lua_block {\n"
           .. "                (package.loaded.reads_floor or require(\"reads_floor\"))."
           .. fn .. "()\n            }"
end

return {
    { name = "plain", label = "plain proxy_pass",
      body = "add_header X-Gray-Target plain always; proxy_pass http://backend;",
      want = { gray = "plain", other = "plain" } },
    { name = "exec-only", label = "ngx.exec alone (floor)",
      body = 'content_by_lua_block { ngx.exec("@server") }', want = STABLE },
    { name = "reads-only", label = "2 reads + ngx.exec (floor)",
      body = "content_by_lua_file $REPO/bench/reads_only.lua;", want = STABLE },
    { name = "api-router", label = "Lua API router", body = API_ROUTER, want = ROUTED },
    { name = "dropin", label = "drop-in, cached", body = DROPIN, want = ROUTED },
    { name = "dropin-nocache", label = "drop-in, $gray_cache_ttl 0",
      body = "set $gray_cache_ttl 0;\n            " .. DROPIN, gray_vars = true, want = ROUTED },
    { name = "classic", label = "classic dep.lua (a connection per request)",
      body = "content_by_lua_file $REPO/bench/classic_dep.lua;", want = ROUTED },
    { name = "reads-ids", label = "reads + 2 id headers (floor)", body = floor("run_ids"),
      want = STABLE },
    { name = "api-ids", label = "Lua API, 2 ids, cached", body = api("api-ids"), want = ROUTED },
    { name = "api-nocache", label = "Lua API, cache_ttl 0: 1 key", body = api("api-nocache"),
      want = ROUTED },
    { name = "api-nocache-ids", label = "Lua API, cache_ttl 0: 3 keys",
      body = api("api-nocache-ids"), want = ROUTED },
    { name = "api-metrics", label = "Lua API + metrics", body = API_ROUTER,
      http = "lua_shared_dict gray_metrics 1m;", want = ROUTED },
    -- log_by_lua at server level: the log phase runs in the location the
    -- request ends in (@server_test after ngx.exec), not in /r
    { name = "api-emptylog", label = "Lua API + metrics + empty log_by_lua (floor)",
      body = API_ROUTER, beside = "log_by_lua_block { }",
      http = "lua_shared_dict gray_metrics 1m;", want = ROUTED },
    { name = "api-outcome", label = "Lua API + metrics + outcome.lua",
      body = API_ROUTER, beside = "log_by_lua_file $REPO/lua/gray/outcome.lua;",
      http = "lua_shared_dict gray_metrics 1m;", want = ROUTED },
    { name = "api-outcome-status", label = "... outcome.lua, upstream_status = false",
      body = API_ROUTER, beside = "log_by_lua_file $REPO/lua/gray/outcome.lua;",
      http = "lua_shared_dict gray_metrics 1m;\n"
             .. "init_by_lua_block { require('gray.outcome').configure({ upstream_status = false }) }",
      want = ROUTED },
    { name = "api-outcome-block", label = "... outcome in log_by_lua_block",
      body = API_ROUTER,
      beside = "log_by_lua_block { (package.loaded[\"gray.outcome\"] or require(\"gray.outcome\")).log() }",
      http = "lua_shared_dict gray_metrics 1m;", want = ROUTED },
    { name = "dropin-set", label = "drop-in, a variable set here",
      body = "set $gray_cache_ttl 1s;\n            " .. DROPIN, gray_vars = true, want = ROUTED },
    { name = "route", label = "access-phase drop-in (route.lua), $gray_upstreams set here",
      body = "set $gray_upstream stable;\n            set $gray_upstreams \"stable=stable,"
             .. " gray=test\";\n            access_by_lua_file $REPO/lua/gray/route.lua;"
             .. ROUTE_TAIL,
      gray_vars = true, want = ROUTED },
    { name = "api-upstream", label = "Lua API set_upstream(), access phase",
      body = "set $gray_upstream stable;\n            access_by_lua_block {\n"
             .. "                (package.loaded.api_routers or require(\"api_routers\"))("
             .. "\"api-upstream\"):set_upstream()\n            }" .. ROUTE_TAIL,
      gray_vars = true, want = ROUTED },
    -- routing by variable, cheaper: $gray_upstream declared by an http-level
    -- map (no `set` run per request), rewrite_by_lua, settings in the block
    { name = "route-map", label = "route.lua, $gray_upstream from a map, not a set",
      http = "map $host $gray_upstream { default stable; }",
      body = "set $gray_upstreams \"stable=stable, gray=test\";\n"
             .. "            access_by_lua_file $REPO/lua/gray/route.lua;" .. ROUTE_TAIL,
      gray_vars = true, want = ROUTED },
    { name = "route-rewrite", label = "route.lua as rewrite_by_lua_file, a map",
      http = "map $host $gray_upstream { default stable; }",
      body = "set $gray_upstreams \"stable=stable, gray=test\";\n"
             .. "            rewrite_by_lua_file $REPO/lua/gray/route.lua;" .. ROUTE_TAIL,
      gray_vars = true, want = ROUTED },
    { name = "route-run", label = "route() settings here, a map (no variable read)",
      http = "map $host $gray_upstream { default stable; }",
      body = "access_by_lua_block {\n                require(\"gray.dep\").route("
             .. "\"$gray_upstreams 'stable=stable, gray=test'\")\n            }" .. ROUTE_TAIL,
      gray_vars = true, want = ROUTED },
    { name = "api-upstream-map", label = "Lua API set_upstream(), a map, access phase",
      http = "map $host $gray_upstream { default stable; }",
      body = "access_by_lua_block {\n"
             .. "                (package.loaded.api_routers or require(\"api_routers\"))("
             .. "\"api-upstream\"):set_upstream()\n            }" .. ROUTE_TAIL,
      gray_vars = true, want = ROUTED },
    { name = "dropin-beside-set", label = "drop-in, a variable set beside", body = DROPIN,
      beside = "location = /b {\n            set $gray_cache_ttl 0;\n            " .. DROPIN
               .. "\n        }",
      gray_vars = true, want = ROUTED,
      warns = 'using uninitialized "gray_cache_ttl" variable' },
    { name = "dropin-run", label = "drop-in, run() settings here",
      body = 'content_by_lua_block {\n'
             .. '                require("gray.dep").run("$gray_cache_ttl 1s")\n            }',
      gray_vars = true, want = ROUTED },
    { name = "dropin-beside-run", label = "drop-in, run() settings beside", body = DROPIN,
      beside = "location = /b {\n            content_by_lua_block { "
               .. 'require("gray.dep").run("$gray_cache_ttl 0") }\n        }',
      gray_vars = true, want = ROUTED },
    -- every request a miss: clients not seen before
    { name = "floor-get1", label = "floor: pooled get, 1 key (new clients)",
      body = floor("get1"), want = ROUTED, client = "distinct", batch = "stable" },
    { name = "dropin-distinct", label = "drop-in, new clients: 1 key", body = DROPIN,
      want = ROUTED, client = "distinct", batch = "stable" },
    { name = "plain-ids", label = "plain proxy_pass, 3 client headers",
      body = "add_header X-Gray-Target plain always; proxy_pass http://backend;",
      want = { gray = "plain", other = "plain" }, client = "distinct-ids", batch = "plain",
      base = "plain-ids" },
    { name = "floor-get3", label = "floor: pooled get, 3 keys (new clients)",
      body = floor("get3"), want = ROUTED, client = "distinct-ids", batch = "stable",
      base = "plain-ids" },
    { name = "api-distinct-ids", label = "Lua API, 2 ids, new clients: 3 keys",
      body = api("api-distinct-ids"), want = ROUTED, client = "distinct-ids", batch = "stable",
      base = "plain-ids" },
}
