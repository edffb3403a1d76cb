-- The cluster end to end (issue 8): gray-admin writes identity entries,
-- address entries, a ranges list and a percentage to three real memcached
-- servers, and a real nginx routes by them; then one server is killed and
-- only the keys it held lose their targets. Once with the default
-- distribution (ketama) and once with modula, each group with its own three
-- servers and one nginx holding two routers over them:
--
--   /dep/  the drop-in (lua/gray/dep.lua), $gray_memcached listing the three
--   /r/    a router of the Lua API with stale_ttl = 0 and a fast list refresh
--
-- Where a key lives is asked of the servers themselves: every key a request
-- will look up is written by gray-admin first (the non-members only for the
-- look, deleted right after), so the placement checked is libmemcached's,
-- not the router's own arithmetic.
--
-- What a dead server's keys do (both routers have cache_ttl 0):
--   /r/    no stale answers: a key on the dead server is as absent, the
--          request goes down the rules (ranges, percentage) and ends on the
--          stable location with reason store-error (store-down once the
--          breaker is open) instead of "default";
--   /dep/  the drop-in has no stale_ttl variable, so the default 60 s holds:
--          a key it was answered for before the kill keeps that answer
--          (members keep their target), and the request's reason, when it
--          gets to the end of the rules, is still store-error/store-down.
-- The lists (gray:ranges, gray:percent) are kept from their last good read:
-- the server holding gray:ranges is the one killed, its refresh fails (the
-- error log says "the last copy stays") and ranges and percentage route
-- exactly as before.

local harness = require "helpers.harness"
local gray_ffi = require "gray.ffi"

local sh, quote = harness.sh, harness.quote
local REPO = os.getenv("GRAY_REPO") or (sh("pwd"):gsub("%s+$", ""))
local BIN = REPO .. "/build/gray-admin"

local PERCENT = 30
local RANGES = {        -- written with `ranges add`; { line, Lua pattern of the addresses in it }
    { "10.8.0.0/16 v2", "^10%.8%.", "v2" },
    { "10.9.0.0/16", "^10%.9%.", "1" },
    { "2001:db8:9::/48 v2", "^2001:db8:9:", "v2" },
}

-- target name -> { location, response body }
local TARGET = {
    stable = { "@server", "stable" },
    ["1"] = { "@server_test", "gray" },
    v2 = { "@server_v2", "v2" },
}

local INIT = [[
  init_by_lua_block {
    local gray = require "gray"
    local router
    package.loaded.spec_cluster = function()
        if not router then
            router = assert(gray.new({
                memcached = "$SERVERS", $DIST_OPT
                trusted = "127.0.0.1", targets = { v2 = "@server_v2" }, ids = "uid=cookie:uid",
                -- timeout: generous, for a loaded machine (a dead server refuses at once)
                cache_ttl = 0, stale_ttl = 0, refresh_interval = 0.2, timeout = 1000,
                debug_header = "X-Gray-Debug",
            }))
        end
        return router
    end
  }
]]

