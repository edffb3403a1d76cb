-- gray-admin (csrc/cli/) against real memcached, and what it writes read by
-- a real nginx running the drop-in: every command, bad arguments, the
-- router's formats (canonical address keys, split lists), check's answer
-- beside the router's own, key placement over two servers, and concurrent
-- list writers.

local harness = require "helpers.harness"
local gray_ffi = require "gray.ffi"

local sh, quote = harness.sh, harness.quote
local floor = math.floor
local REPO = os.getenv("GRAY_REPO") or (sh("pwd"):gsub("%s+$", ""))
local BIN = REPO .. "/build/gray-admin"

local SERVERS = [[
  server {
    listen 127.0.0.1:$PORT;
    uninitialized_variable_warn off;
    set $gray_memcached 127.0.0.1:$MC;
    # time is not the subject here: 2 s, not 50 ms, so that a loaded machine
    # does not turn a lookup into a store-error
    set $gray_timeout 2000;
    set $gray_trusted 127.0.0.1;
    set $gray_cache_ttl 0;
    set $gray_targets "v2=@server_v2";
    set $gray_debug_header "X-Gray-Debug";

    # address entries only: no lists
    location /dep/ {
        set $gray_ranges_key off;
        set $gray_percent_key off;
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    # every rule, for check beside the router
    location /rules/ {
        set $gray_ids "uid=cookie:uid, dev=header:X-Device-Id";
        set $gray_lists "dev";
        set $gray_ranges_key "a:rules:ranges";
        set $gray_percent_key "a:rules:percent";
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    # a ranges list split into parts
    location /split/ {
        set $gray_ranges_key "a:split";
        set $gray_percent_key off;
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location @server      { return 200 "stable\n"; }
    location @server_test { return 200 "gray\n"; }
    location @server_v2   { return 200 "v2\n"; }
  }
]]

-- router location -> check's target
local TARGET_OF = { ["@server"] = "stable", ["@server_test"] = "gray", ["@server_v2"] = "v2" }

local now = harness.now

local pick = harness.pick

describe("gray-admin", function()
    after_each(harness.no_error_log)
    local mc, mc2, nginx

    -- Runs gray-admin against mc (or opts.servers) with the argument text;
    -- returns its output (stdout and stderr) and exit code.
    local function admin(args, servers)
        return sh(BIN .. " --servers " .. quote(servers or "127.0.0.1:" .. mc.port) .. " "
                  .. args)
    end

    -- As admin, asserting exit 0; returns the output.
    local function ok(args, servers)
        local out, code = admin(args, servers)
        assert(code == 0, "gray-admin " .. args .. " exited " .. tostring(code) .. ": " .. out)
        return out
    end

    -- Runs gray-admin once per argument text (with servers[i] or mc), all
    -- in one shell; returns a list of { output, exit code }.
    local function admin_batch(list, servers)
        local script = {}
        for i, args in ipairs(list) do
            local srv = servers and servers[i] or "127.0.0.1:" .. mc.port
            script[#script + 1] = BIN .. " --servers " .. quote(srv) .. " " .. args
                                  .. " 2>&1; echo \"@@rc=$?@@\""
        end
        local out = sh(table.concat(script, "\n"))
        local res = {}
        for text, code in out:gmatch("(.-)@@rc=(%d+)@@\n?") do
            res[#res + 1] = { text, tonumber(code) }
        end
        assert.equal(#list, #res)
        return res
    end

    -- The values of keys in server, in one get: key -> value.
    local function get_many(server, keys)
        local reply = server:cmd("get " .. table.concat(keys, " ") .. "\r\n")
        local values, pos = {}, 1
        while true do
            local s, e, key, len = reply:find("^VALUE (%S+) %d+ (%d+)\r\n", pos)
            if not s then
                break
            end
            values[key] = reply:sub(e + 1, e + tonumber(len))
            pos = e + tonumber(len) + 3
        end
        assert(reply:find("^END", pos), "get: " .. reply:sub(pos, pos + 80))
        return values
    end

    -- lru_crawler metadump's reply, read up to its END line: the crawler
    -- takes the connection and a "quit" after it is not read, so
    -- Memcached:cmd would sit out its 5 s timeout
    local function metadump(server)
        local script = "exec 3<>/dev/tcp/127.0.0.1/" .. server.port
                       .. "; printf 'lru_crawler metadump all\\r\\n' >&3"
                       .. "; while IFS= read -r -t 5 line <&3; do printf '%s\\n' \"$line\""
                       .. "; case $line in END*|ERROR*|CLIENT_ERROR*|BUSY*) break;; esac; done"
        return (sh("bash -c " .. quote(script)))
    end

    local function write_file(path, text)
        local f = assert(io.open(path, "wb"))
        f:write(text)
        f:close()
    end

    local function lines_of(text)
        local t = {}
        for line in text:gmatch("[^\n]+") do
            t[#t + 1] = line
        end
        return t
    end

    setup(function()
        local out, code = sh("make -s -C " .. quote(REPO) .. " build/gray-admin build/gray-admin.1")
        assert(code == 0, "building gray-admin failed: " .. out)
        mc = harness.memcached()
        mc2 = harness.memcached()
        nginx = harness.nginx({ servers = SERVERS, memcached_port = mc.port })
    end)

    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
        if mc2 then mc2:destroy() end
    end)

    describe("entries", function()
        it("add, get and remove address entries under their canonical key", function()
            local cases = {
                { "::FFFF:1.2.3.4", "1.2.3.4" },
                { "1.2.3.5", "1.2.3.5" },
                { "2001:DB8:0:0:0:0:0:1", "2001:db8::1" },
                { "::ffff:0a00:0001", "10.0.0.1" },
            }
            for _, c in ipairs(cases) do
                ok("add " .. quote(c[1]))
                assert.equal("1", mc:get(c[2]), c[1])
                assert.equal("1\n", ok("get " .. quote(c[1])), c[1])
                -- the default target by its name: written as 1 (every
                -- router version reads that)
                ok("add " .. quote(c[1]) .. " gray")
                assert.equal("1", mc:get(c[2]), c[1])
                ok("add " .. quote(c[1]) .. " v2")
                assert.equal("v2", mc:get(c[2]), c[1])
                ok("remove " .. quote(c[1]))
                assert.is_false(mc:get(c[2]), c[1])
                local out, code = admin("get " .. quote(c[1]))
                assert.equal(1, code, out)
                assert.matches("no entry " .. c[2]:gsub("%p", "%%%0"), out)
            end
        end)

        it("identities and --ttl", function()
            ok("add uid:42 v2 --ttl 100")
            assert.equal("v2", mc:get("uid:42"))
            -- memcached's meta get tells the remaining lifetime
            local ttl = tonumber(mc:cmd("mg uid:42 t\r\n"):match("t(%-?%d+)"))
            assert(ttl and ttl > 90 and ttl <= 100, "ttl " .. tostring(ttl))
            ok("add dev:a-b_c.9")
            assert.equal("1", mc:get("dev:a-b_c.9"))
            assert.equal("v2\n", ok("get uid:42"))
            ok("remove uid:42")
            assert.is_false(mc:get("uid:42"))
            -- removing what is absent is not an error
            local out, code = admin("remove uid:42")
            assert.equal(0, code, out)
            assert.matches("nothing removed", out)
        end)

        it("--key-prefix goes before address keys only", function()
            ok("--key-prefix gray: add ::ffff:9.9.9.9")
            assert.equal("1", mc:get("gray:9.9.9.9"))
            assert.is_false(mc:get("9.9.9.9"))
            ok("--key-prefix gray: add uid:9")
            assert.equal("1", mc:get("uid:9"))
        end)

        it("percent", function()
            for _, p in ipairs({ "0", "0.25", "100.00", "12.5" }) do
                ok("percent " .. p)
                assert.equal(p, mc:get("gray:percent"))
            end
            assert.equal("12.5\n", ok("percent"))
        end)
    end)

    describe("lists", function()
        it("ranges add, remove and list: normal form, one line per range", function()
            local K = "--ranges-key a:r1 "
            ok(K .. "ranges add 10.1.2.3/16 v2")     -- host bits cleared
            ok(K .. "add 192.168.7.0/24")            -- add with a CIDR: the same list
            ok(K .. "ranges add ::ffff:172.16.0.1")  -- a bare address: IPv4 text
            ok(K .. "ranges add 2001:DB8::1/32 v2")
            ok(K .. "ranges add 10.1.0.0/16")        -- retarget: replaces the line
            assert.same({ "10.1.0.0/16", "192.168.7.0/24", "172.16.0.1", "2001:db8::/32 v2" },
                        lines_of(mc:get("a:r1")))
            assert.equal(mc:get("a:r1"), ok(K .. "ranges list"))
            assert.equal("10.1.0.0/16\n", ok(K .. "get 10.1.99.99/16"))
            ok(K .. "remove 192.168.7.5/24")
            ok(K .. "ranges remove 172.16.0.1/32")   -- the same range written otherwise
            assert.same({ "10.1.0.0/16", "2001:db8::/32 v2" }, lines_of(mc:get("a:r1")))
            local out, code = admin(K .. "get 192.168.7.0/24")
            assert.equal(1, code, out)
        end)

        it("keeps lines it did not write: comments, blank lines, others' lines", function()
            mc:set("a:r2", "# ours\n10.0.0.0/8 v2\n\nnot-an-address\n10.0.0.0/8\n")
            ok("--ranges-key a:r2 ranges add 11.0.0.0/8")
            assert.equal("# ours\n10.0.0.0/8 v2\n\nnot-an-address\n10.0.0.0/8\n11.0.0.0/8\n",
                         mc:get("a:r2"))
            -- a key written twice: every line of it goes
            ok("--ranges-key a:r2 ranges remove 10.0.0.0/8")
            assert.equal("# ours\n\nnot-an-address\n11.0.0.0/8\n", mc:get("a:r2"))
        end)

        it("list <name> add, remove and show", function()
            ok("list dev add d1")
            ok("list dev add d2 v2")
            ok("list dev add d3 1")
            ok("list dev add d1 v2")
            assert.equal("d1 v2\nd2 v2\nd3\n", mc:get("gray:list:dev"))
            assert.equal("d1 v2\nd2 v2\nd3\n", ok("list dev show"))
            ok("list dev remove d2")
            assert.equal("d1 v2\nd3\n", mc:get("gray:list:dev"))
            ok("list dev remove d1")
            ok("list dev remove d3")
            assert.equal("", mc:get("gray:list:dev"))
        end)

        -- parts of 4 KB here (the default, 900 KB, is used through nginx below)
        it("writes a list over one part in parts, and reads and edits it back", function()
            local B = "--ranges-key a:big --part-size 4096 "
            local path = harness.tmpdir() .. "/big.txt"
            local f = assert(io.open(path, "wb"))
            for i = 0, 2999 do
                f:write(("20.%d.%d.0/24%s\n"):format(floor(i / 256), i % 256,
                                                     i % 2 == 1 and " v2" or ""))
            end
            f:close()
            local out = ok(B .. "import " .. quote(path))
            assert.matches("3000 ranges lines", out)
            local header = mc:get("a:big")
            local n, tag = header:match("^#gray%-parts (%d+) (%S+)$")
            assert(n, "header: " .. header:sub(1, 80))
            n = tonumber(n)
            assert(n >= 2, header)
            local joined, keys = {}, {}
            for i = 1, n + 1 do
                keys[i] = "a:big:" .. tag .. ":" .. i
            end
            local parts = get_many(mc, keys)
            for i = 1, n do
                local part = parts[keys[i]]
                -- whole lines, each part at most the part size
                assert(part and #part <= 4096 and part:sub(-1) == "\n", "part " .. i)
                joined[i] = part
            end
            assert.is_nil(parts[keys[n + 1]])
            joined = table.concat(joined)
            assert.equal(3000, #lines_of(joined))
            assert.equal(joined, ok(B .. "ranges list"))
            -- an edit rewrites it under a new tag
            ok(B .. "ranges add 30.0.0.0/8")
            local n2, tag2 = mc:get("a:big"):match("^#gray%-parts (%d+) (%S+)$")
            assert.are_not.equal(tag, tag2)
            assert.equal(joined .. "30.0.0.0/8\n", ok(B .. "ranges list"))
            assert(tonumber(n2) >= 2)
            -- the old parts stay a minute for a router reading the old version
            local mg = {}
            for i = 1, n do
                mg[i] = "mg " .. keys[i] .. " t\r\n"
            end
            local ttls = 0
            for ttl in mc:cmd(table.concat(mg)):gmatch("HD t(%-?%d+)") do
                ttl = tonumber(ttl)
                assert(ttl > 0 and ttl <= 60, "an old part's ttl: " .. ttl)
                ttls = ttls + 1
            end
            assert.equal(n, ttls)
            -- a header whose parts are gone: an error, nothing written
            mc:set("a:broken", "#gray-parts 2 gone")
            for _, args in ipairs({ "ranges list", "ranges add 1.1.1.1", "check 1.1.1.1" }) do
                local out2, code = admin("--ranges-key a:broken " .. args)
                assert.equal(3, code, out2)
                assert.matches("part a:broken:gone:1 of 2 is missing", out2)
            end
            assert.equal("#gray-parts 2 gone", mc:get("a:broken"))
            sh("rm -rf " .. quote(path:match("^(.*)/")))
        end)
    end)

    describe("import", function()
        it("writes entries and ranges lines", function()
            local dir = harness.tmpdir()
            local path = dir .. "/in.txt"
            local f = assert(io.open(path, "wb"))
            f:write("# a comment\n\n::ffff:5.5.5.1\n5.5.5.2 v2 --ttl 300\nuid:500 v2\n",
                    "  5.5.0.0/16 v2  # trailing comment\n2001:db8:5::/48\n")
            f:close()
            local out = ok("--ranges-key a:imp import " .. quote(path))
            assert.matches("imported 3 entries and 2 ranges lines", out)
            assert.equal("1", mc:get("5.5.5.1"))
            assert.equal("v2", mc:get("5.5.5.2"))
            assert.equal("v2", mc:get("uid:500"))
            assert.equal("5.5.0.0/16 v2\n2001:db8:5::/48\n", mc:get("a:imp"))
            -- from stdin
            out = ok("--ranges-key a:imp import - < " .. quote(path))
            assert.matches("0 changed the list", out)
            sh("rm -rf " .. quote(dir))
        end)

        it("a file with a bad line writes nothing and names the line", function()
            local dir = harness.tmpdir()
            local path = dir .. "/bad.txt"
            local f = assert(io.open(path, "wb"))
            f:write("6.6.6.1\n6.6.6.300\n6.6.6.0/24 --ttl 5\n6.6.6.2 v2 extra\n6.6.6.3 --ttl x\n")
            f:close()
            local out, code = admin("--ranges-key a:bad import " .. quote(path))
            assert.equal(2, code, out)
            for _, line in ipairs({ 2, 3, 4, 5 }) do
                assert.matches("line " .. line .. ":", out)
            end
            assert.not_matches("line 1:", out)
            assert.matches("4 bad lines, nothing written", out)
            assert.is_false(mc:get("6.6.6.1"))
            assert.is_false(mc:get("a:bad"))
            sh("rm -rf " .. quote(dir))
        end)

        -- each file: a good line, then the bad one (line 2)
        local bad_lines = {
            { "7.7.7.1 --ttl", "--ttl without a number" },
            { "7.7.7.1 v2 --ttl", "--ttl without a number" },
            { "7.7.7.1 --ttl # a comment", "--ttl without a number" },
            { "7.7.7.1 --ttl --ttl 5", "bad %-%-ttl '%-%-ttl'" },
            { "7.7.7.1 --ttl 5 --ttl 6", "--ttl given twice" },
            { "7.7.7.1 --ttl -5", "bad %-%-ttl '%-5'" },
            { "7.7.7.1 --ttl 1e3", "bad %-%-ttl '1e3'" },
            { "7.7.7.1 -v2", "'%-v2' looks like an option" },
            { "7.7.7.1 --force", "'%-%-force' looks like an option" },
            { "7.7.7.1 - ", "'%-' looks like an option" },
            { "--ttl 5", "expected <ip|cidr|name:id>" },
            { "7.7.7.1 v2\0x", "a NUL byte" },
            { "7.7.7.1 v2 # " .. ("x"):rep(5000), "longer than 4096 bytes" },
        }
        it("refuses --ttl without a number and option-looking targets, naming the line",
           function()
            local dir = harness.tmpdir()
            local runs = {}
            for i, c in ipairs(bad_lines) do
                local path = dir .. "/" .. i .. ".txt"
                write_file(path, "7.7.7.9 v2\n" .. c[1] .. "\n")
                runs[i] = "--ranges-key a:ttl import " .. quote(path)
            end
            for i, res in ipairs(admin_batch(runs)) do
                local out, code = res[1], res[2]
                assert.equal(2, code, bad_lines[i][1] .. ": " .. out)
                assert(out:find("line 2: [^\n]*" .. bad_lines[i][2]),
                       bad_lines[i][1] .. ": " .. out)
                assert.matches("1 bad lines, nothing written", out)
            end
            assert.is_false(mc:get("7.7.7.9"))
            assert.is_false(mc:get("7.7.7.1"))
            sh("rm -rf " .. quote(dir))
        end)

        it("a directory, a missing or unreadable file: its reason, exit 2", function()
            local dir = harness.tmpdir()
            local secret = dir .. "/secret.txt"
            write_file(secret, "7.7.8.1\n")
            sh("chmod 000 " .. quote(secret))
            local runs = {
                { "import " .. quote(dir), "import: cannot read " .. dir .. ": Is a directory" },
                { "import " .. quote(dir .. "/none"),
                  "import: cannot open " .. dir .. "/none: No such file or directory" },
                -- opens, and the first read fails
                { "import /proc/self/mem",
                  "import: cannot read /proc/self/mem: Input/output error" },
                { "import - < " .. quote(dir), "import: cannot read stdin: Is a directory" },
            }
            local list = {}
            for i, r in ipairs(runs) do
                list[i] = r[1]
            end
            for i, res in ipairs(admin_batch(list)) do
                assert.equal(2, res[2], runs[i][1] .. ": " .. res[1])
                assert(res[1]:find(runs[i][2], 1, true), runs[i][1] .. ": " .. res[1])
            end
            -- root reads any file: drop to nobody for the permission check
            local prefix = sh("id -u"):match("^0%s") and "setpriv --reuid=nobody --regid=nogroup"
                                                         .. " --clear-groups " or ""
            local out, code = sh(prefix .. BIN .. " --servers 127.0.0.1:" .. mc.port
                                 .. " import " .. quote(secret) .. " 2>&1")
            assert.equal(2, code, out)
            assert.matches("import: cannot open " .. secret:gsub("%p", "%%%0") .. ": Permission denied",
                           out)
            assert.is_false(mc:get("7.7.8.1"))
            sh("rm -rf " .. quote(dir))
        end)

        it("a large import (200k lines) lands completely, also from a pipe", function()
            local dir = harness.tmpdir()
            local lines, want = {}, {}
            local targets = { "1", "v2", "v3" }
            for i = 0, 199999 do
                local key
                local k = i % 10
                if k < 6 then
                    key = ("12.%d.%d.%d"):format(floor(i / 65536), floor(i / 256) % 256, i % 256)
                elseif k < 8 then
                    key = ("2001:db8:12:%x::1:%x"):format(floor(i / 65536) + 1, i % 65536)
                else
                    key = "uid:big" .. i
                end
                local t = targets[i % 3 + 1]
                lines[#lines + 1] = key .. (i % 4 == 0 and "" or " " .. t)
                                    .. (i % 7 == 0 and " --ttl 3600" or "")
                want[key] = i % 4 == 0 and "1" or t
            end
            local path = dir .. "/big.txt"
            write_file(path, table.concat(lines, "\n") .. "\n")
            local t0 = now()
            local out = ok("import " .. quote(path))
            local took = now() - t0
            assert.matches("imported 200000 entries and 0 ranges lines", out)
            -- every key, in gets of 100 keys, over one connection
            local function check_all()
                local keys, cmd = {}, {}
                for key in pairs(want) do
                    keys[#keys + 1] = key
                    if #keys == 100 then
                        cmd[#cmd + 1] = "get " .. table.concat(keys, " ") .. "\r\n"
                        keys = {}
                    end
                end
                local reply = mc:cmd_file(table.concat(cmd), 60)   -- 200,000 values back
                local n, wrong = 0, {}
                for key, value in reply:gmatch("VALUE (%S+) %d+ %d+\r\n([^\r]*)\r\n") do
                    if want[key] ~= value and #wrong < 5 then  -- one assert: 200,000 cost 2 s
                        wrong[#wrong + 1] = key .. " = " .. value .. ", not " .. tostring(want[key])
                    end
                    n = n + 1
                end
                assert.same({}, wrong)
                assert.equal(200000, n)
            end
            check_all()
            -- again from stdin, a file, then a pipe (copied to a temporary file
            -- by the first pass): all read back again
            assert.matches("imported 200000 entries", ok("import - < " .. quote(path)))
            local code
            out, code = sh("cat " .. quote(path) .. " | " .. BIN .. " --servers 127.0.0.1:"
                           .. mc.port .. " import - 2>&1")
            assert.equal(0, code, out)
            assert.matches("imported 200000 entries", out)
            check_all()
            print(("\n  import: 200,000 lines in %.2f s"):format(took))
            sh("rm -rf " .. quote(dir))
        end)
    end)

    describe("bad arguments", function()
        local cases = {
            { "", "no command given" },
            { "frob", "unknown command 'frob'" },
            { "--frob add 1.2.3.4", "unknown option '%-%-frob'" },
            { "add", "add: expected" },
            { "add 1.2.3.4 v2 extra", "add: expected" },
            { "add 1.2.3.400", "neither an IP address, a CIDR nor name:id" },
            { "add 01.2.3.4", "neither an IP address" },
            { "add abc:1", "neither an IP address" },           -- 'abc' could be IPv6
            { "add 'uid:a b'", "without spaces" },
            { "add uid:" .. ("x"):rep(201), "1 to 200 bytes" },
            { "add 1.2.3.4 0", "bad target '0'" },
            { "add 1.2.3.4 'a#b'", "bad target" },
            { "add 10.0.0.0/33", "is not an address or CIDR" },
            { "add ::ffff:10.0.0.0/104", "covers no address the router matches" },
            { "add 10.0.0.0/8 --ttl 5", "a ranges line has no %-%-ttl" },
            { "add 1.2.3.4 --ttl -1", "bad %-%-ttl" },
            { "add 1.2.3.4 --ttl 2592001", "bad %-%-ttl" },
            { "get 1.2.3.4 --ttl 5", "%-%-ttl is for add" },
            { "get 1.2.3.4 --id uid=1", "%-%-id is for check" },
            { "ranges", "ranges: expected" },
            { "ranges add nope", "not an address or CIDR" },
            { "ranges remove 10.0.0.0/8 v2", "ranges: expected" },
            { "list dev", "list: expected" },
            { "list abc add x", "bad list name 'abc'" },
            { "list dev add '#x'", "bad id" },
            { "list dev frob x", "list: expected" },
            { "percent 101", "bad percentage '101'" },
            { "percent 1.234", "bad percentage" },
            { "percent -1", "unknown option" },
            { "percent 5%", "bad percentage" },
            { "check", "check: expected" },
            { "check nope", "not an IP address" },
            { "check 1.2.3.4 --id uid", "bad %-%-id 'uid'" },
            { "check 1.2.3.4 --id abc=1", "bad %-%-id" },
            { "import", "import: expected" },
            { "import /nonexistent/file", "cannot open" },
            { "--timeout 0 get 1.2.3.4", "bad %-%-timeout" },
            { "--part-size 1 get 1.2.3.4", "bad %-%-part%-size" },
            { "--distribution bogus get 1.2.3.4", "expected ketama, ketama%-weighted or modula" },
            { "--servers '127.0.0.1:11211/?3, 127.0.0.1:11212' get 1.2.3.4",
              "a weight needs %-%-distribution ketama%-weighted" },
            { "--servers '127.0.0.1:11211/?x' get 1.2.3.4", "bad weight" },
            { "get 1.2.3.4 --servers", "needs a value" },
        }
        local servers = {
            "1.2.3.4", "localhost:11211", "::1:11211", "[::1]:0", "127.0.0.1:65536",
            "[127.0.0.1]:11211", "127.0.0.1:11211,,nope", ",",
        }
        -- every run at once, in one shell
        local results
        setup(function()
            local list, srv = {}, {}
            for i, c in ipairs(cases) do
                list[i] = c[1]
            end
            for _, s in ipairs(servers) do
                list[#list + 1] = "get 1.2.3.4"
                srv[#list] = s
            end
            results = admin_batch(list, srv)
        end)

        for i, c in ipairs(cases) do
            it("'" .. c[1] .. "'", function()
                local out, code = results[i][1], results[i][2]
                assert.equal(2, code, out)
                assert.matches(c[2], out)
                assert.matches("^gray%-admin: ", out)
            end)
        end
        for i, s in ipairs(servers) do
            it("--servers '" .. s .. "'", function()
                local out, code = results[#cases + i][1], results[#cases + i][2]
                assert.equal(2, code, out)
                assert.matches("^gray%-admin: %-%-servers: ", out)
            end)
        end

        it("nothing was written by any of them", function()
            assert.is_false(mc:get("1.2.3.4"))
            assert.is_false(mc:get("10.0.0.0/8"))
        end)

        it("memcached down: exit 3 and why", function()
            local port = harness.free_port()
            for _, args in ipairs({ "get 1.2.3.4", "add 1.2.3.4", "ranges add 1.2.3.4",
                                    "check 1.2.3.4" }) do
                local out, code = admin(args, "127.0.0.1:" .. port)
                assert.equal(3, code, out)
                assert.matches("127%.0%.0%.1:" .. port, out)
            end
        end)

        it("--help documents every command and option", function()
            local out, code = sh(BIN .. " --help")
            assert.equal(0, code)
            for _, word in ipairs({ "add <ip|cidr|name:id>", "remove", "get", "ranges add",
                                    "ranges remove", "ranges list", "list <name> add",
                                    "list <name> remove", "list <name> show", "percent",
                                    "import <file>", "check <ip>", "--servers", "--ttl",
                                    "--id", "--key-prefix", "--ranges-key", "--percent-key",
                                    "--timeout", "--part-size", "--distribution",
                                    "Exit status" }) do
                assert(out:find(word, 1, true), "--help lacks " .. word)
            end
        end)
    end)

    -- { distribution, weights of the two servers, where a key should be }
    local placements = {
        { "modula", { 1, 1 } },
        { "ketama", { 1, 1 } },             -- the default, as the router's
        { "ketama-weighted", { 3, 1 } },
    }
    for _, pl in ipairs(placements) do
        local mode, w = pl[1], pl[2]
        it("places keys on two servers as the router does (" .. mode .. ")", function()
            mc:cmd("flush_all\r\n")
            mc2:cmd("flush_all\r\n")
            local function server(m, weight)
                return "127.0.0.1:" .. m.port .. (weight > 1 and "/?" .. weight or "")
            end
            local both = server(mc, w[1]) .. ", " .. server(mc2, w[2])
            local args = mode == "ketama" and "" or "--distribution " .. mode .. " "
            local continuum = assert(gray_ffi.new_continuum({
                { host = "127.0.0.1", port = mc.port, weight = w[1] },
                { host = "127.0.0.1", port = mc2.port, weight = w[2] },
            }, mode))
            local dir = harness.tmpdir()
            local keys = {}
            for i = 1, 40 do
                keys[i] = i % 2 == 0 and "172.30.0." .. i or "uid:p" .. i
            end
            local f = assert(io.open(dir .. "/keys.txt", "wb"))
            f:write(table.concat(keys, "\n"), "\n")
            f:close()
            ok(args .. "import " .. quote(dir .. "/keys.txt"), both)
            ok(args .. "add 172.30.1.1", both)
            keys[#keys + 1] = "172.30.1.1"
            -- what each server holds, in one get each
            local held = {}
            for n, srv in ipairs({ mc, mc2 }) do
                local reply = srv:cmd("get " .. table.concat(keys, " ") .. "\r\n")
                for key in reply:gmatch("VALUE (%S+)") do
                    assert.is_nil(held[key], key .. " on both servers")
                    held[key] = n
                end
            end
            local seen = { 0, 0 }
            for _, key in ipairs(keys) do
                local n = gray_ffi.server_for(continuum, key)
                assert.equal(n, held[key], key)
                seen[n] = seen[n] + 1
            end
            assert(seen[1] > 0 and seen[2] > 0, "all keys on one server")
            assert.equal("1\n", ok(args .. "get uid:p1", both))
            sh("rm -rf " .. quote(dir))
        end)
    end

    describe("through nginx", function()
        local function request(path, req)
            local headers = { ["X-Real-IP"] = req.ip, ["X-Device-Id"] = req.dev,
                              Cookie = req.uid and "uid=" .. req.uid or nil }
            local res = nginx:get(path, { headers = headers, response_headers = true })
            assert.equal(200, res.status, res.body)
            return res.body:gsub("\n$", ""), res.headers["x-gray-debug"] or ""
        end

        it("an address gray-admin writes is routed gray", function()
            assert.equal("stable", (request("/dep/", { ip = "10.20.30.40" })))
            ok("add ::FFFF:10.20.30.40")
            assert.equal("gray", (request("/dep/", { ip = "10.20.30.40" })))
            ok("add 10.20.30.40 v2")
            assert.equal("v2", (request("/dep/", { ip = "10.20.30.40" })))
            ok("add 2001:DB8:0::7")
            assert.equal("gray", (request("/dep/", { ip = "2001:db8::7" })))
            ok("remove ::ffff:10.20.30.40")
            assert.equal("stable", (request("/dep/", { ip = "10.20.30.40" })))
        end)

        it("check says what the router decides, and why", function()
            local P = 30        -- percent
            local function is_in(key)
                return gray_ffi.bucket(key) < P * 100
            end
            -- addresses outside the percentage unless a case wants one in
            local function ip_out(fmt)
                return pick(fmt, function(v) return not is_in(v) end)
            end
            local uid_out = pick("uo%d", function(v) return not is_in("uid:" .. v) end)
            local cases = {
                { "id:uid", ip = ip_out("10.9.1.%d"), uid = "u1", want = "gray" },
                { "id:dev after uid", ip = ip_out("10.9.2.%d"), uid = uid_out, dev = "d2",
                  want = "v2" },
                { "ip", ip = "10.9.3.3", want = "v2" },
                { "ip over a range", ip = "10.1.3.3", uid = uid_out, want = "gray" },
                { "list:dev", ip = ip_out("10.9.4.%d"), dev = "dl", want = "v2" },
                { "range, the most specific", ip = ip_out("10.1.2.%d"), want = "gray" },
                { "range, the enclosing", ip = ip_out("10.1.9.%d"), want = "v2" },
                { "range, IPv6", ip = "2001:db8:1::5", want = "v2" },
                { "percent by uid", ip = ip_out("10.9.5.%d"),
                  uid = pick("ui%d", function(v) return is_in("uid:" .. v) end), want = "gray" },
                { "percent by the address", ip = pick("10.9.6.%d", is_in), want = "gray" },
                { "default", ip = ip_out("10.9.7.%d"), uid = uid_out, want = "stable" },
            }
            ok("add uid:u1")
            ok("add dev:d2 v2")
            ok("add 10.9.3.3 v2")
            ok("add 10.1.3.3")
            ok("list dev add dl v2")
            local R = "--ranges-key a:rules:ranges "
            ok(R .. "ranges add 10.1.0.0/16 v2")
            ok(R .. "ranges add 10.1.2.0/24")
            ok(R .. "add 2001:db8:1::/48 v2")
            ok("--percent-key a:rules:percent percent " .. P)

            -- the router's lists come with its first refresh (started by
            -- the first request): wait for it
            local t0 = now()
            while select(2, request("/rules/", { ip = cases[6].ip })) ~= "@server_test; range" do
                assert(now() - t0 < 5, "the router never read the lists")
                harness.sleep(0.1)
            end
            for _, c in ipairs(cases) do
                local args = { "--ranges-key a:rules:ranges --percent-key a:rules:percent",
                               "--targets v2=@server_v2 --lists dev", "check", c.ip }
                if c.uid then args[#args + 1] = "--id uid=" .. c.uid end
                if c.dev then args[#args + 1] = "--id dev=" .. c.dev end
                local out = ok(table.concat(args, " "))
                local target, reason = out:match("\ndecision: (%S+) %(reason (%S+)%)")
                local _, debug = request("/rules/", c)
                local loc, rreason = debug:match("^(%S+); (%S+)$")
                assert.equal(c[1]:match("^([%w:]+)"), reason, c[1] .. ": " .. out)
                assert.equal(rreason, reason, c[1] .. ": router " .. debug .. "\n" .. out)
                assert.equal(TARGET_OF[loc], target, c[1] .. ": router " .. debug)
                assert.equal(c.want, target, c[1])
                -- the bucket of the identity key: the first --id, else the address
                local pkey = c.uid and "uid:" .. c.uid or c.dev and "dev:" .. c.dev or c.ip
                local bucket = tonumber(out:match("\nbucket: +" .. pkey:gsub("%p", "%%%0")
                                                  .. " %-> (%d+)"))
                assert.equal(gray_ffi.bucket(pkey), bucket, c[1] .. ": " .. out)
            end
        end)

        it("a split ranges list is picked up by the router", function()
            local dir = harness.tmpdir()
            local path = dir .. "/split.txt"
            local f = assert(io.open(path, "wb"))
            for i = 0, 69999 do
                f:write(("%d.%d.%d.0/24 v2\n"):format(40 + floor(i / 65536), floor(i / 256) % 256,
                                                      i % 256))
            end
            f:write("50.0.0.0/8\n")
            f:close()
            ok("--ranges-key a:split import " .. quote(path))
            -- over 1 MB: in parts of the default size
            local n, tag = mc:get("a:split"):match("^#gray%-parts (%d+) (%S+)$")
            assert(tonumber(n) >= 2, mc:get("a:split"))
            local part = mc:get("a:split:" .. tag .. ":1")
            assert(#part > 800000 and #part <= 921600, #part)
            local t0 = now()
            while (request("/split/", { ip = "41.4.4.4" })) ~= "v2" do
                assert(now() - t0 < 8, "the router never read the split list")
                harness.sleep(0.1)
            end
            assert.equal("v2", (request("/split/", { ip = "40.0.0.1" })))
            assert.equal("gray", (request("/split/", { ip = "50.1.2.3" })))
            assert.equal("stable", (request("/split/", { ip = "60.1.2.3" })))
            sh("rm -rf " .. quote(dir))
        end)
    end)

    -- the server list: --servers, else MEMCACHED_SERVERS (libmemcached's
    -- convention), else 127.0.0.1:11211, said with -v; an invalid
    -- MEMCACHED_SERVERS is refused, never skipped
    describe("MEMCACHED_SERVERS", function()
        -- gray-admin with MEMCACHED_SERVERS set to env (nil: unset) and no
        -- --servers unless args has one; returns output and exit code
        local function with_env(env, args)
            local prefix = env and "MEMCACHED_SERVERS=" .. quote(env) or "env -u MEMCACHED_SERVERS"
            return sh(prefix .. " " .. BIN .. " " .. args)
        end

        it("is honoured without --servers", function()
            mc2:cmd("delete uid:env1\r\n")
            local out, code = with_env("127.0.0.1:" .. mc2.port, "-v add uid:env1 v2")
            assert.equal(0, code, out)
            assert.equal("v2", mc2:get("uid:env1"))
            assert.is_false(mc:get("uid:env1"))
            assert.matches("servers 127%.0%.0%.1:" .. mc2.port .. " %(MEMCACHED_SERVERS%)", out)
            out, code = with_env("  127.0.0.1:" .. mc2.port .. " ,", "get uid:env1")
            assert.equal(0, code, out)
            assert.equal("v2\n", out)
        end)

        it("--servers wins over it, even over an invalid one", function()
            mc:cmd("delete uid:env2\r\n")
            mc2:cmd("delete uid:env2\r\n")
            for _, env in ipairs({ "127.0.0.1:" .. mc2.port, "localhost:11211" }) do
                local out, code = with_env(env, "--servers 127.0.0.1:" .. mc.port
                                                .. " -v add uid:env2")
                assert.equal(0, code, out)
                assert.matches("%(%-%-servers%)", out)
            end
            assert.equal("1", mc:get("uid:env2"))
            assert.is_false(mc2:get("uid:env2"))
        end)

        -- each would have sent gray-admin to 127.0.0.1:11211 without a word
        for _, env in ipairs({ "", " ", "localhost:11211", "memcached.internal:11211",
                               "127.0.0.1", "::1:11211", "127.0.0.1:0", "127.000.000.001:11211",
                               "127.0.0.1:11211,,bogus", "127.0.0.1:11211/?0" }) do
            it(("set but invalid (%q): exit 2, naming it"):format(env), function()
                local out, code = with_env(env, "get 1.2.3.4")
                assert.equal(2, code, out)
                assert.matches("^gray%-admin: MEMCACHED_SERVERS: ", out)
            end)
        end

        it("neither given: 127.0.0.1:11211, which -v and --help say", function()
            local out = with_env(nil, "-v --timeout 200 get 1.2.3.4")
            assert.matches("gray%-admin: servers 127%.0%.0%.1:11211 %(default%)", out)
            local help = with_env(nil, "--help")
            assert.truthy(help:find("MEMCACHED_SERVERS", 1, true), help)
            assert.truthy(help:find("127.0.0.1:11211", 1, true), help)
        end)
    end)

    describe("--version and the man page", function()
        local MAN = REPO .. "/build/gray-admin.1"    -- from csrc/cli/gray-admin.1.in and --man

        it("--version prints gray-admin and the library's version, and exits 0", function()
            for _, args in ipairs({ "--version", "--servers nope --version get" }) do
                local out, code = sh("env -u MEMCACHED_SERVERS " .. BIN .. " " .. args)
                assert.equal(0, code, out)
                assert.equal("gray-admin " .. gray_ffi.VERSION .. "\n", out)
            end
            -- the one version: libgray.so's (GRAY_VERSION), which gray.ffi and gray.lua say
            local lua_version = harness.read_file(REPO .. "/lua/gray.lua"):match('_VERSION = "([^"]+)"')
            assert.equal(gray_ffi.VERSION, lua_version)
        end)

        -- the page as man shows it, warnings (on stderr) included
        local function rendered()
            return sh("MANWIDTH=80 MAN_KEEP_FORMATTING= man --warnings -l " .. quote(MAN)
                      .. " 2>&1 | col -b")
        end

        it("build/gray-admin.1 renders with man -l, without a warning", function()
            assert.truthy(harness.read_file(MAN), "no " .. MAN)
            local out, code = rendered()
            assert.equal(0, code, out)
            assert.truthy(out:find("^GRAY%-ADMIN%(1%)"), out:sub(1, 200))
            for _, section in ipairs({ "NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS",
                                       "ENVIRONMENT", "EXIT STATUS", "EXAMPLES", "SEE ALSO" }) do
                assert.truthy(out:find("\n" .. section .. "\n", 1, true), "no " .. section)
            end
            assert.is_nil(out:find("warning", 1, true), out)
            assert.truthy(out:find("gray-admin " .. gray_ffi.VERSION, 1, true),
                          "the footer does not say " .. gray_ffi.VERSION)
        end)

        it("documents every command and option of --help, and token and check's router options",
           function()
            local page = rendered()
            local help = sh(BIN .. " --help")
            local words = { "token", "--targets", "--lists", "--secret-file", "--version",
                            "MEMCACHED_SERVERS" }
            for opt in help:gmatch("\n  (%-%-?[%w-]+)") do
                words[#words + 1] = opt
            end
            for cmd in help:gmatch("\n  (%l+) ") do
                words[#words + 1] = cmd
            end
            assert.is_true(#words > 20, help)
            for _, w in ipairs(words) do
                assert.truthy(page:find(w, 1, true), "the man page lacks " .. w)
            end
        end)

        it("make install puts it in $(PREFIX)/share/man/man1", function()
            local dir = harness.tmpdir()
            local out, code = sh("make -s -C " .. quote(REPO) .. " install DESTDIR="
                                 .. quote(dir) .. " PREFIX=/usr/local")
            assert.equal(0, code, out)
            local installed = harness.read_file(dir .. "/usr/local/share/man/man1/gray-admin.1")
            assert.truthy(installed, "not installed")
            assert.equal(harness.read_file(MAN), installed)
            sh("rm -rf " .. quote(dir))
        end)
    end)

    -- A cluster named with long-form IPv6: gray-admin must hash the names as
    -- the router does (as written), or most keys land where the router never
    -- looks (199 of 600 found before).
    it("600 keys gray-admin writes to [0:0:0:0:0:0:0:1] servers are all found by the router",
       function()
        local v6 = {}
        for i = 1, 3 do
            v6[i] = harness.memcached({ host = "::1" })
        end
        local list = {}
        for i, m in ipairs(v6) do
            list[i] = "[0:0:0:0:0:0:0:1]:" .. m.port
        end
        local servers = table.concat(list, ", ")
        local conf = ([[
  server {
    listen 127.0.0.1:$PORT;
    set $gray_memcached "SERVERS";
    set $gray_timeout 2000;            # placement, not time, is the subject
    set $gray_trusted 127.0.0.1;
    set $gray_cache_ttl 0;
    set $gray_ranges_key off;
    set $gray_percent_key off;
    location / { content_by_lua_file $REPO/lua/gray/dep.lua; }
    location @server      { return 200 "stable"; }
    location @server_test { return 200 "gray"; }
  }
]]):gsub("SERVERS", servers)
        local ngx6 = harness.nginx({ servers = conf })
        local dir = harness.tmpdir()
        local reqs, lines = {}, {}
        for i = 1, 600 do
            local ip = ("10.66.%d.%d"):format(floor(i / 256), i % 256)
            lines[i] = ip
            reqs[i] = { "/", headers = { ["X-Real-IP"] = ip } }
        end
        local f = assert(io.open(dir .. "/v6.txt", "wb"))
        f:write(table.concat(lines, "\n"), "\n")
        f:close()
        local ok_, err = pcall(function()
            ok("import " .. quote(dir .. "/v6.txt"), servers)
            -- each key on one server, every server with some
            local total = 0
            for _, m in ipairs(v6) do
                local n = 0
                for _ in pairs(get_many(m, lines)) do
                    n = n + 1
                end
                assert(n > 0, "no key on [::1]:" .. m.port)
                total = total + n
            end
            assert.equal(600, total)
            local found = 0
            for _, r in ipairs(ngx6:sequence(reqs)) do
                assert.equal(200, r.status)
                if r.body == "gray" then
                    found = found + 1
                end
            end
            print(("\n  [0:0:0:0:0:0:0:1] cluster of 3: the router found %d of 600 keys"
                   .. " gray-admin wrote"):format(found))
            assert.equal(600, found)
            assert.same({}, harness.bad_log_lines(ngx6:error_log()))
        end)
        ngx6:stop()
        for _, m in ipairs(v6) do
            m:destroy()
        end
        sh("rm -rf " .. quote(dir))
        assert(ok_, err)
    end)

    it("import: entries memcached refused (full, no eviction) fail it, named, exit 3",
       function()
        local full = harness.memcached({ memory_mb = 2, no_evict = true })
        finally(function() full:destroy() end)
        local dir = harness.tmpdir()
        local lines = {}
        for i = 1, 100000 do
            lines[i] = "uid:full" .. i .. " v2"
        end
        write_file(dir .. "/full.txt", table.concat(lines, "\n") .. "\n")
        local out, code = admin("import " .. quote(dir .. "/full.txt"), "127.0.0.1:" .. full.port)
        assert.equal(3, code, out)
        assert.matches("uid:full%d+ is not in memcached after its set", out)
        assert.matches("%d+ not at all", out)
        local done = tonumber(out:match("stopped after (%d+) of 100000 entries"))
        assert(done and done < 100000, out)
        assert.not_matches("imported", out)
        sh("rm -rf " .. quote(dir))
    end)

    it("an edit waits for an import's lock, and a dead import's lock expires", function()
        -- as an import killed while holding it leaves it (15 s there, 2 s here)
        -- (timed from before the set: memcached counts a TTL in its own
        -- whole seconds, so a stall between the set and the timing would
        -- shorten the wait seen)
        local t0 = now()
        mc:set("a:stale:lock", "import-pid-1-on-gone-since-0", 2)
        local out = ok("--ranges-key a:stale ranges add 15.0.0.0/8")
        local took = now() - t0
        assert.matches("a:stale: waiting for import%-pid%-1%-on%-gone%-since%-0 %(a:stale:lock%)",
                       out)
        assert(took > 0.5 and took < 10, "waited " .. took .. " s")
        assert.equal("15.0.0.0/8\n", mc:get("a:stale"))
        -- an import takes it when it is free, and lets it go
        local dir = harness.tmpdir()
        write_file(dir .. "/r.txt", "15.1.0.0/16 v2\n")
        ok("--ranges-key a:stale import " .. quote(dir .. "/r.txt"))
        assert.equal("15.0.0.0/8\n15.1.0.0/16 v2\n", mc:get("a:stale"))
        assert.is_false(mc:get("a:stale:lock"))
        sh("rm -rf " .. quote(dir))
    end)

    it("a 300k-range import lands while 2 editors keep editing the list, losing no line",
       function()
        -- every edit writes a new version of the ~6 MB list, and the old one
        -- lives 60 s for the routers reading it: more than memcached's
        -- default 64 MB holds
        local big = harness.memcached({ memory_mb = 1024 })
        local srv = "127.0.0.1:" .. big.port
        local dir = harness.tmpdir()
        -- the same 300,000 ranges, then all retargeted (onto the big list)
        for _, target in ipairs({ "v2", "v3" }) do
            local lines = {}
            for i = 0, 299999 do
                lines[i + 1] = ("13.%d.%d.%d/30 %s"):format(floor(i / 16384),
                                                          floor(i / 64) % 256, (i % 64) * 4,
                                                          target)
            end
            write_file(dir .. "/" .. target .. ".txt", table.concat(lines, "\n") .. "\n")
        end
        ok("--ranges-key a:busy ranges add 14.0.0.0/24", srv)
        -- 2 editors, each adding its next address until told to stop; okN
        -- lists what landed
        local script = {}
        for w = 1, 2 do
            local addr = ("174.%d.$((i / 256)).$((i %% 256))"):format(w)
            script[#script + 1] = ("( i=0; while [ ! -e %s/stop ]; do i=$((i+1)); if %s"
                                   .. " --servers 127.0.0.1:%d --ranges-key a:busy ranges add"
                                   .. " %s/32 >>%s/e%d.log 2>&1; then echo %s >>%s/ok%d; else"
                                   .. " echo $i >>%s/fail; fi; done; touch %s/done%d )"
                                   .. " >/dev/null 2>&1 &")
                                  :format(dir, BIN, big.port, addr, dir, w, addr, dir, w, dir,
                                          dir, w)
        end
        script[#script + 1] = "true"
        sh(table.concat(script, "\n"))
        local function edits(w)
            return #lines_of(harness.read_file(dir .. "/ok" .. w) or "")
        end
        finally(function()
            sh("touch " .. quote(dir .. "/stop"))
            local t0 = now()
            while not (harness.read_file(dir .. "/done1") and harness.read_file(dir .. "/done2"))
                  and now() - t0 < 90 do
                harness.sleep(0.1)
            end
            sh("rm -rf " .. quote(dir))
            big:destroy()
        end)
        local report = {}
        for _, target in ipairs({ "v2", "v3" }) do
            -- both editing before the import starts
            local t0 = now()
            local start1, start2 = edits(1), edits(2)
            while edits(1) < start1 + 3 or edits(2) < start2 + 3 do
                assert(now() - t0 < 60 and not harness.read_file(dir .. "/fail"),
                       "the editors are not editing: "
                       .. (harness.read_file(dir .. "/e1.log") or ""):sub(-400) .. "\n"
                       .. (harness.read_file(dir .. "/e2.log") or ""):sub(-400) .. "\nfailed: "
                       .. tostring(harness.read_file(dir .. "/fail")))
                harness.sleep(0.05)
            end
            local before = edits(1) + edits(2)
            t0 = now()
            local out, code = admin("--ranges-key a:busy import "
                                    .. quote(dir .. "/" .. target .. ".txt"), srv)
            local took = now() - t0
            assert.equal(0, code, out)
            assert.matches("imported 0 entries and 300000 ranges lines %(300000 changed", out)
            assert(took < 60, "the import took " .. took .. " s")
            report[#report + 1] = ("%s: %.1f s, %d edits landed meanwhile"):format(
                target, took, edits(1) + edits(2) - before)
        end
        -- and they go on editing after it
        local after = edits(1) + edits(2)
        local t0 = now()
        while edits(1) + edits(2) < after + 4 do
            assert(now() - t0 < 60, "the editors stopped after the import")
            harness.sleep(0.05)
        end
        sh("touch " .. quote(dir .. "/stop"))
        t0 = now()
        while not (harness.read_file(dir .. "/done1") and harness.read_file(dir .. "/done2")) do
            assert(now() - t0 < 90, "the editors did not stop")
            harness.sleep(0.1)
        end
        assert.is_nil(harness.read_file(dir .. "/fail"))
        local set, n = {}, 0
        for l in ok("--ranges-key a:busy ranges list", srv):gmatch("[^\n]+") do
            set[l] = true
            n = n + 1
        end
        local wrote = edits(1) + edits(2)
        assert.equal(300000 + 1 + wrote, n)
        for w = 1, 2 do
            for a in harness.read_file(dir .. "/ok" .. w):gmatch("[^\n]+") do
                assert(set[a], "lost the editor's line " .. a)
            end
        end
        assert(set["14.0.0.0/24"] and set["13.0.0.0/30 v3"] and set["13.18.79.124/30 v3"])
        assert.is_false(big:get("a:busy:lock"))
        local waited = 0
        for w = 1, 2 do
            for _ in (harness.read_file(dir .. "/e" .. w .. ".log") or ""):gmatch("waiting for")
            do
                waited = waited + 1
            end
        end
        print(("\n  imports of 300,000 ranges lines beside 2 editors: %s; %d edits in all,"
               .. " %d waited for the import's lock"):format(table.concat(report, "; "),
                                                           wrote, waited))
    end)

    it("concurrent writers never lose a line", function()
        -- 4 shells, each running gray-admin 50 times, all at once; two of
        -- them split the list in parts of 1 KB, so versions in parts and
        -- whole ones race too
        local dir = harness.tmpdir()
        local script = {}
        for w = 1, 4 do
            script[#script + 1] = ("( for i in $(seq 1 50); do %s --servers 127.0.0.1:%d -v %s"
                                   .. " --ranges-key a:conc ranges add 172.%d.$i.0/24"
                                   .. " >>%s/w%d.log 2>&1 || echo FAIL >>%s/fail; done ) &")
                                  :format(BIN, mc.port, w <= 2 and "--part-size 1024" or "",
                                          w, dir, w, dir)
        end
        script[#script + 1] = "wait"
        local t0 = now()
        sh(table.concat(script, "\n"))
        local took = now() - t0
        assert.is_nil(harness.read_file(dir .. "/fail"))
        local lines = lines_of(ok("--ranges-key a:conc ranges list"))
        local set = {}
        for _, l in ipairs(lines) do
            set[l] = true
        end
        assert.equal(200, #lines)
        for w = 1, 4 do
            for i = 1, 50 do
                assert(set[("172.%d.%d.0/24"):format(w, i)], "lost 172." .. w .. "." .. i)
            end
        end
        -- no part is left for good: those of the current version, and old
        -- ones expiring within a minute (a race's losers deleted theirs)
        local tag = (mc:get("a:conc") or ""):match("^#gray%-parts %d+ (%S+)")
        local dump = metadump(mc)
        assert(dump:find("\nEND\r?\n$") or dump:find("^END\r?\n$"), "metadump: " .. dump:sub(-200))
        local parts, kept = 0, 0
        for key, exp in dump:gmatch("key=a%%3Aconc%%3A(%S+) exp=(%-?%d+)") do
            parts = parts + 1
            if exp == "-1" then
                assert.equal(tag, key:match("^(%w+)%%3A%d+$"), "a part kept for good: " .. key)
                kept = kept + 1
            end
        end
        assert(tag == nil or kept >= 1, "the current parts are missing")
        local retried = 0
        for w = 1, 4 do
            for _ in (harness.read_file(dir .. "/w" .. w .. ".log") or ""):gmatch("after %d+ tries")
            do
                retried = retried + 1
            end
        end
        print(("\n  concurrent writers: 200 edits in %.1f s, %d written after a conflict,"
               .. " %d parts in memcached (%d current)"):format(took, retried, parts, kept))
        sh("rm -rf " .. quote(dir))
    end)
end)
