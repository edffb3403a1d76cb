-- gray.client, the per-request client key, inside a real nginx worker. Its
-- hot path (header_key, peer_key, headers read only when needed) must pick
-- exactly what gray.ffi.client_ip (the whole choice in one C call, proven
-- against nginx's realip by realip_spec) picks, for every header mix.

local harness = require "helpers.harness"

describe("gray.client", function()
    after_each(harness.no_error_log)
    local nginx

    setup(function()
        nginx = harness.nginx({ servers = [[
          server {
            listen 127.0.0.1:$PORT;
        ]] .. harness.EVAL_LOCATION .. [[
          }
        ]] })
    end)

    teardown(function()
        if nginx then nginx:stop() end
    end)

    local function eval(code)
        return (nginx:eval(code):gsub("\n$", ""))
    end

    -- Runs `cases` generated header sets (seeded) through client:key() and
    -- client_ip() in the worker; returns "<agreed> <total>" and the first
    -- disagreements.
    local COMPARE = [[
        local gray_ffi = require "gray.ffi"
        local client = require "gray.client"
        local trusted, headers, cases, seed = %q, %q, %d, %d
        local picker = assert(client.new({ trusted = trusted, client_headers = headers }))
        local set = picker.trusted
        local use = {}
        for h in headers:gmatch("[^,%%s]+") do use[h:lower()] = true end

        local ELEMENTS = {
            "203.0.113.7", "198.51.100.1", "127.0.0.1", "127.0.0.2", "10.1.2.3", "::1",
            "2001:db8::7", "2001:DB8:0:0:0:0:0:7", "[2001:db8::7]:443", "[2001:db8::7]",
            "203.0.113.7:8080", "203.0.113.7:0", "::ffff:203.0.113.9", "unknown", "",
            "127.0.0.001", "255.255.255.255", "1.2.3", "\t198.51.100.1", "a b",
            "0.0.0.0", "::", "fe80::1%%eth0", "1.2.3.4.5", "[::ffff:127.0.0.1]:80",
        }
        local SEPS = { ",", ", ", " ", " , ", ",,", "" }
        math.randomseed(seed)
        local function header()
            local r = math.random(10)
            if r == 1 then return nil end
            local n = math.random(r <= 6 and 1 or 4)
            local parts = {}
            for i = 1, n do
                parts[#parts + 1] = ELEMENTS[math.random(#ELEMENTS)]
                if i < n then parts[#parts + 1] = SEPS[math.random(#SEPS)] end
            end
            return table.concat(parts)
        end

        -- a cache of canonical addresses, as the router keeps: texts found
        -- there skip their parse, and must not change the answer
        local cache = require("resty.lrucache").new(100)
        for _, e in ipairs(ELEMENTS) do
            local key = gray_ffi.canonical_ip(e)
            if key then cache:set(key, "@x", math.random(2) == 1 and 10 or -1) end
        end
        local peer = ngx.var.remote_addr
        local agreed, bad = 0, {}
        for i = 1, cases do
            local real_ip, xff = header(), header()
            ngx.req.set_header("X-Real-IP", real_ip)
            ngx.req.set_header("X-Forwarded-For", xff)
            local got = picker:key(i %% 2 == 0 and cache or nil)
            local want = gray_ffi.client_ip(set, peer, use["x-real-ip"] and real_ip or nil,
                                            use["x-forwarded-for"] and xff or nil)
            if got == want then
                agreed = agreed + 1
            elseif #bad < 5 then
                bad[#bad + 1] = string.format("X-Real-IP %%q X-Forwarded-For %%q: %%s, want %%s",
                                              tostring(real_ip), tostring(xff), tostring(got),
                                              tostring(want))
            end
        end
        return agreed .. " " .. cases .. "\n" .. table.concat(bad, "\n")
    ]]

    -- { trusted set, client_headers }
    local configs = {
        { "127.0.0.0/8, ::1", "X-Real-IP, X-Forwarded-For" },
        { "127.0.0.0/8, 10.0.0.0/8, 198.51.100.0/24", "X-Real-IP, X-Forwarded-For" },
        { "127.0.0.1", "X-Forwarded-For" },
        { "0.0.0.0/0, ::/0", "X-Real-IP" },
        { "127.0.0.0/8", "X-Real-IP" },
        { "10.0.0.0/8", "X-Real-IP, X-Forwarded-For" },         -- the peer is not trusted
        { "none", "X-Real-IP, X-Forwarded-For" },
        { "127.0.0.0/8", "none" },
    }
    for i, c in ipairs(configs) do
        it("agrees with client_ip: trusted " .. c[1] .. ", headers " .. c[2], function()
            local out = eval(COMPARE:format(c[1], c[2], 3000, 1000 + i))
            local agreed, total = out:match("^(%d+) (%d+)")
            assert.equal(total, agreed, out)
            assert.equal("3000", total)
        end)
    end

    it("uses the header's own string as the key when it is canonical", function()
        local out = eval([[
            local picker = assert(require("gray.client").new({}))
            local hdr = "203.0.113.7"
            ngx.req.set_header("X-Real-IP", hdr)
            local a = picker:key()
            ngx.req.set_header("X-Real-IP", "2001:DB8::7")
            local b = picker:key()
            ngx.req.clear_header("X-Real-IP")
            local c = picker:key()
            return table.concat({ a, b, c }, " ")
        ]])
        assert.equal("203.0.113.7 2001:db8::7 127.0.0.1", out)
    end)

    it("refuses unknown headers and bad CIDRs with the option's name", function()
        local out = eval([[
            local client = require "gray.client"
            local a = select(2, client.new({ client_headers = { "X-Client" } }))
            local b = select(2, client.new({ trusted = "10.0.0.0/33" }))
            local c = select(2, client.new({ trusted = 5 }))
            return table.concat({ a, b, c }, "\n")
        ]])
        assert.truthy(out:find("option 'client_headers' has 'X-Client'", 1, true), out)
        assert.truthy(out:find("option 'trusted' bad CIDR '10.0.0.0/33'", 1, true), out)
        assert.truthy(out:find("option 'trusted' must be a list of CIDRs", 1, true), out)
    end)

    -- each return slot has one meaning: picker, err (nil), warnings
    it("returns the picker, no error and the CIDR warnings apart", function()
        local out = eval([[
            local client = require "gray.client"
            local t = {}
            for i, trusted in ipairs({ "10.0.0.1/8", "10.0.0.0/8" }) do
                local picker, err, warnings = client.new({ trusted = trusted })
                t[i] = type(picker) .. " " .. tostring(err) .. " " .. type(warnings) .. " "
                       .. #warnings .. " " .. tostring(warnings[1])
            end
            return table.concat(t, "\n")
        ]])
        local first, second = out:match("^([^\n]*)\n([^\n]*)$")
        assert.truthy(first and first:find("^table nil table 1 "), out)
        assert.truthy(first:find("10.0.0.1/8", 1, true), out)
        assert.equal("table nil table 0 nil", second)
    end)
end)
