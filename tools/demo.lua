-- demo.lua start|stop - `make demo`: the classic nginx + lua + memcached
-- gray-release demo with lua/gray/dep.lua as the script, on loopback only,
-- then what the library adds: gray-admin, an id in a cookie, a sticky
-- percentage and the metrics page. The servers come from the spec harness
-- (spec/helpers/harness.lua).
--
--   start  stops a previous demo, starts memcached, two demo backends (one
--          nginx, two server blocks) and the router nginx, then walks through
--          the demo, printing every command and its output; the stack keeps
--          running
--   stop   stops every demo process by its pid file (safe to run twice)
--
-- State, configs and logs: build/demo/. Run through `make demo` /
-- `make demo-stop` (they install what is missing and build libgray.so and
-- gray-admin first):
--
--   LUA_PATH='spec/?.lua;;' luajit tools/demo.lua start

local harness = require "helpers.harness"

local sh, quote, read_file = harness.sh, harness.quote, harness.read_file

local REPO = os.getenv("GRAY_REPO") or io.popen("pwd"):read("*l")
local STATE = REPO .. "/build/demo"
local ADMIN = REPO .. "/build/gray-admin"
local failed = false

local function say(s)
    io.write(s, "\n")
    io.stdout:flush()
end

local function step(s)
    say("\n== " .. s)
end

local function note(s)
    say("   # " .. s)
end

-- processes -------------------------------------------------------------------

-- stops the process named in a pid file if it is still the program we
-- started (comm); removes the pid file. true if there was one.
local function stop_pidfile(name, file, comm, signal)
    local text = read_file(file)
    if not text then
        return false
    end
    local pid = tonumber(text:match("%d+"))
    local running = pid and harness.process_alive(pid)
                    and (read_file("/proc/" .. pid .. "/comm") or ""):match("^(%S+)") == comm
    if running then
        sh("kill -" .. signal .. " " .. pid)
        for _ = 1, 100 do
            if not harness.process_alive(pid) then
                break
            end
            harness.sleep(0.1)
        end
        if harness.process_alive(pid) then
            sh("kill -KILL " .. pid)
            say("demo: " .. name .. " (pid " .. pid .. ") did not stop in 10 s; killed it")
        else
            say("demo: stopped " .. name .. " (pid " .. pid .. ")")
        end
    end
    os.remove(file)
    return true
end

local function stop()
    local any = stop_pidfile("router nginx", STATE .. "/router/nginx.pid", "nginx", "QUIT")
    any = stop_pidfile("backend nginx", STATE .. "/backends/nginx.pid", "nginx", "QUIT") or any
    any = stop_pidfile("memcached", STATE .. "/memcached.pid", "memcached", "KILL") or any
    if not any then
        say("demo: nothing running")
    end
end

-- the first free port from want up, not already taken by the demo
local taken = {}
local function pick(want, what)
    local p = want
    while taken[p] or harness.port_in_use(p) do
        p = p + 1
    end
    if p ~= want then
        say("demo: port " .. want .. " is taken; " .. what .. " uses " .. p .. " instead")
    end
    taken[p] = true
    return p
end

local function write_file(path, text)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
end

-- the walk-through --------------------------------------------------------------

-- prints and runs a shell command and its output; checks that the output
-- names the expected backend ("stable" or "gray") when one is given
local function show(cmd, expect)
    say("$ " .. cmd)
    local out = sh(cmd)
    if out:find("%S") then
        say((out:gsub("%s+$", "")))
    end
    if expect and not out:find("(" .. expect .. ")", 1, true) then
        say("   !!! UNEXPECTED: wanted the " .. expect .. " backend")
        failed = true
    end
    return out
end

-- the curl command line, run and shown
local function curl(url, args, expect)
    return show("curl -s " .. (args and args .. " " or "") .. url, expect)
end

-- gray-admin, shown without the build/ path's checkout prefix
local function admin(mc_port, args)
    local shown = "build/gray-admin --servers 127.0.0.1:" .. mc_port .. " " .. args
    say("$ " .. shown)
    local out, code = sh("cd " .. quote(REPO) .. " && " .. shown)
    if out:find("%S") then
        say((out:gsub("%s+$", "")))
    end
    if code ~= 0 then
        say("   !!! UNEXPECTED: exit status " .. code)
        failed = true
    end
    return out
end

-- a memcached exchange, shown as a telnet session shows it
local function telnet(mc, port, lines)
    say("$ telnet 127.0.0.1 " .. port .. "      # (sent over bash /dev/tcp: no telnet needed)")
    for _, line in ipairs(lines) do
        say(line)
    end
    say((mc:cmd(table.concat(lines, "\r\n") .. "\r\n"):gsub("\r", ""):gsub("\n$", "")))
end

local function pause(seconds, why)
    if why then
        note(why)
    end
    say("$ sleep " .. seconds)
    harness.sleep(seconds)
end

