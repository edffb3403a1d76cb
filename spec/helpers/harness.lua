-- The integration harness shared by every spec that needs real servers: it
-- starts memcached and nginx (Debian's binaries, Debian's lua module) on free
-- loopback ports in a scratch directory, talks to them (curl, memcached's
-- text protocol over bash's /dev/tcp), and stops them.
--
--   local harness = require "helpers.harness"
--   local mc = harness.memcached()                 -- mc.port, mc:cmd(...), mc:stop()
--   local ngx = harness.nginx({ servers = [[ server { listen $PORT; ... } ]] })
--   local res = ngx:get("/", { headers = { ["X-Real-IP"] = "1.2.3.4" } })
--   ngx:stop(); mc:destroy()         -- scratch dirs go unless GRAY_KEEP_TMP is set
--   local fake = harness.fake_memcached({ mode = "drip" })  -- a hostile one: fake.port,
--                                                   -- fake:count("accept"), fake:destroy()

local _M = {}

local REPO = os.getenv("GRAY_REPO") or io.popen("pwd"):read("*l")

-- Runs a shell command; returns its output (stdout and stderr) and exit
-- code. (LuaJIT's pipe close does not report the status, so the shell
-- prints it.)
local function sh(cmd)
    local p = assert(io.popen("{ " .. cmd .. " ; } 2>&1; echo \"__rc=$?\""))
    local out = p:read("*a")
    p:close()
    local code = tonumber(out:match("__rc=(%d+)%s*$"))
    return out:gsub("__rc=%d+%s*$", ""), code
end
_M.sh = sh

local function quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
_M.quote = quote

local function sleep(seconds)
    os.execute("sleep " .. seconds)
end
_M.sleep = sleep

local function read_file(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return s
end
_M.read_file = read_file

local function port_in_use(port, host)
    local _, code = sh("timeout 1 bash -c " .. quote("exec 3<>/dev/tcp/" .. (host or "127.0.0.1")
                                                    .. "/" .. port))
    return code == 0
end
_M.port_in_use = port_in_use

math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)

-- Below the kernel's ephemeral range, so no outgoing connection holds them.
local PORT_MIN, PORT_MAX = 20000, 32000
do
    local range = read_file("/proc/sys/net/ipv4/ip_local_port_range")
    local low = range and tonumber(range:match("^(%d+)"))
    if low and low - 1 < PORT_MAX then
        PORT_MIN, PORT_MAX = math.floor((1025 + low) / 2), low - 1
    end
end

--- A loopback port nothing listens on (the server that takes it still
-- checks its own start, in case of a race).
function _M.free_port()
    for _ = 1, 200 do
        local port = math.random(PORT_MIN, PORT_MAX)
        if not port_in_use(port) then
            return port
        end
    end
    error("no free loopback port found")
end

local function wait_for(pred, seconds, what)
    local deadline = os.time() + seconds
    repeat
        if pred() then
            return true
        end
        sleep(0.02)         -- servers start and stop in a few ms
    until os.time() > deadline
    error("timed out waiting for " .. what)
end

function _M.tmpdir()
    local dir = sh("mktemp -d /tmp/gray-spec.XXXXXX"):gsub("%s+$", "")
    return dir
end


local function write_file(path, text)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
end

-- memcached -------------------------------------------------------------

local Memcached = {}
Memcached.__index = Memcached

--- Starts memcached on a free loopback port (or opts.port), on 127.0.0.1
-- (or opts.host, e.g. "::1"). opts.verbose: run it with -vv, which logs
-- every command line it receives ("<fd get k1 k2"), read with :log().
-- opts.memory_mb: its -m (memcached's default: 64); opts.no_evict: -M (a
-- full memcached refuses a set instead of evicting). opts.dir: its directory
-- (memcached.log) instead of a scratch one.
function _M.memcached(opts)
    opts = opts or {}
    local self = setmetatable({ dir = opts.dir or _M.tmpdir(), host = opts.host or "127.0.0.1",
                                verbose = opts.verbose, memory_mb = opts.memory_mb,
                                no_evict = opts.no_evict },
                         Memcached)
    for _ = 1, 5 do
        self.port = opts.port or _M.free_port()
        local ok, err = self:start()
        if ok then
            return self
        end
        if opts.port or not err:find("in use", 1, true) then
            error("memcached did not start: " .. err)
        end
    end
    error("memcached: no free port after 5 tries")
end

local function process_alive(pid)
    return select(2, sh("kill -0 " .. pid)) == 0
        and not (read_file("/proc/" .. pid .. "/stat") or ""):find("^%d+ %S+ Z")
end
_M.process_alive = process_alive

function Memcached:start()
    local user = sh("id -u"):match("^0") and " -u nobody" or ""
    local out = sh("memcached -l " .. self.host .. " -p " .. self.port .. " -U 0" .. user
                   .. (self.verbose and " -vv" or "")
                   .. (self.memory_mb and " -m " .. self.memory_mb or "")
                   .. (self.no_evict and " -M" or "") .. " >" .. self.dir
                   .. "/memcached.log 2>&1 & echo $!")
    self.pid = assert(tonumber(out:match("(%d+)")), "memcached did not start: " .. out)
    wait_for(function()
        return port_in_use(self.port, self.host) or not process_alive(self.pid)
    end, 5, "memcached on " .. self.port)
    if not process_alive(self.pid) then
        self.pid = nil
        return nil, read_file(self.dir .. "/memcached.log")
    end
    return true
end

--- Sends raw protocol text, returns the reply. A "quit" after it makes
-- memcached close the connection once it has answered, so the reply is read
-- to its end without waiting for the line to go quiet.
function Memcached:cmd(text)
    local script = "exec 3<>/dev/tcp/" .. self.host .. "/" .. self.port
                   .. "; printf '%s' " .. quote(text .. "quit\r\n") .. " >&3; timeout 5 cat <&3"
    return (sh("bash -c " .. quote(script)))
end

-- As cmd, for text too long for one shell argument (128 KB): sent from a file.
function Memcached:cmd_file(text)
    local path = self.dir .. "/cmd.in"
    write_file(path, text .. "quit\r\n")
    local script = "exec 3<>/dev/tcp/" .. self.host .. "/" .. self.port
                   .. "; cat " .. quote(path) .. " >&3; timeout 5 cat <&3"
    return (sh("bash -c " .. quote(script)))
end

function Memcached:set(key, value, exptime)
    local text = "set " .. key .. " 0 " .. (exptime or 0) .. " " .. #value .. "\r\n" .. value
                 .. "\r\n"
    local reply = #text > 65536 and self:cmd_file(text) or self:cmd(text)
    assert(reply:find("^STORED"), "set " .. key .. ": " .. reply)
end

--- As set for every key -> value of a table, over one connection (one
-- shell and one bash instead of one each per key).
function Memcached:set_many(values, exptime)
    local text, n = {}, 0
    for key, value in pairs(values) do
        text[#text + 1] = "set " .. key .. " 0 " .. (exptime or 0) .. " " .. #value .. "\r\n"
                          .. value .. "\r\n"
        n = n + 1
    end
    text = table.concat(text)
    local reply = #text > 65536 and self:cmd_file(text) or self:cmd(text)
    local _, stored = reply:gsub("STORED\r\n", "")
    assert(stored == n and #reply == n * #"STORED\r\n", "set_many: " .. reply)
end

--- What memcached wrote to its log (every command line when verbose).
function Memcached:log()
    return read_file(self.dir .. "/memcached.log") or ""
end

function Memcached:get(key)
    local reply = self:cmd("get " .. key .. "\r\n")
    return reply:match("^VALUE %S+ %d+ %d+\r\n(.-)\r\nEND") or false
end

function Memcached:signal(sig)
    sh("kill -" .. sig .. " " .. self.pid)
end

-- KILL, not TERM: memcached acts on a TERM only at its next once-a-second
-- clock tick (0.5 s per stop on average), and it keeps nothing on disk that
-- a clean exit would save. KILL also ends a process stopped with STOP.
function Memcached:stop()
    if self.pid then
        sh("kill -KILL " .. self.pid)
        local pid = self.pid
        self.pid = nil
        wait_for(function() return not process_alive(pid) end, 5, "memcached to exit")
    end
end

--- Stops the server and removes its scratch directory (kept when the
-- environment variable GRAY_KEEP_TMP is set, to read the logs).
function Memcached:destroy()
    self:stop()
    if not os.getenv("GRAY_KEEP_TMP") then
        sh("rm -rf " .. quote(self.dir))
    end
end

-- fake memcached ----------------------------------------------------------

local FakeMemcached = {}
FakeMemcached.__index = FakeMemcached

-- option -> fake-mc flag (csrc/test/fake_mc.c documents the modes)
local FAKE_FLAGS = {
    host = "-H", port = "-p", interval = "-i", bytes = "-b", length = "-n",
    fill = "-f", keys = "-k", value = "-v", lifetime = "-t",
}

--- Starts build/fake-mc, a scriptable hostile memcached (built first if
-- needed): opts.mode ("trickle-line", "trickle-data", "drip", "big",
-- "valid"), opts.interval (ms), opts.bytes (per interval), opts.length (the
-- announced value length), opts.fill (the data byte), opts.keys (a list: the
-- keys "valid" answers), opts.value, opts.host ("127.0.0.1" or "::1"),
-- opts.port (default: one the kernel picks). Returns an object with .port,
-- :log(), :count(event), :stop() and :destroy().
function _M.fake_memcached(opts)
    local bin = REPO .. "/build/fake-mc"
    local out, code = sh("make -s -C " .. quote(REPO) .. " build/fake-mc")
    assert(code == 0, "building build/fake-mc failed: " .. out)
    local self = setmetatable({ dir = _M.tmpdir(), host = opts.host or "127.0.0.1",
                                mode = opts.mode }, FakeMemcached)
    local args = { bin, "-m", quote(opts.mode) }
    for name, flag in pairs(FAKE_FLAGS) do
        local v = opts[name]
        if type(v) == "table" then
            v = table.concat(v, ",")
        end
        if v ~= nil then
            args[#args + 1] = flag .. " " .. quote(v)
        end
    end
    self.logfile = self.dir .. "/fake-mc.log"
    out = sh(table.concat(args, " ") .. " >" .. self.logfile .. " 2>&1 & echo $!")
    self.pid = assert(tonumber(out:match("(%d+)")), "fake-mc did not start: " .. out)
    wait_for(function()
        return self:log():find("^ready ") or not process_alive(self.pid)
    end, 5, "fake-mc to listen")
    self.port = tonumber(self:log():match("^ready %S+ (%d+)"))
    if not self.port then
        self.pid = nil
        error("fake-mc did not start: " .. self:log())
    end
    return self
end

--- The event lines so far (ready, accept, get, sent, gone: see fake_mc.c).
function FakeMemcached:log()
    return read_file(self.logfile) or ""
end

--- How many events of a kind ("accept", "get", "sent", "gone") so far.
function FakeMemcached:count(kind)
    local n = 0
    for _ in ("\n" .. self:log()):gmatch("\n" .. kind .. " ") do
        n = n + 1
    end
    return n
end

--- Stops the server; its connection children die with it.
function FakeMemcached:stop()
    if self.pid then
        local pid = self.pid
        self.pid = nil
        sh("kill " .. pid)
        wait_for(function() return not process_alive(pid) end, 5, "fake-mc to exit")
    end
end

function FakeMemcached:destroy()
    self:stop()
    if not os.getenv("GRAY_KEEP_TMP") then
        sh("rm -rf " .. quote(self.dir))
    end
end

-- nginx -----------------------------------------------------------------

local Nginx = {}
Nginx.__index = Nginx

local function module_dir()
    for _, dir in ipairs({ "/usr/lib/nginx/modules", "/usr/share/nginx/modules" }) do
        if read_file(dir .. "/ngx_http_lua_module.so") then
            return dir
        end
    end
    error("Debian's nginx lua module (libnginx-mod-http-lua) is not installed")
end

--- Starts nginx with our lua paths and the given server blocks; "$PORT" in
-- them becomes a free port (self.port), "$PORT2" a second one (self.port2),
-- "$MC" the memcached port given as opts.memcached_port, "$REPO" the
-- repository, "$LOGDIR" nginx's scratch directory (self.dir). opts.http
-- adds http-level directives. opts.package_path and opts.package_cpath
-- replace the repository's lua paths (the rock check points them at an
-- installed tree). opts.dir: nginx's directory instead of a scratch one;
-- opts.port, opts.port2: the ports to take instead of free ones.
-- opts.foreground: one process, no master (daemon off, master_process off),
-- run in the background under opts.command (a prefix such as "taskset -c 0
-- valgrind --tool=callgrind"), its pid in self.process; opts.start_seconds
-- (5) and opts.stop_seconds (10) bound its start and stop (callgrind is slow).
function _M.nginx(opts)
    local last_err
    for _ = 1, 5 do
        local self, err = _M.try_nginx(opts)
        if self then
            return self
        end
        last_err = err
        if not err:find("Address already in use", 1, true) then
            break
        end
    end
    error(last_err)
end

function _M.try_nginx(opts)
    local self = setmetatable({ dir = opts.dir or _M.tmpdir(),
                                stop_seconds = opts.stop_seconds }, Nginx)
    self.port = opts.port or _M.free_port()
    repeat
        self.port2 = opts.port2 or _M.free_port()
    until self.port2 ~= self.port
    local mods = module_dir()
    local root = sh("id -u"):match("^0")
    local servers = opts.servers:gsub("%$PORT2", self.port2):gsub("%$PORT", self.port)
                                :gsub("%$MC", tostring(opts.memcached_port or 11211))
                                :gsub("%$REPO", REPO):gsub("%$LOGDIR", self.dir)
    local conf = table.concat({
        root and "user root root;" or "",
        "load_module " .. mods .. "/ndk_http_module.so;",
        "load_module " .. mods .. "/ngx_http_lua_module.so;",
        opts.foreground and "daemon off;" or "daemon on;",
        opts.foreground and "master_process off;" or "master_process on;",
        "worker_processes " .. (opts.workers or 1) .. ";",
        "pid " .. self.dir .. "/nginx.pid;",
        "error_log " .. self.dir .. "/error.log " .. (opts.log_level or "info") .. ";",
        "events { worker_connections 1024; }",
        "http {",
        "  access_log off;",
        "  client_body_temp_path " .. self.dir .. "/body;",
        "  proxy_temp_path " .. self.dir .. "/proxy;",
        "  fastcgi_temp_path " .. self.dir .. "/fastcgi;",
        "  uwsgi_temp_path " .. self.dir .. "/uwsgi;",
        "  scgi_temp_path " .. self.dir .. "/scgi;",
        "  lua_package_path '" .. (opts.package_path
                                     or REPO .. "/lua/?.lua;" .. REPO .. "/spec/?.lua;;") .. "';",
        "  lua_package_cpath '" .. (opts.package_cpath or REPO .. "/build/?.so;;") .. "';",
        opts.http or "",
        servers,
        "}",
    }, "\n")
    self.conf = self.dir .. "/nginx.conf"
    write_file(self.conf, conf)
    if opts.foreground then
        return self:start_foreground(opts, conf)
    end
    local out, code = sh("nginx -p " .. self.dir .. " -e " .. self.dir .. "/error.log -c "
                         .. self.conf)
    if code ~= 0 then
        return nil, "nginx did not start: " .. out .. "\n" .. conf
    end
    wait_for(function() return port_in_use(self.port) end, 5, "nginx on " .. self.port)
    return self
end

function Nginx:start_foreground(opts, conf)
    local out = sh((opts.command or "") .. " nginx -p " .. self.dir .. " -e " .. self.dir
                   .. "/error.log -c " .. self.conf .. " >" .. self.dir
                   .. "/stdout.log 2>&1 & echo $!")
    self.process = assert(tonumber(out:match("(%d+)")), "nginx did not start: " .. out)
    wait_for(function()
        return port_in_use(self.port) or not process_alive(self.process)
    end, opts.start_seconds or 5, "nginx on " .. self.port)
    if not process_alive(self.process) then
        return nil, "nginx did not start: " .. (read_file(self.dir .. "/stdout.log") or "")
                    .. self:error_log() .. "\n" .. conf
    end
    return self
end

function Nginx:pid()
    return tonumber((read_file(self.dir .. "/nginx.pid") or ""):match("%d+"))
end

function Nginx:error_log()
    return read_file(self.dir .. "/error.log") or ""
end

--- Reloads the configuration (HUP) and waits for the new workers.
function Nginx:reload()
    sh("nginx -p " .. self.dir .. " -e " .. self.dir .. "/error.log -c " .. self.conf
       .. " -s reload")
    sleep(0.5)
end

function Nginx:stop()
    local pid = self:pid()
    if pid then
        sh("nginx -p " .. self.dir .. " -e " .. self.dir .. "/error.log -c " .. self.conf
           .. " -s quit")
        wait_for(function() return not read_file(self.dir .. "/nginx.pid") end,
                 self.stop_seconds or 10, "nginx to stop")
    end
    if not os.getenv("GRAY_KEEP_TMP") then
        sh("rm -rf " .. quote(self.dir))
    end
end

--- GET (or opts.method) a path; returns { status = , body = , time = seconds }
-- (and headers = { lower-case name = value } with opts.response_headers).
-- opts.headers: a table (a value may be a list: several header lines);
-- opts.interface: the local address to connect from (127.0.0.2...);
-- opts.host / opts.port: where to connect (default 127.0.0.1:self.port);
-- opts.body: a request body.
function Nginx:request(path, opts)
    opts = opts or {}
    local args = { "curl -s -g --max-time " .. (opts.max_time or 10),
                   "-o " .. self.dir .. "/body.out",
                   "-w '%{http_code} %{time_total}'" }
    for name, value in pairs(opts.headers or {}) do
        local values = type(value) == "table" and value or { value }
        for _, v in ipairs(values) do
            args[#args + 1] = "-H " .. quote(name .. ": " .. v)
        end
    end
    if opts.interface then
        args[#args + 1] = "--interface " .. opts.interface
    end
    if opts.body then
        write_file(self.dir .. "/body.in", opts.body)
        args[#args + 1] = "--data-binary @" .. self.dir .. "/body.in"
    end
    if opts.method then
        args[#args + 1] = "-X " .. opts.method
    end
    local headers_file = opts.response_headers and self.dir .. "/headers.out"
    if headers_file then
        os.remove(headers_file)
        args[#args + 1] = "-D " .. headers_file
    end
    local host = opts.host or "127.0.0.1"
    if host:find(":", 1, true) then
        host = "[" .. host .. "]"
    end
    args[#args + 1] = quote("http://" .. host .. ":" .. (opts.port or self.port) .. path)
    local out = sh(table.concat(args, " "))
    local status, time = out:match("(%d+) ([%d%.]+)%s*$")
    local headers
    if headers_file then
        headers = {}
        for line in (read_file(headers_file) or ""):gmatch("[^\r\n]+") do
            local name, value = line:match("^([%w%-]+):[ \t]*(.*)$")
            if name then
                headers[name:lower()] = value
            end
        end
    end
    return {
        headers = headers,
        status = tonumber(status),
        time = tonumber(time),
        body = read_file(self.dir .. "/body.out") or "",
        raw = out,
    }
end

function Nginx:get(path, opts)
    return self:request(path, opts)
end

--- Runs Lua code inside an nginx worker through the /eval location that
-- harness.EVAL_LOCATION defines (in the server on port, default self.port),
-- with extra request headers if given; returns what the code printed with
-- ngx.say, or what it returned.
function Nginx:eval(code, port, headers)
    local res = self:request("/eval", { method = "POST", body = code, port = port,
                                        headers = headers })
    assert(res.status == 200, "eval failed (" .. tostring(res.status) .. "): " .. res.body
                              .. "\n" .. self:error_log():sub(-2000))
    return res.body
end

-- A location that runs posted Lua code in the worker, for specs of modules
-- that need the nginx API (cosockets, ngx.var...). Test servers only.
_M.EVAL_LOCATION = [[
    location = /eval {
        client_body_buffer_size 1m;
        client_max_body_size 1m;
        content_by_lua_block {
            ngx.req.read_body()
            local f, err = loadstring(ngx.req.get_body_data() or "", "=eval")
            if not f then
                ngx.status = 500
                ngx.say(err)
                return
            end
            local ok, res = pcall(f)
            if not ok then
                ngx.status = 500
                ngx.say(res)
            elseif res ~= nil then
                ngx.say(res)
            end
        }
    }
]]

--- n GET requests of path on one keepalive connection, in one curl, with
-- the given request headers (a list of "Name: value"); returns the answers
-- as "<count> <status>" lines folded into one ("300 200").
function Nginx:batch(path, n, headers)
    local cfg = self.dir .. "/batch.cfg"
    local f = assert(io.open(cfg, "wb"))
    for _ = 1, n do
        f:write('url = "http://127.0.0.1:', self.port, path, '"\noutput = "/dev/null"\n')
    end
    f:close()
    local args = {}
    for _, h in ipairs(headers or {}) do
        args[#args + 1] = "-H " .. quote(h)
    end
    local out = sh("curl -s " .. table.concat(args, " ") .. " --config " .. cfg
                   .. " -w '%{http_code}\\n' | sort | uniq -c")
    return (out:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
end

--- GET requests one after the other on one keepalive connection, in one
-- curl (a process per request costs ~25 ms): reqs is a list of { path,
-- headers = { name = value } } (printable values only); returns a list of
-- { status = , time = seconds, body = }, in order.
function Nginx:sequence(reqs)
    local cfg, blocks = self.dir .. "/sequence.cfg", {}
    for i, r in ipairs(reqs) do
        local b = { 'url = "http://127.0.0.1:' .. self.port .. r[1] .. '"',
                    'output = "' .. self.dir .. "/sequence." .. i .. '.out"',
                    'write-out = "%{http_code} %{time_total}\\n"', "globoff", "max-time = 10" }
        for name, value in pairs(r.headers or {}) do
            assert(not (name .. value):find("[%c\"\\]"), "not printable: " .. name .. value)
            b[#b + 1] = 'header = "' .. name .. ": " .. value .. '"'
        end
        blocks[i] = table.concat(b, "\n")
    end
    write_file(cfg, table.concat(blocks, "\nnext\n") .. "\n")
    local out = sh("curl -s --config " .. cfg)
    local res = {}
    for status, time in out:gmatch("(%d+) ([%d.]+)\n") do
        local i = #res + 1
        local path = self.dir .. "/sequence." .. i .. ".out"
        res[i] = { status = tonumber(status), time = tonumber(time),
                   body = read_file(path) or "" }
        os.remove(path)
    end
    assert(#res == #reqs, "curl answered " .. #res .. " of " .. #reqs .. ": " .. out)
    return res
end

--- The first fmt:format(i), i = 1, 2, ..., that pred accepts (test values
-- picked for a property, e.g. a percentage bucket).
function _M.pick(fmt, pred)
    for i = 1, 65535 do
        local v = fmt:format(i)
        if pred(v) then
            return v
        end
    end
    error("no value of " .. fmt .. " fits")
end

--- error.log lines that must never appear: a Lua global written, alerts,
-- critical errors, emergencies, crashes.
function _M.bad_log_lines(text)
    local bad = {}
    for line in text:gmatch("[^\n]+") do
        if line:find("global variable", 1, true) or line:find("%[alert%]")
           or line:find("%[crit%]") or line:find("%[emerg%]")
           or line:find("exited on signal", 1, true) then
            bad[#bad + 1] = line
        end
    end
    return bad
end

return _M
