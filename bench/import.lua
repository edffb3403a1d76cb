-- import.lua - `make bench-import`: one gray-admin import of IMPORT_LINES
-- (1,000,000) lines into a real memcached (-m 1024) on a free loopback port
-- (the specs' harness starts it): wall time and maximum RSS from
-- /usr/bin/time -v, then the count memcached holds. The file mixes IPv4,
-- IPv6 and uid entries, targets 1, v2, v3 or none, and --ttl 3600 on every
-- 10th line. Figures also in build/bench-import-results.txt.
--
--   LUA_PATH='spec/?.lua;;' luajit bench/import.lua      (make bench-import)

local harness = require "helpers.harness"

local sh, quote = harness.sh, harness.quote
local LINES = tonumber(os.getenv("IMPORT_LINES") or "1000000")
local BIN = "build/gray-admin"
local TARGETS = { "1", "v2", "v3", false }

local mc = harness.memcached({ memory_mb = 1024 })
local dir = harness.tmpdir()
local ok, err = pcall(function()
    local input = dir .. "/in.txt"
    local f = assert(io.open(input, "wb"))
    local buf = {}
    for i = 0, LINES - 1 do
        local k, key = i % 20
        if k < 12 then
            key = string.format("10.%d.%d.%d", math.floor(i / 65536) % 256,
                                math.floor(i / 256) % 256, i % 256)
        elseif k < 15 then
            key = string.format("2001:db8:%x::%x", math.floor(i / 65536), i % 65536)
        else
            key = "uid:" .. i
        end
        local target = TARGETS[i % 4 + 1]
        local line = target and key .. " " .. target or key
        if i % 10 == 0 then
            line = line .. " --ttl 3600"
        end
        buf[#buf + 1] = line
        if #buf == 10000 then
            f:write(table.concat(buf, "\n"), "\n")
            buf = {}
        end
    end
    if #buf > 0 then
        f:write(table.concat(buf, "\n"), "\n")
    end
    f:close()

    local load = (harness.read_file("/proc/loadavg") or ""):match("^(%S+ %S+ %S+)") or "?"
    local out, code = sh("/usr/bin/time -v " .. BIN .. " --servers 127.0.0.1:" .. mc.port
                         .. " import " .. quote(input) .. " >" .. dir .. "/out.txt 2>"
                         .. dir .. "/time.txt")
    local result = harness.read_file(dir .. "/out.txt") or ""
    local time = harness.read_file(dir .. "/time.txt") or ""
    assert(code == 0, "gray-admin import failed: " .. out .. result .. time)
    local wall = time:match("Elapsed %(wall clock%) time %b(): (%S+)")
    local rss = tonumber(time:match("Maximum resident set size %(kbytes%): (%d+)"))
    local user = time:match("User time %(seconds%): (%S+)")
    local system = time:match("System time %(seconds%): (%S+)")
    local items = mc:cmd("stats\r\n"):match("STAT curr_items (%d+)") or "?"
    local text = table.concat({
        string.format("gray-admin import, %d lines (%s), memcached -m 1024:", LINES,
                      (sh("du -h " .. quote(input))):match("^(%S+)")),
        "  " .. result:gsub("%s+$", ""),
        string.format("  wall %s (gray-admin's CPU: %s s user, %s s system), max RSS %d MB"
                      .. " (%d kB), memcached holds %s items", wall, user, system,
                      math.floor(rss / 1024), rss, items),
        "  load average before: " .. load,
    }, "\n") .. "\n"
    io.write(text)
    sh("mkdir -p build")
    f = assert(io.open("build/bench-import-results.txt", "wb"))
    f:write(text)
    f:close()
end)
mc:destroy()
sh("rm -rf " .. quote(dir))
if not ok then
    io.stderr:write("bench-import: ", tostring(err), "\n")
    os.exit(1)
end
