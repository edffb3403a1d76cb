-- The miss path (issue 16), a differential: the router as it was before
-- the miss path was rewritten (spec/fixtures/miss_old: main's gray.lua and
-- memcached.lua at 7147ca9) and the router now, side by side in one real
-- nginx, against one real memcached: each request is decided by both, and
-- every decision (location, reason, source) must be the same. Generated
-- mixes of present and absent keys, values naming targets, "0", "",
-- junk (unknown-target) and values over value_max, absent and unusable
-- identities, no cache and a cache that holds some entries, a key prefix;
-- then store failures: memcached stopped (store-error, stale decisions),
-- a dead server and its breaker (store-down).
-- Last, memcached -vv: one round trip per request on the miss path (one
-- pipeline of mg per request, ended by one mn).

local harness = require "helpers.harness"

local IDS = "uid=header:X-Uid, dev=header:X-Dev"
-- router options by variant (memcached filled in by the spec)
local VARIANTS = {
    nocache = { cache_ttl = 0, ids = IDS },
    cached = { cache_ttl = 30, neg_ttl = 0, ids = IDS },
    prefix = { cache_ttl = 0, key_prefix = "ip-", ids = "uid=header:X-Uid" },
    four = { cache_ttl = 0, ids = IDS .. ", acct=header:X-Acct, sess=header:X-Sess" },
    address = { cache_ttl = 0 },
    -- the shared cache (each router its own dict: the old one's is
    -- gray_miss_old); four ids, so that every slot runs its dict steps
    shared = { cache_ttl = 30, neg_ttl = 0, shm = "gray_miss",
               ids = IDS .. ", acct=header:X-Acct, sess=header:X-Sess" },
}
local VALUES = { false, false, false, "1", "beta", "stable", "0", "", "junk", string.rep("x", 80) }

local function options(name, mc_addr)
    local parts = {}
    for k, v in pairs(VARIANTS[name]) do
        parts[#parts + 1] = k .. " = " .. (type(v) == "string" and ("%q"):format(v)
                                            or tostring(v))
    end
    return "{ memcached = " .. ("%q"):format(mc_addr) .. ", " .. table.concat(parts, ", ")
           .. ", client_headers = { 'X-Real-IP' }, targets = { beta = '@beta' },"
           .. " value_max = 64, ranges_key = false, percent_key = false,"
           .. " breaker_failures = 3, breaker_cooldown = 600, timeout = 200 }"
end

