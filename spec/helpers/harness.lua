-- The integration harness shared by every spec that needs real servers: it
-- starts memcached and nginx (Debian's binaries, Debian's lua module) on free
-- loopback ports in a scratch directory, talks to them (HTTP/1.1 and
-- memcached's text protocol over its own sockets: no process per request),
-- and stops them.
--
--   local harness = require "helpers.harness"
--   local mc = harness.memcached()                 -- mc.port, mc:cmd(...), mc:stop()
--   local ngx = harness.nginx({ servers = [[ server { listen $PORT; ... } ]] })
--   local res = ngx:get("/", { headers = { ["X-Real-IP"] = "1.2.3.4" } })
--   ngx:stop(); mc:destroy()         -- scratch dirs go unless GRAY_KEEP_TMP is set
--   local fake = harness.fake_memcached({ mode = "drip" })  -- a hostile one: fake.port,
--                                                   -- fake:count("accept"), fake:destroy()
--   local http = ngx:client()                       -- keep-alive: http:request(path, opts)
--   after_each(function()                           -- per test, as Test::Nginx's
--       assert.same({}, ngx:bad_new_log_lines())    -- no_error_log
--   end)

local _M = {}

-- libc through FFI -------------------------------------------------------
--
-- Sockets, sleeping, the clock and kill(pid, 0) without a process each (a
-- shell, curl or bash per call costs ~25 ms; these cost microseconds). The
-- names are the harness's own (__asm__ points them at libc), so no cdef of
-- a spec or of lua/gray/ffi.lua can clash with them.

local ffi = require "ffi"
local bit = require "bit"
local C = ffi.C

if not pcall(ffi.typeof, "gray_harness_pollfd_t") then
    ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } gray_harness_timespec_t;
typedef struct { int fd; short events; short revents; } gray_harness_pollfd_t;
typedef struct { uint16_t family; uint16_t port; uint8_t addr[4]; uint8_t zero[8]; }
    gray_harness_sin_t;
typedef struct { uint16_t family; uint16_t port; uint32_t flowinfo; uint8_t addr[16];
                 uint32_t scope_id; } gray_harness_sin6_t;
int gray_harness_socket(int domain, int type, int protocol) __asm__("socket");
int gray_harness_bind(int fd, const void *addr, uint32_t len) __asm__("bind");
int gray_harness_connect(int fd, const void *addr, uint32_t len) __asm__("connect");
int gray_harness_getsockname(int fd, void *addr, uint32_t *len) __asm__("getsockname");
int gray_harness_getsockopt(int fd, int level, int name, void *val, uint32_t *len)
    __asm__("getsockopt");
int gray_harness_setsockopt(int fd, int level, int name, const void *val, uint32_t len)
    __asm__("setsockopt");
long gray_harness_send(int fd, const void *buf, size_t len, int flags) __asm__("send");
long gray_harness_recv(int fd, void *buf, size_t len, int flags) __asm__("recv");
int gray_harness_close(int fd) __asm__("close");
int gray_harness_poll(gray_harness_pollfd_t *fds, unsigned long n, int timeout) __asm__("poll");
int gray_harness_inet_pton(int af, const char *src, void *dst) __asm__("inet_pton");
int gray_harness_clock_gettime(int clock, gray_harness_timespec_t *ts)
    __asm__("clock_gettime");
int gray_harness_nanosleep(const gray_harness_timespec_t *req, gray_harness_timespec_t *rem)
    __asm__("nanosleep");
int gray_harness_kill(int pid, int sig) __asm__("kill");
unsigned int gray_harness_getuid(void) __asm__("getuid");
char *gray_harness_mkdtemp(char *template) __asm__("mkdtemp");
char *gray_harness_strerror(int errnum) __asm__("strerror");
]]
end

-- Linux's values (the same on x86-64 and arm64)
local AF_INET, AF_INET6, SOCK_STREAM = 2, 10, 1
local SOCK_NONBLOCK, SOCK_CLOEXEC = 0x800, 0x80000
local SOL_SOCKET, SO_ERROR, IPPROTO_TCP, TCP_NODELAY = 1, 4, 6, 1
local POLLIN, POLLOUT = 1, 4
local EINTR, EAGAIN, EINPROGRESS = 4, 11, 115
local MSG_NOSIGNAL = 0x4000
local CLOCK_MONOTONIC = 1
local SIGNALS = { HUP = 1, QUIT = 3, KILL = 9, TERM = 15, CONT = 18, STOP = 19 }  -- Linux
local SIGHUP, SIGQUIT = SIGNALS.HUP, SIGNALS.QUIT

local ts = ffi.new("gray_harness_timespec_t")
local pfd = ffi.new("gray_harness_pollfd_t[1]")
local int1 = ffi.new("int[1]")
local len1 = ffi.new("uint32_t[1]")
local RECV_SIZE = 65536
local recv_buf = ffi.new("uint8_t[?]", RECV_SIZE)