local ROUTER = [[
    server {
        listen 127.0.0.1:$PORT;
        access_log $LOGDIR/access.log gray;

        location / {
            default_type "text/html";
            # only 127.0.0.1 counts as a proxy whose X-Real-IP/X-Forwarded-For
            # is believed (the default is 127.0.0.0/8 and ::1)
            set $gray_trusted "127.0.0.1";
            # an identity besides the address: the cookie "uid" (key uid:<value>)
            set $gray_ids "uid=cookie:uid";
%s            content_by_lua_file %s/lua/gray/dep.lua;
        }

        location = /metrics {
            access_log off;
            allow 127.0.0.1; deny all;
            content_by_lua_block { require("gray.metrics").render() }
        }

        location @server {
            proxy_pass http://127.0.0.1:%d;
        }

        location @server_test {
            proxy_pass http://127.0.0.1:%d;
        }
    }
]]

local BACKENDS = [[
    server {
        listen 127.0.0.1:$PORT;
        access_log $LOGDIR/access.log;
        default_type text/plain;
        location / { return 200 "backend $PORT (stable)\n"; }
    }
    server {
        listen 127.0.0.1:$PORT2;
        access_log $LOGDIR/access.log;
        default_type text/plain;
        location / { return 200 "backend $PORT2 (gray)\n"; }
    }
]]

