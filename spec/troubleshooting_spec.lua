-- README.md's Troubleshooting quotes what the code logs: every line of its
-- unlabelled ``` blocks is a quote of nginx's error.log ("[level] ..."; a
-- line that does not start with "[" continues the quote above it). "..."
-- marks what varies: within a line, anything on that line; as a whole
-- line, any number of lines. 127.0.0.1:11211 stands for any memcached
-- address. Each quote is triggered here, on real nginx and memcached, and
-- must be found in the error.log of the nginx that triggered it.

local harness = require "helpers.harness"

local REPO = os.getenv("GRAY_REPO") or io.popen("pwd"):read("*l")

local function read(path)
    return assert(harness.read_file(path), "cannot read " .. path)
end

--- The quotes of the README's Troubleshooting section, in order.
local function quotes(readme)
    local section = readme:match("\n## Troubleshooting\n(.-)\n## ") or ""
    local out, in_block = {}, false
    for line in (section .. "\n"):gmatch("(.-)\n") do
        if line:find("^```") then
            in_block = line == "```" and not in_block
        elseif in_block then
            if line:find("^%[") then
                out[#out + 1] = line
            elseif #out > 0 then
                out[#out] = out[#out] .. "\n" .. line
            end
        end
    end
    return out
end

local MAGIC = "([%^%$%(%)%%%.%[%]%*%+%-%?])"

--- A quote as a Lua pattern of error.log text.
local function pattern(quote)
    local lines = {}
    for line in (quote .. "\n"):gmatch("(.-)\n") do
        if line:find("^%s*%.%.%.%s*$") then
            lines[#lines + 1] = ".-"                    -- any lines
        else
            local parts = {}
            for piece in (line .. "..."):gmatch("(.-)%.%.%.") do
                parts[#parts + 1] = piece:gsub(MAGIC, "%%%1")
            end
            local p = table.concat(parts, "[^\n]-")
            lines[#lines + 1] = (p:gsub("127%%%.0%%%.0%%%.1:11211", "127%%.0%%.0%%.1:%%d+"))
        end
    end
    return table.concat(lines, "\n")
end

describe("README.md's Troubleshooting quotes", function()
    local readme = read(REPO .. "/README.md")
    local all = quotes(readme)

    it("are read as meant", function()
        assert.is_true(#all >= 12, "only " .. #all .. " quotes found")
        local p = pattern("[error] ... gray: connect to 127.0.0.1:11211: connection refused, client: ...")
        local line = "2026/12/04 21:00:00 [error] 9#9: *3 gray: connect to 127.0.0.1:4711:"
                     .. " connection refused, client: 127.0.0.1, server: , request: \"GET /\""
        assert.truthy(line:find(p))
        assert.falsy(line:gsub("refused", "reset"):find(p))
        -- an inline "..." stays on its line; a "..." line spans lines
        assert.falsy(("[error] a\nb x"):find(pattern("[error] ...x")))
        assert.truthy(("[error] a\n  b\n  c\nd"):find(pattern("[error] a\n...\nd")))
        assert.falsy(("[error] a (b) c"):find(pattern("[error] a (b) d")))
    end)

    it("are each what the code logs", function()
        local mc = harness.memcached()
        local fake = harness.fake_memcached({ mode = "trickle-line", interval = 1000 })
        local down = harness.refused_port()
        local nginx, missing, old
        finally(function()
            for _, n in ipairs({ nginx, missing, old }) do
                if n then n:stop() end
            end
            fake:destroy()
            mc:destroy()
        end)
        mc:set("127.0.0.1", "1")
        mc:set("192.168.2.34", "v9")

        local function dep(settings)
            return 'content_by_lua_block { require("gray.dep").run("' .. settings .. '") }'
        end
        local MC = "$gray_memcached 127.0.0.1:" .. mc.port
        nginx = harness.nginx({ memcached_port = mc.port, servers = [[
            server {
                listen 127.0.0.1:$PORT;
                location /named { ]] .. dep(MC) .. [[ }
                location @server { return 200 "stable\n"; }
                location /set { set $gray_memcached "127.0.0.1:$MC"; ]] .. dep("") .. [[ }
                location /uninit { ]] .. dep("") .. [[ }
                location /trusted { ]] .. dep("$gray_trusted 10.0.0.0/33") .. [[ }
                location /memcached { ]] .. dep("$gray_memcached localhost:11211") .. [[ }
                location /ttl { ]] .. dep("$gray_cache_ttl 1x") .. [[ }
                location /force { ]] .. dep("$gray_force header:X-Gray") .. [[ }
                location /target { ]] .. dep(MC) .. [[ }
                location /down { ]] .. dep("$gray_memcached 127.0.0.1:" .. down
                                           .. "; $gray_cache_ttl 0") .. [[ }
                location /hung { ]] .. dep("$gray_memcached 127.0.0.1:" .. fake.port
                                           .. "; $gray_cache_ttl 0") .. [[ }
            }
        ]] })
        for _, path in ipairs({ "/named", "/uninit", "/trusted", "/memcached", "/ttl",
                                "/force", "/hung" }) do
            nginx:request(path)
        end
        nginx:request("/target", { headers = { ["X-Real-IP"] = "192.168.2.34" } })
        for _ = 1, 6 do                 -- 5 failures open the breaker, the 6th finds it
            nginx:request("/down")
        end

        -- libgray.so nowhere on lua_package_cpath
        local dropin = "content_by_lua_file " .. REPO .. "/lua/gray/dep.lua;"
        missing = harness.nginx({ package_cpath = "./?.so;/usr/local/lib/lua/5.1/?.so;"
                                                  .. "/nonexistent/?.so",
                                  servers = "server { listen 127.0.0.1:$PORT; location / { "
                                            .. dropin .. " } location @server { return 200; } }" })
        missing:request("/")

        -- a libgray.so of another version than the Lua code
        local dir = harness.tmpdir()
        harness.sh("mkdir -p " .. dir .. "/gray")
        local f = assert(io.open(dir .. "/gray/ffi.lua", "wb"))
        f:write((read(REPO .. "/lua/gray/ffi.lua"):gsub('\nlocal VERSION = "[^"]*"',
                                                        '\nlocal VERSION = "9.9.9"')))
        f:close()
        old = harness.nginx({ package_path = dir .. "/?.lua;" .. REPO .. "/lua/?.lua;;",
                              servers = "server { listen 127.0.0.1:$PORT; location / { "
                                        .. dropin .. " } location @server { return 200; } }" })
        old:request("/")
        harness.sleep(0.2)

        local logs = nginx:error_log() .. missing:error_log() .. old:error_log()
        harness.sh("rm -rf " .. harness.quote(dir))
        local lost = {}
        for _, q in ipairs(all) do
            if not logs:find(pattern(q)) then
                lost[#lost + 1] = q
            end
        end
        assert.equal("", table.concat(lost, "\n\n"), "quoted in the README, not logged so:\n"
                     .. logs)
    end)
end)
