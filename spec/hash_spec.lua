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