describe("the miss path, before and after", function()
    after_each(harness.no_error_log)
    local mc, nginx, dead_port
    local rng_state = 16

    -- a small deterministic generator (math.random differs by platform)
    local function rand(n)
        rng_state = (rng_state * 1103515245 + 12345) % 2147483648
        return rng_state % n + 1
    end

    local function seed_memcached()
        local values = {}
        rng_state = 16
        for i = 1, 40 do
            for _, key in ipairs({ "uid:u" .. i, "dev:d" .. i, "acct:a" .. i, "sess:s" .. i,
                                   "10.1.0." .. i, "ip-10.1.0." .. i }) do
                local v = VALUES[rand(#VALUES)]
                if v then
                    values[key] = v
                end
            end
        end
        mc:set_many(values)
    end

    setup(function()
        mc = harness.memcached()
        seed_memcached()
        dead_port = harness.refused_port()
        local routers = {}
        for name in pairs(VARIANTS) do
            routers[#routers + 1] = ("[%q] = %s,"):format(name, options(name, "127.0.0.1:"
                                                                               .. mc.port))
        end
        routers[#routers + 1] = ("dead = %s,"):format(options("nocache", "127.0.0.1:"
                                                                   .. dead_port))
        nginx = harness.nginx({ memcached_port = mc.port, http = [[
            lua_shared_dict gray_miss 1m;
            lua_shared_dict gray_miss_old 1m;
            init_by_lua_block {
                package.loaded.spec_miss_opts = {]] .. table.concat(routers, "\n") .. [[ }
            }
        ]], servers = [[
          server {
            listen 127.0.0.1:$PORT;
            location /both/ {
                content_by_lua_block {
                    local name = ngx.var.uri:match("^/both/(%w+)$")
                    local routers = package.loaded.spec_miss_routers or {}
                    package.loaded.spec_miss_routers = routers
                    local pair = routers[name]
                    if not pair then
                        local opts = package.loaded.spec_miss_opts[name]
                        -- the old router has no ramp and no halts: neither has
                        -- the new one (their mg would count as traffic, and
                        -- against a dead server's breaker)
                        local new_opts = {}
                        for k, v in pairs(opts) do new_opts[k] = v end
                        new_opts.ramp_key, new_opts.halt_key = false, false
                        local old_opts = opts
                        if opts.shm then
                            old_opts = {}
                            for k, v in pairs(opts) do old_opts[k] = v end
                            old_opts.shm = "gray_miss_old"
                        end
                        pair = { assert(require("gray").new(new_opts)),
                                 assert(require("fixtures.miss_old.gray").new(old_opts)) }
                        routers[name] = pair
                    end
                    local out = {}
                    for i = 1, 2 do
                        local loc, reason, source = pair[i]:decide()
                        out[i] = tostring(loc) .. " " .. tostring(reason) .. " "
                                 .. tostring(source)
                    end
                    ngx.print(out[1], "|", out[2])
                }
            }
            location = /new {
                content_by_lua_block {
                    local r = package.loaded.spec_miss_new
                    if not r then
                        r = assert(require("gray").new(package.loaded.spec_miss_opts.nocache))
                        package.loaded.spec_miss_new = r
                    end
                    local loc, reason = r:decide()
                    ngx.print(loc, " ", reason)
                }
            }
          }
        ]] })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    -- n generated requests of variant: each identity absent, unusable (a
    -- space: no key) or one of 40 values; the address one of 40 or absent
    -- (the peer, 127.0.0.1)
    local function mix(variant, n, seed)
        rng_state = seed
        local reqs = {}
        local function pick(prefix)
            local r = rand(12)
            if r <= 4 then
                return nil
            elseif r == 5 then
                return prefix .. "x y"
            end
            return prefix .. rand(40)
        end
        for i = 1, n do
            local h = { ["X-Uid"] = pick("u"), ["X-Dev"] = pick("d"), ["X-Acct"] = pick("a"),
                        ["X-Sess"] = pick("s") }
            if rand(8) > 1 then
                h["X-Real-IP"] = "10.1.0." .. rand(40)
            end
            reqs[i] = { "/both/" .. variant, headers = h }
        end
        return reqs
    end

    -- runs the requests; returns the differences and the decisions seen
    local function compare(reqs, seen)
        local diffs = {}
        for i, res in ipairs(nginx:sequence(reqs)) do
            assert.equal(200, res.status, res.body)
            local new, old = res.body:match("^(.-)|(.*)$")
            if new ~= old then
                local h = {}
                for k, v in pairs(reqs[i].headers) do
                    h[#h + 1] = k .. "=" .. v
                end
                table.sort(h)
                diffs[#diffs + 1] = reqs[i][1] .. " " .. table.concat(h, " ") .. ": new '"
                                    .. tostring(new) .. "', old '" .. tostring(old) .. "'"
            end
            seen[new] = (seen[new] or 0) + 1
        end
        return diffs
    end

    local function reasons(seen)
        local r = {}
        for decision in pairs(seen) do
            local _, reason, source = decision:match("^(%S+) (%S+) (%S+)$")
            r[reason] = true
            r["source:" .. tostring(source)] = true
        end
        return r
    end

    it("decides as before on hits, misses, targets and partial caches", function()
        local seen = {}
        for i, variant in ipairs({ "nocache", "cached", "prefix", "four", "address", "shared" }) do
            assert.same({}, compare(mix(variant, 200, i), seen))
            -- again: the cached variant now holds some entries, not all
            assert.same({}, compare(mix(variant, 200, i + 100), seen))
        end
        local r = reasons(seen)
        for _, want in ipairs({ "id:uid", "id:dev", "id:acct", "id:sess", "ip", "default",
                                "unknown-target", "source:memcached", "source:cache" }) do
            assert.is_true(r[want], want)
        end
    end)

    it("decides as before when memcached fails: stale decisions, then none", function()
        local seen = {}
        -- entries from a first pass, then memcached stopped: store-error,
        -- or the stale decision (stale_ttl: 60 s) for a key answered before
        assert.same({}, compare(mix("nocache", 150, 7), seen))
        assert.same({}, compare(mix("cached", 150, 8), seen))
        mc:stop()
        assert.same({}, compare(mix("nocache", 150, 7), seen))
        assert.same({}, compare(mix("cached", 150, 9), seen))
        assert.same({}, compare(mix("four", 100, 10), seen))
        assert.truthy(mc:start())
        seed_memcached()
        -- a server that was never there: errors, then the breaker (store-down)
        assert.same({}, compare(mix("dead", 100, 11), seen))
        local r = reasons(seen)
        for _, want in ipairs({ "store-error", "store-down", "source:stale" }) do
            assert.is_true(r[want], want)
        end
    end)
end)

describe("the miss path's round trips", function()
    after_each(harness.no_error_log)
    local mc, nginx

    setup(function()
        mc = harness.memcached({ verbose = true })
        mc:set("uid:u1", "1")
        nginx = harness.nginx({ memcached_port = mc.port, http = [[
            init_by_lua_block {
                package.loaded.spec_miss_opts = { nocache = { memcached = "127.0.0.1:]] .. mc.port .. [[",
                    cache_ttl = 0, ids = "]] .. IDS .. [[", client_headers = { "X-Real-IP" },
                    ranges_key = false, percent_key = false, ramp_key = false, halt_key = false } }
            }
        ]], servers = [[
          server {
            listen 127.0.0.1:$PORT;
            location = /new {
                content_by_lua_block {
                    local r = package.loaded.spec_miss_new
                    if not r then
                        r = assert(require("gray").new(package.loaded.spec_miss_opts.nocache))
                        package.loaded.spec_miss_new = r
                    end
                    local loc, reason = r:decide()
                    ngx.print(loc, " ", reason)
                }
            }
          }
        ]] })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    it("asks the address and two ids in one round trip per request", function()
        local reqs = {}
        for i = 1, 20 do
            reqs[i] = { "/new", headers = { ["X-Real-IP"] = "10.2.0." .. i,
                                            ["X-Uid"] = "u" .. i, ["X-Dev"] = "d" .. i } }
        end
        local res = nginx:sequence(reqs)
        assert.equal("@server_test id:uid", res[1].body)
        assert.equal("@server default", res[2].body)
        local log = mc:log()
        -- one request written per lookup: three mg then mn, nothing between
        -- (memcached -vv logs each command it reads, "<fd mg ...")
        local lookups = {}
        for cmd in log:gmatch("<%d+ (%S+)") do
            if cmd == "mg" or cmd == "mn" or cmd == "get" or cmd == "gets" then
                lookups[#lookups + 1] = cmd
            end
        end
        local text = table.concat(lookups, " ")
        local _, pipelines = text:gsub("mg mg mg mn", "")
        assert.equal(20, pipelines, text)
        assert.equal(20 * 4, #lookups, text)
    end)
end)
