-- gray.cache, the identities' decision cache: plain Lua, no nginx needed.

local gray_cache = require "gray.cache"

describe("gray.cache", function()
    it("answers fresh, then stale after the ttl, then nothing for an absent key", function()
        local c = gray_cache.new(10)
        c:set("uid:1", "@gray", 1, 100)
        c:set("uid:2", false, 1, 100)
        assert.same({ "@gray", nil, 100 }, { c:get("uid:1", 100.5) })
        assert.same({ false, nil, 100 }, { c:get("uid:2", 101) })
        assert.same({ nil, "@gray", 100 }, { c:get("uid:1", 101.5) })
        assert.same({ nil, false, 100 }, { c:get("uid:2", 101.5) })
        assert.same({}, { c:get("uid:3", 100) })
    end)

    it("treats a ttl <= 0 as stale at once (kept for outages)", function()
        local c = gray_cache.new(10)
        c:set("k", "@gray", -0.001, 50)
        assert.same({ nil, "@gray", 50 }, { c:get("k", 50) })
    end)

    it("replaces an entry in place", function()
        local c = gray_cache.new(10)
        c:set("k", "@a", 1, 10)
        c:set("k", false, 5, 20)
        assert.same({ false, nil, 20 }, { c:get("k", 21) })
    end)

    -- an entry survives when it is used again within size / 2 insertions
    -- (one generation); here 10 hot keys come back every 10 requests, with
    -- at most 20 insertions in between
    it("holds at most size entries, and keeps the ones in use", function()
        local c = gray_cache.new(100)
        for i = 1, 10 do
            c:set("hot" .. i, "@gray", 1000, 0)
        end
        -- thousands of one-off keys, the hot ones used all along
        for i = 1, 5000 do
            c:set("cold" .. i, false, 1000, 0)
            local hot = "hot" .. (i % 10 + 1)
            assert.equal("@gray", (c:get(hot, 1)), hot .. " evicted at " .. i)
        end
        local n = 0
        for _ in pairs(c.young) do n = n + 1 end
        for _ in pairs(c.old) do n = n + 1 end
        assert.is_true(n <= 100, n .. " entries")
        -- an old one-off key is gone
        assert.same({}, { c:get("cold1", 1) })
    end)

    it("moves a hit in the old generation back to the young one", function()
        local c = gray_cache.new(4)         -- two per generation
        c:set("a", 1, 100, 0)
        c:set("b", 2, 100, 0)
        c:set("c", 3, 100, 0)               -- a, b become old
        assert.equal(1, (c:get("a", 1)))    -- a moves back
        c:set("d", 4, 100, 0)               -- c, a become old; b is dropped
        assert.equal(1, (c:get("a", 1)))
        assert.same({}, { c:get("b", 1) })
    end)
    -- against a model (a table of entries), over a generated mix of sets,
    -- gets, hits in the old generation, stale entries and false decisions
    it("agrees with a model over generated sets and gets", function()
        math.randomseed(16)
        local c = gray_cache.new(8)
        local model = {}        -- key -> { decision, expires, stored_at }, all ever set
        local now = 0
        for _ = 1, 5000 do
            now = now + math.random() * 0.2
            local key = "k" .. math.random(1, 12)
            if math.random() < 0.4 then
                local d = math.random() < 0.3 and false or "@t" .. math.random(1, 3)
                local ttl = math.random() < 0.2 and 0 or math.random() * 2
                c:set(key, d, ttl, now)
                model[key] = { d, now + ttl, now }
            else
                local d, stale, at = c:get(key, now)
                local m = model[key]
                if d ~= nil or stale ~= nil then
                    -- evicted entries may be gone; present ones must be right
                    assert.is_truthy(m, key)
                    assert.equal(m[3], at)
                    if m[2] < now then
                        assert.same({ nil, m[1] }, { d, stale })
                    else
                        assert.same({ m[1], nil }, { d, stale })
                    end
                end
            end
        end
    end)
end)

