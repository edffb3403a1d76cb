-- lua_baseline: straightforward pure-Lua versions of the jobs libgray does,
-- written the way one would without a C core (string patterns, tables,
-- string.sub). make microbench runs each beside the C path on the same
-- inputs, and checks that both give the same answers first.

local byte, char, sub, find, match, format = string.byte, string.char, string.sub,
                                             string.find, string.match, string.format
local concat = table.concat
local tonumber = tonumber

local _M = {}

local function parse_v4(s)
    local a, b, c, d = match(s, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if not a then
        return nil
    end
    local parts = { a, b, c, d }
    for i = 1, 4 do
        local p = parts[i]
        if #p > 3 or (#p > 1 and byte(p) == 48) or tonumber(p) > 255 then
            return nil
        end
        parts[i] = tonumber(p)
    end
    return parts
end

-- 16-byte binary string, IPv4 as ::ffff:a.b.c.d
local function parse_v6(s)
    local head, tail = s, nil
    local gap = find(s, "::", 1, true)
    if gap then
        head, tail = sub(s, 1, gap - 1), sub(s, gap + 2)
        if find(tail, "::", 1, true) then
            return nil
        end
    end
    local function groups(part, out)
        if part == "" then
            return out
        end
        local items = {}
        for g in (part .. ":"):gmatch("([^:]*):") do
            items[#items + 1] = g
        end
        for i, g in ipairs(items) do
            if i == #items and find(g, ".", 1, true) then
                local q = parse_v4(g)
                if not q then
                    return nil
                end
                out[#out + 1] = q[1] * 256 + q[2]
                out[#out + 1] = q[3] * 256 + q[4]
            else
                if not match(g, "^%x%x?%x?%x?$") then
                    return nil
                end
                out[#out + 1] = tonumber(g, 16)
            end
        end
        return out
    end
    local h = groups(head, {})
    local t = tail and groups(tail, {}) or {}
    if not h or not t then
        return nil
    end
    local words = {}
    if gap then
        if #h + #t > 7 then
            return nil
        end
        for i = 1, #h do words[#words + 1] = h[i] end
        for _ = 1, 8 - #h - #t do words[#words + 1] = 0 end
        for i = 1, #t do words[#words + 1] = t[i] end
    else
        if #h ~= 8 then
            return nil
        end
        words = h
    end
    local bytes = {}
    for i = 1, 8 do
        bytes[2 * i - 1] = char(math.floor(words[i] / 256))
        bytes[2 * i] = char(words[i] % 256)
    end
    return concat(bytes)
end

local MAPPED = string.rep("\0", 10) .. "\255\255"

function _M.parse(s)
    if find(s, ":", 1, true) then
        if find(s, "%", 1, true) then
            return nil
        end
        return parse_v6(s)
    end
    local q = parse_v4(s)
    if not q then
        return nil
    end
    return MAPPED .. char(q[1], q[2], q[3], q[4])
end

-- "a.b.c.d:port", "[v6]", "[v6]:port" or a bare address
function _M.parse_host(s)
    local inner = match(s, "^%[([^%]]+)%]")
    if inner then
        local rest = sub(s, #inner + 3)
        if rest ~= "" and not match(rest, "^:%d%d?%d?%d?%d?$") then
            return nil
        end
        return parse_v6(inner)
    end
    local addr, port = match(s, "^([%d%.]+):(%d+)$")
    if addr and tonumber(port) <= 65535 then
        return _M.parse(addr)
    end
    return _M.parse(s)
end

function _M.format(b)
    if sub(b, 1, 12) == MAPPED then
        return format("%d.%d.%d.%d", byte(b, 13, 16))
    end
    local g = {}
    for i = 1, 8 do
        local hi, lo = byte(b, 2 * i - 1, 2 * i)
        g[i] = hi * 256 + lo
    end
    local best, best_len, i = nil, 1, 1
    while i <= 8 do
        if g[i] == 0 then
            local j = i
            while j <= 8 and g[j] == 0 do j = j + 1 end
            if j - i > best_len then
                best, best_len = i, j - i
            end
            i = j
        else
            i = i + 1
        end
    end
    local out = {}
    i = 1
    while i <= 8 do
        if i == best then
            out[#out + 1] = (i == 1) and "::" or ":"
            i = i + best_len
            if i > 8 then
                break
            end
        else
            out[#out + 1] = format("%x", g[i])
            if i < 8 then
                out[#out + 1] = ":"
            end
            i = i + 1
        end
    end
    return concat(out)
end

function _M.canonical(s)
    local b = _M.parse_host(s)
    return b and _M.format(b)
end

-- ranges as { lo, hi } pairs of 16-byte strings (string comparison is
-- byte order, which is address order)
function _M.new_set(cidrs)
    local set = {}
    for _, c in ipairs(cidrs) do
        local addr, bits = match(c, "^([^/]+)/?(%d*)$")
        local b = _M.parse(addr)
        local width = find(addr, ":", 1, true) and 128 or 32
        bits = bits ~= "" and tonumber(bits) or width
        if width == 32 then
            bits = bits + 96
        end
        local lo, hi = {}, {}
        for i = 1, 16 do
            local v = byte(b, i)
            local keep = math.max(0, math.min(8, bits - (i - 1) * 8))
            local mask = 256 - 2 ^ (8 - keep)
            local l = v - v % (256 - mask)
            lo[i] = char(l)
            hi[i] = char(l + (255 - mask))
        end
        set[#set + 1] = { concat(lo), concat(hi) }
    end
    return set
end

local function contains(set, b)
    for i = 1, #set do
        local r = set[i]
        if b >= r[1] and b <= r[2] then
            return true
        end
    end
    return false
end
_M.contains = contains

-- realip with recursion: split the header, walk from the right
function _M.xff_client(set, peer, xff)
    local addr = _M.parse_host(peer)
    if not contains(set, addr) then
        return _M.format(addr)
    end
    local items = {}
    for item in xff:gmatch("[^,]+") do
        item = match(item, "^[ \t]*(.-)[ \t]*$")
        if item ~= "" then
            items[#items + 1] = item
        end
    end
    for i = #items, 1, -1 do
        local b = _M.parse_host(items[i])
        if not b then
            break
        end
        addr = b
        if not contains(set, b) then
            break
        end
    end
    return _M.format(addr)
end

-- the reply to a one-key get: the value, or false on a miss
function _M.decode_get1(buf)
    local eol = find(buf, "\r\n", 1, true)
    if not eol then
        return nil, "again"
    end
    local line = sub(buf, 1, eol - 1)
    if line == "END" then
        return false
    end
    local len = match(line, "^VALUE %S+ %d+ (%d+) ?%d*$")
    if not len then
        return nil, "bad line: " .. line
    end
    len = tonumber(len)
    local data_start = eol + 2
    if #buf < data_start + len + 6 then
        return nil, "again"
    end
    if sub(buf, data_start + len, data_start + len + 6) ~= "\r\nEND\r\n" then
        return nil, "bad data"
    end
    return sub(buf, data_start, data_start + len - 1)
end

-- a get reply decoded line by line, as a pure-Lua client would: key -> value
function _M.decode_get(buf)
    local values, pos = {}, 1
    while true do
        local eol = find(buf, "\r\n", pos, true)
        if not eol then
            return nil, "again"
        end
        local line = sub(buf, pos, eol - 1)
        if line == "END" then
            return values, eol + 1
        end
        local key, len = match(line, "^VALUE (%S+) %d+ (%d+) ?%d*$")
        if not key then
            return nil, "bad line: " .. line
        end
        len = tonumber(len)
        local data_start = eol + 2
        if #buf < data_start + len + 1 then
            return nil, "again"
        end
        if sub(buf, data_start + len, data_start + len + 1) ~= "\r\n" then
            return nil, "bad data"
        end
        values[key] = sub(buf, data_start, data_start + len - 1)
        pos = data_start + len + 2
    end
end

-- MurmurHash3_x86_32 with the bit library: 32-bit products split in halves
-- so that no intermediate passes 2^53.
local bit = require "bit"
local band, bor, bxor, lshift, rshift, tobit = bit.band, bit.bor, bit.bxor, bit.lshift,
                                              bit.rshift, bit.tobit

local function mul32(a, b)
    local lo = band(a, 0xffff) * b
    local hi = band(rshift(a, 16) * band(b, 0xffff), 0xffff)
    return tobit(lo + lshift(hi, 16))
end

local function rotl(x, r)
    return bor(lshift(x, r), rshift(x, 32 - r))
end

local C1, C2 = tobit(0xcc9e2d51), tobit(0x1b873593)

function _M.murmur3(key, seed)
    local h = tobit(seed or 0)
    local len = #key
    local blocks = len - len % 4
    for i = 1, blocks, 4 do
        local b1, b2, b3, b4 = byte(key, i, i + 3)
        local k = bor(b1, lshift(b2, 8), lshift(b3, 16), lshift(b4, 24))
        k = mul32(rotl(mul32(k, C1), 15), C2)
        h = bxor(h, k)
        h = tobit(mul32(rotl(h, 13), 5) + tobit(0xe6546b64))
    end
    local rest = len - blocks
    if rest > 0 then
        local k = 0
        for i = rest, 1, -1 do
            k = bor(lshift(k, 8), byte(key, blocks + i))
        end
        h = bxor(h, mul32(rotl(mul32(k, C1), 15), C2))
    end
    h = bxor(h, len)
    h = bxor(h, rshift(h, 16))
    h = mul32(h, tobit(0x85ebca6b))
    h = bxor(h, rshift(h, 13))
    h = mul32(h, tobit(0xc2b2ae35))
    h = bxor(h, rshift(h, 16))
    return h < 0 and h + 4294967296 or h
end

-- A ranges list the way one would write it in Lua: a hash table per prefix
-- length and family (IPv4 networks as numbers, IPv6 ones as masked 16-byte
-- strings), looked up from the longest prefix down. A later line simply
-- overwrites an equal network. Returns the set and the lines taken.
function _M.new_ranges(text, names)
    local index = {}
    for i, name in ipairs(names) do
        index[name] = i
    end
    local v4, v6 = {}, {}
    local taken = 0
    for line in text:gmatch("[^\n]+") do
        line = line:gsub("#.*", "")
        local addr, bits, name = match(line, "^%s*([^/%s]+)/?(%d*)%s*(%S*)%s*$")
        local b = addr and _M.parse(addr)
        local target = name == "" and 1 or index[name]
        if b and target then
            local is_v6 = find(addr, ":", 1, true) ~= nil
            local width = is_v6 and 128 or 32
            local prefix = bits == "" and width or tonumber(bits)
            if prefix <= width and not (bits ~= "" and #bits > 1 and byte(bits) == 48) then
                taken = taken + 1
                if is_v6 then
                    local full = math.floor(prefix / 8)
                    local key = sub(b, 1, full)
                    if prefix % 8 > 0 then
                        local keep = 256 - 2 ^ (8 - prefix % 8)
                        key = key .. char(band(byte(b, full + 1), keep))
                    end
                    local t = v6[prefix]
                    if not t then
                        t = {}
                        v6[prefix] = t
                    end
                    t[key] = target
                else
                    local n = bor(lshift(byte(b, 13), 24), lshift(byte(b, 14), 16),
                                  lshift(byte(b, 15), 8), byte(b, 16))
                    local mask = prefix == 0 and 0 or lshift(-1, 32 - prefix)
                    local t = v4[prefix]
                    if not t then
                        t = {}
                        v4[prefix] = t
                    end
                    t[band(n, mask)] = target
                end
            end
        end
    end
    local set = { v4 = {}, v6 = {} }
    for prefix = 128, 0, -1 do
        if v4[prefix] then
            set.v4[#set.v4 + 1] = { prefix == 0 and 0 or lshift(-1, 32 - prefix), v4[prefix] }
        end
        if v6[prefix] then
            set.v6[#set.v6 + 1] = { prefix, v6[prefix] }
        end
    end
    return set, taken
end

function _M.ranges_find(set, addr)
    local b = _M.parse_host(addr)
    if not b then
        return nil
    end
    if sub(b, 1, 12) == MAPPED then
        local n = bor(lshift(byte(b, 13), 24), lshift(byte(b, 14), 16), lshift(byte(b, 15), 8),
                      byte(b, 16))
        local tables = set.v4
        for i = 1, #tables do
            local t = tables[i]
            local hit = t[2][band(n, t[1])]
            if hit then
                return hit
            end
        end
        return nil
    end
    local tables = set.v6
    for i = 1, #tables do
        local t = tables[i]
        local prefix = t[1]
        local full = math.floor(prefix / 8)
        local key = sub(b, 1, full)
        if prefix % 8 > 0 then
            key = key .. char(band(byte(b, full + 1), 256 - 2 ^ (8 - prefix % 8)))
        end
        local hit = t[2][key]
        if hit then
            return hit
        end
    end
    return nil
end

return _M