--- Seconds on the monotonic clock (to the nanosecond): for timing, not dates.
local function now()
    C.gray_harness_clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
_M.now = now

local function errstr(what)
    local e = ffi.errno()
    return what .. ": " .. ffi.string(C.gray_harness_strerror(e)), e
end

local function sleep(seconds)
    local s = tonumber(seconds)
    if s <= 0 then
        return
    end
    ts.tv_sec = math.floor(s)
    ts.tv_nsec = (s - math.floor(s)) * 1e9
    C.gray_harness_nanosleep(ts, nil)      -- an EINTR ends it early: callers loop anyway
end
_M.sleep = sleep

-- Waits until fd can be read (POLLIN) or written (POLLOUT), or the deadline
-- (now() seconds) passes: true, or nil and "timeout".
local function wait_fd(fd, events, deadline)
    while true do
        local ms = math.ceil((deadline - now()) * 1000)
        if ms <= 0 then
            return nil, "timeout"
        end
        pfd[0].fd, pfd[0].events, pfd[0].revents = fd, events, 0
        local n = C.gray_harness_poll(pfd, 1, ms)
        if n > 0 then
            return true
        elseif n < 0 and ffi.errno() ~= EINTR then
            return nil, errstr("poll")
        end
    end
end

-- A sockaddr for a numeric IPv4 or IPv6 address and a port; nil, err.
local function sockaddr(host, port)
    local sa, af
    if host:find(":", 1, true) then
        af, sa = AF_INET6, ffi.new("gray_harness_sin6_t")
    else
        af, sa = AF_INET, ffi.new("gray_harness_sin_t")
    end
    if C.gray_harness_inet_pton(af, host, sa.addr) ~= 1 then
        return nil, "not a numeric address: " .. host
    end
    sa.family = af
    sa.port = bit.rshift(bit.bswap(port), 16)          -- network byte order
    return sa, af
end

--- A non-blocking TCP connection to host:port (numeric addresses), made
-- within the deadline (now() seconds), from the local address from (an
-- address to bind, e.g. "127.0.0.2") if given: the fd, or nil and an error.
local function tcp_connect(host, port, deadline, from)
    local sa, af = sockaddr(host, port)
    if not sa then
        return nil, af
    end
    local fd = C.gray_harness_socket(af, bit.bor(SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC), 0)
    if fd < 0 then
        return nil, errstr("socket")
    end
    local function fail(err)
        C.gray_harness_close(fd)
        return nil, err
    end
    if from then
        local local_sa, err = sockaddr(from, 0)
        if not local_sa then
            return fail(err)
        end
        if C.gray_harness_bind(fd, local_sa, ffi.sizeof(local_sa)) ~= 0 then
            return fail(errstr("bind " .. from))
        end
    end
    int1[0] = 1
    C.gray_harness_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, int1, 4)
    if C.gray_harness_connect(fd, sa, ffi.sizeof(sa)) ~= 0 then
        if ffi.errno() ~= EINPROGRESS then
            return fail(errstr("connect " .. host .. ":" .. port))
        end
        local ok, err = wait_fd(fd, POLLOUT, deadline)
        if not ok then
            return fail("connect " .. host .. ":" .. port .. ": " .. err)
        end
        len1[0] = 4
        C.gray_harness_getsockopt(fd, SOL_SOCKET, SO_ERROR, int1, len1)
        if int1[0] ~= 0 then
            ffi.errno(int1[0])
            return fail(errstr("connect " .. host .. ":" .. port))
        end
    end
    return fd
end

-- Sends all of s before the deadline: true, or nil and an error.
local function send_all(fd, s, deadline)
    local p, left = ffi.cast("const uint8_t *", s), #s
    while left > 0 do
        local n = tonumber(C.gray_harness_send(fd, p, left, MSG_NOSIGNAL))
        if n > 0 then
            p, left = p + n, left - n
        elseif n < 0 and ffi.errno() == EAGAIN then
            local ok, err = wait_fd(fd, POLLOUT, deadline)
            if not ok then
                return nil, "send: " .. err
            end
        elseif not (n < 0 and ffi.errno() == EINTR) then
            return nil, errstr("send")
        end
    end
    return true
end

-- What arrives next, before the deadline: a string ("" when the peer has
-- closed), or nil and an error ("timeout").
local function recv_some(fd, deadline)
    while true do
        local n = tonumber(C.gray_harness_recv(fd, recv_buf, RECV_SIZE, 0))
        if n >= 0 then
            return ffi.string(recv_buf, n)
        end
        local e = ffi.errno()
        if e == EAGAIN then
            local ok, err = wait_fd(fd, POLLIN, deadline)
            if not ok then
                return nil, err
            end
        elseif e ~= EINTR then
            return nil, errstr("recv")
        end
    end
