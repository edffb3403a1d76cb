-- Timed sticky ramps (gray.ramp, csrc/ramp.c): the C parser table-driven,
-- good and hostile schedules side by side; the share in force by the
-- clock; then real nginx + memcached: a ramp over seconds ("10% 50%@4s")
-- routes exactly the murmur3 buckets of each step, no member leaves as it
-- rises, it replaces gray:percent while it exists, and deleting it brings
-- the percentage back.

local harness = require "helpers.harness"
local gray_ffi = require "gray.ffi"

local sh = harness.sh
local REPO = os.getenv("GRAY_REPO") or (sh("pwd"):gsub("%s+$", ""))
local BIN = REPO .. "/build/gray-admin"

local function steps(...)
    local t, args = {}, { ... }
    for i = 1, #args, 2 do
        t[#t + 1] = { share = args[i], at = args[i + 1] }
    end
    return t
end

describe("gray_ramp_parse", function()
    local good = {
        { "5%", steps(500, 0) },
        { "  5%\t", steps(500, 0) },
        { "5% 25%@10m 50%@30m 100%@1h", steps(500, 0, 2500, 600, 5000, 1800, 10000, 3600) },
        { "0% 0.5%@30s 12.25%@2m", steps(0, 0, 50, 30, 1225, 120) },
        { "10%@0s 50%@3s", steps(1000, 0, 5000, 3) },
        { "1.5% 1.5%@1s", steps(150, 0, 150, 1) },                     -- a share may stay
        { "100%", steps(10000, 0) },
        { "100.00%", steps(10000, 0) },
        { "5% 10%@8784h", steps(500, 0, 1000, 8784 * 3600) },          -- GRAY_RAMP_AT_MAX
    }
    for _, c in ipairs(good) do
        local text, want = c[1], c[2]
        if want then
            it("reads '" .. text .. "'", function()
                assert.same(want, assert(gray_ffi.ramp_parse(text)))
            end)
        end
    end

    local bad = {
        { "", "bad ramp step" },
        { "   ", "bad ramp step" },
        { "5", "bad ramp step at '5'" },
        { "5 %", "bad ramp step at '5'" },
        { "%", "bad ramp step" },
        { "-5%", "bad ramp step at '-5%'" },
        { "5% 25%", "bad ramp step at '25%'" },                     -- a later step needs @
        { "5% 25%@", "bad ramp step at '25%@'" },
        { "5% 25%@10", "bad ramp step at '25%@10'" },               -- a unit is needed
        { "5% 25%@10d", "bad ramp step at '25%@10d'" },
        { "5% 25%@10ms", "bad ramp step at '25%@10ms'" },
        { "5% 25%@-10m", "bad ramp step" },
        { "5%,25%@10m", "bad ramp step at '5%,25%@10m'" },
        { "5.% 1", "bad ramp step at '5.%'" },
        { "5.123%", "bad ramp step at '5.123%'" },
        { "100.01%", "number out of range at '100.01%'" },
        { "101%", "number out of range" },
        { "99999999999%", "number out of range" },
        { "5% 10%@8785h", "number out of range at '10%@8785h'" },
        { "5% 10%@9999999999s", "number out of range" },
        { "5%@1m 10%@2m", "ramp steps out of order at '5%@1m'" },  -- the first is at 0
        { "5% 10%@2m 20%@2m", "ramp steps out of order at '20%@2m'" },
        { "5% 10%@2m 20%@1m", "ramp steps out of order at '20%@1m'" },
        { "50% 25%@1m", "ramp steps out of order at '25%@1m'" },   -- a share never falls
        { "5%\n25%@1m", "bad ramp step" },
        { "5% 25%@1m\0", "bad ramp step" },
        { "007% 10%@366d", "bad ramp step at '10%@366d'" },                -- no unit d
        { string.rep(" ", 1025) .. "5%", "number out of range" },
    }
    for _, c in ipairs(bad) do
        it("refuses " .. ("%q"):format(c[1]:sub(1, 40)), function()
            local got, err = gray_ffi.ramp_parse(c[1])
            assert.is_nil(got)
            assert.is_string(err)
            assert.truthy(err:find(c[2], 1, true), err)
        end)
    end

    it("refuses a 65th step (GRAY_RAMP_STEPS_MAX)", function()
        local parts = { "0%" }
        for i = 1, 64 do
            parts[#parts + 1] = "1%@" .. i .. "s"
        end
        local got, err = gray_ffi.ramp_parse(table.concat(parts, " "))
        assert.is_nil(got)
        assert.truthy(err:find("output buffer too small at '1%@64s'", 1, true), err)
        table.remove(parts)
        assert.equal(64, #assert(gray_ffi.ramp_parse(table.concat(parts, " "))))
    end)

    it("never reads past the text (every prefix of good schedules)", function()
        local text = "5% 25%@10m 50.5%@30m 100%@1h"
        for n = 0, #text do
            gray_ffi.ramp_parse(text:sub(1, n))
        end
    end)
end)

describe("gray_ramp_value_parse", function()
    it("reads the start and the schedule", function()
        local start, st = gray_ffi.ramp_value_parse("1700000000 10% 50%@3s")
        assert.equal(1700000000, start)
        assert.same(steps(1000, 0, 5000, 3), st)
    end)
    local bad = {
        { "10% 50%@3s", "malformed input" },
        { "1700000000", "malformed input" },
        { "1700000000 ", "bad ramp step" },
        { " 1700000000 5%", "malformed input" },
        { "0 5%", "number out of range" },
        { "999999999999 5%", "number out of range" },
        { "1700000000 5% 2%@1m", "ramp steps out of order at '2%@1m'" },
        { "17e8 5%", "malformed input" },
    }
    for _, c in ipairs(bad) do
        it("refuses " .. ("%q"):format(c[1]), function()
            local got, err = gray_ffi.ramp_value_parse(c[1])
            assert.is_nil(got)
            assert.truthy(err:find(c[2], 1, true), err)
        end)
    end
end)

describe("the share in force (gray.ramp.share)", function()
    local ramp = require "gray.ramp"
    local r = ramp.new("gray:ramp")
    r.start, r.steps = 1000, steps(500, 0, 2500, 600, 10000, 3600)
    local cases = {
        { 900, 500, 1600 },         -- a clock behind the writer's: the first step
        { 1000, 500, 1600 },
        { 1599.9, 500, 1600 },
        { 1600, 2500, 4600 },
        { 4599, 2500, 4600 },
        { 4600, 10000, nil },
        { 99999, 10000, nil },
    }
    for _, c in ipairs(cases) do
        it("at " .. c[1], function()
            local share, next_at = ramp.share(r, c[1], false)
            assert.equal(c[2], share)
            assert.equal(c[3], next_at)
        end)
    end
    it("freezes at the step in force while the default target is halted", function()
        assert.equal(2500, (ramp.share(r, 1700, true)))
        local share, next_at = ramp.share(r, 5000, true)
        assert.equal(2500, share)
        assert.is_nil(next_at)
        assert.equal(10000, (ramp.share(r, 5000, false)))
    end)
    it("freezes at the step of the halt's time, the same on every node", function()
        -- halted at 1700 (the halt key's time), seen at 5000: 25%, the
        -- step at 1700, whenever a worker saw the halt first
        local share, next_at = ramp.share(r, 5000, 1700)
        assert.equal(2500, share)
        assert.is_nil(next_at)
        local fresh = ramp.new("gray:ramp")
        fresh.start, fresh.steps = r.start, r.steps
        assert.equal(2500, (ramp.share(fresh, 9000, 1700)))
        assert.equal(500, (ramp.share(fresh, 9000, 900)))      -- halted before the start
        local info = ramp.info(fresh, 9000, 1700)
        assert.same({ 2, 25, true, 1700 }, { info.step, info.share, info.frozen,
                                             info.frozen_since })
        -- gray-admin resume at 5000 moves the start on by 3300 s: the ramp
        -- goes on at 25%, its next step 3300 s later
        fresh.start = r.start + 3300
        share, next_at = ramp.share(fresh, 5000, false)
        assert.equal(2500, share)
        assert.equal(1000 + 3300 + 3600, next_at)
    end)
    it("freezes a halt whose time is ahead of this clock at the step in force now", function()
        -- a writer's clock 1 h ahead, or a hostile time: not the last step
        -- (100%), a step that was never in force here
        local fresh = ramp.new("gray:ramp")
        fresh.start, fresh.steps = r.start, r.steps
        for _, halted in ipairs({ 1700 + 3600, 99999999999, 1e23 }) do
            assert.equal(2500, (ramp.share(fresh, 1700, halted)), halted)
            local info = ramp.info(fresh, 1700, halted)
            assert.same({ 2, 25 }, { info.step, info.share }, halted)
        end
    end)
    it("stays frozen after the halt's end until a refresh reads the ramp again", function()
        -- a refresh that saw the halt gone but failed to read the ramp
        -- (gray-admin resume moved its start before deleting the halt): not
        -- the old start's later step for an interval, then back to the
        -- moved one (members would join, then leave)
        local saved, util = _G.ngx, package.loaded["gray.util"]
        _G.ngx = { now = function() return 5000 end, update_time = function() end }
        -- gray.util holds the clock ramp's deadline is counted by
        package.loaded["gray.ramp"], package.loaded["gray.util"] = nil, nil
        local ok, clocked = pcall(require, "gray.ramp")
        package.loaded["gray.ramp"], package.loaded["gray.util"], _G.ngx = ramp, util, saved
        assert(ok, clocked)
        local log = { report = function() end }
        local down = { meta_cas = function() return nil, "timeout", "timeout" end }
        local up = { meta_cas = function() return 7 end }             -- the same CAS
        local x = clocked.new("gray:ramp")
        x.cas, x.start, x.steps = 7, r.start, r.steps
        assert.equal(2500, (clocked.share(x, 5000, 1700)))             -- halted at 1700
        clocked.refresh(x, down, log, 5001)
        assert.equal(2500, (clocked.share(x, 5000, false)))            -- ended, ramp unread
        assert.is_true(clocked.info(x, 5000, false).frozen)
        clocked.refresh(x, up, log, 5001)
        assert.equal(10000, (clocked.share(x, 5000, false)))           -- read: the clock's
        assert.is_false(clocked.info(x, 5000, false).frozen)
    end)
    it("is nil without a ramp", function()
        assert.is_nil(ramp.share(ramp.new("k"), 1000, false))
    end)
end)

describe("a ramp over seconds, real nginx and memcached", function()
    local mc, nginx
    local N = 300
    setup(function()
        mc = harness.memcached({})
        nginx = harness.nginx({ memcached_port = mc.port, workers = 2, servers = [[
  init_by_lua_block {
    local gray = require "gray"
    package.loaded.spec_ramp = function()
        local r = package.loaded.spec_ramp_router
        if not r then
            r = assert(gray.new({
                memcached = "127.0.0.1:$MC", trusted = "127.0.0.1", ranges_key = false,
                refresh_interval = 0.2, cache_ttl = 0, lists_dir = "$LOGDIR/images",
            }))
            package.loaded.spec_ramp_router = r
        end
        return r
    end
  }
  server {
    listen 127.0.0.1:$PORT;
    location / { content_by_lua_block { package.loaded.spec_ramp():exec() } }
    location = /share {
        content_by_lua_block {
            local r = package.loaded.spec_ramp()
            r:decide()      -- starts the refresh
            local s = r:list_stats()
            ngx.say(s.percent, " ", s.ramp and s.ramp.next_at or "-", " ", ngx.worker.pid(),
                    " ", tostring(require("gray.halt").halted("gray")))
        }
    }
    location @server      { return 200 "stable"; }
    location @server_test { return 200 "gray"; }
  }
]] })
    end)
    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)
    after_each(function()
        assert.same({}, nginx:bad_new_log_lines())
    end)

    local function addr(i)
        return ("10.77.%d.%d"):format(math.floor(i / 256), i % 256)
    end
    -- the addresses routed to gray, and the expected set for a share
    local function measure()
        local got = {}
        for i = 1, N do
            local res = nginx:get("/", { headers = { ["X-Real-IP"] = addr(i) } })
            got[i] = res.body == "gray" or nil
        end
        return got
    end
    local function expected(share)
        local want = {}
        for i = 1, N do
            want[i] = gray_ffi.bucket(addr(i)) < share or nil
        end
        return want
    end
    -- waits until every worker has said it routes share want: each seen by
    -- its pid, for which worker takes a connection is the kernel's choice
    -- (6 answers in a row once came from one worker while the other still
    -- routed the old share, and the first measure() differed)
    local function share_is(want)
        local right = {}
        harness.wait_for(function()
            for _ = 1, 6 do
                local body = nginx:get("/share").body
                local share, pid = body:match("^(%S+) %S+ (%d+)")
                right[tonumber(pid) or 0] = share == want or nil
                if share ~= want then
                    return false
                end
            end
            for _, pid in ipairs(nginx:worker_pids()) do
                if not right[pid] then
                    return false
                end
            end
            return true
        end, 5, "share " .. want .. " (/share: " .. nginx:get("/share").body .. ")")
    end
    local function count(set)
        local n = 0
        for _ in pairs(set) do
            n = n + 1
        end
        return n
    end

    it("routes each step's buckets, on time, and no member leaves", function()
        mc:set("gray:percent", "90")
        share_is("90")
        local start = os.time()
        mc:set("gray:ramp", start .. " 10% 50%@4s")
        share_is("10")
        local first = measure()
        assert.is_true(os.time() < start + 4, "measured after the step: a slow machine")
        assert.same(expected(1000), first)
        -- the next step at its time (a timer: not a refresh later)
        harness.wait_for(function() return os.time() >= start + 4 end, 6, "the step")
        harness.sleep(0.15)
        share_is("50")
        local second = measure()
        assert.same(expected(5000), second)
        for i in pairs(first) do
            assert.is_true(second[i], addr(i) .. " left the ramp as it rose")
        end
        print(("ramp 10%% -> 50%%: %d then %d of %d addresses"):format(count(first),
                                                                     count(second), N))
        -- stopped: the percentage is back
        mc:cmd("delete gray:ramp\r\n")
        share_is("90")
    end)

    -- gray-admin against mc: its output (stdout and stderr) and exit code
    local function admin(args)
        return sh(BIN .. " --servers 127.0.0.1:" .. mc.port .. " " .. args .. " 2>&1")
    end

    -- gray-admin resume and the ramp, table-driven: { what, ramp value,
    -- halt key and value, resume's arguments, the ramp's start after it
    -- (relative to now; nil: the value unchanged), resume's output pattern }
    local resumes = {
        { "halted 80 s ago, 20 s into the ramp", "-100 10% 50%@60s 100%@1h",
          "gray:halt:gray", "-80 node-a guard: errors", "resume gray", -20,
          "^ramp:     gray:ramp goes on at 10%.00%% %(step 1 of 3%): its later steps come"
          .. " 1m%d+s later %(the halt's duration%)\n$" },
        { "halted 70 s into the ramp: the second step", "-100 10% 50%@60s 100%@1h",
          "gray:halt:gray", "-30 node-a x", "resume gray", -70,
          "goes on at 50%.00%% %(step 2 of 3%): its later steps come %d+s later" },
        { "a ramp written while halted starts at the resume", "-10 10% 50%@60s",
          "gray:halt:gray", "-50 node-a x", "resume 1", 0, "goes on at 10%.00%% %(step 1 of 2%)" },
        { "a halt value without a time moves nothing", "-100 10% 50%@60s",
          "gray:halt:gray", "junk", "resume gray", nil, "^$" },
        { "a halt at time 0 moves nothing", "-100 10% 50%@60s",
          "gray:halt:gray", "0 node-a x", "resume gray", nil, "^$" },
        { "a halt value that starts with a blank moves nothing", "-100 10% 50%@60s",
          "gray:halt:gray", " 1700000000 node-a x", "resume gray", nil, "^$" },
        { "a halt in the future (a clock ahead) moves nothing", "-100 10% 50%@60s",
          "gray:halt:gray", "+100 node-a x", "resume gray", nil, "^$" },
        { "a ramp that does not parse is left as it is", "abc",
          "gray:halt:gray", "-80 node-a x", "resume gray", nil,
          "resume: gray:ramp = 'abc' is not a ramp: left as it is" },
        { "the resume of another target moves nothing", "-100 10% 50%@60s",
          "gray:halt:v2", "-80 node-a x", "resume v2", nil, "^$" },
        { "--halt-key", "-100 10% 50%@60s", "h:gray", "-80 node-a x",
          "--halt-key h resume gray", -20, "goes on at 10%.00%%" },
    }
    for _, c in ipairs(resumes) do
        it("gray-admin resume and the ramp: " .. c[1], function()
            local t = os.time()
            local function at(v)
                return (v:gsub("^([+-]%d+)", function(d) return tostring(t + tonumber(d)) end))
            end
            local ramp_value = at(c[2])
            mc:set("gray:ramp", ramp_value)
            mc:set(c[3], at(c[4]))
            local out, code = admin(c[5])
            assert.equal(0, code, out)
            assert.matches(c[7], out)
            assert.is_false(mc:get(c[3]), "the halt deleted")
            local got = mc:get("gray:ramp")
            if c[6] == nil then
                assert.equal(ramp_value, got)
            else
                local start, rest = got:match("^(%d+)( .*)$")
                assert.equal(ramp_value:match("^%d+( .*)$"), rest)
                assert.is_true(math.abs(tonumber(start) - (t + c[6])) <= 1,
                               "start " .. got .. ", expected about " .. (t + c[6]))
            end
            mc:cmd("delete gray:ramp\r\n")
        end)
    end

    it("gray-admin resume moves --ramp-key's ramp, not gray:ramp", function()
        local t = os.time()
        mc:set("gray:ramp", (t - 100) .. " 10% 50%@60s")
        mc:set("a:ramp", (t - 100) .. " 10% 50%@60s")
        mc:set("gray:halt:gray", (t - 80) .. " node-a x")
        local out, code = admin("--ramp-key a:ramp resume gray")
        assert.equal(0, code, out)
        assert.matches("a:ramp goes on at 10%.00%%", out)
        assert.equal((t - 100) .. " 10% 50%@60s", mc:get("gray:ramp"))
        assert.is_true(math.abs(tonumber(mc:get("a:ramp"):match("^%d+")) - (t - 20)) <= 1)
        mc:cmd("delete gray:ramp\r\ndelete a:ramp\r\n")
    end)

    it("gray-admin resume run again or twice at once moves the ramp by the halt once", function()
        local t = os.time()
        local value = (t - 100) .. " 10% 50%@60s"
        local halt = (t - 80) .. " node-a x"
        local function start_near(want, what)
            local got = tonumber(mc:get("gray:ramp"):match("^(%d+) 10%% 50%%@60s$"))
            assert.is_true(math.abs(got - want) <= 2, what .. ": start " .. got .. ", expected"
                           .. " about " .. want .. " (moved once: " .. (t - 20) .. ")")
        end
        -- run again after a delete that failed: the halt is there still,
        -- claimed up to now (its flags), the ramp moved already
        mc:set("gray:ramp", (t - 20) .. " 10% 50%@60s")
        mc:cmd(("set gray:halt:gray %d 0 %d\r\n%s\r\n"):format(t, #halt, halt))
        local out, code = admin("resume gray")
        assert.equal(0, code, out)
        assert.is_false(mc:get("gray:halt:gray"))
        start_near(t - 20, "run again")
        -- two at once, a few times: one moves it, the other finds the halt
        -- claimed or gone
        local cmd = BIN .. " --servers 127.0.0.1:" .. mc.port .. " resume gray >/dev/null 2>&1"
        for i = 1, 8 do
            mc:set("gray:ramp", value)
            mc:set("gray:halt:gray", halt)
            sh("(" .. cmd .. " & " .. cmd .. " & " .. cmd .. " & wait)")
            assert.is_false(mc:get("gray:halt:gray"))
            start_near(t - 20 + (os.time() - t), "at once, run " .. i)
        end
        mc:cmd("delete gray:ramp\r\n")
    end)

    it("gray-admin status: a halt ahead of this clock freezes at the step in force now", function()
        -- a writer's clock 2 h ahead, or a hostile time: not the last step
        local t = os.time()
        mc:set("gray:ramp", (t - 100) .. " 10% 50%@60s 100%@1h")
        for _, at in ipairs({ t + 7200, 99999999999, "99999999999999999999999" }) do
            mc:set("gray:halt:gray", at .. " node-a clock ahead")
            local out, code = admin("status")
            assert.equal(0, code, out)
            assert.matches("frozen at 50.00%% %(step 2 of 3%) by the halt of gray", out)
        end
        mc:cmd("delete gray:ramp\r\ndelete gray:halt:gray\r\n")
    end)

    it("a halt of gray freezes the ramp; after resume it goes on from that step", function()
        mc:set("gray:percent", "0")
        share_is("0")
        local start = os.time()
        mc:set("gray:ramp", start .. " 10% 50%@8s")
        share_is("10")
        local before = measure()
        assert.is_true(os.time() < start + 8, "measured after the step: a slow machine")
        assert.same(expected(1000), before)
        local out, code = admin("halt gray --reason 'spec: frozen ramp'")
        assert.equal(0, code, out)
        local halted_at = tonumber(mc:get("gray:halt:gray"):match("^%d+"))
        -- past the clock's step: still 10%, frozen
        harness.wait_for(function() return os.time() >= start + 9 end, 12, "the step's time")
        share_is("10")
        assert.matches("frozen at 10.00%% %(step 1 of 2%) by the halt of gray", admin("status"))
        out, code = admin("resume gray")
        local resumed_at = os.time()
        assert.equal(0, code, out)
        assert.matches("ramp:     gray:ramp goes on at 10.00%% %(step 1 of 2%): its later steps"
                       .. " come %d+s later", out)
        assert.is_false(mc:get("gray:halt:gray"))
        -- the start moved on by the halt's duration (written with CAS)
        local moved = tonumber(mc:get("gray:ramp"):match("^(%d+) 10%% 50%%@8s$"))
        assert.is_true(math.abs(moved - (start + resumed_at - halted_at)) <= 1,
                       "start " .. start .. " moved to " .. moved)
        -- just after the resume: the share at the halt's time, the same members
        -- (once every worker has read the halt's end, each by its pid: answers
        -- in a row can all come from one worker)
        local resumed = {}
        harness.wait_for(function()
            local pid, halted = nginx:get("/share").body:match("^%S+ %S+ (%d+) (%a+)")
            resumed[tonumber(pid) or 0] = halted == "false" or nil
            for _, p in ipairs(nginx:worker_pids()) do
                if not resumed[p] then
                    return false
                end
            end
            return true
        end, 5, "every worker to read the resume")
        share_is("10")
        local after = measure()
        assert.is_true(os.time() < moved + 8, "measured after the step: a slow machine")
        assert.same(before, after)
        assert.matches("in force: 10.00%% %(step 1 of 2%)", admin("status"))
        -- the next step, later by the halt's duration; nobody left
        harness.wait_for(function() return os.time() >= moved + 8 end, 14, "the moved step")
        harness.sleep(0.15)
        share_is("50")
        local later = measure()
        assert.same(expected(5000), later)
        for i in pairs(before) do
            assert.is_true(later[i], addr(i) .. " left the ramp")
        end
        -- a resume without a ramp, or of another target, changes no ramp
        mc:cmd("delete gray:ramp\r\n")
        admin("halt gray")
        out = admin("resume gray")
        assert.equal("", out)
        assert.is_false(mc:get("gray:ramp"))
        share_is("0")
    end)

    it("gray-admin ramp writes what the routers read; ramp stop deletes it", function()
        mc:set("gray:percent", "3")
        local out, code = admin("ramp '40% 60%@1h'")
        assert.equal(0, code, out)
        assert.matches("in force: 40.00%% %(step 1 of 2%)", out)
        assert.matches("next:     60.00%% at %d+%-%d+%-%d+ [%d:]+ UTC %(in 1h%)", out)
        assert.matches("^%d+ 40%% 60%%@1h$", mc:get("gray:ramp"))
        share_is("40")
        out, code = admin("ramp")
        assert.equal(0, code, out)
        assert.matches("in force: 40.00%%", out)
        out, code = admin("ramp stop")
        assert.equal(0, code, out)
        assert.is_false(mc:get("gray:ramp"))
        share_is("3")
        out, code = admin("ramp stop")
        assert.equal(0, code, out)
        assert.matches("no ramp gray:ramp %(nothing stopped%)", out)
        out, code = admin("--ramp-key a:ramp ramp '7%'")
        assert.equal(0, code, out)
        assert.matches("^%d+ 7%%$", mc:get("a:ramp"))
        mc:cmd("delete a:ramp\r\n")
    end)

    local refusals = {
        { "ramp '5% 2%@1m'", "ramp: ramp steps out of order at '2%@1m'" },
        { "ramp '5% 25%@10'", "ramp: bad ramp step at '25%@10'" },
        { "ramp '101%'", "ramp: number out of range at '101%'" },
        { "ramp ''", "ramp: bad ramp step" },
        { "ramp 5% 25%@10m", "ramp: expected ramp \"<schedule>\"" },
        { "ramp '5%' --ttl 3", "--ttl is for add" },
        { "--ramp-key 'a b' ramp '5%'", "bad --ramp-key" },
        { "status extra", "status: expected status" },
        { "status --id uid=1", "status: expected status" },
    }
    for _, c in ipairs(refusals) do
        it("gray-admin " .. c[1] .. ": refused, nothing written", function()
            local out, code = admin(c[1])
            assert.equal(2, code, out)
            assert.truthy(out:find(c[2], 1, true), out)
            assert.is_false(mc:get("gray:ramp"))
        end)
    end

    it("gray-admin status prints the halts, the ramp, the percentage and the lists", function()
        local t = os.time()
        mc:set("gray:percent", "12.5")
        mc:set("gray:halt:v2", (t - 90) .. " node-a 5xx 0.21 over stable's 0.01 (p=1e-9)")
        mc:set("gray:list:dev", "abc\ndef v2\n# a comment\nbad line here\n")
        mc:set("gray:ranges", "10.0.0.0/8\n")
        mc:set("gray:ramp", (t - 30) .. " 10% 20%@1m 100%@1h")
        local out, code = admin("status --targets 'v2=@v2, v3=@v3' --lists dev")
        assert.equal(0, code, out)
        local want = {
            "halt:     gray:halt:gray %(none: routed%)",
            "halt:     gray:halt:v2: halted since [%d%- :]+ UTC %(1m3%ds ago%) by node%-a: 5xx"
                .. " 0.21 over stable's 0.01 %(p=1e%-9%)",
            "halt:     gray:halt:v3 %(none: routed%)",
            "in force: 10.00%% %(step 1 of 3%)",
            "next:     20.00%% at [%d%- :]+ UTC %(in 3%ds%)",
            "percent:  gray:percent = 12.50 %(not in force: the ramp replaces it%)",
            "ranges:   gray:ranges: version %d+, 1 entries %(0 lines skipped%)",
            "list:     gray:list:dev: version %d+, 2 entries %(1 lines skipped%)",
        }
        for _, pat in ipairs(want) do
            assert.matches(pat, out)
        end
        -- a halt of gray freezes the ramp at the step of the halt's time
        mc:set("gray:halt:gray", (t - 10) .. " node-b guard: latency")
        out = admin("status")
        assert.matches("frozen at 10.00%% %(step 1 of 3%) by the halt of gray since", out)
        for _, k in ipairs({ "gray:halt:gray", "gray:halt:v2", "gray:list:dev", "gray:ranges",
                             "gray:ramp" }) do
            mc:cmd("delete " .. k .. "\r\n")
        end
        out = admin("status")
        assert.matches("ramp:     gray:ramp %(none: the percentage is in force%)", out)
        assert.matches("percent:  gray:percent = 12.50\n", out)
        assert.matches("ranges:   gray:ranges %(none%)", out)
    end)

    it("gray-admin check takes the ramp's share in force for the percentage", function()
        mc:set("gray:percent", "5")
        -- an address in 40% but not in 5%
        local ip
        for i = 1, 1000 do
            local a = "10.88." .. math.floor(i / 256) .. "." .. i % 256
            local b = gray_ffi.bucket(a)
            if b >= 500 and b < 4000 then
                ip = a
                break
            end
        end
        local out = admin("check " .. ip)
        assert.matches("decision: stable %(reason default%)", out)
        admin("ramp '40% 60%@1h'")
        out = admin("check " .. ip)
        assert.matches("ramp:     gray:ramp: 40.00%% in force %(step 1 of 2%): replaces the"
                       .. " percentage", out)
        assert.matches("decision: gray %(reason percent%)", out)
        admin("ramp stop")
    end)

    it("logs a bad ramp once and keeps the last good one", function()
        mc:set("gray:percent", "0")
        mc:set("gray:ramp", os.time() .. " 20%")
        share_is("20")
        nginx:new_log_lines()
        mc:set("gray:ramp", os.time() .. " 20% 10%@1m")
        harness.sleep(1)
        share_is("20")
        local log = nginx:new_log_lines()
        assert.truthy(log:find("gray:ramp: '%d+ 20%% 10%%@1m' is not a ramp: ramp steps out of"
                               .. " order at '10%%@1m'"), log)
        mc:cmd("delete gray:ramp\r\n")
        share_is("0")
    end)
end)

-- A worker started by a reload decides with the node's percentage and ramp
-- from its first request: they come from the metrics dict's copy (as a
-- halt does, gray.halt.seed), not from its first refresh. Before, a new
-- worker's first decision read no share at all ("default"): a member left
-- the percentage (and the ramp) at each reload, once per worker.
describe("the share over a reload (2 workers, the metrics dict)", function()
    local mc, nginx
    local ROUNDS, N = 3, 12
    setup(function()
        mc = harness.memcached({})
        nginx = harness.nginx({ memcached_port = mc.port, workers = 2,
                                http = "lua_shared_dict gray_metrics 1m;", servers = [[
  server {
    listen 127.0.0.1:$PORT;
    location / {
        content_by_lua_block {
            local r = package.loaded.spec_reload_router
            if not r then
                r = assert(require("gray").new({
                    memcached = "127.0.0.1:$MC", trusted = "127.0.0.1", ranges_key = false,
                    cache_ttl = 0, lists_dir = "$LOGDIR/images", debug_header = "X-Gray-Debug",
                    timeout = 2000,
                }))
                package.loaded.spec_reload_router = r
            end
            r:exec()
        }
    }
    location @server      { return 200 "stable"; }
    location @server_test { return 200 "gray"; }
  }
]] })
    end)
    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)
    after_each(function()
        assert.same({}, nginx:bad_new_log_lines())
    end)

    -- N addresses in the share (percent * 100) and out of the share below
    -- (default 0), and what each gets
    local function members(share, below)
        local out, i = {}, 0
        while #out < N do
            i = i + 1
            local a = ("10.78.%d.%d"):format(math.floor(i / 256), i % 256)
            local b = gray_ffi.bucket(a)
            if b < share and b >= (below or 0) then
                out[#out + 1] = a
            end
        end
        return out
    end
    local function answers(addrs, want)
        local bad = {}
        for _, a in ipairs(addrs) do
            local res = nginx:get("/", { headers = { ["X-Real-IP"] = a } })
            local got = res.headers["x-gray-debug"]
            if got ~= want then
                bad[#bad + 1] = a .. " " .. tostring(got)
            end
        end
        return bad
    end
    -- every worker running routes addrs as want (each seen by its pid is
    -- not needed: a worker that has not decided yet is what a reload makes)
    local function reloads(addrs, want)
        local bad = {}
        for round = 1, ROUNDS do
            nginx:reload()
            -- only new workers: each one's first request is a first decision
            harness.wait_for(function() return #nginx:worker_pids() == 2 end, 10,
                             "the old workers to exit")
            for _, b in ipairs(answers(addrs, want)) do
                bad[#bad + 1] = "round " .. round .. ": " .. b
            end
        end
        return bad
    end

    it("keeps the percentage from a new worker's first decision", function()
        mc:set("gray:percent", "50")
        local addrs = members(5000)
        harness.wait_for(function() return #answers(addrs, "@server_test; percent") == 0 end,
                         5, "the percentage")
        assert.same({}, reloads(addrs, "@server_test; percent"))
    end)

    it("keeps the ramp from a new worker's first decision", function()
        -- addresses in the ramp's 60% and out of the percentage's 50%: an
        -- answer "percent" proves that the worker giving it has read the
        -- ramp, so the node's copy holds it, whatever the other worker
        -- holds. (Before, the addresses were in both and a wait for "no
        -- share" came first: it could pass on one worker's answers while
        -- the other still had the 50% of the case before, whose answers
        -- then passed the wait for the ramp before any worker had read it:
        -- the new workers rightly took the node's 0% and no ramp.)
        local addrs = members(6000, 5000)
        mc:set("gray:percent", "50")
        mc:set("gray:ramp", os.time() .. " 60% 70%@1h")
        harness.wait_for(function() return #answers(addrs, "@server_test; percent") == 0 end,
                         5, "the ramp")
        assert.same({}, reloads(addrs, "@server_test; percent"))
    end)

    it("drops a copied share the store no longer has", function()
        -- the copy says 60% (the ramp); the ramp and the percentage are
        -- gone when the new workers start: their first refresh drops it
        local addrs = members(3000)
        mc:cmd("delete gray:ramp\r\n")
        mc:cmd("delete gray:percent\r\n")
        harness.wait_for(function() return #answers(addrs, "@server; default") == 0 end,
                         5, "no share")
        nginx:reload()
        harness.wait_for(function() return #nginx:worker_pids() == 2 end, 10,
                         "the old workers to exit")
        harness.wait_for(function() return #answers(addrs, "@server; default") == 0 end,
                         5, "no share in the new workers")
    end)
end)
