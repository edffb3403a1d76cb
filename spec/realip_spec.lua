-- The client address against nginx itself. Debian's nginx 1.22 with the
-- realip module (set_real_ip_from, real_ip_header X-Forwarded-For or
-- X-Real-IP, real_ip_recursive on) answers $remote_addr; in the same request
-- gray.ffi.client_ip answers from $realip_remote_addr (the socket peer) and
-- the raw header nginx used. Thousands of generated headers (seeded, so
-- every run sends the same bytes) come from four loopback peers: 127.0.0.1,
-- 127.0.0.2, ::1, and 127.0.0.1 seen as ::ffff:127.0.0.1 through an IPv6
-- socket that takes IPv4.
--
-- A pure-Lua model of nginx's parsing (ngx_inet_addr, ngx_inet6_addr,
-- ngx_parse_addr_port, the split in ngx_http_get_forwarded_addr_internal,
-- one walk per header line) has one switch per documented deviation (KINDS).
-- With every switch on it must answer as live nginx does on every case; with
-- every switch off, as the library does. A disagreement between nginx and
-- the library is then named by the switches that explain it, and one that
-- no switch explains fails the spec.
--
--   busted --lua=luajit spec/realip_spec.lua
--   GRAY_REALIP_CASES=20000 GRAY_REALIP_SEED=7 busted --lua=luajit spec/realip_spec.lua

local harness = require "helpers.harness"
local gray = require "gray.ffi"
local bit = require "bit"
local ip_text = require "helpers.ip_text"

local band, rshift = bit.band, bit.rshift
local byte, char, sub, fmt, srep = string.byte, string.char, string.sub, string.format, string.rep
local concat, sort = table.concat, table.sort

local HOST_TEXT_MAX = 64        -- GRAY_HOST_TEXT_MAX in csrc/gray.h
local NCASES = tonumber(os.getenv("GRAY_REALIP_CASES")) or 10000
local SEED = tonumber(os.getenv("GRAY_REALIP_SEED")) or 20221019

-- The documented deviations. With its switch on the model does what nginx
-- 1.22.1 does; with it off, what the library does.
local KINDS = {
    "leading-zero",         -- an IPv4 octet with a leading zero: nginx reads 010 as 10
    "empty-octet",          -- 1..2.3, .1.2.3: nginx reads an empty octet as 0
    "trailing-dot",         -- 1.2.3.: nginx reads an empty last octet as 0
    "broadcast-255",        -- nginx refuses 255.255.255.255 (INADDR_NONE); we take it
    "bracketed-v4",         -- [1.2.3.4]:80: nginx takes IPv4 in brackets
    "v6-lone-colon",        -- :1:2:3:4:5:6:7:8, 1::2: : nginx skips or zero-fills it
    "v6-gap7",              -- 1:2:3:4:5:6:7:: (RFC 4291 text): nginx refuses it; we take it
    "over-length",          -- an element over GRAY_HOST_TEXT_MAX bytes (a zero-padded port)
    "leading-comma-glue",   -- nginx never splits at a line's first byte: ",1.2.3.4" is junk
    "empty-line",           -- an empty X-Forwarded-For line is junk to nginx; the joined
                            -- $http_x_forwarded_for cannot show it
}
local ELEMENT_KINDS = {}
for i = 1, 8 do
    ELEMENT_KINDS[i] = KINDS[i]
end
local ALL, NONE = {}, {}
for _, k in ipairs(KINDS) do
    ALL[k] = true
end

local function without(set, drop)
    local t = {}
    for k in pairs(set) do
        if not drop[k] then
            t[k] = true
        end
    end
    return t
end

