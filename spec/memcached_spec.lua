-- gray.memcached, the cosocket client, inside a real nginx worker against
-- real memcached processes (and a port that answers garbage).

local harness = require "helpers.harness"

local SERVERS = [[
  server {
    listen 127.0.0.1:$PORT;
]] .. harness.EVAL_LOCATION .. [[
  }
  server {
    listen 127.0.0.1:$PORT2;
    location / { return 400; }
  }
]]

-- The client's answers, not time, are the subject of most cases here: their
-- clients get 2 s lookups (timeout = 2000), so that a loaded machine does not
-- turn one into kind timeout; the cases about time name their own.
describe("gray.memcached", function()
    after_each(harness.no_error_log)
    local mc, mc2, nginx, down_port

    setup(function()
        -- verbose: their logs hold every command line (get_multi's requests)
        mc = harness.memcached({ verbose = true })
        mc2 = harness.memcached({ verbose = true })
        down_port = harness.refused_port()
        nginx = harness.nginx({ servers = SERVERS })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
        if mc2 then mc2:destroy() end
    end)

    -- runs code in the worker with `memcached` required and $MC, $MC2,
    -- $DOWN, $GARBAGE replaced by ports
    local function eval(code)
        code = "local memcached = require 'gray.memcached'\n" .. code
        code = code:gsub("%$MC2", tostring(mc2.port)):gsub("%$MC", tostring(mc.port))
                   :gsub("%$DOWN", tostring(down_port)):gsub("%$GARBAGE", tostring(nginx.port2))
        return (nginx:eval(code):gsub("\n$", ""))
    end

    local function stat(server, name)
        return tonumber(server:cmd("stats\r\n"):match("STAT " .. name .. " (%d+)"))
    end

    describe("get", function()
        -- { name, stored value or nil, expected result as printed }
        local cases = {
            { "a hit", "1", "1" },
            { "a miss", nil, "false" },
            { "an empty value", "", "" },
            { "a value holding CRLF END CRLF", "a\r\nEND\r\nb", "a\r\nEND\r\nb" },
            { "a 100 KB value (several reads) under a raised value_max",
              string.rep("0123456789", 10240), nil, 200000 },
            { "a 2 KB value over the default value_max: refused, kind value",
              string.rep("x", 2048), "nil-value" },
        }
        for i, c in ipairs(cases) do
            it("returns " .. c[1], function()
                local key = "case:" .. i
                if c[2] then
                    mc:set(key, c[2])
                end
                local out = eval([[
                    local client = assert(memcached.new({ servers = "127.0.0.1:$MC",
                                                          value_max = ]] .. (c[4] or 1024) .. [[ }))
                    local v, err, kind = client:get("]] .. key .. [[")
                    if v == nil then return "nil-" .. kind end
                    return tostring(v)
                ]])
                -- compared as a flag: a failure must not print 100 KB
                assert.is_true(out == (c[3] or c[2]), out:sub(1, 200))
            end)
        end

        it("reuses pooled connections", function()
            local before = stat(mc, "total_connections")
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC", timeout = 2000 }))
                for i = 1, 50 do
                    assert(client:get("k" .. i) ~= nil)
                end
                return "ok"
            ]])
            assert.equal("ok", out)
            -- the stats command itself is one more connection
            assert.is_true(stat(mc, "total_connections") - before <= 3)
        end)

        local bad_keys = { "a b", "1.2.3.4 flush_all", "x\r\nflush_all", "", string.rep("k", 251), "\127" }
        for _, key in ipairs(bad_keys) do
            -- right after a valid key (get() remembers the last valid one),
            -- and twice
            it("refuses to send the key " .. string.format("%q", key):sub(1, 40), function()
                local gets = stat(mc, "cmd_get")
                local q = string.format("%q", key)
                local out = eval("local client = assert(memcached.new({ servers = '127.0.0.1:$MC',"
                                 .. " timeout = 2000 }))\n"
                                 .. "assert(client:get('k1') ~= nil)\n"
                                 .. "return select(3, client:get(" .. q .. ")) .. ' '"
                                 .. " .. select(3, client:get(" .. q .. "))")
                assert.equal("key key", out)
                assert.equal(gets + 1, stat(mc, "cmd_get"))
            end)
        end

        it("refuses a key that is no string, as a client's first lookup", function()
            local gets = stat(mc, "cmd_get")
            local out = eval("local client = assert(memcached.new({ servers = '127.0.0.1:$MC',"
                             .. " timeout = 2000 }))\n"
                             .. "return select(3, client:get(false)) .. ' ' .. select(3, client:get(nil))"
                             .. " .. ' ' .. select(3, client:get(42))")
            assert.equal("key key key", out)
            assert.equal(gets, stat(mc, "cmd_get"))
        end)
    end)

    describe("failures", function()
        it("refused: kind network, then the breaker opens and later lets a probe through", function()
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$DOWN",
                    breaker_failures = 3, breaker_cooldown = 0.2 }))
                local kinds = {}
                for i = 1, 4 do
                    kinds[i] = select(3, client:get("k"))
                end
                ngx.sleep(0.3)
                kinds[5] = select(3, client:get("k"))      -- the probe
                kinds[6] = select(3, client:get("k"))      -- open again
                return table.concat(kinds, " ")
            ]])
            assert.equal("network network network down network down", out)
        end)

        it("a success closes the breaker", function()
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC",
                    breaker_failures = 1, breaker_cooldown = 0.1 }))
                local srv = client.servers[1]
                srv.failures, srv.open_until = 5, ngx.now() - 1   -- as after an outage
                local v = client:get("k")
                return tostring(v ~= nil) .. " " .. srv.failures .. " " .. srv.open_until
            ]])
            assert.equal("true 0 0", out)
        end)

        it("hung: kind timeout after about the timeout", function()
            mc2:signal("STOP")
            finally(function() mc2:signal("CONT") end)
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC2", timeout = 50 }))
                ngx.update_time()
                local t0 = ngx.now()
                local v, err, kind = client:get("k")
                ngx.update_time()
                return kind .. " " .. (ngx.now() - t0)
            ]])
            local kind, elapsed = out:match("^(%S+) ([%d.]+)$")
            assert.equal("timeout", kind)
            assert.is_true(tonumber(elapsed) >= 0.04 and tonumber(elapsed) < 0.3, out)
        end)

        it("garbage: kind protocol", function()
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$GARBAGE" }))
                local v, err, kind = client:get("k")
                return kind .. ": " .. err
            ]])
            assert.truthy(out:find("^protocol: reply from"), out)
        end)
    end)

    describe("an IPv6 server", function()
        local mc6
        setup(function()
            mc6 = harness.memcached({ host = "::1" })
            mc6:set("v6key", "over-ipv6")
        end)
        teardown(function()
            if mc6 then mc6:destroy() end
        end)

        it("answers a get", function()
            local out = eval("local client = assert(memcached.new({ servers = '[::1]:"
                             .. mc6.port .. "' }))\n"
                             .. "return tostring(client:get('v6key'))")
            assert.equal("over-ipv6", out)
        end)
    end)

    -- where placement, not time, is the subject, lookups get 2 s (the 50 ms
    -- default timed out on a machine at load 20)
    describe("several servers", function()
        it("reads each key from the server libmemcached's default placement picks", function()
            -- put each key only on the server gray.ffi.server_index names
            -- (checked against libmemcached in hash_spec)
            local gray_ffi = require "gray.ffi"
            local servers, values = { mc, mc2 }, { {}, {} }
            for i = 1, 20 do
                local key = "placed:" .. i
                values[gray_ffi.server_index(key, 2)][key] = "v" .. i
            end
            for n, server in ipairs(servers) do
                server:set_many(values[n])
            end
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC, 127.0.0.1:$MC2",
                                                      distribution = "modula", timeout = 2000 }))
                local t = {}
                for i = 1, 20 do
                    t[i] = tostring(client:get("placed:" .. i))
                end
                return table.concat(t, " ")
            ]])
            local want = {}
            for i = 1, 20 do want[i] = "v" .. i end
            assert.equal(table.concat(want, " "), out)
        end)

        -- the default with several servers: libmemcached's ketama, placed by
        -- gray.ffi.server_for (checked against libmemcached in dist_spec)
        for _, mode in ipairs({ "ketama", "ketama-weighted" }) do
            it("reads each key from the server " .. mode .. " picks", function()
                local gray_ffi = require "gray.ffi"
                -- 100 keys: with 20, the second server (weight 1 of 4)
                -- got none for some pairs of the random ports
                local KEYS = 100
                local weights = mode == "ketama" and { 1, 1 } or { 3, 1 }
                local continuum = assert(gray_ffi.new_continuum({
                    { host = "127.0.0.1", port = mc.port, weight = weights[1] },
                    { host = "127.0.0.1", port = mc2.port, weight = weights[2] },
                }, mode))
                local servers, counts, values = { mc, mc2 }, { 0, 0 }, { {}, {} }
                for i = 1, KEYS do
                    local key = mode .. ":" .. i
                    local n = gray_ffi.server_for(continuum, key)
                    counts[n] = counts[n] + 1
                    values[n][key] = "v" .. i
                end
                for n, server in ipairs(servers) do
                    server:set_many(values[n])
                end
                assert.is_true(counts[1] > 0 and counts[2] > 0, "both servers hold keys")
                local suffix = mode == "ketama" and "" or "/?3"
                local out = eval([[
                    local client = assert(memcached.new({ distribution = "]] .. mode .. [[",
                        servers = "127.0.0.1:$MC]] .. suffix .. [[, 127.0.0.1:$MC2",
                        timeout = 2000 }))
                    local t = {}
                    for i = 1, ]] .. KEYS .. [[ do
                        t[i] = tostring(client:get("]] .. mode .. [[:" .. i))
                    end
                    return table.concat(t, " ")
                ]])
                local want = {}
                for i = 1, KEYS do want[i] = "v" .. i end
                assert.equal(table.concat(want, " "), out)
            end)
        end

        it("keeps a breaker per server", function()
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC, 127.0.0.1:$DOWN",
                    breaker_failures = 1, distribution = "modula" }))
                local gray_ffi = require "gray.ffi"
                local on_up, on_down
                for i = 1, 100 do
                    local k = "b" .. i
                    if gray_ffi.server_index(k, 2) == 1 then on_up = on_up or k
                    else on_down = on_down or k end
                end
                local a = select(3, client:get(on_down))
                local b = select(3, client:get(on_down))
                local c = client:get(on_up)
                return tostring(a) .. " " .. tostring(b) .. " " .. tostring(c ~= nil)
            ]])
            assert.equal("network down true", out)
        end)
    end)

    describe("get_multi", function()
        -- runs code in the worker with dump(t) (sorted key=value text; a
        -- { value, flags, cas } entry as value|flags|cas) and ports replaced
        local function multi(code)
            return eval([[
                local function dump(t)
                    local keys, out = {}, {}
                    for k in pairs(t or {}) do keys[#keys + 1] = k end
                    table.sort(keys)
                    for _, k in ipairs(keys) do
                        local v = t[k]
                        if type(v) == "table" then
                            v = v.value .. "|" .. tostring(v.flags) .. "|" .. tostring(v.cas)
                        end
                        out[#out + 1] = string.format("%q=%q", k, v)
                    end
                    return table.concat(out, " ")
                end
            ]] .. code)
        end

        -- the get/gets command lines a verbose memcached received after a
        -- log offset
        local function requests_since(server, offset)
            local lines = {}
            for line in server:log():sub(offset + 1):gmatch("[^\n]+") do
                lines[#lines + 1] = line:match("^<%d+ (gets? .*)$")
            end
            return lines
        end

        it("reads several keys in one request, a miss among hits absent", function()
            mc:set_many({ ["gm:a"] = "1", ["gm:b"] = "", ["gm:c"] = "x y\r\nEND" })
            local offset, gets = #mc:log(), stat(mc, "cmd_get")
            local out = multi([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC", timeout = 2000 }))
                local res, failed, err = client:get_multi({ "gm:a", "gm:missing", "gm:b", "gm:c" })
                return dump(res) .. "\n" .. tostring(failed) .. " " .. tostring(err)
            ]])
            assert.equal(('"gm:a"="1" "gm:b"="" "gm:c"=%q\nnil nil'):format("x y\r\nEND"), out)
            assert.same({ "get gm:a gm:missing gm:b gm:c" }, requests_since(mc, offset))
            assert.equal(4, stat(mc, "cmd_get") - gets)
        end)

        it("refuses invalid keys, never sends them, and still reads the others", function()
            local offset, gets = #mc:log(), stat(mc, "cmd_get")
            local out = multi([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC", timeout = 2000 }))
                local res, failed, err = client:get_multi({ "gm:a", "a b", "x\r\nflush_all", "",
                                                            string.rep("k", 251), "\127", "gm:b" })
                local n = 0
                for _ in pairs(failed) do n = n + 1 end
                return dump(res) .. "\n" .. n .. " " .. failed["a b"] .. " " .. failed[""] .. " "
                       .. failed[string.rep("k", 251)] .. " " .. failed["x\r\nflush_all"] .. " "
                       .. failed["\127"] .. "\n" .. err
            ]])
            assert.equal('"gm:a"="1" "gm:b"=""\n5 key key key key key\n'
                         .. "refused to send an invalid memcached key", out)
            assert.same({ "get gm:a gm:b" }, requests_since(mc, offset))
            assert.equal(2, stat(mc, "cmd_get") - gets)
            assert.equal("1", mc:get("gm:a"))     -- no flush_all reached it
        end)

        it("returns value, flags and cas with cas = true, the cas gets reports", function()
            assert.truthy(mc:cmd("set gm:f 42 0 1\r\nz\r\n"):find("^STORED"))
            local function cas_of(key)
                return mc:cmd("gets " .. key .. "\r\n"):match("^VALUE %S+ %d+ %d+ (%d+)")
            end
            local code = [[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC", timeout = 2000 }))
                local res, failed = client:get_multi({ "gm:a", "gm:f", "gm:missing" },
                                                     { cas = true })
                return dump(res) .. " " .. tostring(failed)
            ]]
            local offset = #mc:log()
            local out = multi(code)
            assert.same({ "gets gm:a gm:f gm:missing" }, requests_since(mc, offset))
            assert.equal(('"gm:a"="1|0|%s" "gm:f"="z|42|%s" nil'):format(cas_of("gm:a"),
                                                                         cas_of("gm:f")), out)
            -- a new value, a new cas
            local old = cas_of("gm:a")
            mc:set("gm:a", "1")
            assert.is_not.equal(old, cas_of("gm:a"))
            assert.equal(('"gm:a"="1|0|%s" "gm:f"="z|42|%s" nil'):format(cas_of("gm:a"),
                                                                         cas_of("gm:f")), multi(code))
        end)

        it("reads a value over value_max whole with max_bytes, and refuses it without", function()
            local big = string.rep("0123456789", 30000)          -- 300 KB
            mc:set("gm:big", big)
            local out = multi([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC", timeout = 2000 }))
                local big = string.rep("0123456789", 30000)
                local r1, f1 = client:get_multi({ "gm:a", "gm:big" }, { max_bytes = 400000 })
                local r2, f2 = client:get_multi({ "gm:big" })
                local r3, f3 = client:get_multi({ "gm:big" }, { max_bytes = 100000 })
                -- the connection after a refusal is not reused out of step
                local r4 = client:get_multi({ "gm:a" })
                return tostring(r1["gm:big"] == big) .. " " .. r1["gm:a"] .. " " .. tostring(f1)
                       .. " | " .. dump(r2) .. " " .. dump(f2)
                       .. " | " .. dump(r3) .. " " .. dump(f3) .. " | " .. dump(r4)
            ]])
            assert.equal('true 1 nil |  "gm:big"="value" |  "gm:big"="value" | "gm:a"="1"', out)
        end)

        -- gm:a's value comes before gm:big's header in the reply: it is
        -- known (or at worst unknown), never "a value over value_max",
        -- which the router takes as an answer and caches
        it("refuses an oversized value without marking the other keys oversized", function()
            mc:set("gm:big", string.rep("0123456789", 30000))
            local out = multi([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC", timeout = 2000 }))
                local res, failed = client:get_multi({ "gm:a", "gm:big" })
                return tostring(res["gm:a"]) .. " " .. tostring(failed and failed["gm:a"]) .. " "
                       .. tostring(failed and failed["gm:big"])
            ]])
            local a_value, a_kind, big_kind = out:match("^(%S+) (%S+) (%S+)$")
            assert.is_not.equal("nil", big_kind, out)       -- refused, whatever the kind
            assert.is_not.equal("value", a_kind, "gm:a: " .. out)
            assert.truthy(a_value == "1" or a_kind ~= "nil", out)
        end)

        it("groups keys by server, one request each, each key from its server", function()
            local gray_ffi = require "gray.ffi"
            local servers, want, values = { mc, mc2 }, {}, { {}, {} }
            local keys = {}
            for i = 1, 20 do
                local key = "gm:placed:" .. i
                keys[i] = key
                local n = gray_ffi.server_index(key, 2)
                values[n][key] = "v" .. i .. "@" .. n
                want[n] = want[n] or {}
                want[n][#want[n] + 1] = key
            end
            for n, server in ipairs(servers) do
                server:set_many(values[n])
            end
            assert.is_true(#want[1] > 0 and #want[2] > 0)
            local offsets = { #mc:log(), #mc2:log() }
            local out = multi([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC, 127.0.0.1:$MC2",
                                                      distribution = "modula" }))
                local keys = {}
                for i = 1, 20 do keys[i] = "gm:placed:" .. i end
                local res, failed = client:get_multi(keys)
                local t = {}
                for i = 1, 20 do t[i] = tostring(res[ keys[i] ]) end
                return table.concat(t, " ") .. " " .. tostring(failed)
            ]])
            local expect = {}
            for i = 1, 20 do
                expect[i] = "v" .. i .. "@" .. gray_ffi.server_index(keys[i], 2)
            end
            assert.equal(table.concat(expect, " ") .. " nil", out)
            assert.same({ "get " .. table.concat(want[1], " ") }, requests_since(mc, offsets[1]))
            assert.same({ "get " .. table.concat(want[2], " ") }, requests_since(mc2, offsets[2]))
        end)

        it("fails only the keys of a server that is down", function()
            local out = multi([[
                local gray_ffi = require "gray.ffi"
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC, 127.0.0.1:$DOWN",
                                                      distribution = "modula" }))
                local keys, up, down = {}, {}, {}
                for i = 1, 20 do
                    local key = "gm:placed:" .. i
                    keys[i] = key
                    if gray_ffi.server_index(key, 2) == 1 then up[key] = true else down[key] = true end
                end
                local res, failed, err = client:get_multi(keys)
                local wrong = {}
                for _, key in ipairs(keys) do
                    local ok
                    if up[key] then
                        ok = res[key] ~= nil and failed[key] == nil
                    else
                        ok = res[key] == nil and failed[key] == "network"
                    end
                    if not ok then wrong[#wrong + 1] = key end
                end
                return table.concat(wrong, " ") .. "|" .. err
            ]])
            assert.truthy(out:find("^|connect to 127.0.0.1:" .. down_port), out)
        end)

        describe("one deadline", function()
            local trickle
            setup(function()
                trickle = harness.fake_memcached({ mode = "trickle-line", interval = 20 })
            end)
            teardown(function()
                if trickle then trickle:destroy() end
            end)

            -- keys of each of two servers, the first key on server 1
            local KEYS = [[
                local gray_ffi = require "gray.ffi"
                local keys, on = {}, { {}, {} }
                for i = 1, 20 do
                    local key = "gm:placed:" .. i
                    local n = gray_ffi.server_index(key, 2)
                    on[n][#on[n] + 1] = key
                end
                for _, key in ipairs(on[1]) do keys[#keys + 1] = key end
                for _, key in ipairs(on[2]) do keys[#keys + 1] = key end
                local function clock() ngx.update_time() return ngx.now() end
            ]]

            it("bounds two hung servers together, not each", function()
                mc2:signal("STOP")
                finally(function() mc2:signal("CONT") end)
                local out = multi(KEYS .. [[
                    local client = assert(memcached.new({ timeout = 200, distribution = "modula",
                        servers = "127.0.0.1:$MC2, 127.0.0.1:]] .. trickle.port .. [[" }))
                    local t0 = clock()
                    local res, failed = client:get_multi(keys)
                    local elapsed = clock() - t0
                    local kinds = {}
                    for _, key in ipairs(keys) do kinds[failed[key] or "none"] = true end
                    return dump(res) .. "|" .. dump(kinds) .. "|" .. elapsed
                ]])
                local res, kinds, elapsed = out:match("^(.-)|(.-)|([%d.]+)")
                assert.equal("", res)
                assert.equal('"timeout"="true"', kinds)
                -- one 200 ms deadline: a deadline per server would take 400
                assert.is_true(tonumber(elapsed) >= 0.19 and tonumber(elapsed) < 0.32, out)
            end)

            it("asks the servers at once: two slow answers fit one deadline", function()
                -- each server drips a whole valid reply over about 100 ms:
                -- one after the other they would need 200 ms, past 170
                -- (in 3 writes 50 ms apart: a busy machine's wake-up delays
                -- add up per write, and 10 writes made one drip's time vary
                -- too much)
                local a = harness.fake_memcached({ mode = "drip", length = 600, interval = 50,
                                                   bytes = 220 })
                local b = harness.fake_memcached({ mode = "drip", length = 600, interval = 50,
                                                   bytes = 220 })
                finally(function() a:destroy() b:destroy() end)
                -- the deadline relative to one drip's time now (1.5 times
                -- it, 170 ms at least; asked one after the other they take
                -- twice it): on a busy machine not even one of two drips
                -- asked at once ended within a fixed 170 ms
                local one = tonumber((multi((KEYS .. [==[
                    local client = assert(memcached.new({ timeout = 5000,
                                                          servers = "127.0.0.1:$A" }))
                    local t0 = clock()
                    local res = client:get_multi({ on[1][1] }, { max_bytes = 10000 })
                    assert(res[on[1][1]], "no answer from one drip")
                    return clock() - t0
                ]==]):gsub("%$A", tostring(a.port)))))
                local timeout = math.max(170, math.ceil(1500 * one))
                local code = KEYS .. [==[
                    local client = assert(memcached.new({ timeout = $TIMEOUT,
                        distribution = "modula", servers = "127.0.0.1:$A, 127.0.0.1:$B" }))
                    local k1, k2 = on[1][1], on[2][1]
                    local t0 = clock()
                    local res, failed = client:get_multi({ k1, k2 }, { max_bytes = 10000 })
                    local elapsed = clock() - t0
                    return tostring(res[k1] ~= nil) .. " " .. tostring(res[k2] ~= nil)
                           .. " " .. tostring(failed == nil) .. "|" .. elapsed
                ]==]
                local out = multi((code:gsub("%$A", tostring(a.port)):gsub("%$B", tostring(b.port))
                                       :gsub("%$TIMEOUT", tostring(timeout))))
                local got, elapsed = out:match("^(.-)|([%d.]+)")
                out = out .. " (one drip alone: " .. one .. " s, deadline " .. timeout .. " ms)"
                assert.equal("true true true", got, out)
                assert.is_true(tonumber(elapsed) >= 0.08 and tonumber(elapsed) < timeout / 1000,
                               out)
            end)

            it("answers the keys of a live server asked first, within the deadline", function()
                local out = multi(KEYS .. [[
                    local client = assert(memcached.new({ timeout = 200, distribution = "modula",
                        servers = "127.0.0.1:$MC, 127.0.0.1:]] .. trickle.port .. [[" }))
                    local t0 = clock()
                    local res, failed = client:get_multi(keys)
                    local elapsed = clock() - t0
                    local wrong = {}
                    for _, key in ipairs(on[1]) do
                        if res[key] == nil then wrong[#wrong + 1] = key end
                    end
                    for _, key in ipairs(on[2]) do
                        if failed[key] ~= "timeout" then wrong[#wrong + 1] = key end
                    end
                    return table.concat(wrong, " ") .. "|" .. elapsed
                ]])
                local wrong, elapsed = out:match("^(.-)|([%d.]+)")
                assert.equal("", wrong)
                assert.is_true(tonumber(elapsed) >= 0.19 and tonumber(elapsed) < 0.32, out)
            end)
        end)
    end)

    describe("new", function()
        local bad = {
            { "{ bogus = 1 }", "unknown option 'bogus'" },
            { "{ servers = '' }", "option 'servers'" },
            { "{ servers = 'host' }", "bad server 'host'" },
            { "{ servers = '127.0.0.1:0' }", "bad server" },
            -- gray-admin's rule (gray_servers_parse): one address, one spelling
            { "{ servers = '127.000.000.001:11211' }", "bad server '127.000.000.001:11211'" },
            { "{ servers = '127.0.0.1:11211/?0' }", "bad weight" },
            { "{ servers = { '127.0.0.1:11211 127.0.0.1:11212' } }", "one host:port per list item" },
            { "{ servers = { 11211 } }", "server 1 is not a string" },
            { "{ timeout = -1 }", "option 'timeout'" },
            { "{ timeout = 'fast' }", "option 'timeout'" },
            { "{ value_max = 0.5 }", "option 'value_max'" },
            { "{ connect_timeout = 30 }", "'timeout' bounds the whole lookup" },
            { "{ read_timeout = 50 }", "'timeout' bounds the whole lookup" },
            { "{ breaker_failures = 0 }", "option 'breaker_failures'" },
            { "{ keepalive_timeout = 0/0 }", "option 'keepalive_timeout'" },
            { "5", "options must be a table" },
        }
        for _, c in ipairs(bad) do
            it("refuses " .. c[1], function()
                local out = eval("local c, err = memcached.new(" .. c[1] .. ")\n"
                                 .. "return tostring(c) .. ' ' .. tostring(err)")
                assert.truthy(out:find("^nil "), out)
                assert.truthy(out:find(c[2], 1, true), out)
            end)
        end

        it("parses IPv6 servers in brackets", function()
            local out = eval([[
                local s = assert(memcached.parse_servers("[::1]:11211, 127.0.0.1:11212"))
                return s[1].host .. " " .. s[1].port .. " " .. s[2].host .. " " .. s[2].port
            ]])
            assert.equal("[::1] 11211 127.0.0.1 11212", out)
        end)

        -- hashed as written, as libmemcached and gray-admin do (dist_spec)
        it("keeps a long-form IPv6 host as written", function()
            local out = eval([[
                local s = assert(memcached.parse_servers("[0:0:0:0:0:0:0:1]:11300/?2"))
                return s[1].addr .. " " .. s[1].host .. " " .. s[1].name .. " " .. s[1].weight
            ]])
            assert.equal("0:0:0:0:0:0:0:1 [0:0:0:0:0:0:0:1] [0:0:0:0:0:0:0:1]:11300 2", out)
        end)

        -- names would need a resolver in nginx and fail on every request
        for _, spec in ipairs({ "localhost:11211", "memcached.internal:11211", "[1.2.3.4]:11211",
                                "::1:11211", "[fe80::1%eth0]:11211" }) do
            it("refuses the server " .. spec, function()
                local out = eval("local c, err = memcached.new({ servers = '" .. spec .. "' })\n"
                                 .. "return tostring(c) .. ' ' .. tostring(err)")
                assert.truthy(out:find("^nil "), out)
                assert.truthy(out:find("bad server", 1, true), out)
            end)
        end
    end)

    describe("the meta protocol", function()
        -- the mg/mn command lines a verbose memcached received after a log offset
        local function meta_lines_since(server, offset)
            local lines = {}
            for line in server:log():sub(offset + 1):gmatch("[^\n]+") do
                lines[#lines + 1] = line:match("^<%d+ (m[gn].*)$")
            end
            return lines
        end

        local function cas_of(key)
            return mc:cmd("gets " .. key .. "\r\n"):match("^VALUE %S+ %d+ %d+ (%d+)\r\n")
        end

        it("meta_cas: the cas gets reports, false on a miss, a new cas after a change", function()
            mc:set("meta:cas", "v1")
            local before = cas_of("meta:cas")
            local offset = #mc:log()
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC", timeout = 2000 }))
                local a = client:meta_cas("meta:cas")
                local b = client:meta_cas("meta:nothing")
                -- no value comes along from mg
                local n = select("#", client:meta_cas("meta:cas"))
                return tostring(a) .. " " .. tostring(b) .. " " .. n
            ]])
            assert.equal(before .. " false 1", out)
            assert.same({ "mg meta:cas c", "mg meta:nothing c", "mg meta:cas c" },
                        meta_lines_since(mc, offset))
            mc:set("meta:cas", "v2")
            local after = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC", timeout = 2000 }))
                return tostring(client:meta_cas("meta:cas"))
            ]])
            assert.equal(cas_of("meta:cas"), after)
            assert.are_not.equal(before, after)
        end)

        it("meta_cas reads no value: 10 asks of a 512 KB value cost under 200 bytes each", function()
            mc:set("meta:big", string.rep("0123456789abcdef", 32768))
            -- bytes both ways, less one stats command's own (measured twice in a row)
            local function traffic()
                local reply = mc:cmd("stats\r\n")
                return tonumber(reply:match("STAT bytes_written (%d+)"))
                       + tonumber(reply:match("STAT bytes_read (%d+)"))
            end
            local t0 = traffic()
            local t1 = traffic()
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC", timeout = 2000 }))
                local first, same = client:meta_cas("meta:big"), 0
                for _ = 1, 9 do
                    if client:meta_cas("meta:big") == first then same = same + 1 end
                end
                return tostring(first ~= nil) .. " " .. same
            ]])
            assert.equal("true 9", out)
            local cost = traffic() - t1 - (t1 - t0)
            assert.is_true(cost > 0 and cost < 10 * 200, cost .. " bytes for 10 asks")
        end)

        -- { name, stored value or nil, expected result as printed, value_max }
        local cases = {
            { "a hit", "1", "1" },
            { "a miss", nil, "false" },
            { "an empty value", "", "" },
            { "a value holding CRLF MN CRLF", "a\r\nMN\r\nEN\r\nb", "a\r\nMN\r\nEN\r\nb" },
            { "a 100 KB value (several reads) under a raised value_max",
              string.rep("0123456789", 10240), nil, 200000 },
            { "a 2 KB value over the default value_max: refused, kind value",
              string.rep("x", 2048), "nil-value" },
        }
        for i, c in ipairs(cases) do
            it("get_meta returns " .. c[1], function()
                local key = "meta:case:" .. i
                if c[2] then
                    mc:set(key, c[2])
                end
                local offset = #mc:log()
                local out = eval([[
                    local client = assert(memcached.new({ servers = "127.0.0.1:$MC",
                                                          value_max = ]] .. (c[4] or 1024) .. [[ }))
                    local v, err, kind = client:get_meta("]] .. key .. [[")
                    if v == nil then return "nil-" .. kind end
                    return tostring(v)
                ]])
                assert.is_true(out == (c[3] or c[2]), out:sub(1, 200))
                assert.same({ "mg " .. key .. " v" }, meta_lines_since(mc, offset))
            end)
        end

        it("get_meta and meta_cas refuse an invalid key and send nothing", function()
            local offset = #mc:log()
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC", timeout = 2000 }))
                return select(3, client:get_meta("a b")) .. " " .. select(3, client:meta_cas("x\r\nmn"))
            ]])
            assert.equal("key key", out)
            assert.same({}, meta_lines_since(mc, offset))
        end)

        it("get_multi_meta: one pipeline per server, the results of get_multi", function()
            mc:set_many({ ["mm:a"] = "1", ["mm:b"] = "", ["mm:c"] = "x y\r\nMN" })
            local offset = #mc:log()
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC", timeout = 2000 }))
                local keys = { "mm:a", "mm:missing", "mm:b", "mm:c" }
                local function dump(t)
                    local ks, o = {}, {}
                    for k in pairs(t) do ks[#ks + 1] = k end
                    table.sort(ks)
                    for _, k in ipairs(ks) do
                        local v = t[k]
                        if type(v) == "table" then
                            v = v.value .. "|" .. tostring(v.flags) .. "|" .. tostring(v.cas)
                        end
                        o[#o + 1] = string.format("%q=%q", k, v)
                    end
                    return table.concat(o, " ")
                end
                local a, fa, ea = client:get_multi_meta(keys)
                local b = client:get_multi(keys)
                local c = client:get_multi_meta(keys, { cas = true })
                local d = client:get_multi(keys, { cas = true })
                return tostring(dump(a) == dump(b)) .. " " .. tostring(dump(c) == dump(d)) .. " "
                       .. tostring(fa) .. " " .. tostring(ea) .. "\n" .. dump(a)
            ]])
            assert.equal(('true true nil nil\n"mm:a"="1" "mm:b"="" "mm:c"=%q'):format("x y\r\nMN"), out)
            assert.same({ "mg mm:a v q O0", "mg mm:missing v q O1", "mg mm:b v q O2",
                          "mg mm:c v q O3", "mn",
                          "mg mm:a v f c q O0", "mg mm:missing v f c q O1", "mg mm:b v f c q O2",
                          "mg mm:c v f c q O3", "mn" }, meta_lines_since(mc, offset))
        end)

        it("get_keys: one pipeline, the values by position; refusals by position", function()
            mc:set_many({ ["gk:a"] = "1", ["gk:b"] = "", ["gk:big"] = string.rep("z", 40),
                          ["gk:huge"] = string.rep("0123456789", 10240) })
            local offset = #mc:log()
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC",
                                                      value_max = 16 }))
                local function show(v, f, err)
                    local o = {}
                    for i = 1, 6 do
                        o[i] = tostring(v[i]) .. "/" .. tostring(f and f[i])
                    end
                    return table.concat(o, " ") .. " " .. tostring(err ~= nil)
                end
                local r = {}
                r[1] = show(client:get_keys("gk:a gk:missing gk:b", 3))
                r[2] = show(client:get_keys("gk:missing gk:big gk:a", 3))
                r[3] = show(client:get_keys("gk:a", 1))
                -- six keys: past the unrolled five
                r[4] = show(client:get_keys("gk:m1 gk:m2 gk:m3 gk:m4 gk:m5 gk:a", 6))
                -- a reply in several reads
                local wide = assert(memcached.new({ servers = "127.0.0.1:$MC",
                                                    value_max = 200000 }))
                local v = wide:get_keys("gk:a gk:huge gk:missing", 3)
                r[5] = v[1] .. " " .. #v[2] .. " " .. tostring(v[3])
                return table.concat(r, "\n")
            ]])
            assert.equal(table.concat({
                "1/nil false/nil /nil false/nil false/nil nil/nil false",
                "false/nil false/value 1/nil false/nil false/nil nil/nil true",
                "1/nil false/nil false/nil false/nil false/nil nil/nil false",
                "false/nil false/nil false/nil false/nil false/nil 1/nil false",
                "1 102400 false",
            }, "\n"), out)
            local lines = meta_lines_since(mc, offset)
            assert.equal("mg gk:a v q O0", lines[1])
            assert.equal("mn", lines[4])
            assert.equal(3 + 1 + 3 + 1 + 1 + 1 + 6 + 1 + 3 + 1, #lines)
        end)

        it("get_list: separate keys (nil: skipped), one pipeline, values by position", function()
            mc:set_many({ ["gl:a"] = "1", ["gl:b"] = "", ["gl:big"] = string.rep("z", 40) })
            local offset = #mc:log()
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC",
                                                      value_max = 16 }))
                local function show(v, f, err)
                    local o = {}
                    for i = 1, 5 do
                        o[i] = tostring(v[i]) .. "/" .. tostring(f and f[i])
                    end
                    return table.concat(o, " ") .. " " .. tostring(err ~= nil)
                end
                local r = {}
                r[1] = show(client:get_list(3, "gl:a", nil, "gl:missing", nil, "gl:b"))
                r[2] = show(client:get_list(2, nil, "gl:big", nil, nil, "gl:a"))
                -- the values' table is the client's, refilled by each call
                local v1 = client:get_list(2, "gl:a", "gl:b")
                local v2 = client:get_list(2, "gl:missing", "gl:a")
                r[3] = tostring(v1 == v2) .. " " .. tostring(v2[1]) .. " " .. tostring(v2[2])
                local dead = assert(memcached.new({ servers = "127.0.0.1:1" }))
                local _, df = dead:get_list(2, "gl:a", "gl:b")
                r[4] = tostring(df[1]) .. " " .. tostring(df[2])
                return table.concat(r, "\n")
            ]])
            assert.equal(table.concat({
                "1/nil false/nil /nil false/nil false/nil false",
                "false/value 1/nil false/nil false/nil false/nil true",
                "true false 1",
                "network network",
            }, "\n"), out)
            local lines = meta_lines_since(mc, offset)
            assert.same({ "mg gl:a v q O0", "mg gl:missing v q O1", "mg gl:b v q O2", "mn" },
                        { lines[1], lines[2], lines[3], lines[4] })
        end)

        it("get_keys: a refused key fails alone; a dead server fails them all", function()
            local port = harness.free_port()
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC", timeout = 2000 }))
                local v, f = client:get_keys("gk:a bad\1key gk:missing", 3)
                local dead = assert(memcached.new({ servers = "127.0.0.1:]] .. port .. [[" }))
                local dv, df, derr = dead:get_keys("gk:a gk:b", 2)
                return tostring(v[1]) .. " " .. tostring(f[2]) .. " " .. tostring(v[3]) .. " "
                       .. tostring(f[1]) .. " " .. tostring(df[1]) .. " " .. tostring(df[2])
                       .. " " .. tostring(dv[1]) .. " " .. tostring(derr ~= nil)
            ]])
            assert.equal("1 key false nil network network nil true", out)
        end)

        it("get_multi_bulk: get_multi's results", function()
            local out = eval([[
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC",
                                                      value_max = 16 }))
                local keys = { "gk:a", "gk:big", "gk:missing" }
                local a = client:get_multi_bulk(keys, { max_bytes = 1000 })
                local b, fb = client:get_multi(keys, { max_bytes = 1000 })
                local c, fc = client:get_multi_bulk(keys)
                return a["gk:a"] .. " " .. #a["gk:big"] .. " " .. tostring(a["gk:missing"]) .. " "
                       .. tostring(b["gk:big"] == a["gk:big"]) .. " " .. tostring(fb) .. " "
                       .. tostring(c["gk:a"]) .. " " .. tostring(c["gk:big"]) .. " "
                       .. fc["gk:big"]
            ]])
            assert.equal("1 40 nil true nil 1 nil value", out)
        end)

        -- the failures get meets, met the same way (one deadline, the breaker)
        for _, call in ipairs({ "meta_cas", "get_meta" }) do
            it(call .. ": hung, kind timeout after about the timeout", function()
                mc2:signal("STOP")
                finally(function() mc2:signal("CONT") end)
                local out = eval([[
                    local client = assert(memcached.new({ servers = "127.0.0.1:$MC2",
                                                          timeout = 50 }))
                    ngx.update_time()
                    local t0 = ngx.now()
                    local v, err, kind = client:]] .. call .. [[("k")
                    ngx.update_time()
                    return kind .. " " .. (ngx.now() - t0)
                ]])
                local kind, elapsed = out:match("^(%S+) ([%d.]+)$")
                assert.equal("timeout", kind)
                assert.is_true(tonumber(elapsed) >= 0.04 and tonumber(elapsed) < 0.3, out)
            end)

            it(call .. ": refused, kind network, then the breaker opens", function()
                local out = eval([[
                    local client = assert(memcached.new({ servers = "127.0.0.1:$DOWN",
                        breaker_failures = 2, breaker_cooldown = 5 }))
                    local kinds = {}
                    for i = 1, 3 do
                        kinds[i] = select(3, client:]] .. call .. [[("k"))
                    end
                    return table.concat(kinds, " ")
                ]])
                assert.equal("network network down", out)
            end)

            it(call .. ": garbage, kind protocol", function()
                local out = eval([[
                    local client = assert(memcached.new({ servers = "127.0.0.1:$GARBAGE" }))
                    local v, err, kind = client:]] .. call .. [[("k")
                    return kind .. ": " .. err
                ]])
                assert.truthy(out:find("^protocol: reply from"), out)
            end)

            it(call .. ": reuses pooled connections", function()
                local before = stat(mc, "total_connections")
                local out = eval([[
                    local client = assert(memcached.new({ servers = "127.0.0.1:$MC", timeout = 2000 }))
                    for i = 1, 50 do
                        assert(client:]] .. call .. [[("k" .. i) ~= nil)
                    end
                    return "ok"
                ]])
                assert.equal("ok", out)
                assert.is_true(stat(mc, "total_connections") - before <= 3)
            end)
        end

        it("get_meta and meta_cas stay JIT-compiled once warm: no trace aborts", function()
            mc:set("meta:jit", "1")
            local log = harness.tmpdir() .. "/jit.log"
            local out = eval([[
                local jit_v = require "jit.v"
                local client = assert(memcached.new({ servers = "127.0.0.1:$MC", timeout = 2000 }))
                local function round(i)
                    local n = client:get_meta("meta:jit") == "1" and 1 or 0
                    -- a hit and a miss in turn
                    return n + (client:meta_cas(i % 2 == 0 and "meta:jit" or "meta:none") and 1 or 0)
                end
                for i = 1, 300 do round(i) end
                jit_v.on("]] .. log .. [[")
                local n = 0
                for i = 1, 3000 do n = n + round(i) end
                jit_v.off()
                return n
            ]])
            assert.equal("4500", out)
            local f = assert(io.open(log))
            local text = f:read("*a")
            f:close()
            -- a trace recording across the cosocket's wait for memcached is
            -- cut there (LuaJIT: "error thrown or hook called during
            -- recording", the yield): a few such, as in jit_spec's miss
            -- path; any other abort is code left uncompiled
            local yields = 0
            for line in text:gmatch("[^\n]+") do
                if line:find("error thrown or hook called during recording", 1, true) then
                    yields = yields + 1
                else
                    assert.is_nil(line:find("^%[TRACE %-%-%-.*memcached%.lua")
                                  or line:find("^%[TRACE %-%-%-.*ffi%.lua"), line)
                end
            end
            assert.is_true(yields <= 6, text)
        end)

        describe("a server without it (fake-mc: ERROR to mg and mn)", function()
            -- each test its own fake server: what the worker remembers is per server
            -- (the clients here have 2 s timeouts: these are not timing
            -- tests, the fake forks for each connection, and under load an
            -- answer took longer than the default 50 ms)
            local function fake_eval(code)
                local fake = harness.fake_memcached({ mode = "valid", keys = { "present" },
                                                      value = "v1" })
                finally(function() fake:destroy() end)
                local log0 = #nginx:error_log()
                local out = eval(code:gsub("%$FAKE", tostring(fake.port)))
                local _, warned = nginx:error_log():sub(log0 + 1)
                    :gsub("does not speak the meta protocol", "")
                return out, fake, warned
            end

            it("meta_cas and get_meta fall back to gets and get, refused once, logged once", function()
                local out, fake, warned = fake_eval([[
                    local client = assert(memcached.new({ servers = "127.0.0.1:$FAKE", timeout = 2000 }))
                    local r = {}
                    for _ = 1, 3 do
                        r[#r + 1] = tostring(client:meta_cas("present"))
                        r[#r + 1] = tostring(client:meta_cas("absent"))
                        r[#r + 1] = tostring(client:get_meta("present"))
                        r[#r + 1] = tostring(client:get_meta("absent"))
                    end
                    -- remembered for the worker, not the client; gets brought the value
                    local other = assert(memcached.new({ servers = "127.0.0.1:$FAKE", timeout = 2000 }))
                    local cas, value = other:meta_cas("present")
                    r[#r + 1] = cas .. "|" .. value
                    return table.concat(r, " ")
                ]])
                assert.equal(string.rep("42 false v1 false ", 3) .. "42|v1", out)
                assert.equal(1, fake:count("refused"))
                assert.equal(7, fake:count("gets"))
                assert.equal(6, fake:count("get"))
                assert.equal(1, warned)
            end)

            it("meta_cas's gets is bounded by value_max, or by max_bytes when given", function()
                local out = fake_eval([[
                    local client = assert(memcached.new({ servers = "127.0.0.1:$FAKE", timeout = 2000,
                                                          value_max = 1 }))
                    local a, err, kind = client:meta_cas("present")
                    local cas, value = client:meta_cas("present", { max_bytes = 1000 })
                    return tostring(a) .. " " .. kind .. " " .. cas .. "|" .. value
                ]])
                assert.equal("nil value 42|v1", out)
            end)

            it("get_keys falls back to one get, refused once", function()
                local out, fake, warned = fake_eval([[
                    local client = assert(memcached.new({ servers = "127.0.0.1:$FAKE", timeout = 2000 }))
                    local a, fa = client:get_keys("present absent", 2)
                    local b, fb = client:get_keys("present", 1)
                    return tostring(a[1]) .. " " .. tostring(a[2]) .. " " .. tostring(fa) .. " "
                           .. tostring(b[1]) .. " " .. tostring(b[2]) .. " " .. tostring(fb)
                ]])
                -- (the fake answers a get line's first key only)
                assert.equal("v1 false nil v1 nil nil", out)
                -- one pipeline refused (2 mg and the mn: how many of its lines the
                -- fake read before the client hung up after the first ERROR is
                -- the scheduler's), then get each time
                local refused = fake:count("refused")
                assert.is_true(refused >= 1 and refused <= 3, refused .. " refused")
                assert.equal(2, fake:count("get"))
                assert.equal(1, warned)
            end)

            it("get_multi_meta falls back to one get per server, with cas to gets", function()
                local out, fake, warned = fake_eval([[
                    local client = assert(memcached.new({ servers = "127.0.0.1:$FAKE", timeout = 2000 }))
                    local a, fa = client:get_multi_meta({ "present", "absent" })
                    local b = client:get_multi_meta({ "present", "absent" }, { cas = true })
                    return tostring(a.present) .. " " .. tostring(a.absent) .. " " .. tostring(fa)
                           .. " " .. b.present.value .. "|" .. b.present.cas
                ]])
                assert.equal("v1 nil nil v1|42", out)
                -- one pipeline refused: 2 mg and the mn (as many of them as the fake
                -- read before the client hung up)
                local refused = fake:count("refused")
                assert.is_true(refused >= 1 and refused <= 3, refused .. " refused")
                assert.equal(1, fake:count("get"))
                assert.equal(1, fake:count("gets"))
                assert.equal(1, warned)
            end)
        end)
    end)

    it("leaves error.log free of global-variable warnings, alerts and crits", function()
        assert.same({}, harness.bad_log_lines(nginx:error_log()))
    end)
end)