describe("gray.cache.lru", function()
    local DECISIONS = { "@gray", "@a", "@b", "@c" }
    local saved_ngx, clock = _G.ngx, 1000.25
    setup(function()
        -- resty.lrucache reads the clock through ngx.now
        _G.ngx = { now = function() return clock end }
        package.loaded["resty.lrucache"] = nil
    end)
    teardown(function()
        _G.ngx = saved_ngx
        package.loaded["resty.lrucache"] = nil
    end)

    it("keeps stored_at to the fraction of a second, fresh then stale", function()
        local c = gray_cache.lru(10, DECISIONS)
        clock = 1000.25
        c:set("192.0.2.1", "@gray", 1, 1000.25)
        c:set("192.0.2.2", false, 1, 1000.25)
        assert.same({ "@gray", nil, 1000.25 }, { c:get("192.0.2.1") })
        assert.same({ false, nil, 1000.25 }, { c:get("192.0.2.2") })
        clock = 1001.5
        assert.same({ nil, "@gray", 1000.25 }, { c:get("192.0.2.1") })
        assert.same({}, { c:get("192.0.2.3") })
    end)

    it("is fresh until stored_at + ttl when stored_at is past (a shared entry)", function()
        local c = gray_cache.lru(10, DECISIONS)
        clock = 2000.5
        c:set("k", "@gray", 1, 1999.75)     -- stored 0.75 s ago: fresh 0.25 s more
        assert.same({ "@gray", nil, 1999.75 }, { c:get("k") })
        clock = 2000.8
        assert.same({ nil, "@gray", 1999.75 }, { c:get("k") })
    end)

    it("keeps today's times to the millisecond, and only the decisions it was given", function()
        local c = gray_cache.lru(10, DECISIONS)
        clock = 1764882000.123
        c:set("k", "@c", 60, clock)
        c:set("x", "@elsewhere", 60, clock)
        local d, stale, stored_at = c:get("k")
        assert.same({ "@c", nil }, { d, stale })
        assert.is_true(math.abs(stored_at - 1764882000.123) < 1e-6, tostring(stored_at))
        assert.same({}, { c:get("x") })
    end)

    it("holds at most size entries, the least recently used going first", function()
        local c = gray_cache.lru(2, DECISIONS)
        clock = 10
        c:set("a", "@a", 5, 10)
        c:set("b", "@b", 5, 10)
        c:get("a")
        c:set("c", "@c", 5, 10)
        assert.same({}, { c:get("b") })
        assert.same({ "@a", nil, 10 }, { c:get("a") })
    end)

    -- gray.client's probe calls cache:get() on every request: an own field
    -- is one slot read in the trace, a metatable's __index a walk of three
    -- tables (about 30 instructions, make bench)
    it("has get as its own field, the module's lru_get", function()
        local c = gray_cache.lru(4, DECISIONS)
        assert.equal(gray_cache.lru_get, rawget(c, "get"))
        c:set("a", "@a", 1, 50)
        assert.same({ "@a", nil, 50 }, { c:get("a", 50.5) })
    end)

    it("reads no clock when given one", function()
        local c = gray_cache.lru(4, DECISIONS)
        local saved = _G.ngx.now
        c:set("a", "@a", 1, 50)
        _G.ngx.now = function() error("clock read") end
        local ok, err = pcall(function()
            c:set("b", "@b", 1, 50)
            assert.same({ "@a", nil, 50 }, { c:get("a", 50.5) })
            assert.same({ nil, "@b", 50 }, { c:get("b", 51.5) })
        end)
        _G.ngx.now = saved
        assert(ok, err)
    end)

    -- the same entries, evicted in the same order, as resty.lrucache (which
    -- it replaced) keeping each decision with its stored_at: a generated mix
    -- of new keys past the size, hits, stale entries and refused decisions,
    -- over sizes from 1 to 9, and one past the slots it starts with (1024)
    it("agrees with resty.lrucache over generated sets and gets", function()
        math.randomseed(17)
        local lrucache = require "resty.lrucache"
        local known = { ["@gray"] = true, ["@a"] = true, ["@b"] = true, ["@c"] = true }
        for _, size in ipairs({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 2500 }) do
            local c, ref = gray_cache.lru(size, DECISIONS), lrucache.new(size)
            clock = 100
            local evicted = 0
            for step = 1, math.max(3000, 12 * size) do
                clock = clock + math.random(0, 300) / 1000
                local key = "k" .. math.random(1, size + math.max(4, math.floor(size / 4)))
                local r = math.random()
                if r < 0.45 then
                    local d = ({ false, "@gray", "@a", "@c", "@elsewhere" })[math.random(5)]
                    local ttl = math.random() < 0.3 and -0.001 or math.random(1, 2000) / 1000
                    -- a shared entry's stored_at may be past
                    local at = math.random() < 0.2 and clock - math.random(0, 500) / 1000 or clock
                    c:set(key, d, ttl, at)
                    if d == false or known[d] then
                        ref:set(key, { d, at }, at + ttl - clock)
                    end
                else
                    local d, stale, at = c:get(key, math.random() < 0.5 and clock or nil)
                    local rv, rstale = ref:get(key)
                    local want = rv or rstale
                    if want then
                        assert.same({ rv and rv[1], rstale and rstale[1], want[2] },
                                    { d, stale, at }, "size " .. size .. " step " .. step)
                    else
                        assert.same({}, { d, stale, at }, "size " .. size .. " step " .. step)
                        evicted = evicted + 1
                    end
                end
            end
            assert.is_true(evicted > 0)
            local n = 0
            for _ in pairs(c.slot) do n = n + 1 end
            assert.is_true(n <= size, n .. " entries in a cache of " .. size)
        end
    end)
end)
