-- hash.c through gray.ffi: the key hash must equal libmemcached's default,
-- so the router and gray-admin pick the same server for a key.
local gray_ffi = require "gray.ffi"

describe("gray.ffi.hash", function()
    -- memcached_generate_hash_value(key, len, MEMCACHED_HASH_DEFAULT) from
    -- Debian 12's libmemcached, printed by a C program
    local from_libmemcached = {
        { "192.168.2.20", 1295658994 },
        { "10.0.0.1", 2693406210 },
        { "::1", 2093202325 },
        { "2001:db8::1", 3603623995 },
        { "user:42", 809463786 },
        { "a", 3392050242 },
        { "", 0 },
        { "\255\254", 3677141090 },
    }
    for _, case in ipairs(from_libmemcached) do
        it("matches libmemcached for " .. string.format("%q", case[1]), function()
            assert.equal(case[2], gray_ffi.hash(case[1]))
        end)
    end

    -- memcached_generate_hash() with three servers, libmemcached's defaults
    local placed = {
        { "192.168.2.20", 2 }, { "10.0.0.1", 1 }, { "::1", 2 }, { "2001:db8::1", 2 },
        { "user:42", 1 }, { "a", 1 }, { "bb", 3 }, { "ccc", 2 },
    }
    for _, case in ipairs(placed) do
        it("places " .. case[1] .. " on server " .. case[2] .. " of 3", function()
            assert.equal(case[2], gray_ffi.server_index(case[1], 3))
        end)
    end

    it("puts every key on the only server of one", function()
        for i = 1, 100 do
            assert.equal(1, gray_ffi.server_index("k" .. i, 1))
        end
    end)

    it("spreads keys over servers", function()
        local seen = { 0, 0, 0, 0 }
        for i = 1, 4000 do
            local s = gray_ffi.server_index("10.0." .. (i % 250) .. "." .. i % 7, 4)
            seen[s] = seen[s] + 1
        end
        for s = 1, 4 do
            assert.is_true(seen[s] > 0, "server " .. s .. " got no key")
        end
    end)
end)

