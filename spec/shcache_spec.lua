-- gray.shcache: the decision cache shared by the workers (option shm).
-- Inside one real nginx worker, two routers built alike stand for two
-- workers (each has its own cache, the shared dict is common), so what one
-- learns the other must find without asking memcached; then a real nginx with
-- four workers and a slow memcached shows the lock: one request to memcached
-- for a key however many workers miss it at once.

local harness = require "helpers.harness"

local function eval_server()
    return [[
      server {
        listen 127.0.0.1:$PORT;
        ]] .. harness.EVAL_LOCATION .. [[
        location @server      { return 200 "stable\n"; }
        location @server_test { return 200 "gray\n"; }
        location @v2          { return 200 "v2\n"; }
      }
    ]]
end

-- the gets memcached logged (-vv) for key so far
local function gets(mc, key)
    local n = 0
    for line in mc:log():gmatch("[^\n]+") do
        if line:find("^<%d+ get ") and (" " .. line:match("^<%d+ get (.*)$") .. " ")
                                           :find(" " .. key .. " ", 1, true) then
            n = n + 1
        elseif line:match("^<%d+ mg (%S+)") == key then
            n = n + 1       -- one line of the request path's mg pipeline
        end
    end
    return n
end

describe("gray.shcache inside a worker", function()
    after_each(harness.no_error_log)
    local mc, nginx

    setup(function()
        mc = harness.memcached({ verbose = true })
        nginx = harness.nginx({ memcached_port = mc.port,
                                http = "lua_shared_dict gray_cache 1m;",
                                servers = eval_server() })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    -- runs code with `routers` (one table for the spec's life), `shcache`
    -- and `opts(extra)` (the spec's router options) in scope; header X-Real-IP
    local function run(code, ip)
        return nginx:eval([[
            local routers = package.loaded.spec_routers or {}
            package.loaded.spec_routers = routers
            local shcache = require "gray.shcache"
            local function opts(extra)
                local o = { memcached = "127.0.0.1:]] .. mc.port .. [[", shm = "gray_cache",
                            cache_ttl = 5, targets = { v2 = "@v2" } }
                for k, v in pairs(extra or {}) do o[k] = v end
                return o
            end
            local function router(name, extra)
                routers[name] = routers[name] or assert(require("gray").new(opts(extra)))
                return routers[name]
            end
            local function say(...)
                local t = { ... }
                for i = 1, select("#", ...) do t[i] = tostring(t[i]) end
                ngx.say(table.concat(t, " "))
            end
        ]] .. code, nil, { ["X-Real-IP"] = ip or "192.0.2.1" })
    end

    it("refuses a dict that nginx.conf does not declare, and a cache with no fresh life", function()
        local cases = {
            { "shm = 'nope'", "option 'shm' names no lua_shared_dict 'nope'" },
            { "shm = 42", "option 'shm' must be a lua_shared_dict name or false" },
            { "shm = ''", "option 'shm' must be a lua_shared_dict name or false" },
            { "shm = 'gray_cache', cache_ttl = 0",
              "option 'shm' needs cache_ttl or neg_ttl above 0" },
        }
        for _, case in ipairs(cases) do
            local out = run("local r, err = require('gray').new(opts({ " .. case[1]
                            .. " })) say(tostring(r), err)")
            assert.truthy(out:find("nil gray.new: " .. case[2], 1, true), case[1] .. ": " .. out)
        end
        -- without shm nothing changes: the option is off by default
        local out = run("local r = assert(require('gray').new(opts({ shm = false })))"
                        .. " say(tostring(r.shared))")
        assert.equal("false\n", out)
    end)

    it("stores decisions, not values: fresh, then stale, apart per namespace", function()
        local out = run([[
            local a = assert(shcache.new({ dict = "gray_cache", locations = { "@g", "@v2" },
                namespace = "gA", pos_ttl = 1, neg_ttl = 0.5, keep = 60, timeout = 50 }))
            local b = assert(shcache.new({ dict = "gray_cache", locations = { "@g", "@v2" },
                namespace = "gB", pos_ttl = 1, neg_ttl = 0.5, keep = 60, timeout = 50 }))
            local t0 = 1000
            a:set("k1", "@v2", t0, true)        -- memcached had a value: pos_ttl
            a:set("k2", false, t0, false)       -- it had none: neg_ttl
            a:set("k3", "@elsewhere", t0, true) -- not one of its locations: not kept
            local function show(...) local r = { ... } for i = 1, 4 do r[i] = tostring(r[i]) end
                                     return table.concat(r, ",") end
            say("fresh", show(a:get("k1", t0 + 0.9)), show(a:get("k2", t0 + 0.4)))
            say("stale", show(a:get("k1", t0 + 1.1)), show(a:get("k2", t0 + 0.6)))
            say("absent", show(a:get("k3", t0)), show(b:get("k1", t0)))
            local v, flags = ngx.shared.gray_cache:get("gA:k1")
            say("raw", type(v), flags)
            -- a stored index this router does not have reads as absent
            ngx.shared.gray_cache:set("gA:k4", t0, 60, 7)
            say("junk", show(a:get("k4", t0)))
        ]])
        assert.equal(table.concat({
            "fresh @v2,nil,1000,1 false,nil,1000,0.5",
            "stale nil,@v2,1000,1 nil,false,1000,0.5",
            "absent nil,nil,nil,nil nil,nil,nil,nil",
            "raw number 4",
            "junk nil,nil,nil,nil",
        }, "\n") .. "\n", out)
    end)

    it("waits for the lock's holder: its decision, its failure, or the deadline", function()
        local out = run([[
            local a = assert(shcache.new({ dict = "gray_cache", locations = { "@g" },
                namespace = "gW", pos_ttl = 5, neg_ttl = 5, keep = 60, timeout = 300 }))
            -- the holder, in a timer, stores its decision after 30 ms
            assert(a:lock("w1"))
            say("second lock", tostring(a:lock("w1")))
            ngx.timer.at(0.03, function() a:set("w1", "@g", ngx.now()) a:unlock("w1") end)
            local t = ngx.now()
            local d = a:wait("w1")
            ngx.update_time()
            say("decision", tostring(d), ngx.now() - t < 0.25)
            -- the holder fails: lets go without a decision, saying why, and
            -- the lock says so a moment longer (a waiter arriving then learns
            -- it at once)
            assert(a:lock("w2"))
            ngx.timer.at(0.03, function() a:unlock("w2", "store-down") end)
            t = ngx.now()
            local why
            d, why = a:wait("w2")
            ngx.update_time()
            say("failed", tostring(d), why, ngx.now() - t < 0.25, tostring(a:lock("w2")))
            d, why = a:wait("w2")
            say("failed again", tostring(d), why)
            -- let go without a word (its decision could not be stored, or
            -- was evicted): lost, the waiter asks memcached itself
            assert(a:lock("w5"))
            ngx.timer.at(0.01, function() a:unlock("w5") end)
            d, why = a:wait("w5")
            say("let go", tostring(d), why)
            -- the holder never answers: the wait ends at its deadline
            assert(a:lock("w3"))
            t = ngx.now()
            d = a:wait("w3", ngx.now() + 0.08)
            ngx.update_time()
            local took = ngx.now() - t
            say("deadline", tostring(d), took >= 0.07 and took < 0.3)
        ]])
        assert.equal("second lock false\ndecision @g true\nfailed nil store-down true false\n"
                     .. "failed again nil store-down\nlet go nil lost\n"
                     .. "deadline nil true\n", out)
    end)

    -- the protocol itself, with an ask function standing for memcached:
    -- every way out of code holding a lock lets go of it, saying why when
    -- the lookup failed
    it("fetch asks under the lock, stores at both levels, and always lets go", function()
        local out = run([[
            local a = assert(shcache.new({ dict = "gray_cache", locations = { "@g" },
                namespace = "gF", pos_ttl = 5, neg_ttl = 5, keep = 60, timeout = 300,
                log = require("gray.log").new(60) }))
            local c = require("gray.cache").new(10)
            local asked = 0
            local function ask(answer)
                asked = asked + 1
                if answer == "fail" then
                    return nil, "store-down"
                end
                return answer, nil, true
            end
            local function show(...)
                local r = { ... }
                for i = 1, 3 do r[i] = tostring(r[i]) end
                return table.concat(r, ",")
            end
            local function free(key)        -- whether the lock was free (let go again)
                local held = a:lock(key)
                if held then a:unlock(key) end
                return tostring(held)
            end
            local now = ngx.now()
            say("answer", show(a:fetch(c, "f1", nil, ask, "@g")), free("f1"),
                tostring(c:get("f1", now)), tostring(a:get("f1", now)), asked)
            say("failed", show(a:fetch(c, "f2", nil, ask, "fail")), free("f2"),
                show(a:wait("f2")), asked)
            a:set("f3", "@g", now, true)    -- another worker stored it meanwhile
            say("since", show(a:fetch(c, "f3", nil, ask, "@g")), free("f3"), asked)
            assert(a:lock("f4"))            -- another worker holds it, then answers
            ngx.timer.at(0.02, function() a:set("f4", "@g", ngx.now(), true) a:unlock("f4") end)
            say("waited", show(a:fetch(c, "f4", nil, ask, "@g")), free("f4"), asked)

            -- several keys: m1 answered, m2 failed, m3 known to the dict
            a:set("m3", "@g", now, true)
            local pending, known = {}, {}
            for _, key in ipairs({ "m1", "m2", "m3" }) do
                pending[key] = { cache = c, ckey = key, stale = nil, stored_at = nil,
                                 seen = false, failure = false }
            end
            local function ask_many(_, rest, p, k)
                for _, key in ipairs(rest) do
                    if key == "m2" then
                        p[key].failure = "store-error"
                    else
                        k[key] = "@g"
                        a:store(p[key].cache, p[key].ckey, key, "@g", ngx.now(), true)
                    end
                end
                return "store-error", "memcached"
            end
            say("many", show(a:fetch_many({ "m1", "m2", "m3" }, pending, known, now, ask_many)),
                free("m1"), free("m2"), show(a:wait("m2")), tostring(known.m3),
                tostring(pending.m3))
        ]])
        assert.equal(table.concat({
            "answer @g,nil,memcached true @g @g 1",
            "failed nil,store-down,nil false nil,store-down,nil 2",
            "since @g,nil,shm true 2",
            "waited @g,nil,shm true 2",
            "many store-error,memcached,nil true false nil,store-error,nil @g nil",
        }, "\n") .. "\n", out)
    end)

    it("one worker asks memcached; the next finds the decision in the shared dict", function()
        mc:set("192.0.2.10", "1")
        mc:set("192.0.2.11", "v2")
        local out = run([[
            local w1, w2 = router("w1"), router("w2")
            say(w1:decide())
            say(w2:decide())
            say(w2:decide())
        ]], "192.0.2.10")
        assert.equal("@server_test ip memcached\n@server_test ip shm\n@server_test ip cache\n", out)
        assert.equal(1, gets(mc, "192.0.2.10"))
        -- a miss is shared too, and a named target
        out = run("say(router('w1'):decide()) say(router('w2'):decide())", "192.0.2.12")
        assert.equal("@server default memcached\n@server default shm\n", out)
        out = run("say(router('w2'):decide()) say(router('w1'):decide())", "192.0.2.11")
        assert.equal("@v2 ip memcached\n@v2 ip shm\n", out)
        assert.equal(1, gets(mc, "192.0.2.12"))
        assert.equal(1, gets(mc, "192.0.2.11"))
    end)

    it("shares identity decisions, asking nothing when the dict knows every key", function()
        mc:set("uid:42", "v2")
        local out = nginx:eval([[
            local routers = package.loaded.spec_routers
            local function new()
                return assert(require("gray").new({ memcached = "127.0.0.1:]] .. mc.port .. [[",
                    shm = "gray_cache", cache_ttl = 5, targets = { v2 = "@v2" },
                    ids = "uid=header:X-Uid" }))
            end
            routers.i1 = routers.i1 or new()
            routers.i2 = routers.i2 or new()
            ngx.say(routers.i1:decide())
            ngx.say(routers.i2:decide())
        ]], nil, { ["X-Real-IP"] = "192.0.2.20", ["X-Uid"] = "42" })
        assert.equal("@v2id:uidmemcached\n@v2id:uidshm\n", out)
        -- one multi-get (both keys) from the first, nothing from the second
        assert.equal(1, gets(mc, "uid:42"))
        assert.equal(1, gets(mc, "192.0.2.20"))
    end)

    it("keeps routers with other targets or servers apart", function()
        mc:set("192.0.2.30", "v2")
        local out = run([[
            say(router("n1"):decide())
            say(router("n2", { targets = { v2 = "@server_test" } }):decide())
            say(router("n3", { memcached = "127.0.0.1:]] .. mc.port .. [[, 127.0.0.1:]]
                       .. mc.port .. [[" }):decide())
        ]], "192.0.2.30")
        assert.equal("@v2 ip memcached\n@server_test ip memcached\n@v2 ip memcached\n", out)
        assert.equal(3, gets(mc, "192.0.2.30"))
    end)

    describe("two lookups of one key at once (two light threads of a request)", function()
        -- { name, options, memcached value (nil: none), identity, both answers }:
        -- the second waits for the first's answer and takes it, whatever
        -- its TTL (0 included)
        local cases = {
            { "gray, cache_ttl 0, neg_ttl 5", "cache_ttl = 0, neg_ttl = 5", "1", nil,
              "@server_test ip memcached|@server_test ip shm" },
            { "absent, cache_ttl 5, neg_ttl 0", "cache_ttl = 5, neg_ttl = 0", nil, nil,
              "@server default memcached|@server default shm" },
            { "value 0, cache_ttl 0, neg_ttl 5", "cache_ttl = 0, neg_ttl = 5", "0", nil,
              "@server default memcached|@server default shm" },
            { "identity gray, cache_ttl 0", "cache_ttl = 0, neg_ttl = 5, ids = 'uid=header:X-Uid'",
              "1", "uid", "@server_test id:uid memcached|@server_test id:uid shm" },
            { "identity absent, neg_ttl 0", "cache_ttl = 5, neg_ttl = 0, ids = 'uid=header:X-Uid'",
              nil, "uid", "@server default memcached|@server default shm" },
        }
        for i, c in ipairs(cases) do
            it(c[1], function()
                local ip, uid = "192.0.2." .. (100 + i), tostring(500 + i)
                if c[3] then
                    mc:set(c[4] and "uid:" .. uid or ip, c[3])
                end
                local out = nginx:eval([[
                    local r = assert(require("gray").new({ memcached = "127.0.0.1:]] .. mc.port
                        .. [[", shm = "gray_cache", ]] .. c[2] .. [[ }))
                    local function one() return r:decide() end
                    local a, b = ngx.thread.spawn(one), ngx.thread.spawn(one)
                    local out = {}
                    for _, th in ipairs({ a, b }) do
                        local _, t, why, source = ngx.thread.wait(th)
                        out[#out + 1] = t .. " " .. why .. " " .. tostring(source)
                    end
                    ngx.print(table.concat(out, "|"))
                ]], nil, { ["X-Real-IP"] = ip, ["X-Uid"] = uid })
                assert.equal(c[5], out)
            end)
        end
    end)

    it("gives an entry the TTL its writer gave it: a value that is not gray is a hit", function()
        -- "0" is a value: cache_ttl applies, not neg_ttl, in the dict as in
        -- the worker's cache
        mc:set("192.0.2.120", "0")
        mc:set("192.0.2.121", "0")
        local out = run([[
            say(router("t1", { cache_ttl = 0, neg_ttl = 5 }):decide())
            say(router("t2", { cache_ttl = 0, neg_ttl = 5 }):decide())
        ]], "192.0.2.120")
        assert.equal("@server default memcached\n@server default memcached\n", out)
        out = run([[
            say(router("t3", { cache_ttl = 5, neg_ttl = 0 }):decide())
            say(router("t4", { cache_ttl = 5, neg_ttl = 0 }):decide())
        ]], "192.0.2.121")
        assert.equal("@server default memcached\n@server default shm\n", out)
        assert.equal(2, gets(mc, "192.0.2.120"))
        assert.equal(1, gets(mc, "192.0.2.121"))
    end)

    it("serves another worker's expired decision while memcached is down", function()
        mc:set("192.0.2.40", "1")
        local out = run([[
            local r = router("s1", { cache_ttl = 0.2 })
            say(r:decide())
        ]], "192.0.2.40")
        assert.equal("@server_test ip memcached\n", out)
        harness.sleep(0.3)
        mc:stop()
        finally(function() mc:start() end)
        out = run("say(router('s2', { cache_ttl = 0.2 }):decide())", "192.0.2.40")
        assert.equal("@server_test ip stale\n", out)
        -- and with nothing stored anywhere, the stable location
        out = run("say(router('s3', { cache_ttl = 0.2 }):decide())", "192.0.2.41")
        assert.truthy(out:find("^@server store%-") , out)
    end)
end)

-- With the metrics dict, a wait for another worker's decision counts in
-- gray_shm_waits_total (the router tells its shared cache: count_waits).
describe("gray.shcache with metrics", function()
    local mc, nginx

    setup(function()
        mc = harness.memcached()
        nginx = harness.nginx({ memcached_port = mc.port,
                                http = "lua_shared_dict gray_cache 1m;\n"
                                       .. "lua_shared_dict gray_metrics 1m;\n"
                                       .. "init_by_lua_block { require('gray.metrics')"
                                       .. ".configure({ flush_interval = 0.05 }) }",
                                servers = eval_server() })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    it("counts each wait in gray_shm_waits_total", function()
        mc:set("192.0.2.41", "1")
        local code = [[
            local r = package.loaded.spec_counted
            if not r then
                r = assert(require("gray").new({ memcached = "127.0.0.1:]] .. mc.port .. [[",
                                                 shm = "gray_cache", cache_ttl = 5,
                                                 timeout = 2000 }))  -- kinds, not time
                package.loaded.spec_counted = r
            end
            local function waits()
                ngx.sleep(0.15)     -- a flush or two
                return require("gray.metrics").text():match("\ngray_shm_waits_total (%d+)")
            end
            if ngx.var.http_x_real_ip == "192.0.2.41" then
                -- another worker (a timer here) holds the lock and answers in 20 ms
                assert(r.shared:lock("192.0.2.41"))
                ngx.timer.at(0.02, function()
                    r.shared:set("192.0.2.41", r.decisions[1], ngx.now(), true)
                    r.shared:unlock("192.0.2.41")
                end)
            end
            local loc, reason, source = r:decide()
            ngx.say(loc, " ", reason, " ", source, " ", tostring(waits()))
        ]]
        -- the first decision starts the metrics
        assert.equal("@server default memcached nil\n",
                     nginx:eval(code, nil, { ["X-Real-IP"] = "192.0.2.40" }))
        assert.equal("@server_test ip shm 1\n",
                     nginx:eval(code, nil, { ["X-Real-IP"] = "192.0.2.41" }))
    end)
end)

describe("gray.shcache across four workers", function()
    after_each(harness.no_error_log)
    local fake, nginx

    local function conf(shm)
        return [[
          server {
            listen 127.0.0.1:$PORT;
            location / {
                content_by_lua_block {
                    local r = package.loaded.spec_shm_router
                    if not r then
                        r = assert(require("gray").new({ memcached = "127.0.0.1:$MC",
                            timeout = 2000, cache_ttl = 30, shm = ]] .. shm .. [[ }))
                        package.loaded.spec_shm_router = r
                    end
                    local target, reason, source = r:decide()
                    ngx.say(ngx.worker.id(), " ", target, " ", reason, " ", source)
                }
            }
          }
        ]]
    end

    -- n requests for one address at once, on n connections; the responses
    local function burst(n, ip)
        local cfg = nginx.dir .. "/burst.cfg"
        local f = assert(io.open(cfg, "wb"))
        for _ = 1, n do
            f:write('url = "http://127.0.0.1:', nginx.port, '/"\n')
        end
        f:close()
        -- --parallel-immediate: one connection each at once (curl would
        -- otherwise wait to see whether the first can carry them all)
        return harness.sh("curl -s --no-progress-meter -Z --parallel-immediate --parallel-max "
                          .. n .. " -H 'X-Real-IP: " .. ip .. "' --config " .. cfg)
    end

    local function workers_of(out)
        local seen, n = {}, 0
        for id in out:gmatch("(%d+) @") do
            if not seen[id] then
                seen[id], n = true, n + 1
            end
        end
        return n
    end

    after_each(function()
        if nginx then nginx:stop() end
        if fake then fake:destroy() end
        nginx, fake = nil, nil
    end)

    -- a memcached that takes ~100 ms per reply: every request of a burst
    -- misses before the first answer is in (its value names no target: the
    -- stable location, reason unknown-target)
    local function start(shm)
        fake = harness.fake_memcached({ mode = "drip", interval = 25, bytes = 8, length = 4 })
        nginx = harness.nginx({ memcached_port = fake.port, workers = 4,
                                http = "lua_shared_dict gray_cache 1m;", servers = conf(shm) })
    end

    it("asks memcached once for a key that every worker misses at once", function()
        start('"gray_cache"')
        local out, served = "", 0
        for round = 1, 5 do
            local ip = "198.51.100." .. round
            out = burst(24, ip)
            served = workers_of(out)
            if served >= 2 then
                local _, asked = fake:log():gsub("\nget %d+ " .. ip:gsub("%.", "%%.") .. "\n", "")
                assert.equal(1, asked, out .. "\n" .. fake:log())
                break
            end
            harness.sleep(0.2)
        end
        assert.truthy(served >= 2, "the bursts never reached two workers: " .. out)
        local _, answers = out:gsub("@server unknown%-target", "")
        assert.equal(24, answers, out)
        -- the others waited for the holder, then took its decision
        assert.truthy(out:find("unknown-target shm", 1, true), out)
    end)

    it("without it, each concurrent miss asks memcached itself", function()
        start("false")
        local out = burst(24, "198.51.100.77")
        local _, answers = out:gsub("@server unknown%-target", "")
        assert.equal(24, answers, out)
        assert.truthy(fake:count("get") > 1, fake:log())
    end)
end)

describe("gray.shcache with a dict too small for its entries", function()
    after_each(harness.no_error_log)
    -- issue 12: 8 workers, lua_shared_dict 12k, bursts of 2 requests per key
    -- over 100 gray keys. A write, lock or wait of the dict that fails must
    -- fall back to asking memcached (within the lookup's deadline), never
    -- send a gray client to stable; and it is logged, once per 5 s per kind.
    local mc, nginx
    local KEYS, PER_KEY = 100, 2

    setup(function()
        mc = harness.memcached()
        local values = {}
        for i = 1, KEYS do
            values["10.12." .. math.floor(i / 256) .. "." .. (i % 256)] = "1"
        end
        mc:set_many(values)
        nginx = harness.nginx({ memcached_port = mc.port, workers = 8, log_level = "warn",
                                http = "lua_shared_dict gray_cache 12k;", servers = [[
          server {
            listen 127.0.0.1:$PORT;
            location / {
                set $gray_memcached 127.0.0.1:$MC;
                set $gray_shm gray_cache;
                set $gray_timeout 1s;       # a slow machine: only the dict may fail
                set $gray_debug_header X-Gray-Debug;
                content_by_lua_file $REPO/lua/gray/dep.lua;
            }
            location @server      { return 200 "stable\n"; }
            location @server_test { return 200 "gray\n"; }
          }
        ]] })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    -- every key PER_KEY times, all at once, each request on its own
    -- connection; the X-Gray-Debug values answered
    local function burst()
        local blocks = {}
        for i = 1, KEYS do
            local ip = "10.12." .. math.floor(i / 256) .. "." .. (i % 256)
            for _ = 1, PER_KEY do
                blocks[#blocks + 1] = 'url = "http://127.0.0.1:' .. nginx.port .. '/"\n'
                    .. 'header = "X-Real-IP: ' .. ip .. '"\noutput = "/dev/null"\n'
                    .. 'write-out = "%{http_code} %header{x-gray-debug}\\n"'
            end
        end
        local cfg = nginx.dir .. "/burst.cfg"
        local f = assert(io.open(cfg, "wb"))
        f:write(table.concat(blocks, "\nnext\n"), "\n")
        f:close()
        return harness.sh("curl -s --no-progress-meter -Z --parallel-immediate --parallel-max 200 --config " .. cfg)
    end

    it("sends every gray client to its target, and logs the full dict", function()
        local misrouted, total, worst = 0, 0, ""
        for _ = 1, 3 do
            local out = burst()
            for line in out:gmatch("[^\n]+") do
                total = total + 1
                if not line:find("^%d%d%d ") then
                    error("curl: " .. out:sub(1, 2000))
                end
                if line ~= "200 @server_test; ip" then
                    misrouted = misrouted + 1
                    worst = line
                end
            end
        end
        assert.equal(3 * KEYS * PER_KEY, total)
        print(("\n  12k dict, 8 workers: %d of %d requests misrouted"):format(misrouted, total))
        assert.equal(0, misrouted, "e.g. " .. worst)
        local log = nginx:error_log()
        assert.same({}, harness.bad_log_lines(log))
        -- logged, once per 5 s per worker: at most twice each in this time
        local _, n = log:gsub("lua_shared_dict gray_cache: [^\n]*make the dict larger", "")
        print(("  logged %d times"):format(n))
        assert.truthy(n >= 1 and n <= 16, log:sub(-3000))
    end)
end)
