-- memcached text protocol through gray.ffi: key safety, one-line replies and
-- get/gets replies, with hostile input beside the happy cases. Every table
-- below is looped into one `it` per case, named by the case.

local gray = require "gray.ffi"

local CRLF = "\r\n"
local char = string.char
local rep = string.rep
local fmt = string.format

-- printable name for a case built from bytes
local function show(s)
    s = s:gsub("[%z\1-\31\127-\255]", function(c)
        return fmt("\\x%02x", c:byte())
    end)
    if #s > 60 then
        s = s:sub(1, 40) .. "...(" .. #s .. " bytes)"
    end
    return s
end

local function value_block(key, flags, data, cas)
    local head = "VALUE " .. key .. " " .. flags .. " " .. #data
    if cas then
        head = head .. " " .. cas
    end
    return head .. CRLF .. data .. CRLF
end

-- asserts a decoder result is "incomplete": nil, "again", need
local function assert_again(what, r1, r2, r3)
    assert.is_nil(r1, what .. ": expected nil, got " .. tostring(r1))
    assert.are.equal("again", r2, what)
    if r3 ~= nil then
        assert.is_number(r3, what)
    end
end

-- asserts a decoder result is an error other than "again"
local function assert_error(what, expected_err, r1, r2)
    assert.is_nil(r1, what .. ": expected an error, got value " .. tostring(r1))
    assert.is_string(r2, what)
    assert.are_not.equal("again", r2, what .. ": malformed input must not ask for more")
    if expected_err then
        assert.are.equal(expected_err, r2, what)
    end
end

