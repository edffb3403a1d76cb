-- bench.lua - `make bench`: what a request costs the router nginx, for each
-- row of bench/locations.lua (the drop-in and the Lua API beside a plain
-- proxy_pass, their floors, the classic dep.lua script, and cache misses
-- from clients not seen before), on the integration harness
-- (spec/helpers/harness.lua starts memcached and the nginx servers).
--
-- Scenario: the client's address in X-Real-IP, sent from a trusted loopback
-- proxy (the bench client on 127.0.0.1); memcached (127.0.0.1:11211, the
-- drop-in's default address) says "1" for 192.0.2.10; the decision is cached
-- (cache_ttl 1 s). The "new clients" rows send every request from another
-- of 100,000 clients (and 2 ids each, X-Uid and X-Dev, where the row says
-- so): every request misses the cache.
--
-- Every row gets its own router nginx.conf (that location, @server and
-- @server_test, and the other location of the "beside" rows), so no $gray_*
-- variable is defined where the drop-in runs but in the rows that say so.
-- Every row answers the same URI, /r, and proxies to the same backend nginx
-- through the same keepalive upstream.
--
--   instr/req  BENCH_PROCESSES fresh router processes per row (the rows take
--              turns), each under callgrind: BENCH_WARMUP requests, counters
--              zeroed, exactly BENCH_REQUESTS requests on one keepalive
--              connection (curl), dumped; Ir / requests (user space of the
--              router process only: not the kernel, memcached or the
--              backend). Lua timer handlers are left out.
--   req/s      wrk against one router process per row, best of BENCH_ROUNDS
--              rounds (the rows take turns).
--
-- Every row is checked on every process (status, body, which named location
-- answered, for the gray address and another), every measured batch is
-- checked (all answers right, one connection), and the router's error log
-- must stay clean. bench/report.lua turns the raw figures
-- (build/bench-raw.tsv) into the table (build/bench-results.txt) and the
-- chart (build/bench.svg; README's copy: bench/bench.svg).
--
--   LUA_PATH='spec/?.lua;bench/?.lua;;' luajit bench/bench.lua    (make bench)
--
-- Settings (environment): BENCH_PROCESSES (5), BENCH_REQUESTS (2000),
-- BENCH_WARMUP (500), BENCH_DURATION (3 s), BENCH_ROUNDS (3),
-- BENCH_CONNECTIONS (16), BENCH_LOCATIONS (all; e.g. "plain reads-only
-- dropin" to chase one row), BENCH_KEEP=1 keeps the scratch directories and
-- the callgrind dumps.

local harness = require "helpers.harness"
local LOCATIONS = require "locations"
local report = require "report"

local sh, quote = harness.sh, harness.quote

local REPO = os.getenv("GRAY_REPO") or io.popen("pwd"):read("*l")
local GRAY_IP = "192.0.2.10"    -- memcached says "1" for it
local OTHER_IP = "10.9.9.9"     -- not in memcached
local BODY = "backend ok\n"
local CLIENTS = 100000          -- the "new clients" rows draw from these
local MC_PORT = 11211

local function die(...)
    error("bench: " .. table.concat({ ... }, " "), 0)
end

local function setting(name, default)
    local v = os.getenv(name) or default
    if not tostring(v):match("^[1-9]%d*$") then
        die("BENCH_* settings are positive integers (" .. name .. "=" .. v .. ")")
    end
    return tonumber(v)
end

local PROCS = setting("BENCH_PROCESSES", 5)
local N = setting("BENCH_REQUESTS", 2000)
local WARM = setting("BENCH_WARMUP", 500)
local DURATION = setting("BENCH_DURATION", 3)
local ROUNDS = setting("BENCH_ROUNDS", 3)
local CONNS = setting("BENCH_CONNECTIONS", 16)
-- (make bench also sets GRAY_KEEP_TMP then, which keeps the harness's
-- directories)
local KEEP = (os.getenv("BENCH_KEEP") or "") ~= ""

-- the rows to measure, in the list's order
local by_name, rows = {}, {}
for _, loc in ipairs(LOCATIONS) do
    by_name[loc.name] = loc
end
local wanted = os.getenv("BENCH_LOCATIONS")
if wanted then
    local pick = {}
    for name in wanted:gmatch("%S+") do
        if not by_name[name] then
            local all = {}
            for _, loc in ipairs(LOCATIONS) do
                all[#all + 1] = loc.name
            end
            die("BENCH_LOCATIONS: no location '" .. name .. "' (" .. table.concat(all, " ") .. ")")
        end
        pick[name] = true
    end
    for _, loc in ipairs(LOCATIONS) do
        if pick[loc.name] then
            rows[#rows + 1] = loc
        end
    end
else
    rows = LOCATIONS
end
for _, loc in ipairs(rows) do
    local base = loc.base or "plain"
    local found = false
    for _, r in ipairs(rows) do
        found = found or r.name == base
    end
    if not found then
        die("BENCH_LOCATIONS must include " .. base .. " (the reference of " .. loc.name .. ")")
    end
end

-- servers started, stopped at the end whatever happens
local started = {}
local function track(server)
    started[#started + 1] = server
    return server
end
local function untrack(server)
    for i, s in ipairs(started) do
        if s == server then
            table.remove(started, i)
            return
        end
    end
end

-- The router alone on CPU 0, everything else (this script and what it
-- starts: wrk, curl, the backend, memcached) on the others.
local CPUS = tonumber((sh("nproc"))) or 1
local PIN_ROUTER = ""
if CPUS >= 2 then
    PIN_ROUTER = "taskset -c 0 "
    sh("taskset -cp 1-" .. (CPUS - 1) .. " $PPID >/dev/null")
end

local function client(i)
    i = i % CLIENTS
    return "198." .. 18 + math.floor(i / 65536) .. "." .. math.floor(i / 256) % 256 .. "."
           .. i % 256, "u" .. i, "d" .. i
end

-- the request headers of the i-th request of a row ("Name: value" list)
local function headers_for(loc, i)
    local kind = loc.client or "fixed"
    if kind == "fixed" then
        return { "X-Real-IP: " .. GRAY_IP }
    end
    local ip, uid, dev = client(i)
    if kind == "distinct" then
        return { "X-Real-IP: " .. ip }
    end
    return { "X-Real-IP: " .. ip, "X-Uid: " .. uid, "X-Dev: " .. dev }
end

-- nginx ---------------------------------------------------------------------

local ROUTER_SERVER = [[
    upstream backend {
        server 127.0.0.1:%d;
        keepalive 16;
        keepalive_requests 1000000;
    }
    # the routing-by-variable rows' upstreams (proxy_pass to a variable),
    # named as the other rows' X-Gray-Target
    upstream stable {
        server 127.0.0.1:%d;
        keepalive 16;
        keepalive_requests 1000000;
    }
    upstream test {
        server 127.0.0.1:%d;
        keepalive 16;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:$PORT;
        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location = /r {
            %s
        }
        %s
        location @server {
            add_header X-Gray-Target stable always;
            proxy_pass http://backend;
        }
        location @server_test {
            add_header X-Gray-Target test always;
            proxy_pass http://backend;
        }
    }
]]

-- A router for one row: a fresh foreground nginx (one process, no master)
-- in dir, under command (taskset, valgrind).
local function start_router(loc, backend_port, dir, command)
    local servers = ROUTER_SERVER:format(backend_port, backend_port, backend_port, loc.body,
                                         loc.beside or "")
    local http = "keepalive_requests 1000000;\n" .. (loc.http or "")
    if not loc.gray_vars and (servers .. http):find("$gray_", 1, true) then
        die(loc.name .. ": its nginx.conf defines a $gray_* variable")
    end
    sh("mkdir -p " .. quote(dir))
    return track(harness.nginx({
        dir = dir, foreground = true, command = PIN_ROUTER .. (command or ""),
        start_seconds = 120, stop_seconds = 60, log_level = "warn", http = http,
        servers = servers,
        package_path = REPO .. "/lua/?.lua;" .. REPO .. "/bench/?.lua;;",
    }))
end

local function stop(server)
    server:stop()
    untrack(server)
end

-- checks --------------------------------------------------------------------

-- (a few tries: a router's first lookup under callgrind, on a busy machine,
-- can pass the drop-in's 50 ms deadline, and then goes to the stable
-- location, as it should)
local function check_location(router, loc)
    for _, ip in ipairs({ GRAY_IP, OTHER_IP }) do
        local want = ip == GRAY_IP and loc.want.gray or loc.want.other
        local res, target
        for try = 1, 5 do
            res = router:request("/r", { headers = { ["X-Real-IP"] = ip }, max_time = 60,
                                         response_headers = true })
            target = res.headers and res.headers["x-gray-target"]
            if res.status == 200 and target == want and res.body == BODY then
                break
            end
            if try < 5 then
                harness.sleep(1.2)      -- past the cache's 1 s
            end
        end
        if res.status ~= 200 or target ~= want or res.body ~= BODY then
            die("/" .. loc.name, "with X-Real-IP", ip, "answered", tostring(res.status),
                tostring(target), "body '" .. res.body:sub(1, 200) .. "', expected 200", want,
                "(see " .. router.dir .. ")")
        end
    end
end

-- nothing at warn level or worse, but the warning a row measures; with
-- timeouts true, a memcached read past the drop-in's 50 ms deadline
-- (a loaded machine, a cold router under callgrind: the request still goes
-- to the stable location, or the stale answer) and what follows (memcached
-- marked down a moment) are counted and said, not fatal
local function check_error_log(router, loc, timeouts)
    local bad, late = {}, 0
    for line in router:error_log():gmatch("[^\n]+") do
        local timeout = timeouts and line:find("%[error%]")
                        and (line:find("timed out", 1, true) or line:find("127.0.0.1:11211", 1, true))
        if timeout then
            late = late + 1
        elseif (line:find("%[warn%]") or line:find("%[error%]") or line:find("%[crit%]")
            or line:find("%[alert%]") or line:find("%[emerg%]")
            or line:find("global variable", 1, true))
           and not (loc.warns and line:find(loc.warns, 1, true)) then
            bad[#bad + 1] = line
            if #bad == 20 then
                break
            end
        end
    end
    if #bad > 0 then
        die(router.dir .. "/error.log:\n" .. table.concat(bad, "\n"))
    end
    if late > 0 then
        print(string.format("  /%s: %d error.log lines of memcached reads past their deadline"
                            .. " (or memcached marked down after them)", loc.name, late))
    end
end

-- count requests on one keepalive connection (one curl), the first
-- request being the row's first-th; checks every answer and that curl
-- connected once
local function curl_batch(router, loc, first, count)
    local cfg = router.dir .. "/batch.cfg"
    local f = assert(io.open(cfg, "wb"))
    local url = "http://127.0.0.1:" .. router.port .. "/r"
    local fixed = (loc.client or "fixed") == "fixed"
    local w = 'write-out = "%{http_code} %header{x-gray-target} %{num_connects}\\n"\n'
    if fixed then
        f:write('header = "', headers_for(loc, 0)[1], '"\n', w)
    end
    for i = first, first + count - 1 do
        if not fixed then
            if i > first then
                f:write("next\n")
            end
            f:write(w)
            for _, h in ipairs(headers_for(loc, i)) do
                f:write('header = "', h, '"\n')
            end
        end
        f:write('url = "', url, '"\noutput = "/dev/null"\n')
    end
    f:close()
    local out, code = sh("curl -s -m 900 --config " .. quote(cfg))
    if code ~= 0 then
        die("curl failed on /" .. loc.name .. ": " .. out:sub(1, 500))
    end
    local answers, connects, total = {}, 0, 0
    for status, target, conns in out:gmatch("(%d+) (%S*) (%d+)\n") do
        local k = status .. " " .. target
        answers[k] = (answers[k] or 0) + 1
        connects, total = connects + tonumber(conns), total + 1
    end
    local want = "200 " .. (loc.batch or loc.want.gray)
    if answers[want] ~= count or total ~= count or connects ~= 1 then
        local seen = {}
        for k, n in pairs(answers) do
            seen[#seen + 1] = n .. " x " .. k
        end
        die("/" .. loc.name .. " batch of " .. count .. ": expected " .. want .. " on one"
            .. " connection, got " .. table.concat(seen, ", ") .. "; connects " .. connects)
    end
end

local function mc_stats(mc)
    local s = {}
    for name, v in mc:cmd("stats\r\n"):gmatch("STAT (%S+) (%S+)") do
        s[name] = tonumber(v)
    end
    return s.cmd_get, s.total_connections
end

-- what the router runs (lua/ may be edited while the bench runs): a hash
-- taken before a process starts and after its measured batch
local function code_hash()
    return (sh("cat " .. REPO .. "/lua/*.lua " .. REPO .. "/lua/gray/*.lua " .. REPO
               .. "/bench/*.lua " .. REPO .. "/build/libgray.so 2>/dev/null | md5sum")
           :sub(1, 8))
end

-- wrk -----------------------------------------------------------------------

-- wrk's request script for the "new clients" rows: each request from the
-- next of CLIENTS clients, from a random start
local WRK_SCRIPT = [[
local n = math.random(0, %d - 1)
local ids = %s
function request()
    n = (n + 1) %% %d
    local h = { ["X-Real-IP"] = "198." .. 18 + math.floor(n / 65536) .. "."
                                .. math.floor(n / 256) %% 256 .. "." .. n %% 256 }
    if ids then
        h["X-Uid"] = "u" .. n
        h["X-Dev"] = "d" .. n
    end
    return wrk.format(nil, "/r", h)
end
]]

local function wrk_args(loc, scratch)
    local kind = loc.client or "fixed"
    if kind == "fixed" then
        return "-H " .. quote("X-Real-IP: " .. GRAY_IP)
    end
    local path = scratch .. "/" .. kind .. ".lua"
    local f = assert(io.open(path, "wb"))
    f:write(WRK_SCRIPT:format(CLIENTS, tostring(kind == "distinct-ids"), CLIENTS))
    f:close()
    return "-s " .. quote(path)
end

local CLK_TCK = tonumber((sh("getconf CLK_TCK"))) or 100

local function cpu_ticks(pid)
    local stat = harness.read_file("/proc/" .. pid .. "/stat") or ""
    -- the fields after the command name (which may hold spaces): state is 3,
    -- utime 14, stime 15
    local fields = {}
    for v in stat:match("%) (.*)$"):gmatch("%S+") do
        fields[#fields + 1] = v
    end
    return tonumber(fields[12]) + tonumber(fields[13])
end

-- requests/s, router CPU us/request, router CPU load %
local function run_wrk(router, loc, seconds, args)
    local t0 = cpu_ticks(router.process)
    local out, code = sh("wrk -t1 -c" .. CONNS .. " -d" .. seconds .. "s " .. args
                         .. " http://127.0.0.1:" .. router.port .. "/r")
    local t1 = cpu_ticks(router.process)
    if code ~= 0 or out:find("Non%-2xx") or out:find("Socket errors") then
        die("wrk on /" .. loc.name .. ":\n" .. out)
    end
    local reqs = tonumber(out:match("(%d+) requests in "))
    local rps = tonumber(out:match("Requests/sec:%s*([%d.]+)"))
    if not reqs or not rps then
        die("wrk on /" .. loc.name .. ": no result:\n" .. out)
    end
    local cpu = (t1 - t0) / CLK_TCK
    return rps, cpu * 1e6 / reqs, cpu / seconds * 100
end

-- callgrind -----------------------------------------------------------------

local function cg_dump(pid, dir, tag)
    local out, code = sh("callgrind_control -d " .. tag .. " " .. pid)
    if code ~= 0 then
        die("callgrind_control -d failed: " .. out)
    end
    for _ = 1, 300 do
        local files = sh("grep -l -x " .. quote("desc: Trigger: dump " .. tag) .. " "
                         .. dir .. "/callgrind.out.* 2>/dev/null")
        local file = files:match("^(%S+)\n?$")
        if files:find("\n%S") then
            die("several callgrind dumps tagged '" .. tag .. "'")
        end
        local total = file and (harness.read_file(file) or ""):match("\ntotals: (%d+)\n")
        if total then
            return tonumber(total)
        end
        harness.sleep(0.1)
    end
    die("no complete callgrind dump tagged '" .. tag .. "' in " .. dir)
end

-- the run ---------------------------------------------------------------------

local function main()
    local mods = harness.read_file("/usr/lib/nginx/modules/ngx_http_lua_module.so")
                 or harness.read_file("/usr/share/nginx/modules/ngx_http_lua_module.so")
    if not mods then
        die("Debian's nginx lua module is not installed")
    end
    if not harness.read_file(REPO .. "/build/libgray.so") then
        die("build/libgray.so is missing (make)")
    end
    for _, tool in ipairs({ "nginx", "memcached", "wrk", "curl", "valgrind",
                            "callgrind_control" }) do
        if select(2, sh("command -v " .. tool)) ~= 0 then
            die(tool .. " is not installed (sh tools/deps.sh bench)")
        end
    end
    if harness.port_in_use(MC_PORT) then
        die("127.0.0.1:" .. MC_PORT .. " is in use: the bench starts its own memcached there"
            .. " (the drop-in's default address). Stop what listens there first (the demo:"
            .. " make demo-stop).")
    end
    local scratch = harness.tmpdir()
    -- the raw figures, also written as they come (a run that fails keeps
    -- them: luajit bench/report.lua build/bench-raw.tsv)
    sh("mkdir -p " .. REPO .. "/build")
    local raw_path = REPO .. "/build/bench-raw.tsv"
    local raw_file = assert(io.open(raw_path, "wb"))
    local raw = {}
    local function record(...)
        raw[#raw + 1] = table.concat({ ... }, "\t")
        raw_file:write(raw[#raw], "\n")
        raw_file:flush()
    end

    local mc = track(harness.memcached({ port = MC_PORT }))
    mc:set(GRAY_IP, "1")
    local backend = track(harness.nginx({
        log_level = "warn", http = "keepalive_requests 1000000;",
        servers = 'server { listen 127.0.0.1:$PORT; location / { return 200 "backend ok\\n"; } }',
    }))

    -- 1. throughput: wrk, one router process per row
    local wrk = {}
    for _, loc in ipairs(rows) do
        local router = start_router(loc, backend.port, scratch .. "/wrk/" .. loc.name)
        check_location(router, loc)
        wrk[loc.name] = { router = router, args = wrk_args(loc, scratch) }
    end
    print(string.format("bench: memcached :%d, backend :%d, scratch %s", MC_PORT, backend.port,
                        scratch))
    print(string.format("bench: wrk -t1 -c%d -d%ds per location, best of %d rounds", CONNS,
                        DURATION, ROUNDS))
    for round = 1, ROUNDS do
        for _, loc in ipairs(rows) do
            local w = wrk[loc.name]
            run_wrk(w.router, loc, 1, w.args)
            local rps, cpu, load = run_wrk(w.router, loc, DURATION, w.args)
            print(string.format("  round %d  /%s  %.0f req/s, router CPU %.1f us/req (%.0f%% busy)",
                                round, loc.name, rps, cpu, load))
            io.stdout:flush()
            record("wrk", loc.name, round, rps, string.format("%.1f", cpu),
                   string.format("%.0f", load))
        end
    end
    for _, loc in ipairs(rows) do
        local router = wrk[loc.name].router
        check_location(router, loc)
        check_error_log(router, loc, true)
        stop(router)
    end

    -- 2. instructions per request: callgrind, fresh processes
    print(string.format("bench: callgrind, %d fresh router processes per location (the"
                        .. " locations take turns); each: %d warm-up requests, then %d counted",
                        PROCS, WARM, N))
    for p = 1, PROCS do
        for _, loc in ipairs(rows) do
            local dir = scratch .. "/cg/" .. loc.name .. "." .. p
            local code = code_hash()
            local router = start_router(loc, backend.port, dir,
                "valgrind --tool=callgrind --callgrind-out-file=" .. dir .. "/callgrind.out.%p"
                .. " --dump-line=no --toggle-collect=ngx_http_lua_timer_handler"
                .. " --collect-atstart=yes")
            local pid = router.process
            check_location(router, loc)
            local first = ((p - 1) * (WARM + N)) % CLIENTS
            curl_batch(router, loc, first, WARM)
            local out, rc = sh("callgrind_control -z " .. pid)
            if rc ~= 0 then
                die("callgrind_control -z failed: " .. out)
            end
            local gets0, conns0 = mc_stats(mc)
            curl_batch(router, loc, first + WARM, N)
            local ir = cg_dump(pid, dir, "bench-" .. loc.name .. "-" .. p)
            local gets1, conns1 = mc_stats(mc)
            if code_hash() ~= code then
                code = code .. "-changed"
            end
            check_location(router, loc)
            check_error_log(router, loc, true)
            if not KEEP then
                sh("rm -f " .. dir .. "/callgrind.out.*")
            end
            stop(router)
            -- (the stats connection counts once in total_connections)
            record("cg", loc.name, p, ir, N, gets1 - gets0, conns1 - conns0 - 1, code)
            print(string.format("  process %d  /%s  %d instr/req, memcached gets %d, code %s", p,
                                loc.name, math.floor(ir / N), gets1 - gets0, code))
            io.stdout:flush()
        end
    end

    -- report
    raw_file:close()
    local dirty = sh("git -C " .. quote(REPO) .. " status --porcelain -- lua bench 2>/dev/null")
    local header = {
        string.format("lua-resty-gray bench, %s, %s%s", os.date("!%Y-%m-%d %H:%M UTC"),
                      (sh("git -C " .. quote(REPO) .. " rev-parse --short HEAD"):match("%x+")
                       or "?"),
                      dirty:find("%S") and " (lua/ or bench/ with uncommitted changes)" or ""),
        string.format("%s, %s, %d CPUs; router on one CPU, the rest elsewhere",
                      sh("nginx -v"):gsub("%s+$", ""), sh("valgrind --version"):gsub("%s+$", ""),
                      CPUS),
        "scenario: X-Real-IP " .. GRAY_IP .. " from a trusted loopback proxy, memcached says"
        .. " \"1\", decision cached (cache_ttl 1 s); \"new clients\" rows: every request from"
        .. " another of " .. CLIENTS .. " clients (a miss); one nginx.conf per location",
        string.format("instr/req: callgrind Ir of the router process / %d keepalive requests"
                      .. " after %d warm-up, %d fresh processes per location; req/s: wrk -t1"
                      .. " -c%d -d%ds, best of %d", N, WARM, PROCS, CONNS, DURATION, ROUNDS),
    }
    local text, svg = report.render(raw, table.concat(header, "\n"))
    local f = assert(io.open(REPO .. "/build/bench-results.txt", "wb"))
    f:write(text)
    f:close()
    f = assert(io.open(REPO .. "/build/bench.svg", "wb"))
    f:write(svg)
    f:close()
    print()
    io.write(text)
    print("(also in build/bench-results.txt; the chart: build/bench.svg, README's copy"
          .. " bench/bench.svg)")
    if not KEEP then
        sh("rm -rf " .. quote(scratch))
    end
end

local ok, err = xpcall(main, function(e)
    return type(e) == "string" and e:find("^bench: ") and e or debug.traceback(e, 2)
end)
for i = #started, 1, -1 do
    pcall(started[i].stop, started[i])
    if started[i].destroy then
        pcall(started[i].destroy, started[i])
    end
end
if not ok then
    io.stderr:write(err, "\n")
    os.exit(1)
end