-- MurmurHash3_x86_32. Every vector below was checked against two sources:
-- the table published in the answer to "MurmurHash3 Test Vectors"
-- (Stack Overflow 31929528, from SMHasher's test code) or the vectors common
-- on the web, and npm's murmurhash3js (x86.hash32), which agreed on each.
describe("gray.ffi.murmur3", function()
    local vectors = {
        -- { key, seed, expected }
        { "", 0, 0 },
        { "", 1, 0x514E28B7 },
        { "", 0xffffffff, 0x81F16F39 },
        { "", 0x9747b28c, 0xEBB6C228 },
        { "\255\255\255\255", 0, 0x76293B50 },
        { "\33\67\101\135", 0, 0xF55B516B },
        { "\33\67\101\135", 0x5082EDEE, 0x2362F9DE },
        { "\33\67\101", 0, 0x7E4A8634 },
        { "\33\67", 0, 0xA0F7B07A },
        { "\33", 0, 0x72661CF4 },
        { "\0\0\0\0", 0, 0x2362F9DE },
        { "\0\0\0", 0, 0x85F0B427 },
        { "\0\0", 0, 0x30F4C306 },
        { "\0", 0, 0x514E28B7 },
        { "a", 0, 0x3C2569B2 },
        { "abc", 0, 0xB3DD93FA },
        { "test", 0, 0xBA6BD213 },
        { "aaaa", 0x9747b28c, 0x5A97808A },
        { "aaa", 0x9747b28c, 0x283E0130 },
        { "aa", 0x9747b28c, 0x5D211726 },
        { "a", 0x9747b28c, 0x7FA09EA6 },
        { "abcd", 0x9747b28c, 0xF0478627 },
        { "abc", 0x9747b28c, 0xC84A62DD },
        { "ab", 0x9747b28c, 0x74875592 },
        { "Hello, world!", 0, 0xC0363E43 },
        { "Hello, world!", 1234, 0xFAF6CDB3 },
        { "Hello, world!", 0x9747b28c, 0x24884CBA },
        { "The quick brown fox jumps over the lazy dog", 0, 0x2E4FF723 },
        { "The quick brown fox jumps over the lazy dog", 0x9747b28c, 0x2FA826CD },
        -- keys of our own (murmurhash3js, seed 0)
        { "uid:42", 0, 0xFA59F2D4 },
        { "192.168.2.20", 0, 0xFA8D5E66 },
        { "0123456789012345678901234567890123456789", 0, 0xFA6198ED },
    }
    for _, v in ipairs(vectors) do
        it(string.format("%q with seed 0x%x is 0x%08X", v[1], v[2], v[3]), function()
            assert.equal(v[3], gray_ffi.murmur3(v[1], v[2]))
        end)
    end

    it("takes seed 0 when none is given", function()
        assert.equal(0xC0363E43, gray_ffi.murmur3("Hello, world!"))
        assert.equal(0, gray_ffi.murmur3(""))
    end)

    -- SMHasher's VerificationTest: hash the keys {}, {0}, {0,1}, ...,
    -- {0..254} with seed 256 - length, hash the 1024 bytes of results
    -- (little-endian) with seed 0; the published value for
    -- MurmurHash3_x86_32 is 0xB0F57EE3.
    it("passes SMHasher's verification test (0xB0F57EE3)", function()
        local key, results = {}, {}
        for i = 0, 255 do
            local h = gray_ffi.murmur3(string.char(unpack(key)), 256 - i)
            results[#results + 1] = string.char(h % 256, math.floor(h / 256) % 256,
                                                math.floor(h / 65536) % 256,
                                                math.floor(h / 16777216) % 256)
            key[#key + 1] = i
        end
        assert.equal(0xB0F57EE3, gray_ffi.murmur3(table.concat(results), 0))
    end)

    it("returns a number from 0 to 2^32 - 1", function()
        for i = 1, 1000 do
            local h = gray_ffi.murmur3("k" .. i)
            assert.is_number(h)
            assert.is_true(h >= 0 and h <= 0xffffffff and h % 1 == 0)
        end
    end)
end)

describe("gray.ffi.bucket", function()
    local N = 100000
    local buckets = {}
    for n = 1, N do
        buckets[n] = gray_ffi.bucket("uid:" .. n)
    end

    local function members(percent)
        local set, count = {}, 0
        for n = 1, N do
            if buckets[n] < percent * 100 then
                set[n] = true
                count = count + 1
            end
        end
        return set, count
    end

    it("is murmur3 with seed 0 modulo 10000", function()
        for _, key in ipairs({ "uid:42", "192.168.2.20", "", "dev:a\0b", "::1" }) do
            assert.equal(gray_ffi.murmur3(key, 0) % 10000, gray_ffi.bucket(key))
        end
        assert.equal(0xFA59F2D4 % 10000, gray_ffi.bucket("uid:42"))
    end)

    it("stays within 0..9999 and is the same on every call", function()
        for n = 1, N do
            local b = buckets[n]
            assert.is_true(b >= 0 and b < 10000 and b % 1 == 0, "uid:" .. n)
        end
        for n = 1, N, 997 do
            assert.equal(buckets[n], gray_ffi.bucket("uid:" .. n))
        end
    end)

    it("keeps every 5% member when the percentage rises to 10%", function()
        local five, n5 = members(5)
        local ten, n10 = members(10)
        assert.is_true(n5 > 0 and n10 > n5)
        for n in pairs(five) do
            assert.is_true(ten[n], "uid:" .. n .. " left when 5% became 10%")
        end
    end)

    -- the share of 100,000 ids is within half a point of the percentage
    for _, percent in ipairs({ 1, 10, 50, 0.5, 99.99 }) do
        it("takes " .. percent .. "% of 100,000 ids, within 0.5 points", function()
            local _, count = members(percent)
            local share = count / N * 100
            assert.is_true(math.abs(share - percent) <= 0.5,
                           string.format("%.3f%% at %s%%", share, percent))
        end)
    end

    it("takes nobody at 0% and everybody at 100%", function()
        local _, none = members(0)
        local _, all = members(100)
        assert.equal(0, none)
        assert.equal(N, all)
    end)
end)