local SERVERS = [[
  server {
    listen 127.0.0.1:$PORT;
    location /dep/ {
        set $gray_memcached "$SERVERS";
        $DIST_VAR
        set $gray_trusted 127.0.0.1;
        set $gray_cache_ttl 0;
        set $gray_timeout 1s;
        set $gray_targets "v2=@server_v2";
        set $gray_ids "uid=cookie:uid";
        set $gray_debug_header "X-Gray-Debug";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /r/ {
        content_by_lua_block { package.loaded.spec_cluster():exec() }
    }
    location = /stats {
        content_by_lua_block {
            local s = package.loaded.spec_cluster():list_stats()
            ngx.say("ranges=", s.ranges, " percent=", s.percent, " refreshes=", s.refreshes)
        }
    }
    location @server      { return 200 "stable"; }
    location @server_test { return 200 "gray"; }
    location @server_v2   { return 200 "v2"; }
  }
]]

local function in_percent(key)
    return gray_ffi.bucket(key) < PERCENT * 100
end

-- The first n values fmt:format(i), i = 1, 2, ..., that pred accepts and
-- that are not in taken (added to it).
local function pick_n(n, fmt, pred, taken)
    local list = {}
    for i = 1, 65535 do
        local v = fmt:format(i)
        if not taken[v] and pred(v) then
            taken[v] = true
            list[#list + 1] = v
            if #list == n then
                return list
            end
        end
    end
    error("not " .. n .. " values of " .. fmt .. " fit")
end

local function range_of(ip)
    for _, r in ipairs(RANGES) do
        if ip:find(r[2]) then
            return r[3]
        end
    end
    return nil
end

-- The test data: entries (key -> target name), requests and the non-member
-- keys the requests look up (probes). A request: ip (X-Real-IP), key (its
-- memcached key when not ip itself), uid (the cookie), junk (a uid the
-- router ignores: never asked for, not the percentage's key).
local function build_data()
    local taken = {}
    local function out(v) return not in_percent(v) end
    local function uid_out(v) return not in_percent("uid:" .. v) end
    local function uid_in(v) return in_percent("uid:" .. v) end
    -- members outside the percentage, so that losing its entry shows; enough
    -- of everything that each server holds some of each kind
    local entries, reqs = {}, {}
    local member_uids = pick_n(16, "m%d", uid_out, taken)
    local member_ips = pick_n(15, "10.7.0.%d", out, taken)
    member_ips[#member_ips + 1] = pick_n(1, "2001:db8:7::%x", out, taken)[1]
    -- identity requests come through an address that is no member
    local via = pick_n(#member_uids + 12, "10.5.0.%d", out, taken)
    for i, u in ipairs(member_uids) do
        entries["uid:" .. u] = i % 2 == 0 and "v2" or "1"
        reqs[#reqs + 1] = { uid = u, ip = table.remove(via) }
    end
    for i, ip in ipairs(member_ips) do
        entries[ip] = i % 2 == 0 and "v2" or "1"
        reqs[#reqs + 1] = { ip = ip }
    end
    -- non-members: in and out of the percentage, by uid and by address
    for _, u in ipairs(pick_n(8, "n%d", uid_out, taken)) do
        reqs[#reqs + 1] = { uid = u, ip = table.remove(via) }
    end
    for _, u in ipairs(pick_n(4, "p%d", uid_in, taken)) do
        reqs[#reqs + 1] = { uid = u, ip = table.remove(via) }
    end
    for _, ip in ipairs(pick_n(8, "10.6.0.%d", out, taken)) do
        reqs[#reqs + 1] = { ip = ip }
    end
    for _, ip in ipairs(pick_n(4, "10.6.1.%d", in_percent, taken)) do
        reqs[#reqs + 1] = { ip = ip }
    end
    -- hostile: an address written in another form, a uid too long to be a
    -- key, an entry naming a target the router does not know (stable,
    -- unknown-target)
    reqs[#reqs + 1] = { ip = "::FFFF:" .. member_ips[1], key = member_ips[1] }
    reqs[#reqs + 1] = { ip = member_ips[2], uid = ("x"):rep(201), junk = true }
    local unknown = pick_n(1, "10.7.1.%d", out, taken)[1]
    entries[unknown] = "v9"
    reqs[#reqs + 1] = { ip = unknown }
    -- in the ranges (whatever their percentage bucket)
    for _, ip in ipairs({ "10.8.1.1", "10.8.200.3", "10.9.0.7", "10.9.44.1",
                          "2001:db8:9::42" }) do
        reqs[#reqs + 1] = { ip = ip }
    end
    local probes, seen = {}, {}
    for _, req in ipairs(reqs) do
        for _, key in ipairs({ req.key or req.ip, not req.junk and req.uid and "uid:" .. req.uid
                               or nil }) do
            if not entries[key] and not seen[key] then
                seen[key] = true
                probes[#probes + 1] = key
            end
        end
    end
    return entries, reqs, probes
end

-- What a router should answer for req: target name and reason ("store"
-- for store-error or store-down). where: key -> server index; dead: the
-- killed server's index, or nil; stale: whether the router still uses what
-- it read of a dead server's key before the kill.
local function expect(entries, where, req, dead, stale)
    local failure = false
    local function entry(key)
        if dead and where[key] == dead then
            failure = true
            if not stale then
                return nil
            end
        end
        -- a name the router does not know: stable, reason unknown-target
        local v = entries[key]
        if v ~= nil and v ~= "0" and not TARGET[v] then
            return "unknown"
        end
        return TARGET[v] and v
    end
    local uid = not req.junk and req.uid
    local t = uid and entry("uid:" .. uid)
    if t then
        return t == "unknown" and "stable" or t, t == "unknown" and "unknown-target" or "id:uid"
    end
    local akey = req.key or req.ip
    t = entry(akey)
    if t then
        return t == "unknown" and "stable" or t, t == "unknown" and "unknown-target" or "ip"
    end
    t = range_of(akey)
    if t then
        return t, "range"
    end
    if in_percent(uid and "uid:" .. uid or akey) then
        return "1", "percent"
    end
    return "stable", failure and "store" or "default"
end

local function describe_req(req)
    return (req.uid and "uid " .. req.uid:sub(1, 20) .. " via " or "") .. req.ip
end

describe("the cluster end to end", function()
    after_each(harness.no_error_log)
    -- three servers for both groups: each group starts the one the last
    -- killed again and empties them all
    local mcs

    setup(function()
        local out, code = sh("make -s -C " .. quote(REPO) .. " build/gray-admin")
        assert(code == 0, "building gray-admin failed: " .. out)
        mcs = { harness.memcached(), harness.memcached(), harness.memcached() }
    end)

    teardown(function()
        for _, mc in ipairs(mcs or {}) do
            mc:destroy()
        end
    end)

    for _, dist in ipairs({ "ketama", "modula" }) do
        describe("a 3-server cluster (" .. dist .. ")", function()
            local nginx, servers
            local entries, reqs, probes = build_data()
            local where = {}                        -- key -> server index (1..3)
            local dead                              -- the killed server's index
            -- ketama is the default of both gray-admin and the router: not named
            local admin_opt = dist == "ketama" and "" or " --distribution " .. dist

            -- Runs each gray-admin argument text in one shell; fails on any
            -- non-zero exit.
            local function admin(list)
                local script = {}
                for _, args in ipairs(list) do
                    script[#script + 1] = BIN .. " --servers " .. quote(servers) .. admin_opt .. " "
                                          .. args .. " >/dev/null 2>&1 || echo " .. quote("FAILED: "
                                          .. args)
                end
                local out = sh(table.concat(script, "\n"))
                assert(not out:find("FAILED"), out)
            end

            -- Sends texts[n] (memcached protocol text) to server n, all in one
            -- shell of builtins (no process per server: forks are what this
            -- file spends its time on); returns the replies. The "quit" after
            -- each text makes memcached close once it has answered.
            local function ask_all(texts)
                local script = {}
                for n, mc in ipairs(mcs) do
                    script[n] = "exec 3<>/dev/tcp/" .. mc.host .. "/" .. mc.port .. "; printf '%s' "
                                .. quote(texts[n] .. "quit\r\n") .. " >&3;"
                                .. " while IFS= read -r -t 5 line <&3; do printf '%s\\n' \"$line\";"
                                .. " done; exec 3<&-; echo @@end@@"
                end
                local out = sh("bash -c " .. quote(table.concat(script, "\n")))
                local replies = {}
                for reply in out:gmatch("(.-)@@end@@\n") do
                    replies[#replies + 1] = reply
                end
                assert(#replies == #mcs, out)
                return replies
            end

            -- Every request of list ({ path =, uid =, ip = }), in one curl (one
            -- connection); returns { body, debug header } per request.
            local function route(list)
                local args = { "curl -s" }
                for i, req in ipairs(list) do
                    if i > 1 then
                        args[#args + 1] = "--next"
                    end
                    args[#args + 1] = "-m 5 -H " .. quote("X-Real-IP: " .. req.ip)
                    if req.uid then
                        args[#args + 1] = "-H " .. quote("Cookie: uid=" .. req.uid)
                    end
                    args[#args + 1] = "-w '\\t%{http_code}\\t%header{x-gray-debug}\\n' "
                                      .. quote("http://127.0.0.1:" .. nginx.port .. req.path)
                end
                local out = sh(table.concat(args, " "))
                local res = {}
                for body, status, debug in out:gmatch("([^\n]-)\t(%d+)\t([^\n]*)\n") do
                    assert.equal("200", status, out)
                    res[#res + 1] = { body, debug }
                end
                assert(#res == #list, "curl answered " .. #res .. " of " .. #list .. ": " .. out)
                return res
            end

            -- Sends every request to each path of paths (path -> whether that
            -- router answers a dead server's keys from its stale cache), in one
            -- curl, and asserts each answer; returns path -> { reason = true }.
            local function check_all(paths)
                local list = {}
                for _, path in ipairs({ "/r/", "/dep/" }) do
                    if paths[path] ~= nil then
                        for _, req in ipairs(reqs) do
                            list[#list + 1] = { path = path, uid = req.uid, ip = req.ip,
                                                key = req.key, junk = req.junk }
                        end
                    end
                end
                local res = route(list)
                local reasons = {}
                for i, req in ipairs(list) do
                    local target, reason = expect(entries, where, req, dead, paths[req.path])
                    local body, debug = res[i][1], res[i][2]
                    local what = req.path .. " " .. describe_req(req) .. " (uid on "
                                 .. tostring(req.uid and where["uid:" .. req.uid]) .. ", ip on "
                                 .. tostring(where[req.key or req.ip]) .. ", dead "
                                 .. tostring(dead) .. "): " .. debug
                    assert.equal(TARGET[target][2], body, what)
                    local loc, got = debug:match("^(%S+); (%S+)$")
                    assert.equal(TARGET[target][1], loc, what)
                    if reason == "store" then
                        assert(got == "store-error" or got == "store-down", what)
                    else
                        assert.equal(reason, got, what)
                    end
                    reasons[req.path] = reasons[req.path] or {}
                    reasons[req.path][got] = true
                end
                return reasons
            end

            setup(function()
                for _, mc in ipairs(mcs) do
                    if not mc.pid then
                        assert(mc:start())
                    end
                end
                for _, reply in ipairs(ask_all({ "flush_all\r\n", "flush_all\r\n",
                                                 "flush_all\r\n" })) do
                    assert.equal("OK\r\n", reply)
                end
                local list = {}
                for i, mc in ipairs(mcs) do
                    list[i] = "127.0.0.1:" .. mc.port
                end
                servers = table.concat(list, ", ")
                local function fill(text)
                    return (text:gsub("%$SERVERS", servers)
                                :gsub("%$DIST_OPT", dist == "ketama" and ""
                                                    or "distribution = \"" .. dist .. "\",")
                                :gsub("%$DIST_VAR", dist == "ketama" and ""
                                                    or "set $gray_distribution " .. dist .. ";"))
                end
                nginx = harness.nginx({ http = fill(INIT), servers = fill(SERVERS) })
            end)

            teardown(function()
                if nginx then nginx:stop() end
            end)

            it("gray-admin spreads what it writes over the three servers", function()
                -- two entries by `add`, the others by `import` (one process for
                -- them all), the non-members last, only to see where they live
                local cmds, keys, lines = {}, {}, {}
                for key, target in pairs(entries) do
                    local line = key .. (target == "1" and "" or " " .. target)
                    if #cmds < 2 and (#cmds == 0 or target == "1") then
                        cmds[#cmds + 1] = "add " .. line
                    else
                        lines[#lines + 1] = line
                    end
                    keys[#keys + 1] = key
                end
                lines[#lines + 1] = "# probes, deleted below"
                for _, key in ipairs(probes) do
                    lines[#lines + 1] = key
                end
                local path = nginx.dir .. "/import.txt"    -- goes with nginx's scratch dir
                local f = assert(io.open(path, "wb"))
                f:write(table.concat(lines, "\n"), "\n")
                f:close()
                cmds[#cmds + 1] = "import " .. quote(path)
                for _, r in ipairs(RANGES) do
                    cmds[#cmds + 1] = "ranges add " .. r[1]
                end
                cmds[#cmds + 1] = "percent " .. PERCENT
                admin(cmds)

                local all = { "gray:ranges", "gray:percent" }
                for _, k in ipairs(keys) do all[#all + 1] = k end
                for _, k in ipairs(probes) do all[#all + 1] = k end
                local values = {}
                local get = "get " .. table.concat(all, " ") .. "\r\n"
                for n, reply in ipairs(ask_all({ get, get, get })) do
                    for key, value in reply:gmatch("VALUE (%S+) %d+ %d+\r\n(.-)\r\n") do
                        assert.is_nil(where[key], key .. " on two servers")
                        where[key], values[key] = n, value
                    end
                end
                for _, key in ipairs(all) do
                    assert(where[key], key .. " is on no server")
                end
                -- what the entries hold, and where
                local held = { 0, 0, 0 }
                for key, target in pairs(entries) do
                    assert.equal(target, values[key], key)
                    held[where[key]] = held[where[key]] + 1
                end
                for n = 1, 3 do
                    assert(held[n] > 0, "server " .. n .. " holds none of the entries: "
                                        .. table.concat(held, ", "))
                end
                assert.equal(tostring(PERCENT), values["gray:percent"])
                local ranges = {}
                for _, r in ipairs(RANGES) do ranges[#ranges + 1] = r[1] end
                assert.equal(table.concat(ranges, "\n") .. "\n", values["gray:ranges"])
                -- the probes go again, each from the server that holds it
                local deletes = { {}, {}, {} }
                for _, key in ipairs(probes) do
                    local d = deletes[where[key]]
                    d[#d + 1] = "delete " .. key .. "\r\n"
                end
                for n, reply in ipairs(ask_all({ table.concat(deletes[1]), table.concat(deletes[2]),
                                                 table.concat(deletes[3]) })) do
                    local _, deleted = reply:gsub("DELETED\r\n", "")
                    assert.equal(#deletes[n], deleted, reply)
                end
                print(("\n  %s: entries per server %s; gray:ranges on %d, gray:percent on %d")
                      :format(dist, table.concat(held, "/"), where["gray:ranges"],
                              where["gray:percent"]))
            end)

            it("routes every entry, range and percentage as written", function()
                -- the lists come with each router's first refresh: wait for it
                local range_req, pct_req = { ip = "10.8.1.1" }, nil
                for _, req in ipairs(reqs) do
                    if not req.uid and req.ip:find("^10%.6%.1%.") then
                        pct_req = req
                    end
                end
                -- (the first two requests start the refreshes, the others
                -- are looked at: one round is often enough)
                local probe = { { path = "/dep/", ip = range_req.ip },
                                { path = "/r/", ip = range_req.ip } }
                for _, path in ipairs({ "/dep/", "/r/" }) do
                    probe[#probe + 1] = { path = path, ip = range_req.ip }
                    probe[#probe + 1] = { path = path, ip = pct_req.ip }
                end
                local deadline = os.time() + 5
                while true do
                    local res, ready, got = route(probe), true, {}
                    for i = 3, #res, 2 do
                        ready = ready and res[i][2]:find("; range$") and res[i + 1][2]:find("; percent$")
                        got[#got + 1] = res[i][2] .. " / " .. res[i + 1][2]
                    end
                    if ready then
                        break
                    end
                    assert(os.time() <= deadline, "the routers never read the lists (a range and a"
                                                  .. " percentage address: " .. table.concat(got, ", ")
                                                  .. ")")
                    harness.sleep(0.05)
                end
                local reasons = check_all({ ["/dep/"] = false, ["/r/"] = false })
                for _, path in ipairs({ "/dep/", "/r/" }) do
                    for _, r in ipairs({ "id:uid", "ip", "range", "percent", "default" }) do
                        assert(reasons[path][r], path .. ": no request decided by " .. r)
                    end
                end
            end)

            it("one server killed: its keys fall back to stable, the others keep routing", function()
                assert(where["gray:ranges"], "placement unknown (the first case failed)")
                -- the server of gray:ranges, so that a list's server dies too
                dead = where["gray:ranges"]
                local log_before = #nginx:error_log()
                mcs[dead]:stop()
                -- the lists' refresh (every 0.2 s in /r/) fails on the dead
                -- server and keeps the last copy
                local deadline = os.time() + 5
                while not nginx:error_log():sub(log_before + 1)
                              :find("refreshing gray:ranges failed, the last copy stays", 1, true) do
                    assert(os.time() <= deadline, "no failed refresh logged:\n"
                                                  .. nginx:error_log():sub(log_before + 1))
                    harness.sleep(0.05)
                end
                local res = nginx:get("/stats")
                assert.matches("^ranges=" .. #RANGES .. " percent=" .. PERCENT .. " ", res.body)

                -- the model says some requests lose their target and some keep
                -- one: the kill is seen, and is not all there is
                local lost, kept = 0, 0
                for _, req in ipairs(reqs) do
                    local before = expect(entries, where, req, nil, false)
                    local after = expect(entries, where, req, dead, false)
                    if before ~= "stable" then
                        if after == "stable" then lost = lost + 1 else kept = kept + 1 end
                    end
                end
                assert(lost > 0 and kept > 0, lost .. " requests lose their target, " .. kept
                                              .. " keep it")
                print(("  %s: server %d killed, %d requests lose their target, %d keep one")
                      :format(dist, dead, lost, kept))

                -- /r/ (no stale answers) first, then the drop-in (60 s of them)
                local reasons = check_all({ ["/r/"] = false, ["/dep/"] = true })
                for _, path in ipairs({ "/r/", "/dep/" }) do
                    local r = reasons[path]
                    assert(r["store-error"] or r["store-down"], path .. ": no request saw the dead"
                                                                .. " server")
                    for _, reason in ipairs({ "id:uid", "ip", "range", "percent" }) do
                        assert(r[reason], path .. ": no request decided by " .. reason)
                    end
                end
                -- five failures in a row open /r/'s breaker: its keys are then
                -- not even asked for
                if not reasons["/r/"]["store-down"] then
                    reasons = check_all({ ["/r/"] = false })
                end
                assert(reasons["/r/"]["store-down"], "the breaker never opened")
            end)

            it("logged nothing alarming", function()
                assert.same({}, harness.bad_log_lines(nginx:error_log()))
            end)
        end)
    end
end)
