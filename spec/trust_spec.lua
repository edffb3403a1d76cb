-- Who can steer the decision (issue 12), through real nginx and memcached:
-- the tester override counts only for a resolved client address in
-- force_from or a token signed with secret_file; identities can come from
-- an nginx variable that authentication sets (var:); an identity name that
-- could read the router's own keys is refused at load.
--
-- Locations (the drop-in, configured by $gray_* variables, as users write it):
--   /lb/      force from "10.1.1.0/24" behind the trusted proxy 127.0.0.1
--   /tok/     force by tokens signed with the secret file only
--   /nofrom/  $gray_force alone: refused, everybody to stable
--   /auth/    uid=var:remote_user behind auth_basic
--   /signed/  uid=signed-cookie:uid, signed with the secret file
--   /grayid/  an identity named gray: refused
--   /badvar/  var: with a name that is no variable name: refused

local harness = require "helpers.harness"
local gray_ffi = require "gray.ffi"

local REPO = os.getenv("GRAY_REPO") or io.popen("pwd"):read("*l")

local SERVERS = [[
  server {
    listen 127.0.0.1:$PORT;
    uninitialized_variable_warn off;    # $gray_* set in some locations only
    set $gray_memcached 127.0.0.1:$MC;
    set $gray_trusted 127.0.0.1;
    set $gray_targets "v2=@server_v2";
    set $gray_cache_ttl 0;
    set $gray_ranges_key off;
    set $gray_percent_key off;
    set $gray_debug_header X-Gray-Debug;
    # who may steer, not time, is the subject (cache_ttl 0: each request
    # asks memcached): 2 s lookups, so that a loaded machine does not turn
    # one into a store-error
    set $gray_timeout 2000;

    location /lb/ {
        set $gray_force "header:X-Gray";
        set $gray_force_from "10.1.1.0/24";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /tok/ {
        set $gray_force "header:X-Gray";
        set $gray_secret_file $LOGDIR/gray.secret;
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /nofrom/ {
        set $gray_force "header:X-Gray";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /auth/ {
        auth_basic "testers";
        auth_basic_user_file $LOGDIR/htpasswd;
        set $gray_ids "uid=var:remote_user";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /noauth/ {
        set $gray_ids "uid=var:remote_user";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /signed/ {
        set $gray_ids "uid=signed-cookie:uid";
        set $gray_secret_file $LOGDIR/gray.secret;
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /grayid/ {
        set $gray_ids "gray=cookie:g";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location /badvar/ {
        set $gray_ids "uid=var:remote-user";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location @server      { return 200 "stable\n"; }
    location @server_test { return 200 "gray\n"; }
    location @server_v2   { return 200 "v2\n"; }
]] .. harness.EVAL_LOCATION .. [[
  }
]]

local SECRET = "0123456789abcdef0123456789abcdef"   -- 32 bytes

describe("who can steer the decision", function()
    after_each(harness.no_error_log)
    local mc, nginx, secret_path

    setup(function()
        mc = harness.memcached({ verbose = true })
        -- the files the locations read live in nginx's scratch directory:
        -- written before any request reads them
        nginx = harness.nginx({ servers = SERVERS, memcached_port = mc.port })
        secret_path = nginx.dir .. "/gray.secret"
        local f = assert(io.open(secret_path, "wb"))
        f:write(SECRET, "\n")       -- a trailing newline is not part of the key
        f:close()
        harness.sh("chmod 600 " .. harness.quote(secret_path))
        f = assert(io.open(nginx.dir .. "/htpasswd", "wb"))
        f:write("alice:{PLAIN}wonderland\n")
        f:close()
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
    end)

    -- status, body (without the newline), X-Gray-Debug
    local function request(path, headers, from)
        local res = nginx:get(path, { headers = headers, interface = from,
                                      response_headers = true })
        return res.status, (res.body:gsub("\n$", "")), res.headers["x-gray-debug"]
    end

    local function mint(args)
        local out, code = harness.sh(REPO .. "/build/gray-admin token " .. args
                                     .. " --secret-file " .. harness.quote(secret_path))
        assert.equal(0, code, out)
        assert.is_nil(out:find("warning", 1, true), out)
        return (out:gsub("%s+$", ""))
    end

    describe("the tester override from force_from addresses", function()
        -- { name, X-Real-IP (through the trusted 127.0.0.1), X-Gray, connect from,
        --   body, reason }
        local cases = {
            { "a user behind the trusted proxy is not forced", "203.0.113.5", "v2", nil,
              "stable", "default" },
            { "nor with always", "203.0.113.5", "always", nil, "stable", "default" },
            { "a tester in force_from is, to a target name", "10.1.1.7", "v2", nil,
              "v2", "force" },
            { "always, in any case", "10.1.1.7", "ALWAYS", nil, "gray", "force" },
            { "never, in any case", "10.1.1.8", "Never", nil, "stable", "force" },
            { "a value naming no target is no override", "10.1.1.7", "v9", nil,
              "stable", "default" },
            { "a target name is case-sensitive", "10.1.1.7", "V2", nil, "stable", "default" },
            { "the tester's address from an untrusted peer does not count", "10.1.1.7", "v2",
              "127.0.0.2", "stable", "default" },
            { "the trusted proxy's own address is not in force_from", nil, "v2", nil,
              "stable", "default" },
        }
        for _, c in ipairs(cases) do
            it(c[1], function()
                local status, body, debug = request("/lb/", { ["X-Real-IP"] = c[2],
                                                              ["X-Gray"] = c[3] }, c[4])
                assert.same({ 200, c[5], c[6] }, { status, body, debug:match("; (.*)") })
            end)
        end

        it("an entry still decides for the user who tried to force", function()
            mc:set("203.0.113.9", "1")
            local status, body, debug = request("/lb/", { ["X-Real-IP"] = "203.0.113.9",
                                                          ["X-Gray"] = "never" })
            assert.same({ 200, "gray", "@server_test; ip" }, { status, body, debug })
        end)
    end)

    describe("the tester override by signed token", function()
        local now = os.time()
        local function token(subject, expiry, secret, ctx)
            return assert(gray_ffi.token_make(ctx or "force", secret or SECRET, subject, expiry))
        end
        local valid                     -- minted by gray-admin token
        setup(function()
            valid = mint("v2 --ttl 1h")
        end)

        it("a token from gray-admin token routes to its target, from any client", function()
            local status, body, debug = request("/tok/", { ["X-Real-IP"] = "203.0.113.5",
                                                           ["X-Gray"] = valid })
            assert.same({ 200, "v2", "@server_v2; force" }, { status, body, debug })
            status, body, debug = request("/tok/", { ["X-Gray"] = valid }, "127.0.0.2")
            assert.same({ 200, "v2", "@server_v2; force" }, { status, body, debug })
        end)

        it("always and never tokens", function()
            local _, body, debug = request("/tok/", { ["X-Gray"] = mint("always --ttl 60") })
            assert.same({ "gray", "@server_test; force" }, { body, debug })
            mc:set("127.0.0.1", "1")
            _, body, debug = request("/tok/", { ["X-Gray"] = mint("never --ttl 60") })
            assert.same({ "stable", "@server; force" }, { body, debug })
            mc:cmd("delete 127.0.0.1\r\n")
        end)

        -- hostile values: none is an override (the client is not gray)
        local bad = {
            { "a plain target name", function() return "v2" end },
            { "a plain always", function() return "always" end },
            { "an expired token", function() return token("v2", now - 1) end },
            { "a token expiring now", function() return token("v2", now) end },
            { "another target with the MAC of the valid one", function()
                return "always" .. valid:match("%.%d+%.[%w_%-]+$")
            end },
            { "a later expiry with the MAC of the valid one", function()
                return "v2." .. (now + 86400 * 365) .. "." .. valid:sub(-43)
            end },
            { "a flipped MAC character", function()
                local c = valid:sub(-1) == "A" and "B" or "A"
                return valid:sub(1, -2) .. c
            end },
            { "a token under another secret", function()
                return token("v2", now + 3600, ("x"):rep(32))
            end },
            { "a signed-cookie token (another context)", function()
                return token("v2", now + 3600, nil, "id:uid")
            end },
            { "a token for a target that does not exist", function()
                return token("v9", now + 3600)
            end },
            { "a truncated token", function() return valid:sub(1, -2) end },
            { "a token with padding", function() return valid .. "=" end },
            { "a token with a space", function() return valid:gsub("^v2", "v 2") end },
        }
        for _, c in ipairs(bad) do
            it(c[1] .. " is no override", function()
                local status, body, debug = request("/tok/", { ["X-Real-IP"] = "203.0.113.5",
                                                               ["X-Gray"] = c[2]() })
                assert.same({ 200, "stable", "@server; default" }, { status, body, debug })
            end)
        end
    end)

    describe("$gray_force without force_from or a secret", function()
        it("is refused at load, naming the variable; nobody is forced", function()
            local status, body = request("/nofrom/", { ["X-Gray"] = "always" })
            assert.same({ 200, "stable" }, { status, body })
            local log = nginx:error_log()
            assert.truthy(log:find("$gray_force needs 'force_from'", 1, true), log:sub(-2000))
        end)
    end)

    describe("identities from var:", function()
        local AUTH = "Basic " .. "YWxpY2U6d29uZGVybGFuZA=="     -- alice:wonderland

        it("routes by $remote_user that auth_basic checked", function()
            mc:set("uid:alice", "v2")
            local status, body, debug = request("/auth/", { Authorization = AUTH })
            assert.same({ 200, "v2", "@server_v2; id:uid" }, { status, body, debug })
        end)

        it("a cookie or header naming the user is not the identity", function()
            local status = request("/auth/", { Cookie = "uid=alice", ["Remote-User"] = "alice" })
            assert.equal(401, status)
        end)

        it("without auth_basic, $remote_user is the client's choice (the README's warning)",
           function()
            local status, body, debug = request("/noauth/", {
                Authorization = "Basic " .. "YWxpY2U6YW55dGhpbmc=" })      -- alice:anything
            assert.same({ 200, "v2", "@server_v2; id:uid" }, { status, body, debug })
        end)

        it("a var: that is no variable name is refused at load, naming $gray_ids", function()
            local status, body = request("/badvar/", {})
            assert.same({ 200, "stable" }, { status, body })
            local log = nginx:error_log()
            assert.truthy(log:find("$gray_ids identity 'uid': var: takes an nginx variable name",
                                   1, true), log:sub(-2000))
        end)
    end)

    describe("identities from signed cookies", function()
        local now = os.time()
        local function token(subject, expiry, ctx, secret)
            return assert(gray_ffi.token_make(ctx or "id:uid", secret or SECRET, subject,
                                              expiry or now + 3600))
        end
        local valid

        setup(function()
            mc:set("uid:bob", "v2")
            valid = mint("bob --id uid --ttl 1h")
        end)

        it("routes by the id a valid cookie from gray-admin token --id carries", function()
            local status, body, debug = request("/signed/", { Cookie = "uid=" .. valid })
            assert.same({ 200, "v2", "@server_v2; id:uid" }, { status, body, debug })
            -- again: the same cookie (its check remembered) routes alike
            status, body, debug = request("/signed/", { Cookie = "uid=" .. valid })
            assert.same({ 200, "v2", "@server_v2; id:uid" }, { status, body, debug })
        end)

        it("a remembered cookie stops counting when it expires", function()
            local expiry = os.time() + 2
            local short = token("bob", expiry)
            local _, body, debug = request("/signed/", { Cookie = "uid=" .. short })
            assert.same({ "v2", "@server_v2; id:uid" }, { body, debug })
            repeat                      -- to the first second past the expiry
                harness.sleep(0.02)
            until os.time() >= expiry + 1
            _, body, debug = request("/signed/", { Cookie = "uid=" .. short })
            assert.same({ "stable", "@server; default" }, { body, debug })
        end)

        local bad = {
            { "the plain id", function() return "bob" end },
            { "an expired cookie", function() return token("bob", now - 1) end },
            { "another id with the valid MAC", function()
                return "alice" .. valid:match("%.%d+%.[%w_%-]+$")
            end },
            { "a flipped MAC character", function()
                return valid:sub(1, -2) .. (valid:sub(-1) == "A" and "B" or "A")
            end },
            { "an override token", function() return token("bob", nil, "force") end },
            { "another identity's token", function() return token("bob", nil, "id:dev") end },
            { "another secret's token", function()
                return token("bob", nil, nil, ("x"):rep(32))
            end },
        }
        for _, c in ipairs(bad) do
            it(c[1] .. " is no identity, and is never sent", function()
                local before = #mc:log()
                local status, body, debug = request("/signed/", { Cookie = "uid=" .. c[2]() })
                assert.same({ 200, "stable", "@server; default" }, { status, body, debug })
                assert.is_nil(mc:log():sub(before + 1):find("uid:", 1, true))
            end)
        end
    end)

    describe("identity names and the router's own keys", function()
        it("an identity named gray is refused at load, naming $gray_ids", function()
            mc:set("gray:percent", "1")
            local before = #mc:log()
            local status, body = request("/grayid/", { Cookie = "g=percent" })
            assert.same({ 200, "stable" }, { status, body })
            local log = nginx:error_log()
            assert.truthy(log:find("$gray_ids identity name 'gray' is reserved", 1, true),
                          log:sub(-2000))
            assert.is_nil(mc:log():sub(before + 1):find("get gray:percent", 1, true))
        end)

        -- gray.new in the worker: nil, err
        local function new_err(opts)
            return nginx:eval("local r, err = require('gray').new(" .. opts .. ")\n"
                              .. "return r and 'ok' or err")
        end

        local refused = {
            { "ids = 'gray=cookie:g'", "identity name 'gray' is reserved" },
            { "ids = 'gray=var:remote_user'", "identity name 'gray' is reserved" },
            { "ids = 'ranges=cookie:r', ranges_key = 'ranges'",
              "could be the router's own key 'ranges' (ranges_key)" },
            { "ids = 't=cookie:t', percent_key = 't:percent'",
              "could be the router's own key 't:percent' (percent_key)" },
            { "ids = 'uid=cookie:uid', key_prefix = 'uid:'",
              "could be address keys under key_prefix 'uid:'" },
            { "ids = 'uid=cookie:uid', key_prefix = 'u'",
              "could be address keys under key_prefix 'u'" },
            { "force = 'header:X-Gray'", "option 'force' needs 'force_from'" },
            { "force = 'header:X-Gray', force_from = ''", "option 'force' needs 'force_from'" },
            { "force = 'header:X-Gray', force_untrusted = true", "option 'force_untrusted' is gone" },
            { "force = 'header:X-Gray', force_from = '10.0.0.0/33'", "option 'force_from'" },
            { "force = 'header:X-Gray', secret_file = '/nonexistent/gray.secret'",
              "option 'secret_file' cannot be read" },
            { "secret_file = '/tmp'", "option 'secret_file' cannot be read" },
            { "secret_file = 42", "option 'secret_file' must be the path" },
            { "ids = 'uid=signed-cookie:uid'",
              "identity 'uid': signed-cookie: needs 'secret_file'" },
            { "ids = 'uid=signed:uid'", "unknown source 'signed'" },
        }
        for _, c in ipairs(refused) do
            it("refuses " .. c[1], function()
                local out = new_err("{ " .. c[1] .. " }")
                assert.truthy(out:find(c[2], 1, true), out)
            end)
        end

        it("refuses a secret file under 16 bytes", function()
            local path = nginx.dir .. "/short.secret"
            local f = assert(io.open(path, "wb"))
            f:write(("s"):rep(15), "\n\n")
            f:close()
            local out = new_err("{ secret_file = '" .. path .. "' }")
            assert.truthy(out:find("must hold 16 to 1024 bytes", 1, true), out)
        end)

        local accepted = {
            "ids = 'grayx=cookie:g'",
            "ids = 'ranges=cookie:r'",              -- gray:ranges is another key
            "ids = 'uid=cookie:uid', key_prefix = 'ip:'",
            "ids = 'uid=var:remote_user'",
            "force = 'cookie:gray', force_from = '10.0.0.0/8, ::1'",
        }
        for _, opts in ipairs(accepted) do
            it("accepts " .. opts, function()
                assert.equal("ok\n", new_err("{ " .. opts .. " }"))
            end)
        end

        it("accepts signed-cookie: with a secret_file", function()
            assert.equal("ok\n", new_err("{ ids = 'uid=signed-cookie:uid', secret_file = '"
                                          .. secret_path .. "' }"))
        end)
    end)

    describe("gray-admin and the router's own keys", function()
        -- { arguments, what it says }: exit 2, nothing written
        local refused = {
            { "add gray:percent 1", "the identity name 'gray' is reserved" },
            { "remove gray:ranges", "the identity name 'gray' is reserved" },
            { "add gray:list:dev 1", "the identity name 'gray' is reserved" },
            { "add t:percent 1 --percent-key t:percent", "is the router's own key" },
            { "add t:big:tag:1 1 --ranges-key t:big", "is the router's own key" },
            { "list gray add x", "bad list name 'gray'" },
            { "check 1.2.3.4 --id gray=percent", "bad --id 'gray=percent'" },
        }
        for _, c in ipairs(refused) do
            it("refuses " .. c[1], function()
                mc:set("gray:percent", "7")
                local out, code = harness.sh(REPO .. "/build/gray-admin --servers 127.0.0.1:"
                                             .. mc.port .. " " .. c[1])
                assert.equal(2, code, out)
                assert.truthy(out:find(c[2], 1, true), out)
                assert.equal("7", mc:get("gray:percent"))
            end)
        end

        it("still writes an identity whose name only starts with gray", function()
            local out, code = harness.sh(REPO .. "/build/gray-admin --servers 127.0.0.1:"
                                         .. mc.port .. " add grayish:percent v2")
            assert.equal(0, code, out)
            assert.equal("v2", mc:get("grayish:percent"))
        end)
    end)

    it("leaves error.log free of global-variable warnings, alerts and crits", function()
        assert.same({}, harness.bad_log_lines(nginx:error_log()))
    end)
end)
