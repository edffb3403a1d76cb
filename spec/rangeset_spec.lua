-- The ranges list through gray.ffi: new_rangeset (the list compiler of
-- rangelist.c and the valued set of ipset.c) and rangeset_find.
-- Table-driven; hostile lines beside happy ones; then random lists checked
-- against a naive scan over their lines.

local gray = require "gray.ffi"

local new_rangeset = gray.new_rangeset
local rangeset_find = gray.rangeset_find
local fmt = string.format
local concat = table.concat
local rep = string.rep

local NAMES = { "1", "v2", "v3" }

local function show(v)
    if type(v) ~= "string" then
        return "<" .. type(v) .. " " .. tostring(v) .. ">"
    end
    if #v > 60 then
        v = v:sub(1, 40) .. "...(" .. #v .. " bytes)"
    end
    return '"' .. v:gsub("[%c\127-\255\"\\]", function(c)
        return fmt("\\%d", c:byte())
    end) .. '"'
end

-- { name, list text, { counts }, { { address, target index or nil }, ... } }
-- counts: count, bad, unknown, and when given bad_lines / unknown_lines / lines.
local cases = {
    { "nested CIDRs: the most specific wins",
      "10.0.0.0/8\n10.1.0.0/16 v2\n10.1.2.0/24 v3\n10.1.2.3\n",
      { count = 4, bad = 0, unknown = 0 },
      { { "10.0.0.1", 1 }, { "10.1.0.1", 2 }, { "10.1.2.1", 3 }, { "10.1.2.3", 1 },
        { "10.1.2.4", 3 }, { "10.1.2.255", 3 }, { "10.1.3.0", 2 }, { "10.1.255.255", 2 },
        { "10.2.0.0", 1 }, { "10.255.255.255", 1 }, { "9.255.255.255", nil },
        { "11.0.0.0", nil } } },
    { "nested CIDRs in the reverse order",
      "10.1.2.3\n10.1.2.0/24 v3\n10.1.0.0/16 v2\n10.0.0.0/8\n",
      { count = 4, bad = 0, unknown = 0 },
      { { "10.0.0.1", 1 }, { "10.1.0.1", 2 }, { "10.1.2.1", 3 }, { "10.1.2.3", 1 },
        { "10.1.2.4", 3 }, { "10.1.3.0", 2 }, { "10.2.0.0", 1 }, { "11.0.0.0", nil } } },
    { "nested ranges that end together",
      "10.0.0.0/8 v2\n10.255.255.0/24 v3\n10.255.255.255\n11.0.0.0/8 v2\n",
      { count = 4, bad = 0, unknown = 0 },
      { { "10.255.254.255", 2 }, { "10.255.255.0", 3 }, { "10.255.255.254", 3 },
        { "10.255.255.255", 1 }, { "11.0.0.0", 2 } } },
    { "equal CIDRs: the later line wins",
      "10.0.0.0/8 v2\n10.0.0.0/8 v3\n",
      { count = 2, bad = 0, unknown = 0 },
      { { "10.0.0.0", 3 }, { "10.255.255.255", 3 } } },
    { "equal CIDRs, the other way round",
      "10.0.0.0/8 v3\n10.0.0.0/8 v2\n",
      { count = 2, bad = 0, unknown = 0 },
      { { "10.0.0.0", 2 }, { "10.9.9.9", 2 } } },
    { "a CIDR with host bits set is its network, and equal to it",
      "10.0.0.0/8 v2\n10.9.9.9/8 v3\n",
      { count = 2, bad = 0, unknown = 0 },
      { { "10.0.0.0", 3 }, { "10.9.9.9", 3 }, { "11.0.0.0", nil } } },
    { "duplicates", rep("192.168.2.20 v2\n", 1000),
      { count = 1000, bad = 0, unknown = 0 },
      { { "192.168.2.20", 2 }, { "192.168.2.21", nil }, { "192.168.2.19", nil } } },
    { "adjacent ranges with different targets",
      "10.0.0.0/25 v2\n10.0.0.128/25 v3\n10.0.1.0/24\n",
      { count = 3, bad = 0, unknown = 0 },
      { { "10.0.0.0", 2 }, { "10.0.0.127", 2 }, { "10.0.0.128", 3 }, { "10.0.0.255", 3 },
        { "10.0.1.0", 1 }, { "10.0.1.255", 1 }, { "10.0.2.0", nil } } },
    { "mixed families",
      "192.168.0.0/16 v2\n2001:db8::/32 v3\n::1\n2001:db8:1::/48\n",
      { count = 4, bad = 0, unknown = 0 },
      { { "192.168.2.20", 2 }, { "2001:db8::1", 3 }, { "2001:db8:1::1", 1 },
        { "2001:db8:2::", 3 }, { "::1", 1 }, { "::2", nil }, { "2001:db9::", nil },
        { "::ffff:192.168.2.20", 2 }, { "192.169.0.0", nil } } },
    { "0.0.0.0/0 and ::/0: each covers its own family only",
      "0.0.0.0/0 v2\n::/0 v3\n",
      { count = 2, bad = 0, unknown = 0 },
      { { "0.0.0.0", 2 }, { "255.255.255.255", 2 }, { "::ffff:1.2.3.4", 2 }, { "::", 3 },
        { "::1", 3 }, { "::fffe:ffff:ffff", 3 }, { "::1:0:0:0", 3 },
        { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 3 } } },
    { "::/0 never covers an IPv4 address", "::/0\n",
      { count = 1, bad = 0, unknown = 0 },
      { { "1.2.3.4", nil }, { "0.0.0.0", nil }, { "255.255.255.255", nil }, { "::", 1 },
        { "::fffe:ffff:ffff", 1 }, { "::1:0:0:0", 1 } } },
    { "0.0.0.0/0 never covers an IPv6 address", "0.0.0.0/0\n",
      { count = 1, bad = 0, unknown = 0 },
      { { "1.2.3.4", 1 }, { "::", nil }, { "::1", nil }, { "2001:db8::1", nil } } },
    { "IPv6 CIDRs around the IPv4 block: the longest prefix wins",
      "::/0 v2\n::/80 v3\n::/8\n",
      { count = 3, bad = 0, unknown = 0 },
      { { "::1", 3 }, { "::fffe:ffff:ffff", 3 }, { "::1:0:0:0", 1 }, { "ff::", 1 },
        { "100::", 2 }, { "10.0.0.1", nil } } },
    { "host bits make an IPv6 CIDR hold the IPv4 block: it is cut out",
      "2001:db8::/1 v2\n8000::/1 v3\n",
      { count = 2, bad = 0, unknown = 0 },
      { { "::1", 2 }, { "2001:db8::1", 2 }, { "7fff::", 2 }, { "::1:0:0:0", 2 },
        { "8000::", 3 }, { "10.0.0.1", nil }, { "::ffff:10.0.0.1", nil } } },
    { "a single address at each end of the space",
      "0.0.0.0 v2\n255.255.255.255 v3\n::\nffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff v2\n",
      { count = 4, bad = 0, unknown = 0 },
      { { "0.0.0.0", 2 }, { "0.0.0.1", nil }, { "255.255.255.255", 3 },
        { "255.255.255.254", nil }, { "::", 1 }, { "::1", nil },
        { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 2 },
        { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", nil } } },
    { "comments and blank lines",
      "# the office\n\n10.0.0.1 # me\n#10.0.0.2\n   # indented\n10.0.0.3 v2# tight\n\n#",
      { count = 2, bad = 0, unknown = 0, lines = 8 },
      { { "10.0.0.1", 1 }, { "10.0.0.2", nil }, { "10.0.0.3", 2 } } },
    { "CRLF line ends",
      "10.0.0.1\r\n10.0.0.2 v2\r\n\r\n# c\r\n10.0.0.3 v3\r\n",
      { count = 3, bad = 0, unknown = 0, lines = 5 },
      { { "10.0.0.1", 1 }, { "10.0.0.2", 2 }, { "10.0.0.3", 3 } } },
    { "leading and trailing spaces and tabs",
      " \t10.0.0.1 \t\n10.0.0.2\tv2\t \r\n\t\t10.0.0.3  \t v3 \n",
      { count = 3, bad = 0, unknown = 0 },
      { { "10.0.0.1", 1 }, { "10.0.0.2", 2 }, { "10.0.0.3", 3 } } },
    { "the last line without a line end",
      "10.0.0.1\n10.0.0.2 v3",
      { count = 2, bad = 0, unknown = 0, lines = 2 },
      { { "10.0.0.2", 3 } } },
    { "a name with bad bytes is a bad line",
      "10.0.0.1 v\1\n10.0.0.2 v2\255\n10.0.0.3 \195\169\n10.0.0.4 v2\0\n10.0.0.5 v2\n",
      { count = 1, bad = 4, unknown = 0, bad_lines = { 1, 2, 3, 4 } },
      { { "10.0.0.1", nil }, { "10.0.0.2", nil }, { "10.0.0.3", nil }, { "10.0.0.4", nil },
        { "10.0.0.5", 2 } } },
    { "an unknown name is skipped and counted apart",
      "10.0.0.1 v9\n10.0.0.2 V2\n10.0.0.3 v2\n10.0.0.4 v\n10.0.0.5 v22\n",
      { count = 1, bad = 0, unknown = 4, unknown_lines = { 1, 2, 4, 5 } },
      { { "10.0.0.1", nil }, { "10.0.0.2", nil }, { "10.0.0.3", 2 }, { "10.0.0.5", nil } } },
    { "the default name written out",
      "10.0.0.1 1\n",
      { count = 1, bad = 0, unknown = 0 },
      { { "10.0.0.1", 1 } } },
    { "not addresses or CIDRs",
      "10.0.0.256\n10.0.0.0/33\n::/129\n1.2.3\nfoo\n10.0.0.1/8/8\n01.2.3.4\n[::1]\n"
      .. "1.2.3.4:80\n10.0.0.0/08\n10.0.0.0/\n/8\n::1%eth0\n10.0.0.2\n",
      { count = 1, bad = 13, unknown = 0, bad_lines = { 1, 2, 3, 4, 5, 6, 7, 8 } },
      { { "10.0.0.2", 1 }, { "10.0.0.0", nil }, { "1.2.3.4", nil }, { "::1", nil } } },
    { "an IPv6-written line inside ::ffff:0:0/96 covers nothing: bad",
      "::ffff:10.0.0.0/104\n::ffff:1.2.3.4\n::ffff:0:0/96 v2\n10.0.0.9\n",
      { count = 1, bad = 3, unknown = 0, bad_lines = { 1, 2, 3 } },
      { { "10.0.0.1", nil }, { "1.2.3.4", nil }, { "10.0.0.9", 1 } } },
    { "a third field makes a bad line",
      "10.0.0.1 v2 v3\n10.0.0.2 v2 # fine\n",
      { count = 1, bad = 1, unknown = 0, bad_lines = { 1 } },
      { { "10.0.0.1", nil }, { "10.0.0.2", 2 } } },
    { "bytes glued to an address",
      "10.0.0.1\0 v2\n10.0.0.2\v\n\0\n10.0.0.3\n",
      { count = 1, bad = 3, unknown = 0, bad_lines = { 1, 2, 3 } },
      { { "10.0.0.1", nil }, { "10.0.0.2", nil }, { "10.0.0.3", 1 } } },
    { "huge lines",
      rep("1", 100000) .. "\n10.0.0.1 " .. rep("x", 100000) .. "\n" .. rep(" ", 100000)
      .. "10.0.0.2 v3" .. rep("\t", 100000) .. "\n#" .. rep("#", 1000000) .. "\n"
      .. rep("1.", 50000) .. "\n",
      { count = 1, bad = 3, unknown = 0, bad_lines = { 1, 2, 5 } },
      { { "10.0.0.1", nil }, { "10.0.0.2", 3 } } },
    { "a name that is not a target name (over 64 bytes, 0) is a bad line",
      "10.0.0.1 " .. rep("v", 65) .. "\n10.0.0.2 0\n10.0.0.3 " .. rep("v", 64) .. "\n",
      { count = 0, bad = 2, unknown = 1, bad_lines = { 1, 2 }, unknown_lines = { 3 } },
      { { "10.0.0.1", nil }, { "10.0.0.2", nil }, { "10.0.0.3", nil } } },
    { "an empty list", "",
      { count = 0, bad = 0, unknown = 0, lines = 0 },
      { { "10.0.0.1", nil }, { "::1", nil }, { "0.0.0.0", nil } } },
    { "only blank lines and comments", "\n\n \t\r\n# nothing\n",
      { count = 0, bad = 0, unknown = 0, lines = 4 },
      { { "10.0.0.1", nil }, { "::", nil } } },
    { "many bad lines: all counted, the first 8 reported",
      rep("nope\n", 20) .. "10.0.0.1\n" .. rep("10.0.0.2 v7\n", 12),
      { count = 1, bad = 20, unknown = 12, bad_lines = { 1, 2, 3, 4, 5, 6, 7, 8 },
        unknown_lines = { 22, 23, 24, 25, 26, 27, 28, 29 } },
      { { "10.0.0.1", 1 }, { "10.0.0.2", nil } } },
}

describe("new_rangeset", function()
    for _, c in ipairs(cases) do
        local name, text, counts, lookups = c[1], c[2], c[3], c[4]
        describe(name, function()
            local set, err
            setup(function()
                set, err = new_rangeset(text, NAMES)
            end)

            it("compiles, counting lines taken and skipped", function()
                assert.is_nil(err)
                assert.is_table(set)
                assert.equal(counts.count, set.count)
                assert.equal(counts.bad, set.bad)
                assert.equal(counts.unknown, set.unknown)
                if counts.lines then
                    assert.equal(counts.lines, set.lines)
                end
                assert.same(counts.bad_lines or {}, set.bad_lines)
                assert.same(counts.unknown_lines or {}, set.unknown_lines)
            end)

            for _, l in ipairs(lookups) do
                local addr, want = l[1], l[2]
                it(fmt("finds %s -> %s", show(addr), tostring(want)), function()
                    assert.equal(want, rangeset_find(set, addr))
                end)
            end
        end)
    end
end)

describe("new_rangeset arguments", function()
    local bad = {
        { "a text that is not a string", nil, NAMES },
        { "a number for text", 42, NAMES },
        { "names that are not a table", "10.0.0.1", "1,v2" },
        { "no names", "10.0.0.1", {} },
        { "an empty name", "10.0.0.1", { "1", "" } },
        { "a name with a space", "10.0.0.1", { "1", "v 2" } },
        { "a name with '#'", "10.0.0.1", { "1", "v#2" } },
        { "a name with a line end", "10.0.0.1", { "1", "v2\n" } },
        { "a name with a NUL", "10.0.0.1", { "1", "v\0" } },
        { "a name with a high byte", "10.0.0.1", { "1", "v\200" } },
        { "a name that is a number", "10.0.0.1", { "1", 2 } },
        { "the name 0", "10.0.0.1", { "1", "0" } },
        { "a name of 65 bytes", "10.0.0.1", { "1", ("v"):rep(65) } },
        { "an unknown index over 255", "10.0.0.1", { "1" }, 256 },
        { "an unknown index that is not an integer", "10.0.0.1", { "1" }, 1.5 },
    }
    local many = {}
    for i = 1, 256 do
        many[i] = "t" .. i
    end
    bad[#bad + 1] = { "256 names", "10.0.0.1", many }

    for _, c in ipairs(bad) do
        it("refuses " .. c[1], function()
            local set, err = new_rangeset(c[2], c[3], c[4])
            assert.is_nil(set)
            assert.is_string(err)
        end)
    end

    it("takes { \"1\" } when no names are given", function()
        local set = assert(new_rangeset("10.0.0.1\n10.0.0.2 v2\n10.0.0.3 1\n"))
        assert.equal(2, set.count)
        assert.equal(1, set.unknown)
        assert.equal(1, rangeset_find(set, "10.0.0.1"))
        assert.equal(1, rangeset_find(set, "10.0.0.3"))
        assert.same({ "1" }, set.names)
    end)

    it("gives lines naming an unknown target the unknown index, when given", function()
        local set = assert(new_rangeset("10.0.0.0/8 v9\n10.1.0.0/16 v2\n10.1.2.0/24 x\n"
                                        .. "10.2.0.0/16 v#2\n", { "1", "v2", "stable" }, 4))
        assert.equal(4, set.count)
        assert.equal(3, set.unknown)
        assert.same({ 1, 3, 4 }, set.unknown_lines)
        assert.equal(4, rangeset_find(set, "10.9.9.9"))
        assert.equal(2, rangeset_find(set, "10.1.9.9"))
        assert.equal(4, rangeset_find(set, "10.1.2.3"))
        -- "v#2" is "v" and a comment: unknown too
        assert.equal(4, rangeset_find(set, "10.2.0.1"))
    end)

    it("takes 255 names and finds the last of them", function()
        local names = {}
        for i = 1, 255 do
            names[i] = "t" .. i
        end
        local set = assert(new_rangeset("10.0.0.1 t255\n10.0.0.2 t2\n10.0.0.3\n", names))
        assert.equal(255, rangeset_find(set, "10.0.0.1"))
        assert.equal(2, rangeset_find(set, "10.0.0.2"))
        assert.equal(1, rangeset_find(set, "10.0.0.3"))
        assert.equal(names, set.names)
    end)
end)

describe("rangeset_find", function()
    local set = assert(new_rangeset("10.0.0.0/8 v2\n2001:db8::/32 v3\n", NAMES))
    local find_cases = {
        { "10.0.0.1:80", 2 }, { "[2001:db8::1]:443", 3 }, { "[2001:db8::1]", 3 },
        { "2001:DB8:0:0::1", 3 }, { "::ffff:10.1.2.3", 2 }, { "::FFFF:a01:203", 2 },
        { "", nil }, { "10.0.0", nil }, { "10.0.0.1 ", nil }, { " 10.0.0.1", nil },
        { "10.0.0.1\0", nil }, { "x", nil }, { rep("1", 10000), nil }, { nil, nil },
        { 42, nil }, { true, nil },
    }
    for _, c in ipairs(find_cases) do
        it(fmt("answers %s with %s", show(c[1]), tostring(c[2])), function()
            assert.equal(c[2], rangeset_find(set, c[1]))
        end)
    end

    it("keeps working after the garbage collector has run", function()
        local s = assert(new_rangeset("10.0.0.0/8 v2\n::1 v3\n" .. rep("11.0.0.1\n", 1000), NAMES))
        for _ = 1, 3 do
            collectgarbage("collect")
        end
        assert.equal(2, rangeset_find(s, "10.2.3.4"))
        assert.equal(3, rangeset_find(s, "::1"))
        assert.equal(1, rangeset_find(s, "11.0.0.1"))
    end)
end)

describe("the compiled set", function()
    it("counts the runs where ranges nest and around the IPv4 block", function()
        local set = assert(new_rangeset("10.0.0.0/8\n10.1.0.0/16 v2\n::1\n::/0 v3\n", NAMES))
        -- 10.0.0.0 10.1.0.0 10.2.0.0 11.0.0.0; :: ::1 ::2 ::ffff:0:0 ::1:0:0:0
        assert.equal(9, set.runs)
    end)

    -- 2 runs per entry at most: 5 bytes per IPv4 run, 17 per IPv6 one, and
    -- an index of at most a byte per run (two entries at least per family)
    for _, size in ipairs({ { 3, 2 }, { 600, 400 }, { 20000, 30000 } }) do
        local n4, n6 = size[1], size[2]
        it(fmt("keeps %d IPv4 and %d IPv6 lines in <= 12 and 36 bytes each, plus 16", n4, n6),
           function()
            local lines = {}
            for i = 1, n4 do
                lines[#lines + 1] = fmt("10.%d.%d.0/24", math.floor(i / 256), i % 256)
            end
            for i = 1, n6 do
                lines[#lines + 1] = fmt("2001:db8:%x::/48 v2", i)
            end
            local set = assert(new_rangeset(concat(lines, "\n"), NAMES))
            assert.equal(n4 + n6, set.count)
            assert.is_true(set.bytes >= 10 * n4 + 34 * n6, tostring(set.bytes))
            assert.is_true(set.bytes <= 12 * n4 + 36 * n6 + 16, tostring(set.bytes))
        end)
    end

    it("joins adjacent ranges with one target into one run", function()
        local set = assert(new_rangeset("10.0.0.0/25\n10.0.0.128/25\n10.0.1.0/24\n", NAMES))
        assert.equal(2, set.runs) -- 10.0.0.0 starts it, 10.0.2.0 ends it
    end)

    it("compiles 100,000 lines and finds each", function()
        local lines = {}
        local function net(i)
            return fmt("%d.%d.%d", 10 + math.floor(i / 65536), math.floor(i / 256) % 256, i % 256)
        end
        for i = 0, 99999 do
            lines[#lines + 1] = net(i) .. ".0/24 " .. NAMES[i % 3 + 1]
        end
        local set = assert(new_rangeset(concat(lines, "\n"), NAMES))
        assert.equal(100000, set.count)
        assert.equal(0, set.bad)
        for _ = 1, 2000 do
            local i = math.random(0, 99999)
            local addr = net(i) .. "." .. math.random(0, 255)
            assert.equal(i % 3 + 1, rangeset_find(set, addr), addr)
        end
        assert.is_nil(rangeset_find(set, net(100000) .. ".1"))
        assert.is_nil(rangeset_find(set, "9.255.255.255"))
    end)
end)

-------------------------------------------------------------------------------
-- Random lists against a naive scan: of the lines holding an address, the
-- longest prefix wins, then the later line. Each line's coverage comes from
-- new_ipset (the trusted-proxy set), so only the choice among lines is
-- checked here, not the CIDR parser (ip_spec does that).

local function v4_text(n)
    return fmt("%d.%d.%d.%d", math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
               math.floor(n / 256) % 256, n % 256)
end

-- addresses crowd a few small pools so that ranges nest and touch
local V4_POOL = { 0x0a000000, 0x0a000100, 0xc0a80200, 0x00000000, 0xfffffff0 }
local V6_POOL = { "2001:db8::", "2001:db8:0:1::", "::", "::1:0:0:", "ffff:ffff:ffff:ffff::" }

local function random_v4()
    local n = V4_POOL[math.random(#V4_POOL)] + math.random(0, 511)
    return v4_text(n % 4294967296)
end

local function random_v6()
    local base = V6_POOL[math.random(#V6_POOL)]
    if base:sub(-2) == "::" then
        return base .. fmt("%x", math.random(0, 511))
    end
    return base .. fmt("%x:%x", math.random(0, 3), math.random(0, 511))
end

local function random_line()
    local r = math.random()
    local text, prefix
    if r < 0.5 then
        prefix = ({ 0, 8, 16, 22, 23, 24, 25, 28, 31, 32, 32 })[math.random(11)]
        text = random_v4() .. "/" .. prefix
        prefix = prefix + 96
    elseif r < 0.95 then
        prefix = ({ 0, 16, 32, 64, 80, 96, 112, 118, 119, 120, 126, 127, 128 })[math.random(13)]
        text = random_v6() .. "/" .. prefix
    else
        text = ({ "nope", "::ffff:10.0.0.0/104", "10.0.0.1/33" })[math.random(3)]
    end
    local t = math.random(4)
    local name = t <= 3 and NAMES[t] or "v9"
    if t == 1 and math.random() < 0.5 then
        return text, prefix, 1
    end
    return text .. " " .. name, prefix, t <= 3 and t or false
end

local function random_probe()
    local r = math.random()
    if r < 0.45 then
        return random_v4()
    elseif r < 0.9 then
        return random_v6()
    end
    return ({ "::ffff:0.0.0.0", "::fffe:ffff:ffff", "::1:0:0:0", "0.0.0.0", "255.255.255.255",
              "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::" })[math.random(7)]
end

describe("random lists against a naive scan of their lines", function()
    for round = 1, 12 do
        it("agrees on list " .. round, function()
            math.randomseed(round * 7919)
            local lines, parsed = {}, {}
            for i = 1, 150 do
                local text, prefix, target = random_line()
                lines[i] = text
                local cidr = text:match("^%S+")
                local one = gray.new_ipset({ cidr })
                if one and target and prefix then
                    parsed[#parsed + 1] = { set = one, prefix = prefix, target = target, line = i }
                end
            end
            local set = assert(new_rangeset(concat(lines, math.random() < 0.5 and "\n" or "\r\n"),
                                            NAMES))
            for _ = 1, 400 do
                local addr = random_probe()
                local best
                for _, p in ipairs(parsed) do
                    if gray.ipset_contains(p.set, addr)
                       and (not best or p.prefix > best.prefix
                            or (p.prefix == best.prefix and p.line > best.line)) then
                        best = p
                    end
                end
                local want = best and best.target or nil
                assert.equal(want, rangeset_find(set, addr),
                             fmt("%s in list %d (line %s)", addr, round,
                                 best and tostring(best.line) or "none"))
            end
        end)
    end
end)
