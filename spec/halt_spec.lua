-- gray.halt and gray.guard in real nginx: two nginx "nodes" share one real
-- memcached and one pair of backends (stable, gray). Node A runs the guard
-- (2 workers: worker 0 guards) under load from wrk, 50% of the clients in
-- the percentage; node B runs none. A gray backend that answers 500 to 20%
-- is halted by A's guard within 15 s, B follows the halt key within
-- refresh_interval + 1 s; the tester override still reaches the halted
-- target; gray-admin resume restores routing; a gray backend slower by
-- 200 ms is halted for its latency. The A/A run: spec/guard_aa_spec.lua.

local harness = require "helpers.harness"

local nodes = require "helpers.nodes"
local REFRESH = nodes.REFRESH
local two_nodes, load, stop_load, debug_of, in_percent, admin = nodes.two_nodes, nodes.load,
    nodes.stop_load, nodes.debug_of, nodes.in_percent, nodes.admin

describe("the fleet-wide halt and the guard (two nodes, one memcached)", function()
    local mc, a, b, wrk
    local ip        -- a client in the percentage

    setup(function()
        mc = harness.memcached()
        mc:set("gray:percent", "50")
        a, b = two_nodes(mc, "error_delta=0.02, latency_ratio=2, min_requests=200,"
                             .. " window=10, node=node-a")
    end)

    teardown(function()
        stop_load(wrk)
        if a then a:stop() end
        if b then b:stop() end
        if mc then mc:destroy() end
    end)

    after_each(function()
        stop_load(wrk)
        wrk = nil
        assert.same({}, b:bad_new_log_lines())
        assert.same({}, a:bad_new_log_lines())
    end)

    local function wait_key(seconds)
        local t0 = harness.now()
        local v
        harness.wait_for(function()
            v = mc:get("gray:halt:gray")
            return v ~= false
        end, seconds, "gray:halt:gray")
        return v, harness.now() - t0
    end

    it("halts a gray target answering 500 to 20%; the other node follows", function()
        ip = in_percent(b)
        harness.wait_for(function()             -- both of a's workers read the percentage
            for _ = 1, 10 do
                if debug_of(a, ip) ~= "@server_test; percent" then
                    return false
                end
            end
            return true
        end, REFRESH + 1, "node a to read the percentage")
        a:get("/mode?m=fail", { port = a.port2 })
        local t0 = harness.now()
        wrk = load(a, 30)
        local value = wait_key(20)
        local t_key = harness.now()
        assert.is_true(t_key - t0 <= 15, ("halted after %.1f s"):format(t_key - t0))
        assert.matches("^%d+ node%-a guard: errors: 5xx ", value)
        -- node b: within refresh_interval + 1 s of the key
        harness.wait_for(function()
            return debug_of(b, ip) == "@server; halted"
        end, REFRESH + 1, "node b to send the client to stable")
        print(("\n  halt %.1f s after the load started; node b followed in %.2f s"):format(
              t_key - t0, harness.now() - t_key))
        harness.wait_for(function()             -- a's other worker: at its refresh
            return debug_of(a, ip) == "@server; halted" and debug_of(a, ip) == "@server; halted"
        end, REFRESH + 1, "node a to send the client to stable")
        -- logged once per node, and the gauge
        harness.wait_for(function()
            return b:get("/metrics").body:find('gray_halted{target="gray"} 1', 1, true)
        end, 3, "the gauge")
        local log = b:new_log_lines()
        local _, n = log:gsub("target gray is halted", "")
        assert.equal(1, n)
        assert.matches("guard halts target gray", a:new_log_lines(), 1, true)
    end)

    it("tells the halts and their records (gray.halt.all, record)", function()
        local code = [[
            local halt = require "gray.halt"
            local r = halt.record("gray")
            if not r then
                return "this worker has not read the halt yet"
            end
            local all = halt.all()
            return tostring(halt.halted("gray")) .. " " .. tostring(halt.halted("stable"))
                   .. " " .. r.node .. " " .. tostring(r.at > 0) .. " "
                   .. tostring(all.gray.reason == r.reason) .. " " .. r.reason:sub(1, 13)
        ]]
        local want, got = "true false node-a true true guard: errors\n", nil
        harness.wait_for(function()          -- whichever worker answers
            got = b:eval(code)
            return got == want and b:eval(code) == want
        end, REFRESH + 1, "the halt's record in node b")
        assert.equal(want, got)
    end)

    it("lets the tester override reach the halted target", function()
        assert.equal("@server_test; force", (debug_of(b, "127.0.0.1", { ["X-Gray"] = "always" })))
        assert.equal("@server_test; force", (debug_of(a, "127.0.0.1", { ["X-Gray"] = "always" })))
    end)

    -- node b's answers to 10.9.9.9 (an address entry: halted) for n new
    -- connections: the answers that were not "@server; halted"
    local function not_halted(n, from)
        local bad = {}
        for i = from, from + n - 1 do
            local got = debug_of(b, "10.9.9.9")
            if got ~= "@server; halted" then
                bad[#bad + 1] = i .. ": " .. tostring(got)
            end
        end
        return bad
    end

    -- b reloaded; the answers right after (old and new workers) and once
    -- the old workers are gone (each new one's first request is its first
    -- decision, taken before its first refresh has read the halt)
    local function reload_b()
        b:reload()
        local bad = not_halted(20, 1)
        harness.wait_for(function() return #b:worker_pids() == 2 end, 10,
                         "node b's old workers to exit")
        for _, line in ipairs(not_halted(20, 21)) do
            bad[#bad + 1] = line
        end
        return bad
    end

    it("follows the halt from a new worker's first request (a reload)", function()
        -- an address entry: a new worker asks memcached for it at once
        mc:set("10.9.9.9", "gray")
        -- every worker of b knows the halt before the reload: what follows
        -- is about the new workers, not an old one that had not refreshed
        -- yet. Twelve right answers do not show it: on a loaded machine one
        -- worker can take them all while the other, whose last refresh
        -- was before the halt, has not read it (a halt is followed within
        -- refresh_interval; the specs before this one can take less). A
        -- clean-clone make test answered 12 of 20 from such an old worker
        -- in the moment before the master told it to quit. Each worker's
        -- refresh reads the key within refresh_interval (+ 1 s: the
        -- contract) from now.
        harness.wait_for(function()
            return #not_halted(12, 1) == 0
        end, REFRESH + 1, "a worker of node b to know the halt")
        harness.sleep(REFRESH + 1)
        assert.same({}, reload_b())
        assert.same({}, b:bad_new_log_lines())
    end)

    -- The node's copy of a halt (the metrics dict, from which a new worker
    -- takes it before its first decision) was written only when a worker's
    -- own view changed: two workers' reads across a resume and a new halt
    -- could land in either order and leave the copy deleted while the halt
    -- stood, for good. The copy is made right at every read now. Here it is
    -- lost by hand; the old code answered "@server_test; ip" from each new
    -- worker's first decision.
    it("follows the halt from a new worker's first request when the node's copy was lost",
       function()
        local function eval(code)
            return (b:eval(code):gsub("\n$", ""))
        end
        local value = mc:get("gray:halt:gray")
        for _ = 1, 2 do
            eval("ngx.shared.gray_metrics:delete('~halt|now|gray')")
            assert.equal("nil", eval("return tostring(ngx.shared.gray_metrics:get("
                                     .. "'~halt|now|gray'))"))
            harness.sleep(REFRESH + 0.5)
            assert.same({}, reload_b())
            assert.equal(value, eval("return ngx.shared.gray_metrics:get('~halt|now|gray')"))
        end
        assert.same({}, b:bad_new_log_lines())
    end)

    -- Two reads of one halt key in flight at once (a refresh slower than
    -- refresh_interval on a loaded machine, or two routers of a worker):
    -- the older one, a "not halted" sent before the halt, came back last
    -- and was taken in, resuming the target (logging its resume, so that
    -- the real one later was not) and deleting the node's copy.
    it("takes a read sent before the one in force for older news", function()
        local got = b:eval([[
            local halt = require "gray.halt"
            local d = ngx.shared.gray_metrics
            halt.set("zz", "1 spec newer", "gray:halt:zz", 1000.002)
            halt.set("zz", false, "gray:halt:zz", 1000.001)      -- sent before, back after
            local out = { tostring(halt.halted("zz")), tostring(d:get("~halt|now|zz")) }
            halt.set("zz", false, "gray:halt:zz", 1000.003)      -- a resume, sent after
            out[3] = tostring(halt.halted("zz"))
            out[4] = tostring(d:get("~halt|now|zz"))
            return table.concat(out, ", ")
        ]])
        assert.equal("true, 1 spec newer, false, nil\n", got)
        local log = b:new_log_lines()
        local _, n = log:gsub("target zz is resumed", "")
        assert.equal(1, n, log)
    end)

    it("routes to the target again after gray-admin resume", function()
        a:get("/mode?m=ok", { port = a.port2 })
        assert.equal("", admin(mc, "resume gray"))
        assert.equal(false, mc:get("gray:halt:gray"))
        -- again: nothing to resume, and no failure
        local out, code = admin(mc, "resume gray")
        assert.same({ "gray-admin: gray:halt:gray: not halted (nothing to resume)\n", 0 },
                    { out, code })
        harness.wait_for(function()
            return debug_of(b, ip) == "@server_test; percent"
        end, REFRESH + 1, "node b to route the client to gray again")
        harness.wait_for(function()
            return debug_of(a, ip) == "@server_test; percent"
        end, REFRESH + 1, "node a to route the client to gray again")
        -- logged once by the worker that saw the halt (at its next refresh:
        -- the client may have been answered by another worker)
        local log = ""
        harness.wait_for(function()
            log = log .. b:new_log_lines()
            return log:find("target gray is resumed", 1, true)
        end, REFRESH + 1, "the resume in node b's log")
        harness.sleep(REFRESH)
        log = log .. b:new_log_lines()
        local _, n = log:gsub("target gray is resumed", "")
        assert.equal(1, n)
        -- a halt by hand, with its reason; a second one changes nothing
        assert.equal("", admin(mc, "halt gray --reason 'deploy 42 is bad'"))
        local value = mc:get("gray:halt:gray")
        assert.matches("^%d+ gray%-admin@%S+ deploy 42 is bad$", value)
        assert.matches("halted already", admin(mc, "halt gray --reason other"))
        assert.equal(value, mc:get("gray:halt:gray"))
        harness.wait_for(function()
            return debug_of(b, ip) == "@server; halted"
        end, REFRESH + 1, "node b to halt")
        assert.equal("", admin(mc, "resume 1"))     -- the default target's value: gray
        assert.matches("not halted", admin(mc, "resume gray"))
        harness.wait_for(function()
            return debug_of(b, ip) == "@server_test; percent"
        end, REFRESH + 1, "node b to resume")
        assert.matches("bad target", admin(mc, "halt stable"))
        assert.matches("%-%-reason is for halt", admin(mc, "resume gray --reason x"))
    end)

    it("halts a gray target slower by 200 ms", function()
        -- the guard's window starts again at the resume: the errors before
        -- it do not count
        a:get("/mode?m=slow", { port = a.port2 })
        local t0 = harness.now()
        -- 32 connections: a gray answer takes 200 ms, so 8 brought the
        -- guard its min_requests (200) gray answers only after 5-6 s
        wrk = load(a, 30, { connections = 32 })
        local value = wait_key(20)
        assert.is_true(harness.now() - t0 <= 15, ("halted after %.1f s"):format(harness.now() - t0))
        assert.matches("^%d+ node%-a guard: latency: p95 ", value)
        print(("\n  latency halt %.1f s after the load started: %s"):format(harness.now() - t0,
                                                                        value))
        harness.wait_for(function()
            return debug_of(b, ip) == "@server; halted"
        end, REFRESH + 1, "node b to halt")
        a:get("/mode?m=ok", { port = a.port2 })
        admin(mc, "resume gray")
    end)
end)

-- A router whose metrics dict has another name (metrics_shm) takes the
-- node's halts from that dict before its first decision: its start seeds
-- them after the metrics are enabled (before, it read the default
-- gray_metrics dict, so a new worker's first decisions went to the halted
-- target until its first refresh).
describe("a halt seeded from a metrics dict of another name", function()
    after_each(harness.no_error_log)
    local mc, nginx

    setup(function()
        mc = harness.memcached()
        mc:set("10.9.9.9", "gray")
        nginx = harness.nginx({ memcached_port = mc.port,
                                http = "lua_shared_dict other_metrics 1m;\n",
                                servers = [[
          server {
            listen 127.0.0.1:$PORT;
            ]] .. harness.EVAL_LOCATION .. [[
            location @server      { return 200 "stable\n"; }
            location @server_test { return 200 "gray\n"; }
          }
        ]] })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    it("decides the first request with the dict's copy of the halt", function()
        -- the node's copy, as a worker that read the halt left it; memcached
        -- has no halt key yet, so only the copy can halt this decision
        local got = nginx:eval([[
            ngx.shared.other_metrics:set("~halt|now|gray", "1700000000 node-x by hand")
            local r = assert(require("gray").new({ memcached = "127.0.0.1:]] .. mc.port .. [[",
                                                   client_headers = { "X-Real-IP" },
                                                   metrics_shm = "other_metrics",
                                                   timeout = 2000 }))
            local loc, reason = r:decide()
            ngx.say(loc, " ", reason)
        ]], nil, { ["X-Real-IP"] = "10.9.9.9" })
        assert.equal("@server halted\n", got)
    end)
end)