local function label(kinds)
    local t = {}
    for k in pairs(kinds) do
        t[#t + 1] = k
    end
    sort(t)
    return concat(t, "+")
end

-- A readable form of any header text.
local function show(v)
    if v == nil then
        return "<absent>"
    end
    return '"' .. tostring(v):gsub("[%c\127-\255\"\\]", function(c)
        return fmt("\\%d", byte(c))
    end) .. '"'
end

-- ---------------------------------------------------------------------------
-- The model of nginx 1.22.1. Addresses are 16-byte strings, IPv4 as its
-- IPv4-mapped form: ngx_cidr_match compares a mapped address as AF_INET, and
-- $remote_addr is compared canonicalised, so nothing else tells them apart.
-- ---------------------------------------------------------------------------

local MAPPED = srep("\0", 10) .. "\255\255"

local function show_addr(a)
    if a == nil then
        return "nil"
    end
    if sub(a, 1, 12) == MAPPED then
        return fmt("%d.%d.%d.%d", byte(a, 13, 16))
    end
    local g = {}
    for i = 1, 8 do
        g[i] = fmt("%x", byte(a, 2 * i - 1) * 256 + byte(a, 2 * i))
    end
    return concat(g, ":")
end

-- ngx_inet_addr: four bytes, or nil for INADDR_NONE.
local function inet_addr(s, Q)
    local octets, octet, digits, dots = {}, 0, 0, 0
    local lead0, empty_mid = false, false
    for i = 1, #s do
        local c = byte(s, i)
        if c >= 48 and c <= 57 then
            if digits == 1 and octet == 0 then
                lead0 = true
            end
            octet = octet * 10 + (c - 48)
            digits = digits + 1
            if octet > 255 then
                return nil
            end
        elseif c == 46 then
            if digits == 0 then
                empty_mid = true
            end
            dots = dots + 1
            octets[dots] = octet
            octet, digits = 0, 0
        else
            return nil
        end
    end
    if dots ~= 3 then
        return nil
    end
    octets[4] = octet
    if (lead0 and not Q["leading-zero"]) or (empty_mid and not Q["empty-octet"])
       or (digits == 0 and not Q["trailing-dot"]) then
        return nil
    end
    if octets[1] == 255 and octets[2] == 255 and octets[3] == 255 and octets[4] == 255
       and Q["broadcast-255"] then
        return nil
    end
    return char(octets[1], octets[2], octets[3], octets[4])
end

local function hex_digit(c)
    if c >= 48 and c <= 57 then
        return c - 48
    end
    c = bit.bor(c, 0x20)
    if c >= 97 and c <= 102 then
        return c - 87
    end
    return nil
end

-- ngx_inet6_addr: sixteen bytes or nil.
local function inet6_addr(s, Q)
    local len = #s
    if len == 0 then
        return nil
    end
    if not Q["v6-lone-colon"] then
        -- a lone ':' first or last: nginx skips the first, zero-fills the last
        if (byte(s, 1) == 58 and byte(s, 2) ~= 58)
           or (byte(s, len) == 58 and (len < 2 or byte(s, len - 1) ~= 58)) then
            return nil
        end
    end
    local out = {}
    local zero, digit = nil, nil
    local nibbles, word, n = 0, 0, 8
    local i = 1
    if byte(s, 1) == 58 then
        i = 2
    end
    while i <= len do
        local c = byte(s, i)
        i = i + 1
        if c == 58 then
            if nibbles > 0 then
                digit = i
                out[#out + 1] = rshift(word, 8)
                out[#out + 1] = band(word, 0xff)
                n = n - 1
                if n == 0 then
                    return nil
                end
                nibbles, word = 0, 0
            else
                if zero ~= nil then
                    return nil
                end
                digit = i
                zero = #out + 1
            end
        elseif c == 46 and nibbles > 0 then
            if n < 2 or digit == nil then
                return nil
            end
            local quad = inet_addr(sub(s, digit), Q)
            if not quad then
                return nil
            end
            out[#out + 1] = byte(quad, 1)
            out[#out + 1] = byte(quad, 2)
            n = n - 1
            word = byte(quad, 3) * 256 + byte(quad, 4)
            break
        else
            nibbles = nibbles + 1
            if nibbles > 4 then
                return nil
            end
            local h = hex_digit(c)
            if not h then
                return nil
            end
            word = word * 16 + h
        end
    end
    if nibbles == 0 and zero == nil then
        return nil
    end
    out[#out + 1] = rshift(word, 8)
    out[#out + 1] = band(word, 0xff)
    n = n - 1
    if n > 0 then
        if not zero then
            return nil
        end
        local tail = {}
        for k = zero, #out do
            tail[#tail + 1] = out[k]
        end
        for k = zero, 16 do
            out[k] = 0
        end
        for k = 1, #tail do
            out[16 - #tail + k] = tail[k]
        end
    elseif zero ~= nil then
        -- seven groups then "::": the gap is the last group, which nginx
        -- has already written as the final word and then refuses
        if Q["v6-gap7"] or zero ~= 15 or nibbles ~= 0 then
            return nil
        end
    end
    return char(unpack(out, 1, 16))
end

-- ngx_parse_addr: the address and its family.
local function parse_addr(s, Q)
    local quad = inet_addr(s, Q)
    if quad then
        return MAPPED .. quad, 4
    end
    local a = inet6_addr(s, Q)
    if a then
        return a, 6
    end
    return nil
end

-- ngx_parse_addr_port: one forwarding-header element.
local function parse_element(s, Q)
    if #s > HOST_TEXT_MAX and not Q["over-length"] then
        return nil
    end
    local a = parse_addr(s, Q)
    if a then
        return a
    end
    local inner, port, bracketed
    if byte(s, 1) == 91 then
        local close = s:find("]", 1, true)
        if not close or close == #s or byte(s, close + 1) ~= 58 then
            return nil
        end
        inner, port, bracketed = sub(s, 2, close - 1), sub(s, close + 2), true
    else
        local colon = s:find(":", 1, true)
        if not colon then
            return nil
        end
        inner, port = sub(s, 1, colon - 1), sub(s, colon + 1)
    end
    -- ngx_atoi: digits only, leading zeros fine
    if not port:find("^%d+$") then
        return nil
    end
    local p = tonumber(port)
    if p < 1 or p > 65535 then
        return nil
    end
    local family
    a, family = parse_addr(inner, Q)
    if a and bracketed and family == 4 and not Q["bracketed-v4"] then
        return nil
    end
    return a
end

-- The element kinds that change how an element parses.
local element_kinds_memo = {}
local function element_kinds(s)
    local kinds = element_kinds_memo[s]
    if kinds then
        return kinds
    end
    kinds = {}
    local full = parse_element(s, ALL)
    for _, k in ipairs(ELEMENT_KINDS) do
        if parse_element(s, without(ALL, { [k] = true })) ~= full then
            kinds[k] = true
        end
    end
    element_kinds_memo[s] = kinds
    return kinds
end

-- ngx_ptocidr and ngx_cidr_match: a mapped address matches IPv4 CIDRs only,
-- a CIDR written in IPv6 matches non-mapped IPv6 only. old_rule: the rule
-- before this fix (an IPv6-written CIDR matched the mapped form too).
local function parse_cidr(text)
    local addr, plen = text:match("^([^/]+)/?(%d*)$")
    local bytes, family = parse_addr(addr, ALL)
    assert(bytes, "bad CIDR in the spec: " .. text)
    local width = family == 4 and 32 or 128
    local prefix = plen ~= "" and tonumber(plen) or width
    if family == 4 then
        bytes = sub(bytes, 13)
    end
    local mask, net = {}, {}
    for k = 1, width / 8 do
        local bits = math.min(8, math.max(0, prefix - (k - 1) * 8))
        mask[k] = band(0xff, bit.lshift(0xff, 8 - bits))
        net[k] = band(byte(bytes, k), mask[k])
    end
    return { family = family, mask = mask, net = net, text = text }
end

local function trusted(a, cidrs, old_rule)
    local family, b = 6, a
    if sub(a, 1, 12) == MAPPED then
        family, b = 4, sub(a, 13)
    end
    for _, c in ipairs(cidrs) do
        local probe
        if c.family == family then
            probe = b
        elseif old_rule and c.family == 6 then
            probe = a   -- the old rule: the mapped form inside an IPv6 CIDR
        end
        if probe then
            local inside = true
            for k = 1, #c.mask do
                if band(byte(probe, k), c.mask[k]) ~= c.net[k] then
                    inside = false
                    break
                end
            end
            if inside then
                return true
            end
        end
    end
    return false
end

-- nginx's view of a header value: its parser drops spaces (not tabs) at
-- both ends.
local function header_view(v)
    return (v:gsub("^ +", ""):gsub(" +$", ""))
end

local function is_sep(c)
    return c == 44 or c == 32
end

-- The elements of one line, right to left, as
-- ngx_http_get_forwarded_addr_internal cuts them: from the right skip ','
-- and ' ', then back to the previous ',' or ' ', never looking at the first
-- byte. Without the glue switch a separator there splits too.
local function line_tokens(line, Q, out)
    if not Q["leading-comma-glue"] then
        local t = {}
        for e in line:gmatch("[^, ]+") do
            t[#t + 1] = e
        end
        for k = #t, 1, -1 do
            out[#out + 1] = { text = t[k] }
        end
        return
    end
    local len = #line
    while true do
        local last = len
        while last > 1 and is_sep(byte(line, last)) do
            last = last - 1
        end
        local start = last
        while start > 1 and not is_sep(byte(line, start)) do
            start = start - 1
        end
        if start > 1 then
            start = start + 1
        end
        out[#out + 1] = { text = sub(line, start, last),
                          glued = start == 1 and is_sep(byte(line, 1)) }
        if start == 1 then
            return
        end
        len = start - 2
    end
end

-- What the walk reads, right to left: every X-Forwarded-For line from the
-- last (ngx_http_get_forwarded_addr), or the one X-Real-IP value. An empty
-- line is a junk element to nginx (it parses the byte before the value).
local function tokens(lines, Q)
    local out = {}
    for k = #lines, 1, -1 do
        local v = lines[k]
        if v == "" then
            if Q["empty-line"] then
                out[#out + 1] = { text = "", empty_line = true }
            end
        else
            line_tokens(v, Q, out)
        end
    end
    return out
end

-- real_ip_recursive on: while the current address is trusted, step to the
-- next element; junk stops the walk where it is.
local function walk(toks, peer, cidrs, Q, seen, old_rule)
    local addr = peer
    for _, tok in ipairs(toks) do
        if not trusted(addr, cidrs, old_rule) then
            return addr
        end
        if seen then
            for k in pairs(element_kinds(tok.text)) do
                seen[k] = true
            end
            if tok.glued then
                seen["leading-comma-glue"] = true
            end
            if tok.empty_line then
                seen["empty-line"] = true
            end
        end
        local a = parse_element(tok.text, Q)
        if not a then
            return addr
        end
        addr = a
    end
    return addr
end

local function model(case, Q, seen, old_rule)
    if case.lines == nil then
        return case.peer
    end
    return walk(tokens(case.lines, Q), case.peer, case.set.model, Q, seen, old_rule)
end

-- The smallest set of switches whose removal turns nginx's answer into the
-- library's, as a label ("leading-zero", "bracketed-v4+leading-zero"), or
-- nil when none does.
local function explain(case, lib)
    local drop = {}
    for _ = 1, #KINDS do
        local seen = {}
        model(case, without(ALL, drop), seen)
        local grew = false
        for k in pairs(seen) do
            if not drop[k] then
                drop[k], grew = true, true
            end
        end
        if not grew then
            break
        end
    end
    if model(case, without(ALL, drop)) ~= lib then
        return nil
    end
    for _, k in ipairs(KINDS) do
        if drop[k] then
            drop[k] = nil
            if model(case, without(ALL, drop)) ~= lib then
                drop[k] = true
            end
        end
    end
    if next(drop) == nil then
        return nil
    end
    return label(drop)
end

-- ---------------------------------------------------------------------------
-- Generated headers: a Park-Miller generator, so a seed is a test case.
-- ---------------------------------------------------------------------------

local rng_state = SEED % 2147483646 + 1

local function rand(a, b)
    rng_state = rng_state * 48271 % 2147483647
    return a + rng_state % (b - a + 1)
end

local function pick(t)
    return t[rand(1, #t)]
end

local function v4(a, b, c, d)
    return { v = 4, o = { a, b, c, d } }
end

local function v6(...)
    return { v = 6, g = { ... } }
end

local POOLS = {
    ten = function() return v4(10, rand(0, 255), rand(0, 255), rand(0, 255)) end,
    lan = function() return v4(192, 168, rand(0, 255), rand(0, 255)) end,
    lo1 = function() return v4(127, 0, 0, 1) end,
    lo2 = function() return v4(127, 0, 0, 2) end,
    pub4 = function()
        local r = rand(1, 5)
        if r == 1 then return v4(203, 0, 113, rand(0, 255)) end
        if r == 2 then return v4(198, 51, 100, rand(0, 255)) end
        if r == 3 then return v4(172, 16, rand(0, 255), rand(1, 254)) end
        if r == 4 then return v4(1, 2, 3, 4) end
        return v4(8, 8, 8, 8)
    end,
    db8 = function()
        return v6(0x2001, 0xdb8, rand(0, 1) * rand(0, 0xffff), 0, 0,
                  rand(0, 1) * rand(0, 0xffff), rand(0, 2) * rand(0, 0xffff), rand(1, 0xffff))
    end,
    fd = function() return v6(0xfd00, 0, 0, rand(0, 0xff), 0, 0, 0, rand(1, 0xffff)) end,
    lo6 = function() return v6(0, 0, 0, 0, 0, 0, 0, 1) end,
    pub6 = function()
        local r = rand(1, 4)
        if r == 1 then return v6(0x2001, 0xdb9, 0, 0, 0, 0, 0, rand(1, 0xffff)) end
        if r == 2 then return v6(0x2606, 0x4700, 0, 0, 0, 0, 0, 0x1111) end
        if r == 3 then return v6(0xfe80, 0, 0, 0, 0, 0, 0, rand(1, 0xff)) end
        return v6(0x8000, 0, 0, 0, 0, 0, 0, 1)
    end,
}

-- The trusted sets. hops: pools the walk should step over (or, for the
-- IPv6-written CIDRs, pools that only look trusted); others: the rest.
local SETS = {
    { name = "v4", cidrs = { "127.0.0.1/32", "10.0.0.0/8", "192.168.0.0/16" },
      hops = { "ten", "lan", "lo1" }, others = { "pub4", "lo2", "db8", "lo6" } },
    { name = "v6", cidrs = { "::1", "2001:db8::/32", "fd00::/8" },
      hops = { "db8", "fd", "lo6" }, others = { "pub6", "ten", "lo1" } },
    { name = "mapped", cidrs = { "::ffff:127.0.0.0/104", "::ffff:10.0.0.0/104",
                                 "::ffff:192.168.0.0/112", "::ffff:1.2.3.4", "::1",
                                 "2001:db8::/32" },
      hops = { "lo6", "db8", "ten", "lo1", "lan" }, others = { "pub4", "pub6" } },
    { name = "mixed", cidrs = { "127.0.0.0/8", "::/1", "192.168.0.0/16" },
      hops = { "lo1", "lo2", "lan", "db8", "lo6", "ten" }, others = { "fd", "pub4", "pub6" } },
    { name = "all", cidrs = { "0.0.0.0/0", "::/0" },
      hops = { "ten", "lan", "lo1", "db8", "fd", "lo6", "pub4", "pub6" }, others = { "pub4" } },
}
local SET_BY_NAME = {}
for _, set in ipairs(SETS) do
    SET_BY_NAME[set.name] = set
    set.model = {}
    for i, c in ipairs(set.cidrs) do
        set.model[i] = parse_cidr(c)
    end
end

-- Where requests come from: bind address, where to connect, which port
-- ("port": 127.0.0.1 and [::1]; "port2": the IPv6 socket taking IPv4), and
-- the $realip_remote_addr nginx must see.
local SOURCES = {
    { name = "127.0.0.1", bind = "-", host = "127.0.0.1", port = "port", peer = "127.0.0.1" },
    { name = "127.0.0.2", bind = "127.0.0.2", host = "127.0.0.1", port = "port",
      peer = "127.0.0.2" },
    { name = "::1", bind = "-", host = "[::1]", port = "port", peer = "::1" },
    { name = "::ffff:127.0.0.1", bind = "-", host = "127.0.0.1", port = "port2",
      peer = "::ffff:127.0.0.1" },
    { name = "::ffff:127.0.0.2", bind = "127.0.0.2", host = "127.0.0.1", port = "port2",
      peer = "::ffff:127.0.0.2" },
}
local SOURCE_BY_NAME = {}
for _, s in ipairs(SOURCES) do
    SOURCE_BY_NAME[s.name] = s
end

local function dotted(o)
    return fmt("%d.%d.%d.%d", o[1], o[2], o[3], o[4])
end

-- RFC 5952: the longest run of two or more zero groups as "::".
local v6_text = ip_text.rfc5952

local function v6_full(g)
    local t = {}
    for k = 1, 8 do
        t[k] = fmt("%04x", g[k])
    end
    return concat(t, ":")
end

local PORTS = { "80", "443", "8080", "65535", "1", "080", "00080", "0443", "00001" }
local BAD_PORTS = { "0", "00", "65536", "99999", "", "8o", "-1", "+80", "0x50", "1e3" }

-- A valid form of an address.
local function plain(a)
    local r = rand(1, 10)
    if a.v == 4 then
        local d = dotted(a.o)
        if r <= 6 then return d end
        if r <= 8 then return d .. ":" .. pick(PORTS) end
        if r == 9 then return pick({ "::ffff:", "::FFFF:", "0:0:0:0:0:ffff:" }) .. d end
        return "[::ffff:" .. d .. "]:" .. pick(PORTS)
    end
    if r <= 6 then return v6_text(a.g) end
    if r <= 8 then return "[" .. v6_text(a.g) .. "]:" .. pick(PORTS) end
    if r == 9 then return v6_full(a.g) end
    return v6_text(a.g, true)
end

local function octet_texts(a)
    if a.v ~= 4 then
        a = POOLS.ten()
    end
    return { tostring(a.o[1]), tostring(a.o[2]), tostring(a.o[3]), tostring(a.o[4]) }
end

-- a dotted quad alone, with a port, or as the tail of ::ffff:
local function v4_dress(s)
    local r = rand(1, 10)
    if r <= 2 then return s .. ":" .. pick(PORTS) end
    if r <= 4 then return "::ffff:" .. s end
    return s
end

-- The forms behind each element kind, from an address the set may trust.
local QUIRKS = {
    function(a)     -- leading-zero
        local t = octet_texts(a)
        local k = rand(1, 4)
        t[k] = (rand(1, 3) == 1 and "00" or "0") .. t[k]
        return v4_dress(concat(t, "."))
    end,
    function(a)     -- empty-octet
        local t = octet_texts(a)
        t[rand(1, 3)] = ""
        return v4_dress(concat(t, "."))
    end,
    function(a)     -- trailing-dot
        local t = octet_texts(a)
        t[4] = ""
        return v4_dress(concat(t, "."))
    end,
    function(a)     -- bracketed-v4
        return "[" .. concat(octet_texts(a), ".") .. "]:" .. pick(PORTS)
    end,
    function(a)     -- v6-lone-colon
        if a.v ~= 6 then
            a = POOLS.db8()
        end
        local c = v6_text(a.g)
        local r = rand(1, 3)
        if r > 1 and c:find("::", 1, true) then
            if r == 2 and byte(c, 1) ~= 58 then
                return ":" .. c
            end
            if byte(c, #c) ~= 58 then
                return c .. ":"
            end
        end
        return ":" .. v6_full(a.g)
    end,
    function(a)     -- v6-gap7
        if a.v ~= 6 then
            a = POOLS.db8()
        end
        local t = {}
        for k = 1, 7 do
            t[k] = fmt("%x", a.g[k])
        end
        return concat(t, ":") .. "::"
    end,
    function()      -- broadcast-255
        return pick({ "255.255.255.255", "255.255.255.255:80", "::ffff:255.255.255.255",
                      "[::ffff:255.255.255.255]:443" })
    end,
    function(a)     -- over-length: a port padded with zeros
        local s = a.v == 4 and dotted(a.o) or "[" .. v6_text(a.g) .. "]"
        return s .. ":" .. srep("0", HOST_TEXT_MAX + rand(1, 12) - #s - 3) .. "80"
    end,
}

-- Near misses: bad ports, [v6] without a port, tabs, zones.
local VARIANTS = {
    function(a)
        if a.v == 4 then
            return dotted(a.o) .. ":" .. pick(BAD_PORTS)
        end
        return "[" .. v6_text(a.g) .. "]:" .. pick(BAD_PORTS)
    end,
    function(a)
        return "[" .. (a.v == 4 and dotted(a.o) or v6_text(a.g)) .. "]"
    end,
    function(a)
        local s = plain(a)
        local r = rand(1, 3)
        if r == 1 then return "\t" .. s end
        if r == 2 then return s .. "\t" end
        local k = rand(2, #s)
        return sub(s, 1, k - 1) .. "\t" .. sub(s, k)
    end,
    function(a)
        return a.v == 6 and v6_text(a.g) .. "%eth0" or dotted(a.o) .. "/32"
    end,
}

local JUNK = {
    "unknown", "_hidden", "abc", "-", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.256",
    "fe80::1%eth0", "[::1]x", "[]:80", "1.2.3.4:80:90", "::ffff:1.2.3.4:80", "10.0.0.0/8",
    "0x0a.0.0.1", "1.2.3.4;5.6.7.8", "\239\188\145.2.3.4", "[::1", "::1]", "1:2:3:4:5:6:7",
    "1:2:3:4:5:6:7:8:9", ":::", "[", "]", ":", "::ffff:1.2.3", "12345::", "g::1", "[[::1]]:80",
    "1.2.3.4:", ":80", "::1::", "\"1.2.3.4\"",
}

-- Random text from address-like pieces, for the corners of both parsers.
local PIECES = { "0", "1", "7", "9", "f", "A", "ff", "ffff", "10", "127", "255", "256", "00",
                 "001", ":", ":", "::", "::", ".", ".", ".", "[", "]", "]:", "%", "80", "0:" }

local function scrambled()
    local t = {}
    for i = 1, rand(1, 12) do
        t[i] = pick(PIECES)
    end
    return concat(t)
end

local function element(set, hop_share)
    local r = rand(1, 100)
    if r <= hop_share then
        return plain(POOLS[pick(set.hops)]())
    end
    if r <= hop_share + 12 then
        return plain(POOLS[pick(set.others)]())
    end
    if r <= hop_share + 24 then
        return pick(QUIRKS)(POOLS[pick(set.hops)]())
    end
    if r <= hop_share + 33 then
        return pick(VARIANTS)(POOLS[pick(set.hops)]())
    end
    return rand(1, 2) == 1 and pick(JUNK) or scrambled()
end

local SEPS = { ", ", ", ", ", ", ", ", ",", ",", " ", ",,", " , ", ", ,", "  " }

local function make_line(set, n)
    local hop_share = n >= 20 and 85 or 58
    local t = {}
    for i = 1, n do
        if i > 1 then
            t[#t + 1] = pick(SEPS)
        end
        t[#t + 1] = element(set, hop_share)
    end
    local s = concat(t)
    local r = rand(1, 100)
    if r <= 5 then
        s = pick({ ",", ",", ", ", ",,", ", ," }) .. s
    elseif r <= 10 then
        s = s .. pick({ ",", ", ", " ,", ",," })
    elseif r <= 14 then
        s = "  " .. s .. " "
    end
    return s
end

local function list_length(short)
    local r = rand(1, 100)
    if short and r <= 50 then return 1 end
    if r <= 70 then return rand(1, 4) end
    if r <= 92 then return rand(5, 12) end
    return rand(20, 60)
end

local function make_lines(set, count, short)
    local lines = {}
    for i = 1, count do
        lines[i] = make_line(set, list_length(short))
    end
    return lines
end

local function random_case()
    local set = pick(SETS)
    local which = rand(1, 2) == 1 and "xff" or "xri"
    local source = pick(SOURCES)
    local xff, xri
    local r = rand(1, 100)
    if which == "xff" then
        if r <= 78 and r > 2 then
            xff = make_lines(set, 1)
        elseif r <= 95 and r > 2 then
            xff = make_lines(set, rand(2, 4), true)
        elseif r > 2 then
            xff = make_lines(set, rand(2, 4), true)
            xff[rand(1, #xff)] = pick({ "", "   ", ",", ", ," })
        end
        if rand(1, 10) == 1 then
            xri = make_lines(set, 1, true)
        end
    else
        if r > 2 and r <= 4 then
            xri = { pick({ "", "  ", ",", "\t" }) }
        elseif r > 4 and r <= 90 then
            xri = make_lines(set, 1, true)
        elseif r > 90 then
            xri = make_lines(set, 2, true)
        end
        if rand(1, 5) == 1 then
            xff = make_lines(set, 1, true)
        end
    end
    return { set = set, which = which, source = source, xff = xff, xri = xri }
end

-- Hand-written cases, sent first: each fix (want: the client both must
-- give) and each documented kind (kind: the label the disagreement must get).
local PAD = srep("0", 60)
local PINNED = {
    { "a space splits X-Forwarded-For", "v4", "xff", "127.0.0.1",
      xff = { "203.0.113.9 10.0.0.1" }, want = "203.0.113.9" },
    { "a tab is a byte of its element", "v4", "xff", "127.0.0.1",
      xff = { "203.0.113.9,\t10.0.0.1" }, want = "127.0.0.1" },
    { "a trailing tab too", "v4", "xff", "127.0.0.1",
      xff = { "203.0.113.9, 10.0.0.1\t" }, want = "127.0.0.1" },
    { "[v6] without a port is not an address", "v6", "xff", "::1",
      xff = { "2001:db9::9, [2001:db8::1]" }, want = "::1" },
    { "[v6]:port is", "v6", "xff", "::1",
      xff = { "2001:db9::9, [2001:db8::1]:443" }, want = "2001:db9::9" },
    { "port 0 is junk", "v4", "xff", "127.0.0.1",
      xff = { "203.0.113.9, 10.0.0.1:0" }, want = "127.0.0.1" },
    { "ports with leading zeros", "v4", "xff", "127.0.0.1",
      xff = { "203.0.113.9:080, 10.0.0.1:00080" }, want = "203.0.113.9" },
    { "port 65536 is junk", "v4", "xff", "127.0.0.1",
      xff = { "203.0.113.9:65536" }, want = "127.0.0.1" },
    { "X-Real-IP holding a list is walked", "v4", "xri", "127.0.0.1",
      xri = { "203.0.113.9, 10.0.0.1" }, want = "203.0.113.9" },
    { "X-Real-IP with a trailing comma", "v4", "xri", "127.0.0.1",
      xri = { "203.0.113.9," }, want = "203.0.113.9" },
    { "X-Real-IP all trusted gives its leftmost", "v4", "xri", "::ffff:127.0.0.1",
      xri = { "10.0.0.2 10.0.0.1" }, want = "10.0.0.2" },
    { "X-Real-IP: the first line counts", "v4", "xri", "127.0.0.1",
      xri = { "203.0.113.9", "198.51.100.1" }, want = "203.0.113.9" },
    { "X-Real-IP junk keeps the peer", "v4", "xri", "127.0.0.1",
      xri = { "unknown" }, xff = { "203.0.113.9" }, want = "127.0.0.1" },
    { "X-Real-IP with a tab is junk", "v4", "xri", "127.0.0.1",
      xri = { "\t203.0.113.9" }, want = "127.0.0.1" },
    { "an IPv6-written CIDR trusts no IPv4 hop", "mapped", "xff", "::1",
      xff = { "203.0.113.9, 10.0.0.1" }, want = "10.0.0.1" },
    { "nor an IPv4 peer", "mapped", "xff", "127.0.0.1",
      xff = { "203.0.113.9" }, want = "127.0.0.1" },
    { "nor an IPv4-mapped peer", "mapped", "xri", "::ffff:127.0.0.1",
      xri = { "203.0.113.9" }, want = "127.0.0.1" },
    { "::ffff:1.2.3.4 does not trust 1.2.3.4", "mapped", "xff", "::1",
      xff = { "203.0.113.9, 1.2.3.4" }, want = "1.2.3.4" },
    { "::/1 trusts no IPv4 hop", "mixed", "xff", "127.0.0.1",
      xff = { "203.0.113.9, 10.0.0.1" }, want = "10.0.0.1" },
    { "::/1 trusts IPv6", "mixed", "xff", "127.0.0.2",
      xff = { "203.0.113.9, 2001:db8::1" }, want = "203.0.113.9" },
    { "lines are walked from the last", "v4", "xff", "127.0.0.1",
      xff = { "203.0.113.9", "10.0.0.1, 10.0.0.2" }, want = "203.0.113.9" },
    { "an untrusted peer is the client", "v4", "xff", "127.0.0.2",
      xff = { "203.0.113.9" }, want = "127.0.0.2" },
    { "leading zero", "v4", "xff", "127.0.0.1",
      xff = { "203.0.113.9, 010.0.0.1" }, kind = "leading-zero" },
    { "empty octet", "v4", "xff", "127.0.0.1",
      xff = { "203.0.113.9, 10..0.1" }, kind = "empty-octet" },
    { "trailing dot", "v4", "xff", "127.0.0.1",
      xff = { "203.0.113.9, 10.0.0." }, kind = "trailing-dot" },
    { "broadcast", "all", "xff", "127.0.0.1",
      xff = { "203.0.113.9, 255.255.255.255" }, kind = "broadcast-255" },
    { "bracketed IPv4", "v4", "xff", "127.0.0.1",
      xff = { "203.0.113.9, [10.0.0.1]:80" }, kind = "bracketed-v4" },
    { "lone colon first", "v6", "xff", "::1",
      xff = { "2001:db9::9, :2001:db8:0:0:0:0:0:1" }, kind = "v6-lone-colon" },
    { "lone colon last", "v6", "xff", "::1",
      xff = { "2001:db9::9, 2001:db8::1:" }, kind = "v6-lone-colon" },
    { "seven groups then ::", "v6", "xff", "::1",
      xff = { "2001:db9::9, 2001:db8:1:2:3:4:5::" }, kind = "v6-gap7" },
    { "a port padded past 64 bytes", "v4", "xff", "127.0.0.1",
      xff = { "203.0.113.9, 10.0.0.1:" .. PAD .. "80" }, kind = "over-length" },
    { "a comma glued to the first element", "v4", "xff", "127.0.0.1",
      xff = { ",203.0.113.9, 10.0.0.1" }, kind = "leading-comma-glue" },
    { "an empty line", "v4", "xff", "127.0.0.1",
      xff = { "203.0.113.9", "", "10.0.0.1" }, kind = "empty-line" },
}

local function views(lines)
    local t = {}
    for i, v in ipairs(lines) do
        t[i] = header_view(v)
    end
    return t
end

-- What nginx reads for the header in use: the lines the model walks and the
-- variable text the library gets.
local function finish_case(case)
    if case.which == "xff" then
        if case.xff then
            case.lines = views(case.xff)
            case.echo = concat(case.lines, ", ")
        end
    elseif case.xri then
        case.lines = { header_view(case.xri[1]) }
        case.echo = case.lines[1]
    end
    return case
end

local function build_cases()
    local cases = {}
    for _, p in ipairs(PINNED) do
        cases[#cases + 1] = finish_case({
            name = p[1], set = SET_BY_NAME[p[2]], which = p[3], source = SOURCE_BY_NAME[p[4]],
            xff = p.xff, xri = p.xri, want = p.want, kind = p.kind,
        })
    end
    while #cases < NCASES do
        cases[#cases + 1] = finish_case(random_case())
    end
    return cases
end

-- ---------------------------------------------------------------------------
-- nginx: one server per trusted set and header, all on the same sockets
-- (picked by Host); a driver location replays raw requests from a chosen
-- source address over one keepalive connection.
-- ---------------------------------------------------------------------------

local HTTP = [[
  keepalive_requests 1000000;
  init_by_lua_block {
    local gray = require "gray.ffi"
    local sets = {}
    local function hex(s)
      return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
    end
    -- $remote_addr after realip, the library's answer from the socket peer
    -- and the header nginx used, and that header's text
    package.loaded.realip_probe = function(list, which)
      local set = sets[list]
      if not set then
        set = assert(gray.new_ipset(list))
        sets[list] = set
      end
      local var = ngx.var
      local peer = var.realip_remote_addr
      local hdr, client
      if which == "xff" then
        hdr = var.http_x_forwarded_for
        client = gray.client_ip(set, peer, nil, hdr)
      else
        hdr = var.http_x_real_ip
        client = gray.client_ip(set, peer, hdr, nil)
      end
      local body = table.concat({ var.arg_id, var.remote_addr, peer, tostring(client),
                                  hdr and "=" .. hex(hdr) or "-" }, "\t") .. "\n"
      ngx.header["Content-Length"] = #body
      ngx.print(body)
    end
  }
]]

local DRIVER = [[
  server {
    listen 127.0.0.1:$PORT default_server;
    listen [::1]:$PORT default_server;
    listen [::ffff:127.0.0.1]:$PORT2 default_server ipv6only=off;
    server_name driver;
    location / { return 404; }
    # body: "<bind> <host> <port>\n" then "<length>\n<raw request>"...;
    # answers the replies' bodies, in order
    location = /drive {
      client_max_body_size 64m;
      client_body_buffer_size 64m;
      content_by_lua_block {
        ngx.req.read_body()
        local body = ngx.req.get_body_data() or ""
        local bind, host, port, pos = body:match("^(%S+) (%S+) (%d+)\n()")
        local function fail(what, err)
          ngx.status = 500
          ngx.say(what, ": ", err)
        end
        local sock = ngx.socket.tcp()
        sock:settimeouts(10000, 10000, 10000)
        local ok, err
        if bind ~= "-" then
          ok, err = sock:bind(bind)
          if not ok then return fail("bind " .. bind, err) end
        end
        ok, err = sock:connect(host, tonumber(port))
        if not ok then return fail("connect", err) end
        local out, batch = {}, {}
        local function read_replies()
          for _ = 1, #batch do
            local status, rerr = sock:receive("*l")
            if not status then return nil, "status line: " .. rerr end
            local clen
            while true do
              local line, herr = sock:receive("*l")
              if not line then return nil, "headers: " .. herr end
              if line == "" then break end
              local v = line:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
              if v then clen = tonumber(v) end
            end
            if not clen then return nil, "no Content-Length: " .. status end
            local data, berr = sock:receive(clen)
            if not data then return nil, "body: " .. berr end
            if not status:find("^HTTP/1%.1 200 ") then data = "!" .. status .. "\n" end
            out[#out + 1] = data
          end
          return true
        end
        while pos <= #body do
          local n, at = body:match("^(%d+)\n()", pos)
          n = tonumber(n)
          batch[#batch + 1] = body:sub(at, at + n - 1)
          pos = at + n
          if #batch == 50 or pos > #body then
            ok, err = sock:send(batch)
            if not ok then return fail("send", err) end
            ok, err = read_replies()
            if not ok then return fail("read", err) end
            batch = {}
          end
        end
        sock:close()
        ngx.print(table.concat(out))
      }
    }
  }
]]

local function server_block(set, which)
    local t = {
        "  server {",
        "    listen 127.0.0.1:$PORT;",
        "    listen [::1]:$PORT;",
        "    listen [::ffff:127.0.0.1]:$PORT2;",
        "    server_name " .. set.name .. "." .. which .. ";",
    }
    for _, c in ipairs(set.cidrs) do
        t[#t + 1] = "    set_real_ip_from " .. c .. ";"
    end
    t[#t + 1] = "    real_ip_header " .. (which == "xff" and "X-Forwarded-For" or "X-Real-IP") .. ";"
    t[#t + 1] = "    real_ip_recursive on;"
    t[#t + 1] = "    location = /t {"
    t[#t + 1] = "      content_by_lua_block { require('realip_probe')('"
                .. concat(set.cidrs, " ") .. "', '" .. which .. "') }"
    t[#t + 1] = "    }"
    t[#t + 1] = "  }"
    return concat(t, "\n")
end

local function servers()
    local t = { DRIVER }
    for _, set in ipairs(SETS) do
        t[#t + 1] = server_block(set, "xff")
        t[#t + 1] = server_block(set, "xri")
    end
    return concat(t, "\n")
end

local function raw_request(id, case)
    local t = { "GET /t?id=" .. id .. " HTTP/1.1\r\nHost: " .. case.set.name .. "."
                .. case.which .. "\r\n" }
    for _, v in ipairs(case.xff or {}) do
        t[#t + 1] = "X-Forwarded-For: " .. v .. "\r\n"
    end
    for _, v in ipairs(case.xri or {}) do
        t[#t + 1] = "X-Real-IP: " .. v .. "\r\n"
    end
    t[#t + 1] = "\r\n"
    return concat(t)
end

local function unhex(s)
    return (s:gsub("%x%x", function(h) return char(tonumber(h, 16)) end))
end

-- Sends every case from its source; returns id -> reply fields.
local function run_cases(srv, cases)
    local frames = {}
    for id, case in ipairs(cases) do
        local name = case.source.name
        frames[name] = frames[name] or {}
        local req = raw_request(id, case)
        local f = frames[name]
        f[#f + 1] = #req .. "\n" .. req
    end
    local replies = {}
    for _, source in ipairs(SOURCES) do
        if frames[source.name] then
            local port = source.port == "port" and srv.port or srv.port2
            local body = fmt("%s %s %d\n", source.bind, source.host, port)
                         .. concat(frames[source.name])
            local res = srv:request("/drive", { method = "POST", body = body, max_time = 120,
                                                headers = { Host = "driver" } })
            assert(res.status == 200, "driver from " .. source.name .. ": "
                   .. tostring(res.status) .. " " .. res.body .. "\n" .. srv:error_log():sub(-3000))
            for line in res.body:gmatch("[^\n]+") do
                assert(line:sub(1, 1) ~= "!", "a request failed: " .. line)
                local id, remote, peer, lib, hdr = line:match("^(%d+)\t(%S+)\t(%S+)\t(%S+)\t(%S+)$")
                assert(id, "bad reply line: " .. line)
                replies[tonumber(id)] = { remote = remote, peer = peer, lib = lib,
                                          echo = hdr ~= "-" and unhex(sub(hdr, 2)) or nil }
            end
        end
    end
    return replies
end

-- ---------------------------------------------------------------------------
-- The element parser alone, no nginx: what the model says nginx reads, what
-- the library reads (through a walk that trusts everything), and the kind.
-- ---------------------------------------------------------------------------

-- reads an address printed by nginx or the library (255.255.255.255 too)
local READ = without(ALL, { ["broadcast-255"] = true })

local TRUST_ALL = assert(gray.new_ipset("0.0.0.0/0 ::/0"))

-- the library's reading of one element: its address, or nil for junk
local function library_element(text)
    local client, source = gray.client_ip(TRUST_ALL, "127.0.0.1", nil, text)
    if source ~= "x-forwarded-for" then
        return nil
    end
    return (parse_addr(client, READ))
end

local function A(text)
    return (assert(parse_addr(text, READ), text))
end

-- { element, nginx's address (nil: junk), the library's, kinds }
local ELEMENTS = {
    { "127.0.0.1", A "127.0.0.1", A "127.0.0.1", "" },
    { "127.0.0.001", A "127.0.0.1", nil, "leading-zero" },
    { "010.0.0.1:80", A "10.0.0.1", nil, "leading-zero" },
    { "::ffff:01.2.3.4", A "1.2.3.4", nil, "leading-zero" },
    { "1..2.3", A "1.0.2.3", nil, "empty-octet" },
    { ".1.2.3", A "0.1.2.3", nil, "empty-octet" },
    { "1.2.3.", A "1.2.3.0", nil, "trailing-dot" },
    { "...", A "0.0.0.0", nil, "empty-octet+trailing-dot" },
    { "255.255.255.255", nil, A "255.255.255.255", "broadcast-255" },
    { "255.255.255.255:80", nil, A "255.255.255.255", "broadcast-255" },
    { "::ffff:255.255.255.255", nil, A "255.255.255.255", "broadcast-255" },
    { "[1.2.3.4]:80", A "1.2.3.4", nil, "bracketed-v4" },
    { "[01.2.3.4]:80", A "1.2.3.4", nil, "bracketed-v4+leading-zero" },
    { ":1:2:3:4:5:6:7:8", A "1:2:3:4:5:6:7:8", nil, "v6-lone-colon" },
    { ":1::2", A "1::2", nil, "v6-lone-colon" },
    { "1::2:", A "1:0:0:0:0:0:2:0", nil, "v6-lone-colon" },
    { "[::1:]:80", A "::1:0", nil, "v6-lone-colon" },
    { "1:2:3:4:5:6:7::", nil, A "1:2:3:4:5:6:7:0", "v6-gap7" },
    { "::2:3:4:5:6:7:8", A "0:2:3:4:5:6:7:8", A "0:2:3:4:5:6:7:8", "" },
    { "1.2.3.4:" .. PAD .. "80", A "1.2.3.4", nil, "over-length" },
    { "1.2.3.4:" .. srep("0", 53) .. "80", A "1.2.3.4", A "1.2.3.4", "" },
    { "1.2.3.4:080", A "1.2.3.4", A "1.2.3.4", "" },
    { "1.2.3.4:0", nil, nil, "" },
    { "1.2.3.4:65535", A "1.2.3.4", A "1.2.3.4", "" },
    { "1.2.3.4:65536", nil, nil, "" },
    { "1.2.3.4:", nil, nil, "" },
    { "[::1]", nil, nil, "" },
    { "[::1]:443", A "::1", A "::1", "" },
    { "[::1]:0", nil, nil, "" },
    { "[::ffff:1.2.3.4]:80", A "1.2.3.4", A "1.2.3.4", "" },
    { "\t1.2.3.4", nil, nil, "" },
    { "1.2.3.4\t", nil, nil, "" },
    { "::ffff:1.2.3.4", A "1.2.3.4", A "1.2.3.4", "" },
    { "::1.2.3.4", A "::102:304", A "::102:304", "" },
    { "1:2:3:4:5:6:1.2.3.4", A "1:2:3:4:5:6:102:304", A "1:2:3:4:5:6:102:304", "" },
    { "1:2:3:4:5:6:7:1.2.3.4", nil, nil, "" },
    { "1::2::3", nil, nil, "" },
    { "fe80::1%eth0", nil, nil, "" },
    { "unknown", nil, nil, "" },
    { "", nil, nil, "" },
}

describe("the model of nginx's element parsing", function()
    after_each(harness.no_error_log)
    for _, e in ipairs(ELEMENTS) do
        local text, nginx, lib, kinds = e[1], e[2], e[3], e[4]
        it(show(text) .. ": nginx " .. show_addr(nginx) .. ", library " .. show_addr(lib)
           .. (kinds ~= "" and " (" .. kinds .. ")" or ""), function()
            assert.equal(show_addr(nginx), show_addr(parse_element(text, ALL)))
            assert.equal(show_addr(lib), show_addr(parse_element(text, NONE)))
            assert.equal(show_addr(lib), show_addr(library_element(text)))
            assert.equal(kinds, label(element_kinds(text)))
        end)
    end
end)

describe("nginx 1.22 realip beside the library", function()
    after_each(harness.no_error_log)
    local srv, cases, replies
    local answers = {}      -- id -> { nginx =, lib =, all =, none = }

    setup(function()
        cases = build_cases()
        srv = harness.nginx({ http = HTTP, servers = servers() })
        replies = run_cases(srv, cases)
        for id, case in ipairs(cases) do
            local r = replies[id]
            if r then
                case.peer = parse_addr(r.peer, READ)
                answers[id] = {
                    nginx = parse_addr(r.remote, READ),
                    lib = parse_addr(r.lib, READ),
                    all = case.peer and model(case, ALL),
                    none = case.peer and model(case, NONE),
                }
            end
        end
    end)

    teardown(function()
        if srv then
            local bad = harness.bad_log_lines(srv:error_log())
            srv:stop()
            assert.same({}, bad)
        end
    end)

    local function describe_case(id)
        local c, r = cases[id], replies[id] or {}
        return fmt("case %d (%s, %s, from %s): X-Forwarded-For %s, X-Real-IP %s;"
                   .. " nginx %s, library %s", id, c.set.name, c.which, c.source.name,
                   c.xff and show(concat(c.xff, "\\n")) or "<absent>",
                   c.xri and show(concat(c.xri, "\\n")) or "<absent>",
                   tostring(r.remote), tostring(r.lib))
    end

    -- the first few failures, described
    local function check_all(pred)
        local bad = {}
        for id = 1, #cases do
            local msg = pred(id)
            if msg then
                bad[#bad + 1] = describe_case(id) .. ": " .. msg
            end
        end
        assert(#bad == 0, #bad .. " of " .. #cases .. " cases:\n  "
                          .. concat(bad, "\n  ", 1, math.min(#bad, 10)))
    end

    it("answers every request, from the intended peer, with the header sent", function()
        check_all(function(id)
            local r = replies[id]
            if not r then
                return "no reply"
            end
            if r.peer ~= cases[id].source.peer then
                return "peer " .. r.peer .. ", expected " .. cases[id].source.peer
            end
            if r.echo ~= cases[id].echo then
                return "nginx read " .. show(r.echo) .. ", expected " .. show(cases[id].echo)
            end
            if not answers[id].nginx or not answers[id].lib then
                return "an answer is not an address"
            end
        end)
    end)

    it("the model with every switch on answers as nginx on every case", function()
        check_all(function(id)
            local a = answers[id]
            if a.all ~= a.nginx then
                return "the model says " .. show_addr(a.all)
            end
        end)
    end)

    it("the model with every switch off answers as the library on every case", function()
        check_all(function(id)
            local a = answers[id]
            if a.none ~= a.lib then
                return "the strict model says " .. show_addr(a.none)
            end
        end)
    end)

    it("every disagreement has a documented kind", function()
        check_all(function(id)
            local a = answers[id]
            if a.lib ~= a.nginx and not explain(cases[id], a.lib) then
                return "unexplained"
            end
        end)
    end)

    for i, p in ipairs(PINNED) do
        it(fmt("pinned: %s (%s)", p[1], p.want and "both give " .. p.want or p.kind), function()
            local a = answers[i]
            assert.is_table(a, "no reply")
            if p.want then
                assert.equal(show_addr(A(p.want)), show_addr(a.nginx), "nginx")
                assert.equal(show_addr(A(p.want)), show_addr(a.lib), "library")
            else
                assert.are_not.equal(a.nginx, a.lib)
                assert.equal(p.kind, explain(cases[i], a.lib))
            end
        end)
    end

    it("IPv6-written CIDRs trust no IPv4 peer or hop, in nginx and in the library", function()
        -- cases where the old rule (the mapped form inside an IPv6 CIDR)
        -- would have changed nginx's answer
        local n, agree = 0, 0
        for id, case in ipairs(cases) do
            local a = answers[id]
            if a and model(case, ALL, nil, true) ~= a.nginx then
                n = n + 1
                if a.lib == a.nginx or explain(case, a.lib) then
                    agree = agree + 1
                end
            end
        end
        assert.is_true(n >= math.min(50, #cases / 100), "only " .. n .. " cases test it")
        assert.equal(n, agree)
    end)

    it("covers every kind and prints the figures", function()
        local n_all, n_none, n_diff, n_multi = 0, 0, 0, 0
        local by_kind, by_which, by_source = {}, {}, {}
        for id, case in ipairs(cases) do
            local a = answers[id]
            by_which[case.which] = (by_which[case.which] or 0) + 1
            by_source[case.source.name] = (by_source[case.source.name] or 0) + 1
            n_all = n_all + (a.all == a.nginx and 1 or 0)
            n_none = n_none + (a.none == a.lib and 1 or 0)
            if a.lib ~= a.nginx then
                n_diff = n_diff + 1
                local kind = explain(case, a.lib) or "UNEXPLAINED"
                if kind:find("+", 1, true) then
                    n_multi = n_multi + 1
                end
                for k in kind:gmatch("[^+]+") do
                    by_kind[k] = (by_kind[k] or 0) + 1
                end
            end
        end
        local kinds = {}
        for _, k in ipairs(KINDS) do
            assert.is_number(by_kind[k], "no disagreement of kind " .. k)
            kinds[#kinds + 1] = k .. " " .. by_kind[k]
        end
        local sources = {}
        for _, s in ipairs(SOURCES) do
            sources[#sources + 1] = s.name .. " " .. (by_source[s.name] or 0)
        end
        print(fmt("\nrealip differential (seed %d): %d cases (X-Forwarded-For %d, X-Real-IP %d;"
                  .. " from %s); model = nginx %d/%d, strict model = library %d/%d;"
                  .. " library = nginx %d, differs %d (%d of them by two kinds at once),"
                  .. " cases per kind: %s%s", SEED, #cases, by_which.xff or 0,
                  by_which.xri or 0, concat(sources, ", "), n_all, #cases, n_none, #cases,
                  #cases - n_diff, n_diff, n_multi, concat(kinds, ", "),
                  by_kind.UNEXPLAINED and ", UNEXPLAINED " .. by_kind.UNEXPLAINED or ""))
    end)
end)
