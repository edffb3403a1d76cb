-- Addresses and CIDR sets through gray.ffi: canonical_ip, new_ipset,
-- ipset_contains. Table-driven; every case names its input.

local gray = require "gray.ffi"
local bit = require "bit"
local ip_text = require "helpers.ip_text"

local canonical_ip = gray.canonical_ip
local new_ipset = gray.new_ipset
local ipset_contains = gray.ipset_contains

local band, bor, bnot, lshift, rshift = bit.band, bit.bor, bit.bnot, bit.lshift, bit.rshift
local fmt = string.format
local concat = table.concat

local NUL = "\0"

-- A readable, unique name for any input: control and high bytes escaped.
local function show(v)
    if type(v) ~= "string" then
        return "<" .. type(v) .. " " .. tostring(v) .. ">"
    end
    return '"' .. v:gsub("[%c\127-\255\"\\]", function(c)
        return fmt("\\%d", c:byte())
    end) .. '"'
end

-- ---------------------------------------------------------------------------
-- An independent reference: 8 groups (numbers 0..0xffff) to the text the
-- library must produce: dotted quad for ::ffff:0:0/96, else RFC 5952.
-- ---------------------------------------------------------------------------

local function ref_canonical(g)
    if g[1] == 0 and g[2] == 0 and g[3] == 0 and g[4] == 0 and g[5] == 0
        and g[6] == 0xffff then
        return fmt("%d.%d.%d.%d", rshift(g[7], 8), band(g[7], 0xff),
                   rshift(g[8], 8), band(g[8], 0xff))
    end
    return ip_text.rfc5952(g)
end

-- Random groups biased towards zero runs and short groups, sometimes mapped.
local function random_groups()
    local g = {}
    for k = 1, 8 do
        local r = math.random()
        if r < 0.45 then
            g[k] = 0
        elseif r < 0.6 then
            g[k] = math.random(1, 15)
        elseif r < 0.7 then
            g[k] = math.random(16, 0xfff)
        else
            g[k] = math.random(0, 0xffff)
        end
    end
    local r = math.random()
    if r < 0.1 then
        g[1], g[2], g[3], g[4], g[5], g[6] = 0, 0, 0, 0, 0, 0xffff
    elseif r < 0.15 then
        for k = 1, 8 do
            g[k] = 0
        end
    end
    return g
end