end

local function tcp_close(fd)
    C.gray_harness_close(fd)
end

--- A TCP connection for a spec's own protocol talk: returns an object with
-- :send(s), :receive() (what arrives next; "" at the end), :receive_all()
-- (to the peer's close) and :close(); each wait ends at one deadline,
-- now() + (seconds or 5) from the connect. nil, err when it cannot connect.
local Tcp = {}
Tcp.__index = Tcp

function _M.tcp(host, port, seconds, from)
    local deadline = now() + (seconds or 5)
    local fd, err = tcp_connect(host, port, deadline, from)
    if not fd then
        return nil, err
    end
    return setmetatable({ fd = fd, deadline = deadline }, Tcp)
end

function Tcp:send(s)
    return send_all(self.fd, s, self.deadline)
end

function Tcp:receive()
    return recv_some(self.fd, self.deadline)
end

function Tcp:receive_all()
    local parts = {}
    while true do
        local s, err = recv_some(self.fd, self.deadline)
        if not s then
            return table.concat(parts), err
        end
        if s == "" then
            return table.concat(parts)
        end
        parts[#parts + 1] = s
    end
end

function Tcp:close()
    if self.fd then
        tcp_close(self.fd)
        self.fd = nil
    end
end

local function port_in_use(port, host)
    local fd = tcp_connect(host or "127.0.0.1", port, now() + 1)
    if fd then
        tcp_close(fd)
        return true
    end
    return false
end
_M.port_in_use = port_in_use

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

-- The sockets that hold refused_port()'s ports, for this process's life.
local refusing = {}

--- A loopback port that refuses connections while this process lives: a
-- socket bound to it that never listens, so no server can take it (an
-- unused free_port(), a spec's "down" server, can be taken meanwhile by
-- another lane's server, which answers in its own protocol). The kernel
-- picks the port from the ephemeral range, apart from free_port()'s.
function _M.refused_port()
    local sa = sockaddr("127.0.0.1", 0)
    local fd = C.gray_harness_socket(AF_INET, bit.bor(SOCK_STREAM, SOCK_CLOEXEC), 0)
    if fd < 0 then
        error(errstr("socket"))
    end
    len1[0] = ffi.sizeof(sa)
    if C.gray_harness_bind(fd, sa, ffi.sizeof(sa)) ~= 0
       or C.gray_harness_getsockname(fd, sa, len1) ~= 0 then
        local err = errstr("bind")
        C.gray_harness_close(fd)
        error(err)
    end
    refusing[#refusing + 1] = fd
    return bit.rshift(bit.bswap(sa.port), 16)
end

local function wait_for(pred, seconds, what)
    local deadline = now() + seconds
    repeat
        if pred() then
            return true
        end
        sleep(0.005)        -- servers start and stop in a few ms
    until now() > deadline
    error("timed out waiting for " .. what)
end
_M.wait_for = wait_for

function _M.tmpdir()
    local template = ffi.new("char[?]", 32, "/tmp/gray-spec.XXXXXX")
    assert(C.gray_harness_mkdtemp(template) ~= nil, errstr("mkdtemp"))
    return ffi.string(template)
end

local IS_ROOT = C.gray_harness_getuid() == 0


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

-- Alive until its last thread has exited. A killed process's main thread
-- can show Z while other threads have yet to run their exit (each takes
-- the SIGKILL when next scheduled: milliseconds on a loaded machine) and
-- still hold the process's files: memcached's listening socket, which a
-- restart on its port then cannot bind ("Address already in use"; the port
-- was still held after 3 stops in 300 under taskset -c 0). Z counts as gone
-- only with one thread left.
local function process_alive(pid)
    if C.gray_harness_kill(pid, 0) ~= 0 then
        return false
    end
    local status = read_file("/proc/" .. pid .. "/status")
    if not status then
        return false
    end
    if not status:find("\nState:%s*Z") then
        return true
    end
    return (tonumber(status:match("\nThreads:%s*(%d+)")) or 1) > 1
end
_M.process_alive = process_alive

function Memcached:start()
    local user = IS_ROOT and " -u nobody" or ""
    local out = sh("memcached -l " .. self.host .. " -p " .. self.port .. " -U 0" .. user
                   .. (self.verbose and " -vv" or "")
                   .. (self.memory_mb and " -m " .. self.memory_mb or "")
                   .. (self.no_evict and " -M" or "") .. " >" .. self.dir
                   .. "/memcached.log 2>&1 & echo $!")
    self.pid = assert(tonumber(out:match("(%d+)")), "memcached did not start: " .. out)
    -- ready when it answers, not when a connect succeeds: a memcached
    -- restarted on its port was seen refusing connections right after a
    -- probe had connected (under heavy load)
    wait_for(function()
        if not process_alive(self.pid) then
            return true
        end
        local conn = _M.tcp(self.host, self.port, 1)
        if not conn then
            return false
        end
        conn:send("version\r\n")
        local reply = conn:receive()
        conn:close()
        return reply ~= nil and reply:find("^VERSION ") ~= nil
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
-- Every wait within one deadline, `seconds` (default 5) from the connect: a
-- caller that moves megabytes gives more (a 200,000-key read back was cut at
-- 5 s on a machine at load 20).
-- A connection reset before any reply (seen once, under heavy load, on the
-- first command to a memcached just restarted) is tried once more: nothing
-- was answered, so nothing was done.
function Memcached:cmd(text, seconds)
    local reply, err
    for _ = 1, 2 do
        local conn
        conn, err = _M.tcp(self.host, self.port, seconds or 5)
        if not conn then
            return "harness: " .. err
        end
        local _, serr = conn:send(text .. "quit\r\n")
        local rerr
        reply, rerr = conn:receive_all()
        conn:close()
        err = serr or rerr
        if not (err and reply == "" and err:find("reset", 1, true)) then
            break
        end
    end
    return reply .. (err and "\nharness: " .. err or "")
end

-- The same as cmd (it was for text too long for one shell argument).
Memcached.cmd_file = Memcached.cmd

function Memcached:set(key, value, exptime)
    local text = "set " .. key .. " 0 " .. (exptime or 0) .. " " .. #value .. "\r\n" .. value
                 .. "\r\n"
    local reply = self:cmd(text)
    assert(reply:find("^STORED"), "set " .. key .. ": " .. reply)
end

--- As set for every key -> value of a table, over one connection.
function Memcached:set_many(values, exptime)
    local text, n = {}, 0
    for key, value in pairs(values) do
        text[#text + 1] = "set " .. key .. " 0 " .. (exptime or 0) .. " " .. #value .. "\r\n"
                          .. value .. "\r\n"
        n = n + 1
    end
    local reply = self:cmd(table.concat(text))
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

--- Sends a signal ("STOP", "CONT", ...) through kill(): no process started.
-- A STOP returns once every thread of memcached is stopped: kill() only
-- makes the signal pending, the stop begins when one thread takes it, and
-- until then the others run on (on a busy machine a worker thread answered
-- a get after kill() had returned, and a "hung" server said END).
function Memcached:signal(sig)
    assert(C.gray_harness_kill(self.pid, (assert(SIGNALS[sig], sig))) == 0, errstr("kill"))
    if sig == "STOP" then
        local tids = sh("ls /proc/" .. self.pid .. "/task")
        wait_for(function()
            for tid in tids:gmatch("%d+") do
                local stat = read_file(("/proc/%d/task/%s/stat"):format(self.pid, tid))
                if stat and not stat:find("^%d+ %(.*%) [Tt] ") then
                    return false
                end
            end
            return true
        end, 10, "memcached " .. self.pid .. " to stop")
    end
end

-- KILL, not TERM: memcached acts on a TERM only at its next once-a-second
-- clock tick (0.5 s per stop on average), and it keeps nothing on disk that
-- a clean exit would save. KILL also ends a process stopped with STOP.
function Memcached:stop()
    if self.pid then
        C.gray_harness_kill(self.pid, SIGNALS.KILL)
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
        C.gray_harness_kill(pid, SIGNALS.TERM)
        wait_for(function() return not process_alive(pid) end, 5, "fake-mc to exit")
    end
end

function FakeMemcached:destroy()
    self:stop()
    if not os.getenv("GRAY_KEEP_TMP") then
        sh("rm -rf " .. quote(self.dir))
    end
end

--- Starts a fake memcached for each entry of fakes: name -> options (or a
-- list of { name, options }), names in upper case (letters, digits, _);
-- returns name -> server. (A name is written $NAME in server blocks and in
-- eval_fake's code.)
function _M.fake_memcacheds(fakes)
    local servers = {}
    local ok, err = pcall(function()
        for key, value in pairs(fakes) do
            local name, opts = key, value
            if type(key) == "number" then
                name, opts = value[1], value[2]
            end
            servers[name] = _M.fake_memcached(opts)
        end
    end)
    if not ok then
        for _, server in pairs(servers) do
            server:destroy()
        end
        error(err, 0)
    end
    return servers
end

--- text with each $NAME of a server in fakes (name -> server) replaced by
-- its port; other $WORDS stay.
function _M.fake_ports(text, fakes)
    return (text:gsub("%$([%u%d_]+)%f[^%w_]", function(name)
        return fakes[name] and tostring(fakes[name].port)
    end))
end

-- What eval_fake's code can use.
local EVAL_PRELUDE = table.concat({
    "local memcached = require 'gray.memcached'",
    "local gray = require 'gray'",
    "local function clock() ngx.update_time() return ngx.now() end",
    "local function heap() collectgarbage('collect') collectgarbage('collect')"
        .. " return collectgarbage('count') * 1024 end",
    "local function ip(i) return '10.' .. math.floor(i / 65536) % 256 .. '.'"
        .. " .. math.floor(i / 256) % 256 .. '.' .. i % 256 end",
    "",
}, "\n")

--- Runs code in a worker of nginx (Nginx:eval, harness.EVAL_LOCATION) with
-- $NAME the port of the fake server NAME of fakes, and with `memcached`
-- (gray.memcached) and `gray` required, clock() (ngx.now, updated), heap()
-- (the Lua heap's bytes after a full collection) and ip(i) (a distinct
-- 10.x.y.z for each i); returns what it printed or returned, without the
-- last newline.
function _M.eval_fake(nginx, fakes, code)
    return (nginx:eval(EVAL_PRELUDE .. _M.fake_ports(code, fakes)):gsub("\n$", ""))
end

--- fake_memcacheds(fakes), then an nginx of `servers` with their ports
-- ($NAME, fake_ports); returns the nginx and the fakes. Stop both with
-- stop_with_fakes.
function _M.nginx_with_fakes(fakes, servers, opts)
    local fake = _M.fake_memcacheds(fakes)
    local ok, nginx = pcall(_M.nginx, setmetatable({ servers = _M.fake_ports(servers, fake) },
                                                  { __index = opts }))
    if not ok then
        for _, f in pairs(fake) do
            f:destroy()
        end
        error(nginx, 0)
    end
    return nginx, fake
end

--- Stops what nginx_with_fakes started: the fake servers first, so that a
-- worker still reading from one is freed.
function _M.stop_with_fakes(nginx, fake)
    for _, f in pairs(fake or {}) do
        f:destroy()
    end
    if nginx then nginx:stop() end
end

-- HTTP/1.1 client -----------------------------------------------------------
--
-- A small blocking client over the sockets above, so that a spec sends many
-- requests without starting a process each. It sends what it is given
-- (curl's defaults otherwise: Host, User-Agent, Accept) and reads framed
-- answers (Content-Length, chunked, or to the close).

local function request_text(host, port, path, opts)
    local method = opts.method or (opts.body and "POST" or "GET")
    local lines, given = { method .. " " .. path .. " HTTP/1.1" }, {}
    for name, value in pairs(opts.headers or {}) do
        given[name:lower()] = true
        for _, v in ipairs(type(value) == "table" and value or { value }) do
            v = tostring(v)
            if v:find("%S") then        -- as curl: a blank value sends no header
                lines[#lines + 1] = name .. ": " .. v
            end
        end
    end
    if not given.host then
        lines[#lines + 1] = "Host: " .. (host:find(":", 1, true) and "[" .. host .. "]" or host)
                            .. ":" .. port
    end
    if not given["user-agent"] then
        lines[#lines + 1] = "User-Agent: gray-spec-harness"
    end
    if not given.accept then
        lines[#lines + 1] = "Accept: */*"
    end
    if opts.body then
        if not given["content-type"] then
            lines[#lines + 1] = "Content-Type: application/x-www-form-urlencoded"
        end
        lines[#lines + 1] = "Content-Length: " .. #opts.body
    end
    lines[#lines + 1] = "\r\n"
    return table.concat(lines, "\r\n") .. (opts.body or ""), method
end

-- Reads one answer from conn ({ fd =, buf = bytes read ahead }) before the
-- deadline: status, headers (lower-case name -> the last value), body,
-- whether the connection can carry another request; or nil, an error and
-- whether any byte of an answer came.
local function read_response(conn, deadline, method)
    local buf, pos = conn.buf or "", 1
    local got = #buf > 0
    conn.buf = nil
    local function fill()
        local s, err = recv_some(conn.fd, deadline)
        if not s then
            return nil, err
        end
        if s == "" then
            return nil, "closed"
        end
        got = true
        buf = buf:sub(pos) .. s
        pos = 1
        return true
    end
    local function until_crlf(sep)
        while true do
            local s, e = buf:find(sep, pos, true)
            if s then
                local text = buf:sub(pos, s - 1)
                pos = e + 1
                return text
            end
            local ok, err = fill()
            if not ok then
                return nil, err
            end
        end
    end
    local function take(n)
        while #buf - pos + 1 < n do
            local ok, err = fill()
            if not ok then
                return nil, err
            end
        end
        local text = buf:sub(pos, pos + n - 1)
        pos = pos + n
        return text
    end

    local status, version, headers, head
    repeat                                      -- past any 1xx interim answer
        local err
        head, err = until_crlf("\r\n\r\n")
        if not head then
            return nil, err, got
        end
        version, status = head:match("^HTTP/(%d%.%d) (%d%d%d)")
        if not status then
            return nil, "not an HTTP answer: " .. head:sub(1, 200), true
        end
        status = tonumber(status)
    until status >= 200 or status == 101
    headers = {}
    for name, value in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
        headers[name:lower()] = value
    end
    local keepalive = version == "1.1" and not (headers.connection or ""):lower():find("close")
    local body, err
    if method == "HEAD" or status == 204 or status == 304 or status < 200 then
        body = ""
    elseif (headers["transfer-encoding"] or ""):lower():find("chunked") then
        local parts = {}
        while true do
            local line
            line, err = until_crlf("\r\n")
            local size = line and tonumber(line:match("^%x+"), 16)
            if not size then
                return nil, err or "bad chunk size: " .. line, true
            end
            if size == 0 then
                repeat                          -- trailers, to the empty line
                    line, err = until_crlf("\r\n")
                    if not line then
                        return nil, err, true
                    end
                until line == ""
                break
            end
            parts[#parts + 1], err = take(size)
            if not parts[#parts] or not take(2) then
                return nil, err or "closed", true
            end
        end
        body = table.concat(parts)
    elseif headers["content-length"] then
        body, err = take(tonumber(headers["content-length"]))
        if not body then
            return nil, err, true
        end
    else                                        -- to the close
        local parts = { buf:sub(pos) }
        while true do
            local s
            s, err = recv_some(conn.fd, deadline)
            if not s then
                return nil, err, true
            end
            if s == "" then
                break
            end
            parts[#parts + 1] = s
        end
        body, pos, buf, keepalive = table.concat(parts), 1, "", false
    end
    if pos <= #buf then
        conn.buf = buf:sub(pos)
    end
    return status, headers, body, keepalive
end

local Http = {}
Http.__index = Http

--- An HTTP/1.1 client of opts.host (default 127.0.0.1; "::1" for IPv6)
-- port opts.port over one keep-alive connection, made again when the
-- server closes it; opts.interface: the local address to connect from
-- (127.0.0.2...). :request(path, opts) sends one request; :close().
function _M.http_client(opts)
    return setmetatable({ host = opts.host or "127.0.0.1", port = assert(opts.port, "port"),
                          interface = opts.interface }, Http)
end

function Http:close()
    if self.conn then
        tcp_close(self.conn.fd)
        self.conn = nil
    end
end

--- GET (or opts.method; POST when opts.body is given) path; returns
-- { status = , body = , headers = { lower-case name = value }, time =
-- seconds }; status 0 and err = "..." when no answer came within
-- opts.max_time seconds (default 10), as curl's 000. opts.headers: name ->
-- value (a list: several lines; a blank value sends no header, as curl);
-- opts.body: the request body.
function Http:request(path, opts)
    opts = opts or {}
    local t0 = now()
    local deadline = t0 + (opts.max_time or 10)
    local text, method = request_text(self.host, self.port, path, opts)
    for attempt = 1, 2 do
        local reused = self.conn ~= nil
        if not self.conn then
            local fd, err = tcp_connect(self.host, self.port, deadline, self.interface)
            if not fd then
                return { status = 0, body = "", headers = {}, time = now() - t0, err = err }
            end
            self.conn = { fd = fd }
        end
        local ok, err = send_all(self.conn.fd, text, deadline)
        local status, headers, body, keepalive, got
        if ok then
            status, headers, body, keepalive = read_response(self.conn, deadline, method)
            if not status then
                err, got = headers, body
            end
        end
        if status then
            if not keepalive then
                self:close()
            end
            return { status = status, headers = headers, body = body, time = now() - t0 }
        end
        self:close()
        -- a kept connection the server closed meanwhile: the request never
        -- reached it, so it goes once more on a new one
        if not (reused and not got and err ~= "timeout" and attempt == 1) then
            return { status = 0, body = "", headers = {}, time = now() - t0, err = err }
        end
    end
end

-- nginx -----------------------------------------------------------------

local Nginx = {}
Nginx.__index = Nginx

-- the nginx servers started and not yet stopped, for no_error_log
local running = setmetatable({}, { __mode = "k" })

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
    local self = setmetatable({ dir = opts.dir or _M.tmpdir(), workers = opts.workers or 1,
                                stop_seconds = opts.stop_seconds }, Nginx)
    self.port = opts.port or _M.free_port()
    repeat
        self.port2 = opts.port2 or _M.free_port()
    until self.port2 ~= self.port
    local mods = module_dir()
    local root = IS_ROOT
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
    running[self] = true
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
    running[self] = true
    return self
end

function Nginx:pid()
    return tonumber((read_file(self.dir .. "/nginx.pid") or ""):match("%d+"))
end

function Nginx:error_log()
    return read_file(self.dir .. "/error.log") or ""
end

--- Marks the end of the error log so far: new_log_lines() starts there.
function Nginx:log_mark()
    self.log_offset = #self:error_log()
end

--- The error log written since the last log_mark() or new_log_lines()
-- (since the start, the first time), and marks its end.
function Nginx:new_log_lines()
    local log = self:error_log()
    local from = self.log_offset or 0
    if #log < from then             -- the log started again
        from = 0
    end
    self.log_offset = #log
    return log:sub(from + 1)
end

--- The bad lines (harness.bad_log_lines) among new_log_lines(): for an
-- after_each, so that each test is checked for its own lines, whatever
-- the order (Test::Nginx's no_error_log):
--   after_each(function() assert.same({}, nginx:bad_new_log_lines()) end)
-- A test that expects such a line reads it with new_log_lines() itself.
function Nginx:bad_new_log_lines()
    return _M.bad_log_lines(self:new_log_lines())
end

--- Test::Nginx's no_error_log for every spec: fails (naming the server
-- and the lines) when any nginx still running wrote a bad line
-- (harness.bad_log_lines) since the last look; each test is checked for its
-- own lines, whatever the order. In each describe that starts nginx:
--   after_each(harness.no_error_log)
-- A test that expects such a line reads it with nginx:new_log_lines().
-- A server started and stopped inside one test is that test's to check.
function _M.no_error_log()
    local found = {}
    for nginx in pairs(running) do
        for _, line in ipairs(nginx:bad_new_log_lines()) do
            found[#found + 1] = "nginx on " .. nginx.port .. ": " .. line
        end
    end
    if #found > 0 then
        table.sort(found)
        error("error.log: " .. #found .. " bad line(s) from this test:\n"
              .. table.concat(found, "\n"), 2)
    end
end

--- The master's child processes (its workers; over a reload, the old ones
-- too until they exit), from /proc: no process started.
function Nginx:worker_pids()
    local pid = self:pid()
    local pids = {}
    for w in (pid and read_file(("/proc/%d/task/%d/children"):format(pid, pid)) or "")
             :gmatch("%d+") do
        pids[#pids + 1] = tonumber(w)
    end
    return pids
end

--- Reloads the configuration (HUP) and waits (5 s at most) until the
-- master has started as many new workers as the configuration has; the
-- old ones may still be finishing their requests.
function Nginx:reload()
    local old = {}
    for _, w in ipairs(self:worker_pids()) do
        old[w] = true
    end
    assert(C.gray_harness_kill(assert(self:pid(), "nginx is not running"), SIGHUP) == 0,
           errstr("kill"))
    wait_for(function()
        local new = 0
        for _, w in ipairs(self:worker_pids()) do
            new = new + (old[w] and 0 or 1)
        end
        return new >= self.workers
    end, 5, "nginx's new workers after a reload")
end

function Nginx:stop()
    running[self] = nil
    local pid = self:pid()
    if pid then
        C.gray_harness_kill(pid, SIGQUIT)       -- as nginx -s quit, without a process
        -- a foreground nginx (no master) under valgrind can take the signal
        -- just before it sleeps in epoll_wait with no timer to wake it (the
        -- bench's plain row): sent again each second
        local again = now() + 1
        wait_for(function()
            if self.process and now() > again then
                C.gray_harness_kill(pid, SIGQUIT)
                again = now() + 1
            end
            return not read_file(self.dir .. "/nginx.pid")
        end, self.stop_seconds or 10, "nginx to stop")
    end
    if not os.getenv("GRAY_KEEP_TMP") then
        sh("rm -rf " .. quote(self.dir))
    end
end

--- GET (or opts.method; POST with opts.body) a path on a new connection,
-- as one curl did; returns { status = , body = , time = seconds, headers =
-- { lower-case name = value } } (status 0 and err = "..." without an answer
-- within opts.max_time, default 10 s). opts.headers: a table (a value may
-- be a list: several header lines; a blank one sends none); opts.interface:
-- the local address to connect from (127.0.0.2...); opts.host / opts.port:
-- where to connect (default 127.0.0.1:self.port); opts.body: a request body.
function Nginx:request(path, opts)
    opts = opts or {}
    local client = _M.http_client({ host = opts.host, port = opts.port or self.port,
                                    interface = opts.interface })
    local res = client:request(path, opts)
    client:close()
    return res
end

--- A keep-alive HTTP client of this nginx (harness.http_client): opts.host,
-- opts.port (default self.port), opts.interface.
function Nginx:client(opts)
    opts = opts or {}
    return _M.http_client({ host = opts.host, port = opts.port or self.port,
                            interface = opts.interface })
end

function Nginx:get(path, opts)
    return self:request(path, opts)
end

--- Runs Lua code inside an nginx worker through the /eval location that
-- harness.EVAL_LOCATION defines (in the server on port, default self.port),
-- with extra request headers if given; returns what the code printed with
-- ngx.say, or what it returned. It may take 60 s: what an eval measures it
-- measures inside the worker, and memory_spec's 1000 lookups of 900 KB
-- values took over the client's default 10 s at load 18 ("eval failed (0)").
function Nginx:eval(code, port, headers)
    local res = self:request("/eval", { method = "POST", body = code, port = port,
                                        headers = headers, max_time = 60 })
    assert(res.status == 200, "eval failed (" .. tostring(res.status)
                              .. (res.err and ", " .. res.err or "") .. "): " .. res.body
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

-- "Name: value" lines as request_text's headers (name -> list of values)
local function header_table(lines)
    local h = {}
    for _, line in ipairs(lines or {}) do
        local name, value = line:match("^([^:]+):%s*(.*)$")
        h[name] = h[name] or {}
        table.insert(h[name], value)
    end
    return h
end

-- statuses (a list) counted, as "<count> <status>" pairs in status order
local function status_counts(statuses)
    local counts, out = {}, {}
    for _, status in ipairs(statuses) do
        status = ("%03d"):format(status)
        counts[status] = (counts[status] or 0) + 1
    end
    for status, count in pairs(counts) do
        out[#out + 1] = status .. "\0" .. count
    end
    table.sort(out)
    return (table.concat(out, " "):gsub("(%d+)%z(%d+)", "%2 %1"))
end

--- n GET requests of path on one keep-alive connection, with the given
-- request headers (a list of "Name: value"); returns the answers counted by
-- status, as "<count> <status>" pairs in the order of the statuses, folded
-- into one string ("300 200", "2 200 1 502"; no answer counts as 000).
function Nginx:batch(path, n, headers)
    local h, client, statuses = header_table(headers), self:client(), {}
    for i = 1, n do
        statuses[i] = client:request(path, { headers = h }).status
    end
    client:close()
    return status_counts(statuses)
end

--- Requests at once, each on its own connection: all are sent before any
-- answer is read, so the server works on them side by side (curl's
-- --parallel, or a shell of curls in the background, without a process
-- each). reqs: a list of { path, headers = { name = value } }; returns a
-- list of { status = , body = , headers = , time = seconds from the
-- connect to the answer }, in order (status 0 and err = "..." without an
-- answer). One deadline for all: opts.max_time (default 10 s) from now.
function Nginx:parallel(reqs, opts)
    local deadline = now() + (opts and opts.max_time or 10)
    local conns, res, waiting = {}, {}, 0
    for i, r in ipairs(reqs) do
        local t0 = now()
        local fd, err = tcp_connect("127.0.0.1", self.port, deadline)
        if fd then
            local text = request_text("127.0.0.1", self.port, r[1], { headers = r.headers })
            local ok
            ok, err = send_all(fd, text, deadline)
            if ok then
                conns[i], waiting = { fd = fd, t0 = t0 }, waiting + 1
            else
                tcp_close(fd)
            end
        end
        res[i] = { status = 0, body = "", headers = {}, err = err or "timeout" }
    end
    local pfds, at = ffi.new("gray_harness_pollfd_t[?]", math.max(waiting, 1)), {}
    while waiting > 0 do
        local ms = math.ceil((deadline - now()) * 1000)
        if ms <= 0 then
            break
        end
        local n = 0
        for i, conn in pairs(conns) do
            pfds[n].fd, pfds[n].events, pfds[n].revents = conn.fd, POLLIN, 0
            at[n] = i
            n = n + 1
        end
        local got = C.gray_harness_poll(pfds, n, ms)
        if got < 0 and ffi.errno() ~= EINTR then
            error(errstr("poll"))
        end
        for k = 0, n - 1 do
            if pfds[k].revents ~= 0 then
                local i = at[k]
                local conn = conns[i]
                local status, headers, body = read_response(conn, deadline, "GET")
                res[i] = status and { status = status, headers = headers, body = body }
                         or { status = 0, body = "", headers = {}, err = headers }
                res[i].time = now() - conn.t0
                tcp_close(conn.fd)
                conns[i], waiting = nil, waiting - 1
            end
        end
    end
    for i, conn in pairs(conns) do
        res[i].time = now() - conn.t0
        tcp_close(conn.fd)
    end
    return res
end

--- As batch, but the n requests at once (Nginx:parallel), each on its own
-- connection; opts.max_time: one deadline for all (default 10 s).
function Nginx:concurrent(path, n, headers, opts)
    local h, reqs, statuses = header_table(headers), {}, {}
    for i = 1, n do
        reqs[i] = { path, headers = h }
    end
    for i, r in ipairs(self:parallel(reqs, opts)) do
        statuses[i] = r.status
    end
    return status_counts(statuses)
end

--- GET requests one after the other on one keep-alive connection: reqs is
-- a list of { path, headers = { name = value } }; returns a list of
-- { status = , time = seconds, body = , headers = }, in order.
function Nginx:sequence(reqs)
    local client, res = self:client(), {}
    for i, r in ipairs(reqs) do
        res[i] = client:request(r[1], { headers = r.headers })
    end
    client:close()
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