local function start()
    for _, f in ipairs({ STATE .. "/router/nginx.pid", STATE .. "/backends/nginx.pid",
                         STATE .. "/memcached.pid" }) do
        if read_file(f) then
            stop()
            break
        end
    end
    sh("rm -rf " .. quote(STATE) .. " && mkdir -p " .. quote(STATE .. "/router") .. " "
       .. quote(STATE .. "/backends"))
    if not read_file(ADMIN) then
        error("demo: build/gray-admin is missing (make)", 0)
    end

    local mc_port = pick(11211, "memcached")
    local stable_port = pick(5001, "the stable backend")
    local gray_port = pick(5002, "the gray backend")
    local router_port = pick(8080, "the router")
    write_file(STATE .. "/ports.env", ("MC_PORT=%d\nSTABLE_PORT=%d\nGRAY_PORT=%d\nROUTER_PORT=%d\n")
               :format(mc_port, stable_port, gray_port, router_port))
    local url = "http://127.0.0.1:" .. router_port .. "/"

    local mc = harness.memcached({ port = mc_port, dir = STATE, verbose = true })
    write_file(STATE .. "/memcached.pid", mc.pid .. "\n")
    harness.nginx({ dir = STATE .. "/backends", port = stable_port, port2 = gray_port,
                    log_level = "notice", servers = BACKENDS })
    local mc_line = mc_port == 11211 and ""
                    or "            set $gray_memcached 127.0.0.1:" .. mc_port .. ";\n"
    harness.nginx({
        dir = STATE .. "/router", port = router_port, log_level = "notice",
        package_path = REPO .. "/lua/?.lua;;",
        http = "lua_shared_dict gray_metrics 1m;\n"
               .. "  log_format gray '$remote_addr xff=\"$http_x_forwarded_for\" -> "
               .. "$upstream_addr $status \"$request\"';",
        servers = ROUTER:format(mc_line, REPO, stable_port, gray_port),
    })
    say(("demo: memcached 127.0.0.1:%d (pid %d), backends 127.0.0.1:%d (stable) and"
         .. " 127.0.0.1:%d (gray), router %s"):format(mc_port, mc.pid, stable_port, gray_port, url))
    say("demo: router config " .. STATE .. "/router/nginx.conf")

    step("0. The two backends, asked directly")
    curl("http://127.0.0.1:" .. stable_port .. "/")
    curl("http://127.0.0.1:" .. gray_port .. "/")

    step("1. Through the router, address not in memcached -> stable")
    curl(url, nil, "stable")

    step("2. Put the client's address (127.0.0.1) in memcached with value 1")
    telnet(mc, mc_port, { "set 127.0.0.1 0 0 1", "1" })
    pause(1.2, "the router caches each answer for 1 s ($gray_cache_ttl), so wait a moment")
    curl(url, nil, "gray")

    step("3. X-Forwarded-For is believed only from trusted proxies")
    note("the classic dep.lua believed X-Real-IP / X-Forwarded-For from anybody: any")
    note("client could claim a gray address. This demo trusts only 127.0.0.1")
    note("(set $gray_trusted \"127.0.0.1\"; the default is 127.0.0.0/8 and ::1),")
    note("so 127.0.0.2 plays an outside client and 127.0.0.1 your load balancer.")
    telnet(mc, mc_port, { "set 192.168.2.20 0 0 1", "1" })
    note("127.0.0.2 claims to be 192.168.2.20: ignored, its key is 127.0.0.2 -> stable")
    curl(url, "--interface 127.0.0.2 -H 'X-Forwarded-For: 192.168.2.20'", "stable")
    note("the trusted proxy 127.0.0.1 forwards for 192.168.2.20: believed -> gray")
    curl(url, "-H 'X-Forwarded-For: 192.168.2.20'", "gray")
    note("and for 10.1.2.3 (not in memcached): stable, although 127.0.0.1 itself is gray")
    curl(url, "-H 'X-Forwarded-For: 10.1.2.3'", "stable")

    step("4. memcached goes away: requests still succeed")
    say("$ kill " .. mc.pid .. "      # memcached")
    mc:stop()
    os.remove(STATE .. "/memcached.pid")
    pause(1.2)
    note("127.0.0.1: memcached fails, the worker's recent answer (kept up to 60 s) is used")
    curl(url, "-w 'HTTP %{http_code}\\n'", "gray")
    note("a client the worker has not seen: the stable backend, never an error page")
    curl(url, "-w 'HTTP %{http_code}\\n' --interface 127.0.0.3", "stable")
    note("the router logs the failure (one line per kind of failure per 5 s)")
    show("grep -o 'gray: [^,]*' " .. STATE .. "/router/error.log | tail -n 2")

    step("5. memcached back (empty: it keeps its data in memory only)")
    assert(mc:start())
    write_file(STATE .. "/memcached.pid", mc.pid .. "\n")
    say("$ memcached -l 127.0.0.1 -p " .. mc_port .. " -U 0 ...      # pid " .. mc.pid)
    pause(1.2)
    note("127.0.0.1 is no longer in memcached -> stable; set it again to go gray")
    curl(url, nil, "stable")

    step("6. gray-admin writes the entries and says what the router will decide")
    admin(mc_port, "add 192.168.2.30")
    admin(mc_port, "check 192.168.2.30")
    curl(url, "-H 'X-Forwarded-For: 192.168.2.30'", "gray")

    step("7. An id in a cookie ($gray_ids \"uid=cookie:uid\"): the key uid:<value>")
    admin(mc_port, "add uid:alice")
    curl(url, "-b uid=alice", "gray")
    curl(url, "-b uid=bob", "stable")

    step("8. A sticky percentage: the same user always lands on the same side")
    admin(mc_port, "percent 30")
    pause(2.2, "the router reads the percentage with its lists, every 2 s")
    note("each uid has a bucket (0-9999) from its key: below 3000 -> gray; asked twice each")
    local first, second, grays = {}, {}, 0
    for i = 1, 20 do
        local out = sh("curl -s -b uid=user" .. i .. " " .. url)
        first[i] = out:find("(gray)", 1, true) and "gray" or "stable"
        grays = grays + (first[i] == "gray" and 1 or 0)
    end
    for i = 1, 20 do
        local out = sh("curl -s -b uid=user" .. i .. " " .. url)
        second[i] = out:find("(gray)", 1, true) and "gray" or "stable"
    end
    say("$ for i in $(seq 20); do curl -s -b uid=user$i " .. url .. "; done   # twice; in short:")
    local line = {}
    for i = 1, 20 do
        line[#line + 1] = "user" .. i .. "=" .. first[i]
        if first[i] ~= second[i] then
            say("   !!! UNEXPECTED: user" .. i .. " went " .. first[i] .. ", then " .. second[i])
            failed = true
        end
        if i % 5 == 0 then
            say("   " .. table.concat(line, " "))
            line = {}
        end
    end
    say(("   %d of 20 gray, the same both times"):format(grays))
    if grays == 0 or grays == 20 then
        say("   !!! UNEXPECTED: a 30% split gave " .. grays .. " of 20")
        failed = true
    end
    admin(mc_port, "check 127.0.0.1 --id uid=user1")

    step("9. The metrics page (lua_shared_dict gray_metrics; flushed every second)")
    pause(1.2)
    show("curl -s " .. url .. "metrics | grep -v '^#' | grep -v ' 0$'")

    say("\n== Try it yourself (the stack keeps running)")
    say(([[
  curl %s
  build/gray-admin --servers 127.0.0.1:%d add 127.0.0.1; sleep 1; curl %s
  build/gray-admin --servers 127.0.0.1:%d remove 127.0.0.1
  build/gray-admin --servers 127.0.0.1:%d check 127.0.0.1 --id uid=alice
  curl -b uid=alice %s
  curl --interface 127.0.0.2 -H 'X-Forwarded-For: 192.168.2.20' %s
  curl %smetrics
  (with telnet: telnet 127.0.0.1 %d, then type "set 127.0.0.1 0 0 1" and "1")

Configs and logs: %s/
  router/nginx.conf  router/error.log  router/access.log (which backend served each request)
  backends/access.log  memcached.log (-vv: every command)  ports.env
Stop everything: make demo-stop]]):format(url, mc_port, url, mc_port, mc_port, url, url, url,
                                          mc_port, STATE))
    if failed then
        say("\ndemo: some steps did not route as expected (marked !!! above)")
        os.exit(1)
    end
end

local cmd = arg[1]
if cmd == "start" then
    start()
elseif cmd == "stop" then
    stop()
else
    io.stderr:write("usage: luajit tools/demo.lua start|stop\n")
    os.exit(2)
end
