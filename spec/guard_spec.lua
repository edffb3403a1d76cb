-- gray.guard's settings and verdict, without a server: the parse of
-- $gray_guard (hostile values refused with the setting named), the z-test
-- against known values, table-driven verdicts (each rule alone must halt,
-- and not below min_requests), and the false-halt rate of the defaults over
-- many simulated A/A windows (gray identical to stable), with p95 estimated
-- from the same histogram buckets as gray.outcome's.

local guard = require "gray.guard"

-- gray.outcome's bucket bounds and its p95 estimate (linear in a bucket)
local BOUNDS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local function p95_of(counts, n)
    local rank, cum = 0.95 * n, 0
    for b = 1, #BOUNDS + 1 do
        local v = counts[b] or 0
        if cum + v >= rank and v > 0 then
            if b > #BOUNDS then
                return BOUNDS[#BOUNDS]
            end
            local lo = b == 1 and 0 or BOUNDS[b - 1]
            return lo + (BOUNDS[b] - lo) * (rank - cum) / v
        end
        cum = cum + v
    end
    return BOUNDS[#BOUNDS]
end

local function bucket_of(t)
    for i = 1, #BOUNDS do
        if t <= BOUNDS[i] then
            return i
        end
    end
    return #BOUNDS + 1
end

describe("gray.guard.parse", function()
    local defaults = { error_delta = 0.03, latency_ratio = 2, min_requests = 200, window = 60,
                       node = false }
    -- { input, settings or nil, the error's text }
    local cases = {
        { "on", defaults },
        { true, defaults },
        { "error_delta=0.05", { error_delta = 0.05, latency_ratio = 2, min_requests = 200,
                                window = 60, node = false } },
        { "on, window=10, node=web-1", { error_delta = 0.03, latency_ratio = 2,
                                         min_requests = 200, window = 10, node = "web-1" } },
        { " error_delta = 0.02 , latency_ratio=3, min_requests=50, window=30 ",
          { error_delta = 0.02, latency_ratio = 3, min_requests = 50, window = 30,
            node = false } },
        { { window = 5 }, { error_delta = 0.03, latency_ratio = 2, min_requests = 200,
                            window = 5, node = false } },
        { "window=61", nil, "window must be an integer from 1 to 60" },
        { "window=0.5", nil, "window must be an integer" },
        { "min_requests=0", nil, "min_requests must be" },
        { "error_delta=-1", nil, "error_delta must be a number from 0 to 1" },
        { "error_delta=nan", nil, "error_delta must be" },
        { "latency_ratio=0.5", nil, "latency_ratio must be a number from 1" },
        { "latency_ratio=x", nil, "latency_ratio must be" },
        { "p=0.01", nil, "unknown setting 'p'" },
        { "error_delta", nil, "bad setting 'error_delta'" },
        { "node=a b", nil, "bad setting" },
        { "node=a/b", nil, "node must be" },
        { 5, nil, "must be 'on'" },
        { { window = "x" }, nil, "window must be" },
    }
    for _, c in ipairs(cases) do
        it("takes " .. tostring(c[1]) .. (c[2] and "" or " as an error"), function()
            local g, err = guard.parse(c[1])
            if c[2] then
                assert.same(c[2], g)
            else
                assert.is_nil(g)
                assert.truthy(err:find(c[3], 1, true), err)
            end
        end)
    end
end)

describe("gray.guard.z_test", function()
    it("matches known values", function()
        -- 60/300 vs 30/300: pooled 0.15, se 0.02915, z 3.43
        local z, p = guard.z_test(60, 300, 30, 300)
        assert.near(3.4300, z, 1e-3)
        assert.near(0.000302, p, 2e-6)
        z, p = guard.z_test(10, 100, 10, 100)
        assert.equal(0, z)
        assert.equal(1, p)
        assert.same({ 0, 1 }, { guard.z_test(0, 100, 0, 100) })
    end)
end)

describe("gray.guard.judge", function()
    local g = assert(guard.parse("on"))
    -- { gray, stable, halts?, reason's start }
    local cases = {
        { { n = 1000, e = 200, p95 = 0.01 }, { n = 1000, e = 5, p95 = 0.01 }, "errors: " },
        -- past the delta but not significant (few requests)
        { { n = 200, e = 10, p95 = 0.01 }, { n = 200, e = 4, p95 = 0.01 }, nil },
        -- significant but within the delta
        { { n = 100000, e = 1500, p95 = 0.01 }, { n = 100000, e = 1000, p95 = 0.01 }, nil },
        -- below min_requests on either side
        { { n = 199, e = 199, p95 = 5 }, { n = 1000, e = 0, p95 = 0.01 }, nil },
        { { n = 1000, e = 500, p95 = 5 }, { n = 199, e = 0, p95 = 0.01 }, nil },
        { { n = 300, e = 0, p95 = 0.25 }, { n = 300, e = 0, p95 = 0.05 }, "latency: " },
        { { n = 300, e = 0, p95 = 0.099 }, { n = 300, e = 0, p95 = 0.05 }, nil },
        { { n = 300, e = 0, p95 = nil }, { n = 300, e = 0, p95 = 0.05 }, nil },
        -- stable worse: never a halt
        { { n = 1000, e = 0, p95 = 0.01 }, { n = 1000, e = 500, p95 = 1 }, nil },
    }
    for i, c in ipairs(cases) do
        it("case " .. i .. (c[3] and (": " .. c[3]) or ": no halt"), function()
            local reason = guard.judge(c[1], c[2], g)
            if c[3] then
                assert.truthy(reason and reason:find("^" .. c[3]), reason)
            else
                assert.is_nil(reason)
            end
        end)
    end
end)

-- The binomial distribution of n trials at p: P[k], k = 0..n.
local function pmf(n, p)
    local lf, t = { [0] = 0 }, {}
    for i = 1, n do
        lf[i] = lf[i - 1] + math.log(i)
    end
    for k = 0, n do
        t[k] = math.exp(lf[n] - lf[k] - lf[n - k] + k * math.log(p) + (n - k) * math.log(1 - p))
    end
    return t
end

-- The exact probability that the error rule halts an A/A window of n
-- requests a side at 5xx rate r: the sum over both error counts.
local function error_halt_rate(g, n, r)
    local P, sum = pmf(n, r), 0
    for e1 = 0, n do
        if P[e1] > 1e-16 then
            for e2 = 0, n do
                if P[e2] > 1e-16 and (e1 - e2) / n > g.error_delta
                   and guard.z_test(e1, n, e2, n) > guard.Z_CRIT then
                    sum = sum + P[e1] * P[e2]
                end
            end
        end
    end
    return sum
end

describe("the defaults on A/A windows (gray identical to stable)", function()
    it("halt for errors with the probabilities of the README (exact, per window)", function()
        local g = assert(guard.parse("on"))
        -- { n, 5xx rate, at most }: p < 0.001 bounds every case; the delta
        -- makes it far rarer at usual rates
        local cases = {
            { 200, 0.001, 1e-12 }, { 200, 0.01, 1e-5 }, { 200, 0.05, 1e-3 },
            { 500, 0.01, 1e-5 }, { 500, 0.05, 1e-3 }, { 2000, 0.01, 1e-12 },
            { 2000, 0.05, 1e-4 }, { 2000, 0.1, 1e-3 },
        }
        local lines = {}
        for _, c in ipairs(cases) do
            local p = error_halt_rate(g, c[1], c[2])
            lines[#lines + 1] = ("n=%d 5xx=%g%%: %.2g"):format(c[1], c[2] * 100, p)
            assert.is_true(p <= c[3], lines[#lines])
        end
        print("\n  A/A error halts per window: " .. table.concat(lines, "; "))
    end)

    -- Each window: gray and stable draw from one distribution: 1% 5xx, a
    -- response time log-normal around 20 ms with a tail, n requests each
    -- side (min_requests and above). Seeded: the same run every time.
    local function normal()
        return math.sqrt(-2 * math.log(1 - math.random())) * math.cos(2 * math.pi * math.random())
    end
    local function side(n, err_rate)
        local e, counts = 0, {}
        for _ = 1, n do
            if math.random() < err_rate then
                e = e + 1
            end
            local t = 0.02 * math.exp(0.8 * normal())
            local b = bucket_of(t)
            counts[b] = (counts[b] or 0) + 1
        end
        return { n = n, e = e, p95 = p95_of(counts, n) }
    end

    it("halts practically never in simulated windows (latency and errors)", function()
        math.randomseed(14)
        local g = assert(guard.parse("on"))
        local windows, halts, err_halts, lat_halts = 0, 0, 0, 0
        for _, n in ipairs({ 200, 500, 2000 }) do
            for _, rate in ipairs({ 0.001, 0.01, 0.05 }) do
                for _ = 1, 150 do
                    local reason = guard.judge(side(n, rate), side(n, rate), g)
                    windows = windows + 1
                    if reason then
                        halts = halts + 1
                        if reason:find("^errors") then
                            err_halts = err_halts + 1
                        else
                            lat_halts = lat_halts + 1
                        end
                    end
                end
            end
        end
        print(("\n  A/A: %d halts in %d windows (errors %d, latency %d)"):format(
              halts, windows, err_halts, lat_halts))
        assert.equal(0, halts)
    end)

    it("does halt at the minimum when gray is truly worse (the same simulation)", function()
        math.randomseed(15)
        local g = assert(guard.parse("on"))
        local caught = 0
        for _ = 1, 100 do
            if guard.judge(side(200, 0.2), side(200, 0.01), g) then
                caught = caught + 1
            end
        end
        assert.equal(100, caught)
    end)
end)
