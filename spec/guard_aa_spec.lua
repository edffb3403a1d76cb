-- gray.guard's A/A run (slow: 60 s of load): gray identical to stable (both
-- backends answer 1% 500s in 0..20 ms) under wrk at a 50% share, the guard
-- on with its defaults but a 20 s window (as many judgements as a 60 s
-- one, three times as fresh): no halt. The false-halt rate of the defaults
-- per window is computed in spec/guard_spec.lua. The load is paced (each
-- of wrk's 8 connections waits DELAY_MS before each request): about 300
-- requests/s, 3,000 a side per window where the guard needs 200, and it
-- leaves the CPU to make test's other lanes, which run beside it.

local harness = require "helpers.harness"
local nodes = require "helpers.nodes"

local SECONDS = 60      -- of load
local DELAY_MS = 15     -- wrk's pause before each request, per connection

describe("the guard on an A/A run of 60 s under load", function()
    local mc, a, b, wrk

    setup(function()
        mc = harness.memcached()
        mc:set("gray:percent", "50")
        a, b = nodes.two_nodes(mc, "on, window=20, node=node-a")
    end)

    teardown(function()
        nodes.stop_load(wrk)
        if a then a:stop() end
        if b then b:stop() end
        if mc then mc:destroy() end
    end)

    it("does not halt", function()
        a:get("/mode?m=aa", { port = a.port2 })
        wrk = nodes.load(a, SECONDS, { delay_ms = DELAY_MS })
        local t0 = harness.now()
        -- no halt while the load runs, nor at the guard's first check
        -- after it (it checks every second)
        local last = t0
        while harness.process_alive(wrk) or harness.now() - last < 1 do
            if harness.process_alive(wrk) then
                last = harness.now()
            end
            assert.equal(false, mc:get("gray:halt:gray"))
            harness.sleep(0.25)
        end
        assert.equal(false, mc:get("gray:halt:gray"))
        assert.is_true(last - t0 >= SECONDS - 1, ("wrk ran %.1f s"):format(last - t0))
        -- the guard did judge: both sides had their min_requests
        local page = a:get("/metrics").body
        local n = 0
        for v in page:gmatch('gray_response_seconds_count{target="gray"} (%d+)') do
            n = n + tonumber(v)
        end
        print(("\n  A/A: %d gray requests in %d s, no halt; wrk: %s"):format(n, SECONDS,
              (harness.read_file(a.dir .. "/wrk.out") or ""):match("Requests/sec:%s*(%S+)")
              or "?"))
        assert.is_true(n > 1000, n)
        assert.same({}, a:bad_new_log_lines())
        assert.is_nil(a:new_log_lines():find("guard halts", 1, true))
    end)
end)