-- One group written the way a sloppy writer might: case and zero padding vary.
local function write_group(v)
    local forms = { "%x", "%04x", "%X", "%04X", "%02x", "%03X" }
    local s = fmt(forms[math.random(#forms)], v)
    if math.random() < 0.3 then
        s = s:gsub("%a", function(c)
            return math.random() < 0.5 and c:upper() or c:lower()
        end)
    end
    return s
end

-- Any valid RFC 4291 text for the groups: uncompressed, or with one zero run
-- (of any length, anywhere) written as "::", and sometimes an IPv4 tail.
local function write_any_form(g)
    local parts = {}
    local v4_tail = math.random() < 0.25
    local last = v4_tail and 6 or 8
    for k = 1, last do
        parts[k] = write_group(g[k])
    end
    if v4_tail then
        parts[7] = fmt("%d.%d.%d.%d", rshift(g[7], 8), band(g[7], 0xff),
                       rshift(g[8], 8), band(g[8], 0xff))
    end
    -- zero runs among the hex groups only (an IPv4 tail stays written out)
    local runs = {}
    local k = 1
    while k <= last do
        if g[k] == 0 then
            local j = k
            while j <= last and g[j] == 0 do
                j = j + 1
            end
            runs[#runs + 1] = { k, j - 1 }
            k = j
        else
            k = k + 1
        end
    end
    if #runs == 0 or math.random() < 0.3 then
        return concat(parts, ":")
    end
    local run = runs[math.random(#runs)]
    -- compress a random non-empty sub-run of the chosen run
    local from = math.random(run[1], run[2])
    local to = math.random(from, run[2])
    local left, right = {}, {}
    for n = 1, from - 1 do
        left[#left + 1] = parts[n]
    end
    for n = to + 1, #parts do
        right[#right + 1] = parts[n]
    end
    return concat(left, ":") .. "::" .. concat(right, ":")
end

local function uncompressed(g)
    local t = {}
    for k = 1, 8 do
        t[k] = fmt("%04x", g[k])
    end
    return concat(t, ":")
end

-- ---------------------------------------------------------------------------
-- Case tables
-- ---------------------------------------------------------------------------

-- input -> canonical text
local VALID = {
    -- IPv4, strict dotted quad
    { "0.0.0.0", "0.0.0.0" },
    { "255.255.255.255", "255.255.255.255" },
    { "1.2.3.4", "1.2.3.4" },
    { "10.0.0.1", "10.0.0.1" },
    { "192.168.2.20", "192.168.2.20" },
    { "100.200.250.9", "100.200.250.9" },
    { "9.99.199.0", "9.99.199.0" },
    { "127.0.0.1", "127.0.0.1" },

    -- IPv6: full eight groups, leading zeros, case
    { "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1" },
    { "2001:db8:aaaa:bbbb:cccc:dddd:eeee:0001", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1" },
    { "2001:DB8:AAAA:BBBB:CCCC:DDDD:EEEE:0001", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1" },
    { "2001:Db8:aAaA:bBbB:CcCc:dDdD:EeEe:1", "2001:db8:aaaa:bbbb:cccc:dddd:eeee:1" },
    { "0001:0002:0003:0004:0005:0006:0007:0008", "1:2:3:4:5:6:7:8" },
    { "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8" },
    { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
    { "0000:0000:0000:0000:0000:0000:0000:0000", "::" },
    { "0:0:0:0:0:0:0:0", "::" },
    { "0:0:0:0:0:0:0:1", "::1" },
    { "1:0:0:0:0:0:0:0", "1::" },

    -- "::" at start, middle, end, alone
    { "::", "::" },
    { "::1", "::1" },
    { "::0", "::" },
    { "1::", "1::" },
    { "::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8" },
    { "1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0" },
    { "1::8", "1::8" },
    { "1:2::7:8", "1:2::7:8" },
    { "fe80::1", "fe80::1" },
    { "FE80::ABCD", "fe80::abcd" },
    { "fE80::aBcD", "fe80::abcd" },
    { "1:2:3:4::5:6:7", "1:2:3:4:0:5:6:7" },

    -- RFC 5952 section 4 examples
    { "2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1" },
    { "2001:0db8:0:0:1:0:0:1", "2001:db8::1:0:0:1" },
    { "2001:db8::1:0:0:1", "2001:db8::1:0:0:1" },
    { "2001:db8::0:1:0:0:1", "2001:db8::1:0:0:1" },
    { "2001:0db8::1:0:0:1", "2001:db8::1:0:0:1" },
    { "2001:db8:0:0:1::1", "2001:db8::1:0:0:1" },
    { "2001:db8:0000:0:1::1", "2001:db8::1:0:0:1" },
    { "2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1" },
    { "2001:DB8:0:0:1::1", "2001:db8::1:0:0:1" },
    { "2001:db8::0001", "2001:db8::1" },
    { "2001:0db8::0001", "2001:db8::1" },
    { "2001:db8:0:0:0:0:2:1", "2001:db8::2:1" },
    { "2001:db8::1:1:1:1:1", "2001:db8:0:1:1:1:1:1" },
    { "2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1" },
    { "2001:0:0:1:0:0:0:1", "2001:0:0:1::1" },
    { "2001:db8:0:0:1:0:0:0", "2001:db8:0:0:1::" },
    { "1:0:0:2:0:0:0:3", "1:0:0:2::3" },
    { "1:0:0:0:2:0:0:3", "1::2:0:0:3" },
    { "0:0:1:0:0:1:0:0", "::1:0:0:1:0:0" },
    { "1:0:2:0:3:0:4:0", "1:0:2:0:3:0:4:0" },
    { "0:1:0:1:0:1:0:1", "0:1:0:1:0:1:0:1" },
    { "2001:db8:85a3:0:0:8a2e:370:7334", "2001:db8:85a3::8a2e:370:7334" },

    -- embedded IPv4
    { "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304" },
    { "1::1.2.3.4", "1::102:304" },
    { "::ffff:0:1.2.3.4", "::ffff:0:102:304" },
    { "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },

    -- IPv4-mapped: one key with the dotted quad
    { "::ffff:1.2.3.4", "1.2.3.4" },
    { "::FFFF:192.168.2.20", "192.168.2.20" },
    { "::ffff:c0a8:214", "192.168.2.20" },
    { "::FfFf:C0A8:0214", "192.168.2.20" },
    { "0:0:0:0:0:ffff:c0a8:0214", "192.168.2.20" },
    { "0:0:0:0:0:ffff:192.168.2.20", "192.168.2.20" },
    { "0000:0000:0000:0000:0000:ffff:255.255.255.255", "255.255.255.255" },
    { "::ffff:0.0.0.0", "0.0.0.0" },
    { "::ffff:0:0", "0.0.0.0" },

    -- IPv4-compatible (deprecated) is plain IPv6: pure hex
    { "::192.0.2.1", "::c000:201" },
    { "::0.0.0.1", "::1" },
    { "::0.0.0.0", "::" },
    { "0:0:0:0:0:0:192.0.2.1", "::c000:201" },

    -- host forms found in forwarding headers; a port is 1..65535 and, as
    -- nginx's ngx_atoi reads it, may carry leading zeros
    { "1.2.3.4:80", "1.2.3.4" },
    { "1.2.3.4:1", "1.2.3.4" },
    { "1.2.3.4:65535", "1.2.3.4" },
    { "1.2.3.4:080", "1.2.3.4" },
    { "1.2.3.4:00080", "1.2.3.4" },
    { "1.2.3.4:065535", "1.2.3.4" },
    { "1.2.3.4:" .. ("0"):rep(55) .. "1", "1.2.3.4" },   -- 64 bytes: GRAY_HOST_TEXT_MAX
    { "[2001:db8::1]:0443", "2001:db8::1" },
    { "[::1]:" .. ("0"):rep(57) .. "8", "::1" },       -- 64 bytes too
    { "[2001:db8::1]", "2001:db8::1" },
    { "[2001:db8::1]:443", "2001:db8::1" },
    { "[2001:DB8:0:0::0001]:443", "2001:db8::1" },
    { "[2001:db8::1]:65535", "2001:db8::1" },
    { "[::1]", "::1" },
    { "[::]:80", "::" },
    { "[::ffff:c0a8:214]:80", "192.168.2.20" },
    { "[::ffff:1.2.3.4]", "1.2.3.4" },
}

-- inputs canonical_ip must refuse with nil, err
local INVALID = {
    -- IPv4
    "256.1.1.1", "1.256.1.1", "1.1.256.1", "1.1.1.256", "999.1.1.1", "1000.1.1.1",
    "1.2.3", "1.2", "1", "1.2.3.4.5", "1.2.3.4.", ".1.2.3.4", "1.2.3.", "1..2.3",
    "01.2.3.4", "1.02.3.4", "1.2.3.04", "00.1.2.3", "1.2.3.00", "0.0.0.00",
    "010.1.1.1", "0377.0.0.1", "1.2.3.010",
    "0x1.2.3.4", "0X01.2.3.4", "1.2.3.0x4", "0xc0a80214", "3232236052",
    " 1.2.3.4", "1.2.3.4 ", "\t1.2.3.4", "1.2.3.4\t", "1.2.3.4\n", "1.2.3.4\r\n",
    "1.2.3.4x", "1.2.3.4/32", "1.2.3.4 5", "a.b.c.d", "1.2.3.-4", "+1.2.3.4",
    "1,2,3,4", "1.2.3.4:", "1.2.3.4:x", "1.2.3.4:65536", "1.2.3.4:99999",
    "1.2.3.4:123456", "1.2.3.4:-1", "1.2.3.4:+80", "1.2.3.4: 80", "1.2.3.4 :80",
    "1.2.3.4:0", "1.2.3.4:00", "1.2.3.4:00000", "1.2.3.4:065536", "1.2.3.4:0x50",
    "1.2.3.4:" .. ("0"):rep(56) .. "1",                 -- 65 bytes: over GRAY_HOST_TEXT_MAX
    "1.2.3.4:" .. ("9"):rep(30), "1.2.3.4:4294967297", "1.2.3.4:18446744073709551617",
    "1.2.3.4:80:90", ":80", "localhost", "\239\188\145.2.3.4",
    "",
    ("x"):rep(40), ("9"):rep(40), ("."):rep(40), ("1."):rep(20), ("1"):rep(1000),
    "1.2.3.4" .. NUL, "1.2" .. NUL .. ".3.4", NUL .. "1.2.3.4", NUL,
    "1.2.3.4" .. NUL .. ":80",

    -- IPv6
    "::1::", ":::", "1:::2", ":1::", "1::2:", "1:2:3:4:5:6:7:8:9", "12345::",
    "1:2:3:4:5:6:7", "fe80::1%eth0", "fe80::1%25eth0", "fe80::1%1",
    "1:2:3:4:5:6:7:1.2.3.4", "1.2.3.4::", "1.2.3.4:ffff::",
    "::ffff:1.2.3", "::ffff:01.2.3.4", "::ffff:1.2.3.04", "::ffff:1.2.3.4.5",
    "::ffff:256.1.2.3", "::ffff:1.2.3.4::", "::ffff:1.2.3.4:1", "::1.2.3.4:5",
    "::ffff:0x1.2.3.4", "::1.2.3", "1::2::3", "1::2::", ":", "1:", ":1", "::1:",
    "1:2:3:4:5:6:7:8:", ":1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8",
    "1:2:3:4::5:6:7:8", "1::2:3:4:5:6:7:8", "::1:2:3:4:5:6:1.2.3.4",
    "02001:db8::1", "2001:db8::00001", "g::1", "::g", "::-1", "::+1", "0x1::",
    "2001:db8::1 ", " 2001:db8::1", "2001:db8:: 1", "2001 :db8::1", "2001:db8::1/64",
    "1:2:3:4:5:6:7:8%1", "::1.2.3.4.5",
    ("f"):rep(40), (":"):rep(40), ("ab:"):rep(13) .. "c", ("1:"):rep(20),
    "::1" .. NUL, ":" .. NUL .. ":1", "2001:db8::" .. NUL .. "1",

    -- bracketed and port forms
    "[2001:db8::1", "[2001:db8::1]x", "[2001:db8::1]:", "[2001:db8::1]:65536",
    "[2001:db8::1]:-1", "[2001:db8::1]:x", "[2001:db8::1]: 443", "[2001:db8::1]443",
    "[2001:db8::1]]", "[2001:db8::1]:80]", "[[2001:db8::1]]", "2001:db8::1]",
    "2001:db8::1]:443", "[1.2.3.4]", "[1.2.3.4]:80", "[]", "[]:80", "[", "]",
    "[ ::1]", "[::1 ]", "[::1] ", " [::1]", "[fe80::1%eth0]", "[fe80::1%eth0]:80",
    "[::1]:80" .. NUL, "[::1" .. NUL .. "]", "[::1]:0", "[::1]:000", "[::1]:65536",
    "[::1]:" .. ("0"):rep(58) .. "8",
}

local NON_STRINGS = { 1234, 16909060, {}, true, false, print }

-- ---------------------------------------------------------------------------

describe("gray.ffi.canonical_ip", function()
    describe("accepts", function()
        for _, case in ipairs(VALID) do
            local input, expected = case[1], case[2]
            it(show(input) .. " as " .. show(expected), function()
                local got, err = canonical_ip(input)
                assert.is_nil(err)
                assert.equal(expected, got)
            end)
        end
    end)

    describe("rejects", function()
        for _, input in ipairs(INVALID) do
            it(show(input), function()
                local got, err = canonical_ip(input)
                assert.is_nil(got)
                assert.is_string(err)
                assert.is_true(#err > 0)
            end)
        end
        it("nil", function()
            local got, err = canonical_ip(nil)
            assert.is_nil(got)
            assert.is_string(err)
        end)
        for _, input in ipairs(NON_STRINGS) do
            it(show(input), function()
                local got, err = canonical_ip(input)
                assert.is_nil(got)
                assert.is_string(err)
            end)
        end
    end)

    describe("maps one IPv4 address to one key", function()
        local FORMS = {
            "192.168.2.20", "::FFFF:192.168.2.20", "::ffff:192.168.2.20",
            "::ffff:c0a8:214", "[::ffff:c0a8:214]:80", "[::ffff:192.168.2.20]",
            "192.168.2.20:8080", "0:0:0:0:0:FFFF:C0A8:0214",
        }
        for _, form in ipairs(FORMS) do
            it(show(form), function()
                assert.equal("192.168.2.20", canonical_ip(form))
            end)
        end
    end)

    describe("round trip", function()
        it("is idempotent on generated addresses", function()
            math.randomseed(4291)
            for n = 1, 600 do
                local input
                if n % 3 == 0 then
                    input = fmt("%d.%d.%d.%d", math.random(0, 255), math.random(0, 255),
                                math.random(0, 255), math.random(0, 255))
                else
                    input = write_any_form(random_groups())
                end
                local once, err = canonical_ip(input)
                assert.is_nil(err, "parsing " .. show(input))
                assert.equal(once, canonical_ip(once), "re-parsing " .. show(once))
            end
        end)

        it("matches a pure-Lua RFC 5952 formatter on uncompressed input", function()
            math.randomseed(5952)
            for _ = 1, 500 do
                local g = random_groups()
                local input = uncompressed(g)
                assert.equal(ref_canonical(g), canonical_ip(input), "for " .. input)
            end
        end)

        it("matches the formatter on random 16-byte addresses", function()
            math.randomseed(16)
            for _ = 1, 300 do
                local g = {}
                for k = 1, 8 do
                    g[k] = math.random(0, 255) * 256 + math.random(0, 255)
                end
                local input = uncompressed(g)
                assert.equal(ref_canonical(g), canonical_ip(input), "for " .. input)
            end
        end)

        it("matches the formatter on every text form of the same address", function()
            math.randomseed(4)
            for _ = 1, 500 do
                local g = random_groups()
                local input = write_any_form(g)
                assert.equal(ref_canonical(g), canonical_ip(input), "for " .. input)
            end
        end)

        it("agrees with itself in host forms", function()
            math.randomseed(443)
            for _ = 1, 200 do
                local g = random_groups()
                local plain = uncompressed(g)
                local expected = ref_canonical(g)
                local port = ("0"):rep(math.random(0, 3)) .. math.random(1, 65535)
                assert.equal(expected, canonical_ip("[" .. plain .. "]"), plain)
                assert.equal(expected, canonical_ip("[" .. plain .. "]:" .. port), plain)
            end
        end)
    end)
end)

-- ---------------------------------------------------------------------------
-- Sets
-- ---------------------------------------------------------------------------

-- A set and the addresses it must and must not hold.
local SET_CASES = {
    {
        name = "string list with comma and space",
        list = "127.0.0.0/8, ::1",
        count = 2,
        inside = { "127.0.0.0", "127.0.0.1", "127.255.255.255", "::1", "[::1]:80",
                   "::ffff:127.1.2.3" },
        outside = { "126.255.255.255", "128.0.0.0", "::2", "::", "::ffff:7f00:1:0" },
    },
    {
        name = "string list with commas only",
        list = "127.0.0.0/8,::1",
        count = 2,
        inside = { "127.0.0.1", "::1" },
        outside = { "128.0.0.0", "::2" },
    },
    {
        name = "string list with blanks only",
        list = "  127.0.0.0/8 \t ::1\n",
        count = 2,
        inside = { "127.0.0.1", "::1" },
        outside = { "128.0.0.0", "::2" },
    },
    {
        name = "table list",
        list = { "127.0.0.0/8", "::1" },
        count = 2,
        inside = { "127.0.0.1", "127.255.255.255", "::1" },
        outside = { "128.0.0.0", "::2", "1.2.3.4" },
    },
    {
        name = "empty table",
        list = {},
        count = 0,
        inside = {},
        outside = { "0.0.0.0", "::", "::1", "255.255.255.255" },
    },
    {
        name = "empty string",
        list = "",
        count = 0,
        inside = {},
        outside = { "1.2.3.4", "::1" },
    },
    {
        name = "bare IPv4 address is a /32",
        list = { "10.1.2.3" },
        count = 1,
        inside = { "10.1.2.3", "::ffff:10.1.2.3", "10.1.2.3:80" },
        outside = { "10.1.2.2", "10.1.2.4", "10.1.2.0" },
    },
    {
        name = "bare IPv6 address is a /128",
        list = { "2001:db8::1" },
        count = 1,
        inside = { "2001:db8::1", "2001:DB8:0::0001", "[2001:db8::1]:443" },
        outside = { "2001:db8::", "2001:db8::2", "2001:db8::1:0" },
    },
    {
        name = "10.0.0.0/8",
        list = { "10.0.0.0/8" },
        count = 1,
        inside = { "10.0.0.0", "10.255.255.255", "10.1.2.3", "::ffff:10.0.0.1" },
        outside = { "9.255.255.255", "11.0.0.0", "::a00:1", "0.0.0.10" },
    },
    {
        name = "2001:db8::/32",
        list = { "2001:db8::/32" },
        count = 1,
        inside = { "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8:1::1" },
        outside = { "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::", "::1", "1.2.3.4" },
    },
    {
        name = "0.0.0.0/0 is every IPv4 address and nothing else",
        list = { "0.0.0.0/0" },
        count = 1,
        inside = { "0.0.0.0", "1.2.3.4", "255.255.255.255", "::ffff:1.2.3.4",
                   "::ffff:0:0", "::ffff:ffff:ffff" },
        outside = { "::1", "::", "::fffe:ffff:ffff", "::1:0:0:0", "2001:db8::1",
                    "::1.2.3.4" },
    },
    {
        -- as in nginx, an IPv6 CIDR never matches an IPv4 peer: the mapped
        -- block is cut out, leaving two ranges
        name = "::/0 is every IPv6 address, no IPv4 one",
        list = { "::/0" },
        count = 2,
        inside = { "::", "::1", "2001:db8::1", "::fffe:ffff:ffff", "::1:0:0:0",
                   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
        outside = { "1.2.3.4", "0.0.0.0", "255.255.255.255", "::ffff:1.2.3.4" },
    },
    {
        name = "a typo'd mapped CIDR (/8 for /104) trusts no IPv4",
        list = { "::/8" },
        count = 2,
        inside = { "::", "::1", "ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
        outside = { "10.0.0.1", "99.1.1.1", "100::" },
    },
    {
        name = "::/80 ends just below the mapped block",
        list = { "::/80" },
        count = 1,
        inside = { "::", "::fffe:ffff:ffff" },
        outside = { "0.0.0.0", "1.2.3.4", "::1:0:0:0" },
    },
    {
        name = "0.0.0.0/0 and ::/0 together are everything",
        list = { "0.0.0.0/0", "::/0" },
        count = 1,
        inside = { "::", "1.2.3.4", "::ffff:1.2.3.4", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
        outside = {},
    },
    {
        name = "::/1 holds ::1 and 2001:db8::, no IPv4 address",
        list = { "::/1" },
        count = 2,
        inside = { "::", "::1", "2001:db8::1", "7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
        outside = { "10.0.0.1", "127.0.0.1", "::ffff:127.0.0.1", "8000::" },
    },
    {
        name = "::fffe:0:0/95 keeps only its IPv6 half",
        list = { "::fffe:0:0/95" },
        count = 1,
        inside = { "::fffe:0:0", "::fffe:ffff:ffff" },
        outside = { "0.0.0.0", "1.2.3.4", "::ffff:1.2.3.4", "::fffd:ffff:ffff", "::1:0:0:0" },
    },

    {
        name = "/31 and /127",
        list = { "192.0.2.0/31", "2001:db8::/127" },
        count = 2,
        inside = { "192.0.2.0", "192.0.2.1", "2001:db8::", "2001:db8::1" },
        outside = { "192.0.1.255", "192.0.2.2", "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
                    "2001:db8::2" },
    },
    {
        name = "/1 halves",
        list = { "128.0.0.0/1" },
        count = 1,
        inside = { "128.0.0.0", "255.255.255.255" },
        outside = { "127.255.255.255", "0.0.0.0", "8000::" },
    },
}

-- Lists that merge: expected count, plus boundaries that must hold.
local MERGE_CASES = {
    {
        name = "two halves of 10.0.0.0/8",
        list = { "10.0.0.0/9", "10.128.0.0/9" },
        count = 1,
        inside = { "10.0.0.0", "10.127.255.255", "10.128.0.0", "10.255.255.255" },
        outside = { "9.255.255.255", "11.0.0.0" },
    },
    {
        name = "duplicates",
        list = { "10.0.0.0/8", "10.0.0.0/8", "10.0.0.0/8" },
        count = 1,
        inside = { "10.0.0.0", "10.255.255.255" },
        outside = { "9.255.255.255", "11.0.0.0" },
    },
    {
        name = "duplicates written differently",
        list = { "2001:db8::/32", "2001:0DB8:0:0::/32", "2001:db8:0:0:0:0:0:0/32" },
        count = 1,
        inside = { "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff" },
        outside = { "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::" },
    },
    {
        name = "IPv4 beside its mapped IPv6 spellings (which add nothing)",
        list = { "::ffff:11.0.0.0/104", "10.0.0.0/8", "::ffff:10.0.0.0/104", "::ffff:a00:0/104" },
        count = 1,
        inside = { "10.0.0.0", "10.255.255.255" },
        outside = { "9.255.255.255", "11.0.0.0" },
    },
    {
        name = "contained range",
        list = { "10.1.0.0/16", "10.0.0.0/8", "10.200.3.4" },
        count = 1,
        inside = { "10.0.0.0", "10.1.0.0", "10.1.255.255", "10.255.255.255" },
        outside = { "9.255.255.255", "11.0.0.0" },
    },
    {
        name = "overlapping chain",
        list = { "10.0.0.0/16", "10.0.255.0/24", "10.0.128.0/17", "10.1.0.0/16" },
        count = 1,
        inside = { "10.0.0.0", "10.0.255.255", "10.1.0.0", "10.1.255.255" },
        outside = { "9.255.255.255", "10.2.0.0" },
    },
    {
        name = "adjacent /24s given out of order",
        list = { "10.0.2.0/24", "10.0.0.0/24", "10.0.1.0/24" },
        count = 1,
        inside = { "10.0.0.0", "10.0.0.255", "10.0.1.0", "10.0.2.255" },
        outside = { "9.255.255.255", "10.0.3.0" },
    },
    {
        name = "adjacent single hosts",
        list = { "10.0.0.3", "10.0.0.1", "10.0.0.2" },
        count = 1,
        inside = { "10.0.0.1", "10.0.0.2", "10.0.0.3" },
        outside = { "10.0.0.0", "10.0.0.4" },
    },
    {
        name = "a gap of one address does not merge",
        list = { "10.0.0.1", "10.0.0.3" },
        count = 2,
        inside = { "10.0.0.1", "10.0.0.3" },
        outside = { "10.0.0.0", "10.0.0.2", "10.0.0.4" },
    },
    {
        name = "a gap of one /24 does not merge",
        list = { "10.0.0.0/24", "10.0.2.0/24" },
        count = 2,
        inside = { "10.0.0.0", "10.0.0.255", "10.0.2.0", "10.0.2.255" },
        outside = { "9.255.255.255", "10.0.1.0", "10.0.1.255", "10.0.3.0" },
    },
    {
        name = "adjacent across an octet boundary",
        list = { "10.0.255.255", "10.1.0.0/31" },
        count = 1,
        inside = { "10.0.255.255", "10.1.0.0", "10.1.0.1" },
        outside = { "10.0.255.254", "10.1.0.2" },
    },
    {
        name = "the last IPv6 address",
        list = { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
                 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
        count = 1,
        inside = { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe",
                   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
        outside = { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd", "::" },
    },
    {
        name = "the first IPv6 address",
        list = { "::", "::1" },
        count = 1,
        inside = { "::", "::1" },
        outside = { "::2", "0.0.0.0" },
    },
    {
        name = "two halves of ::/0",
        list = { "8000::/1", "::/1" },
        count = 2,
        inside = { "::", "7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "8000::",
                   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" },
        outside = { "1.2.3.4" },
    },
    {
        name = "everything IPv6 swallows the IPv6 rest, IPv4 stays",
        list = { "10.0.0.0/8", "::/0", "2001:db8::/32" },
        count = 3,
        inside = { "::", "10.0.0.1", "2001:db8::1" },
        outside = { "1.2.3.4", "11.0.0.0" },
    },
    {
        name = "IPv4 and IPv6 ranges stay apart",
        list = { "10.0.0.0/8", "2001:db8::/32", "::1", "192.168.0.0/16" },
        count = 4,
        inside = { "10.0.0.0", "10.255.255.255", "192.168.0.0", "192.168.255.255",
                   "2001:db8::", "::1" },
        outside = { "9.255.255.255", "11.0.0.0", "192.167.255.255", "192.169.0.0",
                    "2001:db9::", "::2", "::" },
    },
}

-- Host bits set: accepted, masked, warned about.
local HOST_BITS = {
    { cidr = "10.1.2.3/8", inside = { "10.0.0.0", "10.255.255.255" }, outside = { "11.0.0.0" } },
    { cidr = "1.2.3.4/0", inside = { "0.0.0.0", "255.255.255.255" }, outside = { "::1" } },
    { cidr = "192.168.1.1/24", inside = { "192.168.1.0", "192.168.1.255" },
      outside = { "192.168.0.255", "192.168.2.0" } },
    { cidr = "2001:db8::1/32", inside = { "2001:db8::", "2001:db8:ffff::" },
      outside = { "2001:db9::" } },
    { cidr = "::1/0", inside = { "::", "2001:db8::1" }, outside = { "1.2.3.4" } },
    { cidr = "10.0.0.1/31", inside = { "10.0.0.0", "10.0.0.1" }, outside = { "10.0.0.2" } },
}

local NO_WARNING = {
    "10.0.0.0/8", "10.0.0.1", "10.0.0.1/32", "0.0.0.0/0", "::/0", "::1", "::1/128",
    "2001:db8::/32", "::/1", "::/95", "::fffe:0:0/96", "::1:0:0:0/96",
}

-- CIDRs written in IPv6 inside ::ffff:0:0/96: as in nginx (ngx_cidr_match
-- matches a mapped peer as IPv4, never across families) they trust nothing,
-- and the warning says which IPv4 CIDR was meant.
local MAPPED_CIDRS = {
    { "::ffff:10.0.0.0/104", "10.0.0.0/8" },
    { "::FFFF:10.0.0.0/104", "10.0.0.0/8" },
    { "::ffff:a00:0/104", "10.0.0.0/8" },
    { "::ffff:127.0.0.1/128", "127.0.0.1/32" },
    { "::ffff:1.2.3.4", "1.2.3.4" },
    { "::ffff:192.168.0.0/112", "192.168.0.0/16" },
    { "::ffff:0:0/96", "0.0.0.0/0" },
    { "0:0:0:0:0:ffff:0.0.0.0/96", "0.0.0.0/0" },
}

local BAD_CIDRS = {
    "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/08", "10.0.0.0/-1", "10.0.0.0/8/9",
    "x/8", "/8", "/", "10.0.0.0/+8", "10.0.0.0/ 8", "10.0.0.0 /8", "10.0.0.0/8 ",
    "10.0.0.0/1000", "10.0.0.0/8x", "10.0.0.0/0x8", "::/00", "::1/0128", "::1/129",
    "256.0.0.0/8", "10.0.0/8", "01.0.0.0/8", "[::1]/128", "[::1]", "1.2.3.4:80",
    "1.2.3.4:80/32", "fe80::/10%eth0", "fe80::1%eth0/64", "", "10.0.0.0/8" .. NUL,
    "10.0.0.0" .. NUL .. "/8", "10.0.0.0/" .. NUL .. "8", "::1::/64",
}

-- Builds a set and fails the test when that fails.
local function must_set(list)
    local set, err = new_ipset(list)
    assert.is_nil(err)
    assert.is_table(set)
    return set
end

local function check_membership(set, inside, outside)
    for _, addr in ipairs(inside) do
        assert.is_true(ipset_contains(set, addr), show(addr) .. " should be inside")
    end
    for _, addr in ipairs(outside) do
        assert.is_false(ipset_contains(set, addr), show(addr) .. " should be outside")
    end
end

local function show_list(list)
    if type(list) == "table" then
        local t = {}
        for i, v in ipairs(list) do
            t[i] = show(v)
        end
        return "{" .. concat(t, ", ") .. "}"
    end
    return show(list)
end

describe("gray.ffi.new_ipset", function()
    describe("builds", function()
        for _, case in ipairs(SET_CASES) do
            it(case.name .. " " .. show_list(case.list), function()
                local set = must_set(case.list)
                assert.equal(case.count, set.count)
                assert.same({}, set.warnings)
                check_membership(set, case.inside, case.outside)
            end)
        end
    end)

    describe("merges", function()
        for _, case in ipairs(MERGE_CASES) do
            it(case.name .. " " .. show_list(case.list), function()
                local set = must_set(case.list)
                assert.equal(case.count, set.count)
                check_membership(set, case.inside, case.outside)
            end)
        end
    end)

    describe("warns about host bits in", function()
        for _, case in ipairs(HOST_BITS) do
            it(show(case.cidr), function()
                local set = must_set({ case.cidr })
                assert.equal(1, #set.warnings)
                assert.is_truthy(set.warnings[1]:find(case.cidr, 1, true))
                check_membership(set, case.inside, case.outside)
            end)
        end
        it("every entry that has them, and only those", function()
            local set = must_set("10.1.2.3/8, 192.168.0.0/16, 172.16.0.1/12")
            assert.equal(2, #set.warnings)
            local all = concat(set.warnings, "\n")
            assert.is_truthy(all:find("10.1.2.3/8", 1, true))
            assert.is_truthy(all:find("172.16.0.1/12", 1, true))
            assert.is_falsy(all:find("192.168.0.0/16", 1, true))
        end)
    end)

    describe("keeps nothing of, and warns about,", function()
        for _, c in ipairs(MAPPED_CIDRS) do
            it(show(c[1]), function()
                local set = must_set({ "2001:db8::/32", c[1] })
                assert.equal(1, set.count)
                assert.same({ "'" .. c[1] .. "' is an IPv6 CIDR inside the IPv4-mapped block:"
                              .. " nginx never matches it against IPv4 peers; write " .. c[2] },
                            set.warnings)
                local v4 = c[2]:match("^[^/]+")
                check_membership(set, { "2001:db8::1" },
                                 { v4, "::ffff:" .. v4, "0.0.0.0", "10.0.0.1", "127.0.0.1" })
            end)
        end
        it("with host bits set as well: two warnings", function()
            local set = must_set({ "::ffff:10.1.2.3/104" })
            assert.equal(0, set.count)
            assert.equal(2, #set.warnings)
            assert.is_truthy(set.warnings[1]:find("host bits", 1, true))
            assert.is_truthy(set.warnings[2]:find("write 10.1.2.3/8", 1, true))
        end)
    end)

    describe("does not warn about", function()
        for _, cidr in ipairs(NO_WARNING) do
            it(show(cidr), function()
                local set = must_set({ cidr })
                assert.same({}, set.warnings)
            end)
        end
    end)

    describe("rejects, naming the entry,", function()
        for _, cidr in ipairs(BAD_CIDRS) do
            it(show(cidr), function()
                local set, err = new_ipset({ "127.0.0.1", cidr, "::1" })
                assert.is_nil(set)
                assert.is_string(err)
                assert.is_truthy(err:find(cidr, 1, true), "error does not name it: " .. err)
            end)
        end
        it("a bad entry in a string list", function()
            local set, err = new_ipset("127.0.0.1, 10.0.0.0/33, ::1")
            assert.is_nil(set)
            assert.is_string(err)
            assert.is_truthy(err:find("10.0.0.0/33", 1, true))
        end)
        for _, value in ipairs({ 42, true, {}, print }) do
            it("a non-string entry " .. show(value), function()
                local set, err = new_ipset({ "127.0.0.1", value })
                assert.is_nil(set)
                assert.is_string(err)
                assert.is_truthy(err:find("%f[%d]2%f[%D]"), "error does not name entry 2: " .. err)
            end)
        end
        for _, value in ipairs({ 42, true, print }) do
            it("a list that is " .. show(value), function()
                local set, err = new_ipset(value)
                assert.is_nil(set)
                assert.is_string(err)
            end)
        end
        it("a nil list", function()
            local set, err = new_ipset(nil)
            assert.is_nil(set)
            assert.is_string(err)
        end)
    end)

    describe("boundaries of every range", function()
        -- network (first, last) pairs: first-1 and last+1 are outside
        local LIST = { "10.0.0.0/8", "172.16.0.0/12", "192.168.1.0/24", "192.168.3.7",
                       "2001:db8::/32", "fe80::/10", "::1" }
        local EDGES = {
            { "10.0.0.0", "10.255.255.255", "9.255.255.255", "11.0.0.0" },
            { "172.16.0.0", "172.31.255.255", "172.15.255.255", "172.32.0.0" },
            { "192.168.1.0", "192.168.1.255", "192.168.0.255", "192.168.2.0" },
            { "192.168.3.7", "192.168.3.7", "192.168.3.6", "192.168.3.8" },
            { "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
              "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::" },
            { "fe80::", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
              "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fec0::" },
            { "::1", "::1", "::", "::2" },
        }
        local set = must_set(LIST)
        for _, e in ipairs(EDGES) do
            it(e[1] .. " .. " .. e[2], function()
                assert.equal(#LIST, set.count)
                check_membership(set, { e[1], e[2] }, { e[3], e[4] })
            end)
        end
    end)
end)

-- ---------------------------------------------------------------------------
-- Large sets against a naive linear reference
-- ---------------------------------------------------------------------------

describe("a large set", function()
    it("of 1000 random IPv4 /24s agrees with a linear scan", function()
        math.randomseed(1000)
        local FIRST = { 10, 172, 192 }
        local nets, seen, list = {}, {}, {}
        while #list < 1000 do
            local a = FIRST[math.random(#FIRST)]
            local b, c = math.random(0, 15), math.random(0, 255)
            local key = a * 65536 + b * 256 + c
            nets[#nets + 1] = { a, b, c }
            list[#list + 1] = fmt("%d.%d.%d.0/24", a, b, c)
            seen[key] = true
        end
        local set = must_set(list)

        -- expected count: runs of consecutive /24 numbers
        local keys = {}
        for key in pairs(seen) do
            keys[#keys + 1] = key
        end
        table.sort(keys)
        local runs = 0
        for i, key in ipairs(keys) do
            if i == 1 or keys[i - 1] + 1 ~= key then
                runs = runs + 1
            end
        end
        assert.equal(runs, set.count)

        local function linear(a, b, c)
            for _, n in ipairs(nets) do
                if n[1] == a and n[2] == b and n[3] == c then
                    return true
                end
            end
            return false
        end

        for q = 1, 3000 do
            local a, b, c, d
            local r = q % 3
            if r == 0 then
                local n = nets[math.random(#nets)]
                a, b, c = n[1], n[2], n[3] + math.random(-1, 1)
                if c < 0 or c > 255 then
                    c = n[3]
                end
            elseif r == 1 then
                a, b, c = FIRST[math.random(#FIRST)], math.random(0, 16), math.random(0, 255)
            else
                a, b, c = math.random(0, 255), math.random(0, 255), math.random(0, 255)
            end
            d = ({ 0, 255, math.random(0, 255) })[math.random(3)]
            local addr = fmt("%d.%d.%d.%d", a, b, c, d)
            assert.equal(linear(a, b, c), ipset_contains(set, addr), addr)
            local mapped = "::ffff:" .. addr
            assert.equal(linear(a, b, c), ipset_contains(set, mapped), mapped)
        end
    end)

    it("of 500 random IPv6 prefixes agrees with a linear scan", function()
        math.randomseed(6)
        local function random_addr()
            local g = {}
            g[1] = 0x2001
            g[2] = 0xdb8 + math.random(0, 3)
            for k = 3, 8 do
                g[k] = math.random() < 0.3 and 0 or math.random(0, 0xffff)
            end
            return g
        end
        -- true when the first len bits of x and y agree
        local function prefix_equal(x, y, len)
            for k = 1, 8 do
                local bits = len - (k - 1) * 16
                if bits <= 0 then
                    return true
                end
                local mask = bits >= 16 and 0xffff
                             or band(lshift(0xffff, 16 - bits), 0xffff)
                if band(x[k], mask) ~= band(y[k], mask) then
                    return false
                end
            end
            return true
        end

        local nets, list = {}, {}
        for i = 1, 500 do
            local g = random_addr()
            local len = math.random(20, 128)
            nets[i] = { g = g, len = len }
            list[i] = uncompressed(g) .. "/" .. len
        end
        local set = must_set(list)
        assert.is_true(set.count >= 1 and set.count <= 500)

        local function linear(q)
            for _, n in ipairs(nets) do
                if prefix_equal(n.g, q, n.len) then
                    return true
                end
            end
            return false
        end

        for q = 1, 3000 do
            local g
            if q % 2 == 0 then
                -- near a stored network: keep some prefix, vary the rest
                local n = nets[math.random(#nets)]
                g = {}
                for k = 1, 8 do
                    g[k] = n.g[k]
                end
                local keep = math.max(0, n.len + math.random(-3, 3))
                for k = 1, 8 do
                    local bits = keep - (k - 1) * 16
                    if bits < 16 then
                        local m = bits <= 0 and 0 or band(lshift(0xffff, 16 - bits), 0xffff)
                        local noise = ({ 0, 0xffff, math.random(0, 0xffff) })[math.random(3)]
                        g[k] = bor(band(g[k], m), band(noise, band(bnot(m), 0xffff)))
                    end
                end
            else
                g = random_addr()
            end
            local addr = uncompressed(g)
            assert.equal(linear(g), ipset_contains(set, addr), addr)
        end
    end)
end)

describe("gray.ffi.ipset_contains", function()
    local set = must_set("10.0.0.0/8, ::1")
    local NOT_ADDRESSES = {
        "x", "", "10.0.0.0/8", "10.0.0.1 ", " 10.0.0.1", "10.0.0.01", "::1%lo",
        "[10.0.0.1]", "10.0.0.1:", "10.0.0.1" .. NUL, ("1"):rep(40), "unknown",
    }
    for _, addr in ipairs(NOT_ADDRESSES) do
        it("returns nil, err for " .. show(addr), function()
            local got, err = ipset_contains(set, addr)
            assert.is_nil(got)
            assert.is_string(err)
        end)
    end
    for _, value in ipairs({ 167772161, {}, true }) do
        it("returns nil, err for " .. show(value), function()
            local got, err = ipset_contains(set, value)
            assert.is_nil(got)
            assert.is_string(err)
        end)
    end
    it("returns nil, err for nil", function()
        local got, err = ipset_contains(set, nil)
        assert.is_nil(got)
        assert.is_string(err)
    end)
    it("takes the host forms", function()
        assert.is_true(ipset_contains(set, "10.0.0.1:80"))
        assert.is_true(ipset_contains(set, "[::1]:80"))
        assert.is_true(ipset_contains(set, "[::ffff:10.0.0.1]"))
        assert.is_false(ipset_contains(set, "11.0.0.1:80"))
    end)
end)