-------------------------------------------------------------------------------
describe("mc_key_ok", function()
    local cases = {
        { "one byte", "a", true },
        { "250 bytes", rep("k", 250), true },
        { "249 bytes", rep("k", 249), true },
        { "empty", "", false },
        { "251 bytes", rep("k", 251), false },
        { "1000 bytes", rep("k", 1000), false },
        { "an IPv4 text", "1.2.3.4", true },
        { "an IPv6 text", "2001:db8::1", true },
        { "punctuation", "gray:rule/v1?x=1&y=[2]", true },
        { "UTF-8", "cl\195\169", true },
        { "CRLF injection", "a\r\nflush_all", false },
        { "CRLF injection with noreply", "a\r\nflush_all noreply\r\nget b", false },
        { "a space", "a b", false },
        { "an address then a command", "1.2.3.4 flush_all", false },
        { "a lone LF", "\n", false },
        { "a lone CR", "\r", false },
        { "a trailing space", "a ", false },
        { "a leading space", " a", false },
        { "a trailing NUL", "a\0", false },
        { "250 good bytes then a space", rep("k", 249) .. " ", false },
        { "a tab", "a\tb", false },
    }
    -- every byte alone and inside a key
    for b = 0, 255 do
        local ok = b > 0x20 and b ~= 0x7f
        cases[#cases + 1] = { fmt("byte 0x%02x alone", b), char(b), ok }
        cases[#cases + 1] = { fmt("byte 0x%02x inside a key", b), "ab" .. char(b) .. "cd", ok }
        cases[#cases + 1] = { fmt("byte 0x%02x ending a 250-byte key", b), rep("k", 249) .. char(b), ok }
    end

    for _, c in ipairs(cases) do
        local name, key, expected = c[1], c[2], c[3]
        it((expected and "accepts " or "rejects ") .. name, function()
            assert.are.equal(expected, gray.mc_key_ok(key))
        end)
    end

    -- the check reads 8 bytes at a time (the last 8 overlapping the words
    -- before; under 8 bytes, the first and last 4): every byte at every
    -- position of keys of 1 to 17 bytes, beside neighbours at the edges of
    -- the ranges (0x21, 0x80, 0xff, 0x7e)
    it("agrees with the bytewise rule at every position of a key", function()
        local wrong = {}
        for _, fill in ipairs({ "k", "\33", "\128", "\255", "\126" }) do
            for len = 1, 17 do
            for pos = 1, len do
                for b = 0, 255 do
                    local key = rep(fill, pos - 1) .. char(b) .. rep(fill, len - pos)
                    local ok = b > 0x20 and b ~= 0x7f
                    if gray.mc_key_ok(key) ~= ok then
                        wrong[#wrong + 1] = fmt("fill 0x%02x len %d pos %d byte 0x%02x",
                                                fill:byte(), len, pos, b)
                    end
                end
            end
            end
        end
        assert.same({}, wrong)
    end)

    local not_strings = {
        { "nil", nil }, { "a number", 12 }, { "a boolean", true },
        { "a table", { "a" } }, { "a function", print },
    }
    for _, c in ipairs(not_strings) do
        it("rejects " .. c[1], function()
            assert.is_false(gray.mc_key_ok(c[2]))
        end)
    end
end)

-------------------------------------------------------------------------------
describe("mc_parse_line", function()
    -- { name, input, kind, payload, consumed }
    local good = {
        { "STORED", "STORED\r\n", "STORED", nil, 8 },
        { "NOT_STORED", "NOT_STORED\r\n", "NOT_STORED", nil, 12 },
        { "EXISTS", "EXISTS\r\n", "EXISTS", nil, 8 },
        { "NOT_FOUND", "NOT_FOUND\r\n", "NOT_FOUND", nil, 11 },
        { "DELETED", "DELETED\r\n", "DELETED", nil, 9 },
        { "TOUCHED", "TOUCHED\r\n", "TOUCHED", nil, 9 },
        { "OK", "OK\r\n", "OK", nil, 4 },
        { "END", "END\r\n", "END", nil, 5 },
        { "ERROR", "ERROR\r\n", "ERROR", nil, 7 },
        { "ERROR with a message", "ERROR unknown command\r\n", "ERROR", "unknown command", 23 },
        { "CLIENT_ERROR", "CLIENT_ERROR bad data chunk\r\n", "CLIENT_ERROR", "bad data chunk", 29 },
        { "SERVER_ERROR", "SERVER_ERROR out of memory storing object\r\n", "SERVER_ERROR",
          "out of memory storing object", 43 },
        { "VERSION", "VERSION 1.6.18\r\n", "VERSION", "1.6.18", 16 },
        { "number 0", "0\r\n", "NUMBER", "0", 3 },
        { "number 42", "42\r\n", "NUMBER", "42", 4 },
        { "number 2^32", "4294967296\r\n", "NUMBER", "4294967296", 12 },
        { "number 2^64-1", "18446744073709551615\r\n", "NUMBER", "18446744073709551615", 22 },
        { "STORED then another reply", "STORED\r\nNOT_STORED\r\n", "STORED", nil, 8 },
        { "END then garbage", "END\r\n\0\255garbage", "END", nil, 5 },
        { "number then a line", "7\r\nSTORED\r\n", "NUMBER", "7", 3 },
    }

    for _, c in ipairs(good) do
        local name, input, kind, payload, consumed = c[1], c[2], c[3], c[4], c[5]
        it("decodes " .. name, function()
            local k, p, n = gray.mc_parse_line(input)
            assert.are.equal(kind, k)
            assert.are.equal(payload, p)
            assert.are.equal(consumed, n)
        end)

        it("says again for every cut of " .. name, function()
            local line = input:sub(1, consumed)
            for i = 0, #line - 1 do
                local prefix = line:sub(1, i)
                local r1, r2 = gray.mc_parse_line(prefix)
                assert_again(fmt("%q cut at %d", line, i), r1, r2)
            end
        end)
    end

    -- { name, input }
    local bad = {
        { "2^64", "18446744073709551616\r\n" },
        { "a 23-digit number", "99999999999999999999999\r\n" },
        { "digits then letters", "12a\r\n" },
        { "a negative number", "-1\r\n" },
        { "a number with a space", "1 2\r\n" },
        { "an unknown word", "HELLO\r\n" },
        { "VALUE as a one-line reply", "VALUESTORED\r\n" },
        { "lowercase stored", "stored\r\n" },
        { "capitalised Stored", "Stored\r\n" },
        { "STORED with a trailing space", "STORED \r\n" },
        { "STORED with a leading space", " STORED\r\n" },
        { "STORED with extra letters", "STOREDX\r\n" },
        { "an empty line", "\r\n" },
        { "STORED without CR", "STORED\n" },
        { "STORED, CR and a letter", "STORED\rX" },
        { "STORED, CR and CR", "STORED\r\r\n" },
        { "a NUL inside a keyword", "STO\0RED\r\n" },
        { "a NUL line", "\0\r\n" },
        { "bytes >= 0x80", "\255\254\253\r\n" },
        { "1025 bytes without CRLF", rep("A", 1025) },
        { "2000 digits without CRLF", rep("9", 2000) },
        { "a 1100-byte ERROR message", "ERROR " .. rep("m", 1100) .. CRLF },
    }

    for _, c in ipairs(bad) do
        it("rejects " .. c[1], function()
            assert_error(show(c[2]), nil, gray.mc_parse_line(c[2]))
        end)
    end
end)

-------------------------------------------------------------------------------
describe("mc_decode_get1", function()
    local bin = "x\r\nEND\r\ny\0z\r\n\255"
    local key250 = rep("k", 250)
    local key251 = rep("k", 251)

    -- { name, reply (plus trailing bytes), key, value, consumed, flags, cas }
    local good = {
        { "a miss", "END\r\n", "k", false, 5 },
        { "a hit", "VALUE k 0 5\r\nhello\r\nEND\r\n", "k", "hello", 25, 0, nil },
        { "a gets hit with flags and cas", "VALUE k 5 3 99\r\nabc\r\nEND\r\n", "k", "abc", 26, 5, "99" },
        { "a zero-length value", "VALUE k 0 0\r\n\r\nEND\r\n", "k", "", 20, 0, nil },
        { "binary data holding CRLF END CRLF", value_block("k", 1, bin) .. "END\r\n", "k", bin,
          #value_block("k", 1, bin) + 5, 1, nil },
        { "the largest flags", "VALUE k 4294967295 1\r\na\r\nEND\r\n", "k", "a", 30, 4294967295, nil },
        { "the largest cas", "VALUE k 0 1 18446744073709551615\r\na\r\nEND\r\n", "k", "a", 42, 0,
          "18446744073709551615" },
        { "cas 0", "VALUE k 0 1 0\r\na\r\nEND\r\n", "k", "a", 23, 0, "0" },
        { "a 250-byte key", value_block(key250, 0, "v") .. "END\r\n", key250, "v",
          #value_block(key250, 0, "v") + 5, 0, nil },
        { "a key with bytes >= 0x80", value_block("cl\195\169", 0, "v") .. "END\r\n", "cl\195\169", "v",
          #value_block("cl\195\169", 0, "v") + 5, 0, nil },
        { "a hit then trailing bytes", "VALUE k 0 1\r\na\r\nEND\r\nVALUE k 0 1\r\n", "k", "a", 21, 0, nil },
        { "a miss then trailing garbage", "END\r\n\0garbage\r\n", "k", false, 5 },
        -- past the one-key shortcut's short numbers (19 digits), to the general decoder
        { "flags of 20 digits, leading zeros", "VALUE k 00000000000000000001 1\r\na\r\nEND\r\n",
          "k", "a", 40, 1, nil },
        { "a byte count with leading zeros", "VALUE k 0 0001\r\na\r\nEND\r\n", "k", "a", 24, 0, nil },
        { "an address key", "VALUE 192.0.2.10 0 1\r\n1\r\nEND\r\n", "192.0.2.10", "1", 30, 0, nil },
    }

    for _, c in ipairs(good) do
        local name, reply, key, value, consumed, flags, cas = c[1], c[2], c[3], c[4], c[5], c[6], c[7]
        it("decodes " .. name, function()
            local v, n, f, cs = gray.mc_decode_get1(reply, key)
            assert.are.equal(value, v)
            assert.are.equal(consumed, n)
            assert.are.equal(flags, f)
            assert.are.equal(cas, cs)
        end)
    end

    -- { name, reply, key, exact error text or nil }
    local bad = {
        { "letters as flags", "VALUE k x 1\r\na\r\nEND\r\n" },
        { "letters as the byte count", "VALUE k 0 x\r\na\r\nEND\r\n" },
        { "letters as cas", "VALUE k 0 1 x\r\na\r\nEND\r\n" },
        { "negative flags", "VALUE k -1 1\r\na\r\nEND\r\n" },
        { "a negative byte count", "VALUE k 0 -1\r\na\r\nEND\r\n" },
        { "a negative cas", "VALUE k 0 1 -5\r\na\r\nEND\r\n" },
        { "a plus sign", "VALUE k +1 1\r\na\r\nEND\r\n" },
        { "hex flags", "VALUE k 0x1 1\r\na\r\nEND\r\n" },
        { "flags 2^32", "VALUE k 4294967296 1\r\na\r\nEND\r\n" },
        { "cas 2^64", "VALUE k 0 1 18446744073709551616\r\na\r\nEND\r\n" },
        { "a 25-digit byte count", "VALUE k 0 9999999999999999999999999\r\na\r\nEND\r\n" },
        { "a byte count over 2^30", "VALUE k 0 1073741825\r\na\r\nEND\r\n" },
        { "a byte count one too small", "VALUE k 0 2\r\nabc\r\nEND\r\n" },
        { "a byte count one too large", "VALUE k 0 4\r\nabc\r\nEND\r\n" },
        { "a byte count two too large", "VALUE k 0 5\r\nabc\r\nEND\r\n" },
        { "no CRLF after the data", "VALUE k 0 1\r\naXYEND\r\n" },
        { "LF only after the data", "VALUE k 0 1\r\na\nEND\r\n\r\n" },
        { "an extra field", "VALUE k 0 1 1 1\r\na\r\nEND\r\n" },
        { "too few fields", "VALUE k 0\r\na\r\nEND\r\n" },
        { "only a key", "VALUE k\r\na\r\nEND\r\n" },
        { "an empty VALUE line", "VALUE \r\nEND\r\n" },
        { "a double space before flags", "VALUE k  0 1\r\na\r\nEND\r\n" },
        { "a double space before the key", "VALUE  k 0 1\r\na\r\nEND\r\n" },
        { "a double space before the byte count", "VALUE k 0  1\r\na\r\nEND\r\n" },
        { "a trailing space", "VALUE k 0 1 \r\na\r\nEND\r\n" },
        { "a tab separator", "VALUE k\t0 1\r\na\r\nEND\r\n" },
        { "a 251-byte key, even when asked for", value_block(key251, 0, "v") .. "END\r\n", key251 },
        { "a key that was not asked for", "VALUE other 0 1\r\na\r\nEND\r\n" },
        { "a key in another case", "VALUE K 0 1\r\na\r\nEND\r\n" },
        { "a key that only starts like the asked one", "VALUE kk 0 1\r\na\r\nEND\r\n" },
        { "a NUL inside the key", "VALUE k\0 0 1\r\na\r\nEND\r\n" },
        { "two values for one key", "VALUE k 0 1\r\na\r\nVALUE k 0 1\r\nb\r\nEND\r\n" },
        { "SERVER_ERROR", "SERVER_ERROR out of memory\r\n", "k", "SERVER_ERROR out of memory" },
        { "CLIENT_ERROR", "CLIENT_ERROR bad command line format\r\n", "k",
          "CLIENT_ERROR bad command line format" },
        { "ERROR", "ERROR\r\n", "k", "ERROR" },
        { "ERROR with a message", "ERROR too large\r\n", "k", "ERROR too large" },
        { "SERVER_ERROR after a value", "VALUE k 0 1\r\na\r\nSERVER_ERROR busy\r\n", "k",
          "SERVER_ERROR busy" },
        { "STORED as a reply to get", "STORED\r\n" },
        { "a number as a reply to get", "42\r\n" },
        { "NOT_FOUND as a reply to get", "NOT_FOUND\r\n" },
        { "VERSION as a reply to get", "VERSION 1.6.18\r\n" },
        { "lowercase end", "end\r\n" },
        { "lowercase value", "value k 0 1\r\na\r\nEND\r\n" },
        { "END without CR", "END\n" },
        { "END, CR and a letter", "END\rX" },
        { "garbage bytes", "\255\254\253garbage\r\n" },
        { "NUL bytes", "\0\0\0\r\n" },
        { "a NUL before END", "\0END\r\n" },
        { "1100 bytes without CRLF", rep("A", 1100) },
        { "a value then 1100 bytes without CRLF", "VALUE k 0 1\r\na\r\n" .. rep("x", 1100) },
        { "a value whose echo of the key is longer", "VALUE k1 0 1\r\na\r\nEND\r\n" },
        { "a VALUE line longer than 1024 bytes", "VALUE k 0 1 " .. rep("1", 1100) .. "\r\na\r\nEND\r\n" },
    }

    for _, c in ipairs(bad) do
        local name, reply, key, err = c[1], c[2], c[3] or "k", c[4]
        it("rejects " .. name, function()
            assert_error(show(reply), err, gray.mc_decode_get1(reply, key))
        end)
    end

    -- a reply cut short asks for what can complete it: { name, reply, need }
    for _, c in ipairs({ { "a whole value but the last LF", "VALUE k 0 1\r\na\r\nEND\r", 1 },
                         { "a whole value but END", "VALUE k 0 1\r\na\r\n", 2 },
                         { "a value line alone", "VALUE k 0 1\r\n", 8 },
                         { "END without its LF", "END\r", 1 } }) do
        it("asks for more of " .. c[1], function()
            local v, err, need = gray.mc_decode_get1(c[2], "k")
            assert.is_nil(v)
            assert.are.equal("again", err)
            assert.are.equal(c[3], need)
        end)
    end
end)

-------------------------------------------------------------------------------
describe("mc_decode_get and mc_decode_gets", function()
    -- 100 keys, every third one missing, answered in request order
    local names, want_get, want_gets, parts = {}, {}, {}, {}
    for i = 1, 100 do
        local k = "key:" .. i
        names[i] = k
        if i % 3 ~= 0 then
            local data = "value " .. i .. "\r\n" .. rep("\0", i % 5)
            want_get[k] = data
            want_gets[k] = { value = data, flags = i * 1000, cas = tostring(i * 7919) }
            parts[#parts + 1] = value_block(k, i * 1000, data, i * 7919)
        end
    end
    parts[#parts + 1] = "END\r\n"
    local keys100 = table.concat(names, " ")
    local reply100 = table.concat(parts)

    local two = "VALUE a 1 2\r\naa\r\nVALUE c 3 0 18446744073709551615\r\n\r\nEND\r\n"
    local two_get = { a = "aa", c = "" }
    local two_gets = { a = { value = "aa", flags = 1 },
                       c = { value = "", flags = 3, cas = "18446744073709551615" } }

    -- { name, reply, keys, max_values, get result, gets result, consumed }
    local good = {
        { "a miss of every key", "END\r\n", "a b c", nil, {}, {}, 5 },
        { "two of three keys", two, "a b c", nil, two_get, two_gets, #two },
        { "two values with max_values 2", two, "a b c", 2, two_get, two_gets, #two },
        { "100 keys, some missing, in order", reply100, keys100, nil, want_get, want_gets, #reply100 },
        { "100 keys then trailing bytes", reply100 .. "VALUE key:1 0 1\r\n", keys100, nil,
          want_get, want_gets, #reply100 },
        { "one key with cas", "VALUE only 0 1 5\r\nx\r\nEND\r\n", "only", nil,
          { only = "x" }, { only = { value = "x", flags = 0, cas = "5" } }, 26 },
        { "a key asked twice answered twice", "VALUE d 0 1\r\nx\r\nVALUE d 0 1\r\nx\r\nEND\r\n",
          "d d", nil, { d = "x" }, { d = { value = "x", flags = 0 } }, 37 },
        { "the largest flags", "VALUE f 4294967295 1\r\nx\r\nEND\r\n", "f", nil,
          { f = "x" }, { f = { value = "x", flags = 4294967295 } }, 30 },
    }

    for _, c in ipairs(good) do
        local name, reply, keys, max, get, gets, consumed = c[1], c[2], c[3], c[4], c[5], c[6], c[7]
        it("mc_decode_get decodes " .. name, function()
            local out, n = gray.mc_decode_get(reply, keys, max)
            assert.is_table(out, tostring(n))
            assert.are.same(get, out)
            assert.are.equal(consumed, n)
        end)
        it("mc_decode_gets decodes " .. name, function()
            local out, n = gray.mc_decode_gets(reply, keys, max)
            assert.is_table(out, tostring(n))
            assert.are.same(gets, out)
            assert.are.equal(consumed, n)
        end)
    end

    -- { name, reply, keys, max_values, exact error text or nil }
    local bad = {
        { "more values than max_values", two, "a b c", 1 },
        { "three values with max_values 2",
          "VALUE a 0 1\r\na\r\nVALUE b 0 1\r\nb\r\nVALUE c 0 1\r\nc\r\nEND\r\n", "a b c", 2 },
        { "a key that was not asked for", "VALUE a 0 1\r\na\r\nVALUE z 0 1\r\nz\r\nEND\r\n", "a b c" },
        { "values out of request order", "VALUE b 0 1\r\nb\r\nVALUE a 0 1\r\na\r\nEND\r\n", "a b c" },
        { "a key asked once answered twice",
          "VALUE a 0 1\r\na\r\nVALUE a 0 1\r\na\r\nEND\r\n", "a b c" },
        { "a key that is a prefix of an asked one", "VALUE ab 0 1\r\na\r\nEND\r\n", "abc d" },
        { "a key that joins two asked ones", "VALUE a b 0 1\r\na\r\nEND\r\n", "a b" },
        { "flags 2^32", "VALUE a 4294967296 1\r\na\r\nEND\r\n", "a b" },
        { "cas 2^64", "VALUE a 0 1 18446744073709551616\r\na\r\nEND\r\n", "a b" },
        { "SERVER_ERROR", "SERVER_ERROR out of memory\r\n", "a b", nil, "SERVER_ERROR out of memory" },
        { "CLIENT_ERROR", "CLIENT_ERROR line too long\r\n", "a b", nil, "CLIENT_ERROR line too long" },
        { "ERROR", "ERROR\r\n", "a b", nil, "ERROR" },
        { "DELETED as a reply to get", "DELETED\r\n", "a b" },
        { "a byte count too small", "VALUE a 0 1\r\naa\r\nEND\r\n", "a b" },
        { "garbage after a value", "VALUE a 0 1\r\na\r\nGARBAGE\r\n", "a b" },
        { "NUL bytes after a value", "VALUE a 0 1\r\na\r\n\0\0\0\r\n", "a b" },
        { "keys that are not a string", "END\r\n", nil },
        { "a negative max_values", two, "a b c", -1 },
        { "a NaN max_values", two, "a b c", 0 / 0 },
        { "a fractional max_values", two, "a b c", 1.5 },
        { "a string max_values", two, "a b c", "2" },
        { "a table of keys", "END\r\n", { "a" } },
    }

    for _, c in ipairs(bad) do
        local name, reply, keys, max, err = c[1], c[2], c[3], c[4], c[5]
        for _, fn in ipairs({ "mc_decode_get", "mc_decode_gets" }) do
            it(fn .. " rejects " .. name, function()
                assert_error(show(reply), err, gray[fn](reply, keys, max))
            end)
        end
    end
end)

-------------------------------------------------------------------------------
describe("get replies cut and corrupted", function()
    local bin = "\0\r\nEND\r\nVALUE k 0 1\r\n\255"
    local multi = "VALUE a 1 1\r\nA\r\nVALUE b 2 2 9\r\nBB\r\nVALUE d 0 3\r\nDDD\r\nEND\r\n"
    -- { name, decoder, reply, keys, expected }: expected is the decoded value
    -- (false for a get1 miss, a table for get/gets) or { err = text }
    local replies = {
        { "a single value", "mc_decode_get1", "VALUE k 7 5\r\nhello\r\nEND\r\n", "k", "hello" },
        { "a single gets value", "mc_decode_get1", "VALUE k 7 5 12345\r\nhello\r\nEND\r\n", "k", "hello" },
        { "a miss", "mc_decode_get1", "END\r\n", "k", false },
        { "an error reply", "mc_decode_get1", "SERVER_ERROR out of memory\r\n", "k",
          { err = "SERVER_ERROR out of memory" } },
        { "binary data", "mc_decode_get1", value_block("k", 0, bin) .. "END\r\n", "k", bin },
        { "a zero-length value", "mc_decode_get1", "VALUE k 0 0\r\n\r\nEND\r\n", "k", "" },
        { "multiple values", "mc_decode_get", multi, "a b c d", { a = "A", b = "BB", d = "DDD" } },
        { "multiple gets values", "mc_decode_gets", multi, "a b c d",
          { a = { value = "A", flags = 1 }, b = { value = "BB", flags = 2, cas = "9" },
            d = { value = "DDD", flags = 0 } } },
        { "a multi-get miss", "mc_decode_get", "END\r\n", "a b", {} },
        { "a multi-get error", "mc_decode_get", "CLIENT_ERROR bad\r\n", "a b", { err = "CLIENT_ERROR bad" } },
        { "multi-get binary data", "mc_decode_get", value_block("b", 0, bin) .. "END\r\n", "a b",
          { b = bin } },
    }

    for _, c in ipairs(replies) do
        local name, fn, reply, keys, want = c[1], c[2], c[3], c[4], c[5]
        local decode = gray[fn]

        it(fn .. " decodes the whole of " .. name, function()
            local r1, r2 = decode(reply, keys)
            if type(want) == "table" and want.err then
                assert_error(name, want.err, r1, r2)
            else
                assert.are.same(want, r1)
                assert.are.equal(#reply, r2)
            end
        end)

        it(fn .. " asks for more at every cut of " .. name, function()
            for i = 0, #reply - 1 do
                local what = fmt("%s cut at %d of %d", name, i, #reply)
                local r1, r2, need = decode(reply:sub(1, i), keys)
                assert_again(what, r1, r2)
                assert.is_number(need, what)
                assert.is_true(need >= 1, what .. ": need " .. tostring(need))
                assert.is_true(i + need <= #reply,
                               what .. ": need " .. tostring(need) .. " overshoots the reply")
            end
        end)

        it(fn .. " survives corruption at every byte of " .. name, function()
            local requested = {}
            for k in keys:gmatch("[^ ]+") do
                requested[k] = true
            end
            local subs = { "\0", "\r", "\n", " ", "X", "9", "-", "\255" }
            for i = 1, #reply do
                for _, s in ipairs(subs) do
                    if s ~= reply:sub(i, i) then
                        local buf = reply:sub(1, i - 1) .. s .. reply:sub(i + 1)
                        local what = fmt("%s with byte %d set to %q", name, i, s)
                        local ok, r1, r2, r3 = pcall(decode, buf, keys)
                        assert.is_true(ok, what .. ": raised " .. tostring(r1))
                        if r1 == nil then
                            assert.is_string(r2, what)
                            if r2 == "again" then
                                assert.is_number(r3, what)
                                assert.is_true(r3 >= 1, what)
                            end
                        else
                            assert.is_number(r2, what)
                            assert.is_true(r2 >= 5 and r2 <= #buf, what .. ": consumed " .. r2)
                            if type(r1) == "table" then
                                for k, v in pairs(r1) do
                                    assert.is_true(requested[k], what .. ": unasked key " .. k)
                                    local data = type(v) == "table" and v.value or v
                                    assert.is_string(data, what)
                                    assert.is_truthy(buf:find(data, 1, true), what)
                                end
                            elseif r1 ~= false then
                                assert.is_string(r1, what)
                                assert.is_truthy(buf:find(r1, 1, true),
                                                 what .. ": value is not in the buffer")
                            end
                        end
                    end
                end
            end
        end)
    end
end)

-------------------------------------------------------------------------------
-- The meta protocol (doc/protocol.txt, "Meta Get", "Meta No-Op"): replies to
-- "mg <key> <flags>*", alone or pipelined and ended by "mn".

local PIPE, VAL, QUIET = gray.META_PIPELINE, gray.META_VALUE, gray.META_QUIET

describe("mc_decode_meta1", function()
    local bin = "x\r\nMN\r\nEN\r\nVA 1\r\n\0\255"
    local key250, key251 = rep("k", 250), rep("k", 251)

    -- { name, reply (plus trailing bytes), key, v asked, value, consumed, flags, cas }
    local good = {
        { "a hit", "VA 5\r\nhello\r\n", "k", true, "hello", 13 },
        { "a miss", "EN\r\n", "k", true, false, 4 },
        { "a miss without v", "EN\r\n", "k", false, false, 4 },
        { "a miss echoing k and O", "EN kk O0\r\n", "k", true, false, 10 },
        { "a zero-length value", "VA 0\r\n\r\n", "k", true, "", 8 },
        { "binary data holding CRLF MN CRLF", "VA " .. #bin .. "\r\n" .. bin .. "\r\n", "k", true,
          bin, 9 + #bin },
        { "a value with flags and cas", "VA 3 f5 c99\r\nabc\r\n", "k", true, "abc", 18, 5, "99" },
        { "the cas alone (HD)", "HD c42\r\n", "k", false, true, 8, nil, "42" },
        { "the largest cas", "HD c18446744073709551615\r\n", "k", false, true, 26, nil,
          "18446744073709551615" },
        { "cas 0", "HD c0\r\n", "k", false, true, 7, nil, "0" },
        { "the largest flags", "VA 1 f4294967295\r\na\r\n", "k", true, "a", 21, 4294967295 },
        { "a hit without tokens (HD)", "HD\r\n", "k", false, true, 4 },
        { "the asked key echoed (k)", "VA 1 kk\r\na\r\n", "k", true, "a", 12 },
        { "a 250-byte key echoed", "HD k" .. key250 .. "\r\n", key250, false, true, 256 },
        { "opaque 0, the first request", "VA 1 O0\r\na\r\n", "k", true, "a", 12 },
        { "tokens it does not read (t s h l W X Z b)", "HD c1 t-1 s3 h0 l12 W X Z b\r\n", "k",
          false, true, 29, nil, "1" },
        { "a hit then trailing bytes", "VA 1\r\na\r\nEN\r\n", "k", true, "a", 9 },
        { "a miss then trailing garbage", "EN\r\n\0garbage", "k", true, false, 4 },
    }

    for _, c in ipairs(good) do
        local name, reply, key, with_value = c[1], c[2], c[3], c[4]
        it("decodes " .. name, function()
            local v, n, f, cs = gray.mc_decode_meta1(reply, key, with_value)
            assert.are.equal(c[5], v)
            assert.are.equal(c[6], n)
            assert.are.equal(c[7], f)
            assert.are.equal(c[8], cs)
        end)
        it("says again for every cut of " .. name, function()
            for i = 0, c[6] - 1 do
                local what = fmt("%s cut at %d", name, i)
                local r1, r2, need = gray.mc_decode_meta1(reply:sub(1, i), key, with_value)
                assert_again(what, r1, r2, need)
                assert.is_true(need >= 1 and i + need <= c[6], what .. ": need " .. tostring(need))
            end
        end)
    end

    -- { name, reply, v asked, exact error text or nil, key (default "k") }
    local bad = {
        -- wrong sizes
        { "a size one too small", "VA 2\r\nabc\r\n", true, "data block not followed by CRLF" },
        { "a size one too large", "VA 4\r\nabc\r\nEN\r\n", true, "data block not followed by CRLF" },
        { "a size over 2^30", "VA 1073741825\r\na\r\n", true, "number out of range" },
        { "a 23-digit size", "VA 99999999999999999999999\r\na\r\n", true, "number out of range" },
        { "a negative size", "VA -1\r\na\r\n", true, "bad number" },
        { "letters as the size", "VA x\r\na\r\n", true, "bad number" },
        { "no size", "VA\r\na\r\n", true },
        { "a space and no size", "VA \r\na\r\n", true },
        { "a size then a space", "VA 1 \r\na\r\n", true },
        -- missing or broken CRLF
        { "no CRLF after the data", "VA 1\r\naXYEN\r\n", true, "data block not followed by CRLF" },
        { "EN without CR", "EN\n", true },
        { "HD, CR and a letter", "HD c1\rX", false },
        { "1100 bytes without CRLF", "HD " .. rep("c", 1100), false },
        -- unknown codes, and text replies that are not mg's
        { "an unknown code", "XX\r\n", true },
        { "NF (a meta delete's reply)", "NF\r\n", true },
        { "NS (a meta set's reply)", "NS\r\n", true },
        { "EX", "EX\r\n", true },
        { "END", "END\r\n", true },
        { "STORED", "STORED\r\n", true },
        { "a get reply", "VALUE k 0 1\r\na\r\nEND\r\n", true },
        { "lowercase va", "va 1\r\na\r\n", true },
        { "VA glued to a letter", "VAX 1\r\na\r\n", true },
        { "EN glued to a letter", "ENX\r\n", true },
        { "HD glued to a flag", "HDc1\r\n", false },
        { "a number", "42\r\n", true },
        { "MN without a pipeline", "MN\r\n", true },
        { "EN when no key was asked", "EN\r\n", true, "value for a key that was not requested", "" },
        -- the kind that was not asked for
        { "VA when v was not asked", "VA 1\r\na\r\n", false },
        { "HD when v was asked", "HD\r\n", true },
        -- tokens
        { "another key echoed", "VA 1 kother\r\na\r\n", true, "value for a key that was not requested" },
        { "the key in another case", "HD kK\r\n", false, "value for a key that was not requested" },
        { "a key that starts like the asked one", "HD kkk\r\n", false },
        { "a 251-byte key echoed", "HD k" .. key251 .. "\r\n", false, "bad key", key251 },
        { "an empty key token", "HD k\r\n", false, "bad key" },
        { "opaque 1 for the only request", "HD O1\r\n", false,
          "value for a key that was not requested" },
        { "a non-numeric opaque", "HD Ox\r\n", false },
        { "a negative opaque", "HD O-0\r\n", false },
        { "an empty opaque", "HD O\r\n", false },
        { "a 33-byte opaque", "HD O" .. rep("0", 33) .. "\r\n", false },
        { "cas twice", "HD c1 c2\r\n", false },
        { "the key twice", "HD kk kk\r\n", false },
        { "cas 2^64", "HD c18446744073709551616\r\n", false, "number out of range" },
        { "letters as cas", "HD cx\r\n", false, "bad number" },
        { "an empty cas", "HD c\r\n", false, "bad number" },
        { "flags 2^32", "HD f4294967296\r\n", false, "number out of range" },
        { "a double space", "HD  c1\r\n", false },
        { "a trailing space", "HD c1 \r\n", false },
        { "a tab separator", "HD\tc1\r\n", false },
        { "a digit as a flag", "HD 1\r\n", false },
        { "a NUL inside a token", "HD c1 k\0\r\n", false },
        -- error lines: the server's words
        { "ERROR (no meta protocol)", "ERROR\r\n", true, "ERROR" },
        { "ERROR with a message", "ERROR unknown command\r\n", true, "ERROR unknown command" },
        { "CLIENT_ERROR", "CLIENT_ERROR bad command line format\r\n", false,
          "CLIENT_ERROR bad command line format" },
        { "SERVER_ERROR", "SERVER_ERROR out of memory\r\n", true, "SERVER_ERROR out of memory" },
    }

    for _, c in ipairs(bad) do
        local name, reply, with_value, err, key = c[1], c[2], c[3], c[4], c[5] or "k"
        it("rejects " .. name, function()
            assert_error(show(reply), err, gray.mc_decode_meta1(reply, key, with_value))
        end)
    end
end)

-------------------------------------------------------------------------------
describe("mc_decode_meta (a pipeline ended by MN)", function()
    -- 100 keys asked with "v q O<i>", every third one missing
    local names, want, want_meta, parts = {}, {}, {}, {}
    for i = 1, 100 do
        local k = "key:" .. i
        names[i] = k
        if i % 3 ~= 0 then
            local data = "value " .. i .. "\r\nMN\r\n" .. rep("\0", i % 5)
            want[k] = data
            want_meta[k] = { value = data, flags = i, cas = tostring(i * 7919) }
            parts[#parts + 1] = "VA " .. #data .. " f" .. i .. " c" .. i * 7919 .. " O" .. (i - 1)
                                .. CRLF .. data .. CRLF
        end
    end
    parts[#parts + 1] = "MN\r\n"
    local keys100, reply100 = table.concat(names, " "), table.concat(parts)

    local quiet_k = "VA 1 ka\r\nA\r\nVA 2 kc\r\nCC\r\nMN\r\n"
    local loud = "VA 1\r\nA\r\nEN\r\nVA 2 kc O2\r\nCC\r\nMN\r\n"
    local cas_only = "HD c5\r\nEN kb\r\nHD c18446744073709551615 kc\r\nMN\r\n"

    -- { name, reply, keys, mode, with_meta, result, consumed }
    local good = {
        { "a miss of every key (q)", "MN\r\n", "a b c", PIPE + VAL + QUIET, false, {}, 4 },
        { "a miss of every key (EN each)", "EN\r\nEN\r\nEN\r\nMN\r\n", "a b c", PIPE + VAL, false,
          {}, 16 },
        { "two of three keys matched by k (q)", quiet_k, "a b c", PIPE + VAL + QUIET, false,
          { a = "A", c = "CC" }, #quiet_k },
        { "two of three keys matched by O (q)", "VA 1 O0\r\nA\r\nVA 2 O2\r\nCC\r\nMN\r\n",
          "a b c", PIPE + VAL + QUIET, false, { a = "A", c = "CC" }, 29 },
        { "EN, VA and tokens interleaved (no q)", loud, "a b c", PIPE + VAL, false,
          { a = "A", c = "CC" }, #loud },
        { "the cas of each key (c, no v)", cas_only, "a b c", PIPE, true,
          { a = { cas = "5" }, c = { cas = "18446744073709551615" } }, #cas_only },
        { "100 keys by opaque, some missing (q)", reply100, keys100, PIPE + VAL + QUIET, false,
          want, #reply100 },
        { "100 keys with flags and cas", reply100, keys100, PIPE + VAL + QUIET, true,
          want_meta, #reply100 },
        { "100 keys then trailing bytes", reply100 .. "VA 1 O0\r\n", keys100, PIPE + VAL + QUIET,
          false, want, #reply100 },
        { "a key asked twice answered twice (k, q)", "HD kd\r\nHD kd\r\nMN\r\n", "d d",
          PIPE + QUIET, false, { d = true }, 18 },
        { "the second of a key asked twice (O, q)", "HD O1 kd\r\nMN\r\n", "d d", PIPE + QUIET,
          false, { d = true }, 14 },
    }

    for _, c in ipairs(good) do
        local name, reply, keys, mode, with_meta = c[1], c[2], c[3], c[4], c[5]
        it("decodes " .. name, function()
            local out, n = gray.mc_decode_meta(reply, keys, nil, mode, with_meta)
            assert.is_table(out, tostring(n))
            assert.are.same(c[6], out)
            assert.are.equal(c[7], n)
        end)
        it("says again for every cut of " .. name, function()
            for i = 0, c[7] - 1 do
                local what = fmt("%s cut at %d", name, i)
                local r1, r2, need = gray.mc_decode_meta(reply:sub(1, i), keys, nil, mode, with_meta)
                assert_again(what, r1, r2, need)
                assert.is_true(need >= 1 and i + need <= c[7], what .. ": need " .. tostring(need))
            end
        end)
    end

    local UNASKED = "value for a key that was not requested"
    -- { name, reply, keys, mode, max_values, exact error text or nil }
    local bad = {
        { "MN before every request answered (no q)", "VA 1\r\nA\r\nMN\r\n", "a b", PIPE + VAL },
        { "a lone MN without q", "MN\r\nEN\r\n", "a", PIPE + VAL },
        { "a lone EN in a pipeline under q", "EN\r\nMN\r\n", "a", PIPE + VAL + QUIET },
        { "a reply too many (no q)", "EN\r\nEN\r\nEN\r\nMN\r\n", "a b", PIPE + VAL, nil, UNASKED },
        { "EN under q", "EN\r\nMN\r\n", "a b", PIPE + VAL + QUIET },
        { "opaques out of order", "HD O1\r\nHD O0\r\nMN\r\n", "a b", PIPE + QUIET, nil, UNASKED },
        { "an opaque twice", "HD O0\r\nHD O0\r\nMN\r\n", "a b", PIPE + QUIET, nil, UNASKED },
        { "an opaque past the last key", "HD O2\r\nMN\r\n", "a b", PIPE + QUIET, nil, UNASKED },
        -- not an echo of the O<i> sent (found by the mc_meta fuzz target)
        { "an opaque with a leading zero", "HD O01\r\nMN\r\n", "a b", PIPE + QUIET, nil, UNASKED },
        { "an opaque skipping a key without q", "HD O1\r\nMN\r\n", "a b", PIPE, nil, UNASKED },
        { "a key not asked for", "HD kz\r\nMN\r\n", "a b", PIPE + QUIET, nil, UNASKED },
        { "keys out of order", "HD kb\r\nHD ka\r\nMN\r\n", "a b", PIPE + QUIET, nil, UNASKED },
        { "a key that is a prefix of an asked one", "HD kab\r\nMN\r\n", "abc d", PIPE + QUIET, nil,
          UNASKED },
        { "k and O that disagree", "HD O0 kb\r\nMN\r\n", "a b", PIPE + QUIET, nil, UNASKED },
        { "a key out of turn without q", "EN kb\r\nEN ka\r\nMN\r\n", "a b", PIPE, nil, UNASKED },
        { "any reply when no key was asked", "HD\r\nMN\r\n", "", PIPE },
        { "VA when v was not asked", "VA 1 O0\r\nA\r\nMN\r\n", "a b", PIPE + QUIET },
        { "HD when v was asked", "HD O0\r\nMN\r\n", "a b", PIPE + VAL + QUIET },
        { "a wrong size mid-pipeline", "VA 1 O0\r\nAB\r\nMN\r\n", "a b", PIPE + VAL + QUIET, nil,
          "data block not followed by CRLF" },
        { "END instead of MN", "VA 1 O0\r\nA\r\nEND\r\n", "a b", PIPE + VAL + QUIET },
        { "a CLIENT_ERROR mid-pipeline", "VA 1 O0\r\nA\r\nCLIENT_ERROR bad\r\nMN\r\n", "a b",
          PIPE + VAL + QUIET, nil, "CLIENT_ERROR bad" },
        { "ERROR (no meta protocol)", "ERROR\r\nERROR\r\nERROR\r\n", "a b", PIPE + VAL + QUIET, nil,
          "ERROR" },
        { "more hits than max_values", "HD O0\r\nHD O1\r\nMN\r\n", "a b", PIPE + QUIET, 1 },
        { "a mode of 8", "MN\r\n", "a b", 8 },
        { "a negative mode", "MN\r\n", "a b", -1 },
        { "a string mode", "MN\r\n", "a b", "3" },
        { "keys that are not a string", "MN\r\n", nil, PIPE },
    }

    for _, c in ipairs(bad) do
        local name, reply, keys, mode, max, err = c[1], c[2], c[3], c[4], c[5], c[6]
        it("rejects " .. name, function()
            assert_error(show(reply), err, gray.mc_decode_meta(reply, keys, max, mode))
        end)
    end

    it("decodes the same from a reply buffer filled a byte at a time", function()
        local buf = gray.new_reply_buffer(16)
        local out, n
        for i = 1, #reply100 do
            buf:append(reply100:sub(i, i))
            out, n = buf:decode_meta(keys100, nil, PIPE + VAL + QUIET)
            if i < #reply100 then
                assert.are.equal("again", n)
            end
        end
        assert.are.same(want, out)
    end)
end)

-------------------------------------------------------------------------------
describe("meta replies corrupted at every byte", function()
    local replies = {
        { "one value", "VA 5 c9\r\nhello\r\n", "k", VAL, false },
        { "one cas", "HD c123 kk\r\n", "k", 0, false },
        { "a pipeline (q, O)", "VA 1 O0 c1\r\nA\r\nVA 2 O2\r\nBB\r\nMN\r\n", "a b c",
          PIPE + VAL + QUIET, true },
        { "a pipeline (EN, k)", "HD c1 ka\r\nEN kb\r\nHD kc c3\r\nMN\r\n", "a b c", PIPE, true },
    }
    for _, c in ipairs(replies) do
        local name, reply, keys, mode, multi = c[1], c[2], c[3], c[4], c[5]
        it("survives corruption of " .. name, function()
            local requested = {}
            for k in keys:gmatch("[^ ]+") do
                requested[k] = true
            end
            for i = 1, #reply do
                for _, s in ipairs({ "\0", "\r", "\n", " ", "X", "9", "O", "k", "\255" }) do
                    local buf = reply:sub(1, i - 1) .. s .. reply:sub(i + 1)
                    local what = fmt("%s with byte %d set to %q", name, i, s)
                    local ok, r1, r2, r3
                    if multi then
                        ok, r1, r2, r3 = pcall(gray.mc_decode_meta, buf, keys, nil, mode)
                    else
                        ok, r1, r2, r3 = pcall(gray.mc_decode_meta1, buf, keys, mode == VAL)
                    end
                    assert.is_true(ok, what .. ": raised " .. tostring(r1))
                    if r1 == nil then
                        assert.is_string(r2, what)
                        if r2 == "again" then
                            assert.is_true(r3 >= 1, what)
                        end
                    else
                        assert.is_true(r2 >= 4 and r2 <= #buf, what .. ": consumed " .. r2)
                        if type(r1) == "table" then
                            for k, v in pairs(r1) do
                                assert.is_true(requested[k], what .. ": unasked key " .. k)
                                assert.is_true(v == true or buf:find(v, 1, true) ~= nil, what)
                            end
                        elseif type(r1) == "string" then
                            assert.is_truthy(buf:find(r1, 1, true), what)
                        end
                    end
                end
            end
        end)
    end
end)

-------------------------------------------------------------------------------
describe("mc_meta_request", function()
    local many, want = {}, {}
    for i = 1, 200 do
        many[i] = "key:" .. i
        want[i] = "mg key:" .. i .. " v q O" .. (i - 1) .. "\r\n"
    end
    -- { name, keys, flags, request }
    local good = {
        { "one key", "a", "v", "mg a v O0\r\nmn\r\n" },
        { "three keys", "203.0.113.7 uid:1 dev:2", "v q",
          "mg 203.0.113.7 v q O0\r\nmg uid:1 v q O1\r\nmg dev:2 v q O2\r\nmn\r\n" },
        { "no flags", "a b", "", "mg a O0\r\nmg b O1\r\nmn\r\n" },
        { "a 250-byte key", rep("k", 250), "c", "mg " .. rep("k", 250) .. " c O0\r\nmn\r\n" },
        { "200 one-byte-longer positions", table.concat(many, " "), "v q",
          table.concat(want) .. "mn\r\n" },
        { "200 one-byte keys (the tightest room)", rep("a ", 199) .. "a", "v f c q",
          (function()
              local t = {}
              for i = 1, 200 do t[i] = "mg a v f c q O" .. (i - 1) .. "\r\n" end
              return table.concat(t) .. "mn\r\n"
          end)() },
    }
    for _, c in ipairs(good) do
        it("builds " .. c[1], function()
            assert.are.equal(c[4], gray.mc_meta_request(c[2], c[3]))
        end)
        it("builds what mc_decode_meta matches back, for " .. c[1], function()
            local req = gray.mc_meta_request(c[2], c[3])
            -- memcached's answer to each line: a hit echoing the opaque
            local reply = req:gsub("mg %S+[^\r]* O(%d+)\r\n", "HD O%1\r\n"):gsub("mn\r\n", "MN\r\n")
            local out = gray.mc_decode_meta(reply, c[2], nil, PIPE + QUIET)
            for key in c[2]:gmatch("%S+") do
                assert.is_true(out[key], key)
            end
        end)
    end

    -- { name, keys, flags }
    local bad = {
        { "no key", "", "v" },
        { "a double space", "a  b", "v" },
        { "a leading space", " a", "v" },
        { "a trailing space", "a ", "v" },
        { "a 251-byte key", rep("k", 251), "v" },
        { "a key with CRLF", "a\r\nflush_all", "v" },
        { "a key with a tab", "a\tb", "v" },
        { "flags with CRLF", "a", "v\r\nflush_all" },
        { "flags with a NUL", "a", "v\0" },
        { "keys that are not a string", nil, "v" },
        { "flags that are not a string", "a", nil },
    }
    for _, c in ipairs(bad) do
        it("refuses " .. c[1], function()
            local r, err = gray.mc_meta_request(c[2], c[3])
            assert.is_nil(r)
            assert.is_string(err)
        end)
    end
end)

describe("mc_meta_list", function()
    -- { name, k1..k5 (false: not given), request }
    local good = {
        { "one key", { "a", false, false, false, false }, "mg a v q O0\r\nmn\r\n" },
        { "three keys with holes", { "uid:1", false, "dev:2", false, "203.0.113.7" },
          "mg uid:1 v q O0\r\nmg dev:2 v q O1\r\nmg 203.0.113.7 v q O2\r\nmn\r\n" },
        { "the address alone, last", { false, false, false, false, "192.0.2.1" },
          "mg 192.0.2.1 v q O0\r\nmn\r\n" },
        { "five 250-byte keys (the whole room)", { rep("a", 250), rep("b", 250), rep("c", 250),
                                                  rep("d", 250), rep("e", 250) },
          "mg " .. rep("a", 250) .. " v q O0\r\nmg " .. rep("b", 250) .. " v q O1\r\nmg "
          .. rep("c", 250) .. " v q O2\r\nmg " .. rep("d", 250) .. " v q O3\r\nmg "
          .. rep("e", 250) .. " v q O4\r\nmn\r\n" },
    }
    local function args(k)
        return k[1] or nil, k[2] or nil, k[3] or nil, k[4] or nil, k[5] or nil
    end
    for _, c in ipairs(good) do
        it("builds " .. c[1], function()
            assert.are.equal(c[3], gray.mc_meta_list(args(c[2])))
        end)
        it("builds what mc_decode_meta_list matches back by position, for " .. c[1], function()
            local req = gray.mc_meta_list(args(c[2]))
            local _, n = req:gsub("mg ", "")
            -- memcached's answer: a value echoing each opaque, its position
            local reply = req:gsub("mg %S+ v q O(%d+)\r\n", "VA 1 O%1\r\n%1\r\n")
                             :gsub("mn\r\n", "MN\r\n")
            local into = { "x", "x", "x", "x", "x" }
            local out = gray.mc_decode_meta_list(reply, gray.LIST_KEYS[n], n, into)
            assert.are.equal(into, out)
            for i = 1, 5 do
                assert.are.equal(i <= n and tostring(i - 1) or false, out[i])
            end
        end)
    end
    it("refuses an opaque past the keys asked", function()
        local out, err = gray.mc_decode_meta_list("VA 1 O2\r\n1\r\nMN\r\n", gray.LIST_KEYS[2], 2)
        assert.is_nil(out)
        assert.is_string(err)
    end)

    -- { name, k1..k5 }
    local bad = {
        { "no key", {} },
        { "an empty key", { "" } },
        { "a 251-byte key", { "a", rep("k", 251) } },
    }
    for _, c in ipairs(bad) do
        it("refuses " .. c[1], function()
            local r, err = gray.mc_meta_list(c[2][1], c[2][2], c[2][3], c[2][4], c[2][5])
            assert.is_nil(r)
            assert.is_string(err)
        end)
    end
end)
