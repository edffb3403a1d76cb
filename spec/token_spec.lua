-- token.c through gray.ffi (and straight through the C function, for the
-- lengths the Lua wrapper turns away first), and gray-admin token: signed
-- tokens "<subject>.<expiry>.<mac>" must check out only when made with the
-- same secret, context, subject and expiry, and before that expiry. The MAC
-- is compared with the openssl command line's own HMAC-SHA256.

local ffi = require "ffi"
local gray = require "gray.ffi"
local harness = require "helpers.harness"

local C = ffi.load(gray.lib_path)
local fmt = string.format

local KEY = "0123456789abcdef0123456789abcdef"
local NOW = 1800000000
local LATER = NOW + 3600

local function make(subject, expiry, key, ctx)
    return assert(gray.token_make(ctx or "force", key or KEY, subject, expiry or LATER))
end

-- gray_token_check on the bytes of tok (any length, NULs included)
local function c_check(tok, now, key, ctx)
    ctx, key = ctx or "force", key or KEY
    return C.gray_token_check(ctx, #ctx, key, #key, tok, #tok, now or NOW, nil)
end

describe("gray_token_check", function()
    local valid = make("v2", LATER)

    it("returns the subject and the expiry of a good token", function()
        assert.same({ "v2", LATER }, { gray.token_check("force", KEY, valid, NOW) })
    end)

    -- { name, subject }: all check out as themselves
    local subjects = {
        { "a name with dots (split from the right)", "a.b.c" },
        { "a name of digits", "123" },
        { "a name that looks like a token's tail", "v2.99" },
        { "every printable byte", (function()
            local t = {}
            for b = 0x21, 0x7e do
                t[#t + 1] = string.char(b)
            end
            return table.concat(t)
        end)() },
        { "200 bytes (the limit)", ("s"):rep(200) },
    }
    for _, c in ipairs(subjects) do
        it("takes " .. c[1], function()
            local tok = make(c[2], LATER)
            assert.same({ c[2], LATER }, { gray.token_check("force", KEY, tok, NOW) })
        end)
    end

    it("takes the longest token, 257 bytes, and nothing longer", function()
        local tok = make(("s"):rep(200), 999999999999)
        assert.equal(257, #tok)
        assert.equal(200, c_check(tok))
        assert.equal(-1, c_check("s" .. tok))
    end)

    it("makes no token of a bad subject, context, key or expiry", function()
        for _, args in ipairs({
            { "force", KEY, "", LATER }, { "force", KEY, ("s"):rep(201), LATER },
            { "force", KEY, "a b", LATER }, { "force", KEY, "a\0b", LATER },
            { "force", KEY, "\127", LATER }, { "force", KEY, "\200", LATER },
            { "", KEY, "v2", LATER }, { ("c"):rep(65), KEY, "v2", LATER },
            { "a\0b", KEY, "v2", LATER }, { "force", ("k"):rep(15), "v2", LATER },
            { "force", ("k"):rep(1025), "v2", LATER }, { "force", KEY, "v2", 0 },
            { "force", KEY, "v2", -5 }, { "force", KEY, "v2", 1e12 },
        }) do
            local tok, err = gray.token_make(args[1], args[2], args[3], args[4])
            assert.is_nil(tok, fmt("%q", args[3]))
            assert.equal("malformed input", err)
        end
    end)

    -- { name, token text, the error }: every one is refused
    local mac = valid:sub(-43)
    local refused = {
        { "an empty value", "", "malformed input" },
        { "dots alone", ("."):rep(50), "malformed input" },
        { "no expiry", "v2." .. mac, "malformed input" },
        { "an empty expiry", "v2.." .. mac, "malformed input" },
        { "an empty subject", "." .. LATER .. "." .. mac, "malformed input" },
        { "no subject separator", "v2" .. LATER .. mac, "malformed input" },
        { "a sign in the expiry", "v2.+" .. LATER .. "." .. mac, "malformed input" },
        { "a negative expiry", "v2.-1." .. mac, "malformed input" },
        { "13 expiry digits", "v2.1" .. ("0"):rep(12) .. "." .. mac, "malformed input" },
        { "a letter in the expiry", "v2.18x0000000." .. mac, "malformed input" },
        { "a 42-byte MAC", valid:sub(1, -2), "malformed input" },
        { "a 44-byte MAC", valid .. "A", "malformed input" },
        { "padding", valid .. "=", "malformed input" },
        { "a trailing newline", valid .. "\n", "malformed input" },
        { "a leading space", " " .. valid, "malformed input" },
        { "a NUL in the subject", "v\0002." .. LATER .. "." .. mac, "malformed input" },
        { "a space in the subject", "v 2." .. LATER .. "." .. mac, "malformed input" },
        { "a high byte in the subject", "v\2002." .. LATER .. "." .. mac, "malformed input" },
        { "another subject", "v3." .. LATER .. "." .. mac, "bad signature" },
        { "another expiry", "v2." .. (LATER + 1) .. "." .. mac, "bad signature" },
        { "the expiry with a leading zero", "v2.0" .. LATER .. "." .. mac, "bad signature" },
        { "the MAC in upper case", "v2." .. LATER .. "." .. mac:upper(), "bad signature" },
        { "the MAC in standard base64", "v2." .. LATER .. "."
                                        .. mac:gsub("%-", "+"):gsub("_", "/"), "bad signature" },
        { "an expired token", make("v2", NOW - 1), "expired" },
        { "a token expiring now", make("v2", NOW), "expired" },
        { "another secret's token", make("v2", LATER, ("x"):rep(32)), "bad signature" },
        { "a signed cookie's token (context id:uid)", make("v2", LATER, nil, "id:uid"),
          "bad signature" },
    }
    for _, c in ipairs(refused) do
        it("refuses " .. c[1], function()
            if c[2] == valid then
                return      -- this MAC has neither '-' nor '_': nothing to change
            end
            local subject, err = gray.token_check("force", KEY, c[2], NOW)
            assert.is_nil(subject)
            assert.equal(c[3], err)
            assert.is_true(c_check(c[2]) < 0)
        end)
    end

    it("refuses under another context, a bad context or a bad key", function()
        assert.equal(-13, c_check(valid, NOW, KEY, "Force"))
        assert.equal(-13, c_check(valid, NOW, KEY, "id:uid"))
        assert.equal(-1, c_check(valid, NOW, KEY, ""))
        assert.equal(-1, c_check(valid, NOW, KEY, "for\0ce"))
        assert.equal(-1, c_check(valid, NOW, KEY, ("c"):rep(65)))
        assert.equal(-1, c_check(valid, NOW, KEY:sub(1, 15)))
        assert.equal(-13, c_check(valid, NOW, KEY .. "x"))
    end)

    it("a token of a 1024-byte key checks out, none of a 1025-byte key", function()
        local key = ("k"):rep(1024)
        local tok = make("v2", LATER, key)
        assert.equal(2, c_check(tok, NOW, key))
        assert.equal(-1, c_check(tok, NOW, key .. "k"))
    end)

    it("reads only the given length (the rest of the buffer is not looked at)", function()
        local buf = ffi.new("char[?]", #valid + 10)
        ffi.copy(buf, valid .. "garbage!!")
        assert.equal(2, C.gray_token_check("force", 5, KEY, #KEY, buf, #valid, NOW, nil))
        for n = 0, #valid - 1 do
            assert.is_true(C.gray_token_check("force", 5, KEY, #KEY, buf, n, NOW, nil) < 0)
        end
    end)

    it("refuses every one-byte change of a good token (2,000 random ones)", function()
        math.randomseed(12)
        for _ = 1, 2000 do
            local i = math.random(1, #valid)
            local b = math.random(0, 255)
            local mutated
            local kind = math.random(3)
            if kind == 1 then
                mutated = valid:sub(1, i - 1) .. string.char(b) .. valid:sub(i + 1)
            elseif kind == 2 then
                mutated = valid:sub(1, i - 1) .. valid:sub(i + 1)
            else
                mutated = valid:sub(1, i - 1) .. string.char(b) .. valid:sub(i)
            end
            if mutated ~= valid then
                assert.is_true(c_check(mutated) < 0, fmt("%q", mutated))
            end
        end
    end)

    it("computes the MAC the openssl command line computes", function()
        local dir = harness.tmpdir()
        for i, subject in ipairs({ "v2", "always", "a.b", ("z"):rep(200), "!~" }) do
            local expiry = NOW + i
            local tok = make(subject, expiry)
            local msg = dir .. "/msg"
            local f = assert(io.open(msg, "wb"))
            f:write("force\0", subject, ".", expiry)
            f:close()
            local out, code = harness.sh("openssl dgst -sha256 -mac HMAC -macopt key:" .. KEY
                                         .. " -binary " .. msg .. " | openssl base64 -A")
            assert.equal(0, code, out)
            local want = out:gsub("%s+$", ""):gsub("=+$", ""):gsub("%+", "-"):gsub("/", "_")
            assert.equal(subject .. "." .. expiry .. "." .. want, tok)
        end
        harness.sh("rm -rf " .. harness.quote(dir))
    end)
end)

describe("gray_secret_len", function()
    local cases = {
        { "16 bytes", ("s"):rep(16), ("s"):rep(16) },
        { "trailing newline, CR, tab and space dropped", ("s"):rep(16) .. " \t\r\n\n",
          ("s"):rep(16) },
        { "leading blanks kept", "  " .. ("s"):rep(14), "  " .. ("s"):rep(14) },
        { "1024 bytes", ("s"):rep(1024), ("s"):rep(1024) },
        { "binary bytes", ("\0\255"):rep(8), ("\0\255"):rep(8) },
        { "15 bytes", ("s"):rep(15), nil },
        { "15 bytes and newlines", ("s"):rep(15) .. "\n\n\n", nil },
        { "blanks only", (" "):rep(40), nil },
        { "empty", "", nil },
        { "1025 bytes", ("s"):rep(1025), nil },
    }
    for _, c in ipairs(cases) do
        it(c[1], function()
            assert.equal(c[3], (gray.secret(c[2])))
        end)
    end
end)

describe("gray-admin token", function()
    local REPO = os.getenv("GRAY_REPO") or io.popen("pwd"):read("*l")
    local dir, secret

    setup(function()
        local out, code = harness.sh("make -s -C " .. harness.quote(REPO) .. " build/gray-admin")
        assert.equal(0, code, out)
        dir = harness.tmpdir()
        secret = dir .. "/gray.secret"
        local f = assert(io.open(secret, "wb"))
        f:write(KEY, "\n")
        f:close()
        harness.sh("chmod 600 " .. secret)
    end)

    teardown(function()
        harness.sh("rm -rf " .. harness.quote(dir))
    end)

    local function admin(args)
        local out, code = harness.sh(REPO .. "/build/gray-admin " .. args)
        return out, code
    end

    -- { --ttl, seconds }
    local ttls = {
        { "3600", 3600 }, { "90s", 90 }, { "30m", 1800 }, { "1h", 3600 }, { "1h30m", 5400 },
        { "7d", 7 * 86400 }, { "400d", 400 * 86400 },
    }
    for _, c in ipairs(ttls) do
        it("mints a token valid for --ttl " .. c[1], function()
            local t0 = os.time()
            local out, code = admin("token v2 --ttl " .. c[1] .. " --secret-file " .. secret)
            assert.equal(0, code, out)
            local tok = out:gsub("\n$", "")
            local subject, expiry = gray.token_check("force", KEY, tok, t0)
            assert.equal("v2", subject)
            assert.is_true(expiry >= t0 + c[2] and expiry <= os.time() + c[2], tok)
        end)
    end

    it("mints a signed identity value with --id, after global options", function()
        local out, code = admin("-v --servers 127.0.0.1:1 token 42 --id uid --ttl 1h"
                                .. " --secret-file " .. secret)
        assert.equal(0, code, out)
        local tok = out:gsub("\n$", "")
        assert.equal("42", (gray.token_check("id:uid", KEY, tok, os.time())))
        assert.is_nil((gray.token_check("force", KEY, tok, os.time())))
    end)

    -- { arguments, what stderr says }: all exit 2
    local bad = {
        { "token v2 --ttl 1h", "--ttl and --secret-file are required" },
        { "token v2 --secret-file $S", "--ttl and --secret-file are required" },
        { "token --ttl 1h --secret-file $S", "expected token <target>" },
        { "token v2 --ttl 0 --secret-file $S", "bad --ttl '0'" },
        { "token v2 --ttl 1x --secret-file $S", "bad --ttl '1x'" },
        { "token v2 --ttl h --secret-file $S", "bad --ttl 'h'" },
        { "token v2 --ttl 1h1 --secret-file $S", "bad --ttl '1h1'" },
        { "token v2 --ttl 401d --secret-file $S", "bad --ttl '401d'" },
        { "token v2 --ttl 9999999999 --secret-file $S", "bad --ttl" },
        { "token 'a b' --ttl 1h --secret-file $S", "bad subject 'a b'" },
        { "token v2 v3 --ttl 1h --secret-file $S", "one subject only" },
        { "token v2 --ttl 1h --secret-file $S --id gray:x", "bad --id 'gray:x'" },
        { "token v2 --ttl 1h --secret-file $S --bogus", "unknown option '--bogus'" },
        { "token v2 --ttl 1h --secret-file", "option --secret-file needs a value" },
        { "token v2 --ttl 1h --secret-file /nonexistent/s", "cannot read the secret file" },
        { "token v2 --ttl 1h --secret-file /tmp", "is a directory" },
        { "token v2 --ttl 1h --secret-file $SHORT", "must hold 16 to 1024 bytes" },
    }
    for _, c in ipairs(bad) do
        it("refuses " .. c[1], function()
            local short = dir .. "/short"
            local f = assert(io.open(short, "wb"))
            f:write("short\n")
            f:close()
            local out, code = admin((c[1]:gsub("%$SHORT", short):gsub("%$S", secret)))
            assert.equal(2, code, out)
            assert.truthy(out:find(c[2], 1, true), out)
        end)
    end

    it("warns when the secret file is readable by every user", function()
        harness.sh("chmod 644 " .. secret)
        local out, code = admin("token v2 --ttl 1h --secret-file " .. secret)
        harness.sh("chmod 600 " .. secret)
        assert.equal(0, code, out)
        assert.truthy(out:find("readable by every user", 1, true), out)
    end)
end)
