-- tools/rock_check.lua TREE: run by "make rock-check" from the checkout right
-- after "luarocks make --tree TREE", with LUA_PATH/LUA_CPATH set to TREE's
-- lua directories and the checkout's spec/ (for the harness) only. It checks
-- that the installed rock works on its own, without the checkout:
--
--   1. plain LuaJIT: gray.ffi loads libgray.so from TREE, and the list
--      images' helper gray-compile beside it compiles a job;
--   2. the version in the Lua code, the versioned rockspec, dist.ini and
--      CHANGELOG.md agree;
--   3. Debian's nginx with lua_package_path/cpath set to TREE (plus Debian's
--      /usr/share/lua/5.1 for resty.core and resty.lrucache, nothing else):
--      every module under lua/ loads, each from TREE, and libgray.so too;
--   4. a request through "content_by_lua_file TREE/.../gray/dep.lua" goes to
--      @server, and to @server_test for a client memcached marks gray;
--   5. gray-admin is in TREE/bin and says the version, and its man page is in
--      the rock's doc directory (luarocks doc), as written.
--
-- Prints a line per check; on a failure, says what and exits non-zero.

local tree = assert(arg[1], "usage: rock_check.lua TREE")
local harness = require "helpers.harness"

local LUADIR = tree .. "/share/lua/5.1"
local LIBDIR = tree .. "/lib/lua/5.1"
-- the modules the README names; the other files under lua/ are checked too
local NAMED = { "gray", "gray.ffi", "gray.memcached", "gray.dep" }

local read = harness.read_file

local function check(cond, msg)
    if not cond then
        error(msg, 0)
    end
end

local function starts_with(s, prefix)
    return type(s) == "string" and s:sub(1, #prefix) == prefix
end

local function pattern_escape(s)
    return (s:gsub("%p", "%%%0"))
end

--- 1. gray.ffi in plain LuaJIT; returns the version.
local function luajit_check()
    local gray_ffi = require "gray.ffi"
    check(starts_with(gray_ffi.lib_path, LIBDIR .. "/"),
          "gray.ffi loaded libgray.so from " .. tostring(gray_ffi.lib_path) .. ", not " .. LIBDIR)
    check(gray_ffi.canonical_ip("::FFFF:192.168.2.20") == "192.168.2.20", "gray.ffi does not work")
    local version = gray_ffi._VERSION
    check(type(version) == "string" and version:find("^%d+%.%d+%.%d+$"),
          "gray.ffi._VERSION is " .. tostring(version))
    print("rock-check: LuaJIT: gray.ffi " .. version .. ", " .. gray_ffi.lib_path)
    check(gray_ffi.image_helper() == LIBDIR .. "/gray-compile",
          "the images' helper is " .. tostring(gray_ffi.image_helper()) .. ", not "
          .. LIBDIR .. "/gray-compile")
    local path = harness.tmpdir() .. "/rock-check.img"
    local job = assert(gray_ffi.image_compile_start("ids", "a v2\n", { "1", "v2" }, 1, path))
    local done, st
    for _ = 1, 1000 do
        done, st = gray_ffi.image_poll(job)
        if done ~= false then
            break
        end
        harness.sleep(0.01)
    end
    check(done == true and st.helper, "gray-compile did not compile a job: " .. tostring(st))
    gray_ffi.image_job_free(job)
    print("rock-check: " .. gray_ffi.image_helper() .. " compiles the list images")
    return version
end

--- 2. the release files name the same version.
local function version_check(version)
    local v = pattern_escape(version)
    local rockspec = "rockspec/lua-resty-gray-" .. version .. "-1.rockspec"
    local text = read(rockspec)
    check(text, "no " .. rockspec .. " for version " .. version)
    check(text:find('\nversion = "' .. v .. '%-1"'), rockspec .. " does not say " .. version .. "-1")
    check(text:find('tag = "v' .. v .. '"'), rockspec .. " does not fetch the tag v" .. version)
    check((read("dist.ini") or ""):find("\nversion = " .. v .. "\n"),
          "dist.ini does not say version = " .. version)
    check((read("CHANGELOG.md") or ""):find("\n## %[?" .. v .. "[%] ]"),
          "CHANGELOG.md has no entry for " .. version)
    print("rock-check: " .. version .. " in gray.ffi, " .. rockspec .. ", dist.ini, CHANGELOG.md")
end

--- The module names of the checkout's Lua files; each must be in the tree.
local function module_names()
    local names = {}
    for file in harness.sh("cd lua && find . -name '*.lua' | sort"):gmatch("%./(%S+)") do
        check(read(LUADIR .. "/" .. file), "lua/" .. file .. " was not installed into " .. LUADIR)
        names[#names + 1] = file:gsub("%.lua$", ""):gsub("/", ".")
    end
    for _, name in ipairs(NAMED) do
        local found = false
        for _, m in ipairs(names) do
            found = found or m == name
        end
        check(found, "module " .. name .. " is not in lua/")
    end
    return names
end

local function lua_list(names)
    local quoted = {}
    for i, name in ipairs(names) do
        quoted[i] = string.format("%q", name)
    end
    return "{ " .. table.concat(quoted, ", ") .. " }"
end

-- /modules: requires each module; answers a line per module, "ok NAME FILE"
-- or "FAIL NAME why", then where libgray.so came from.
local function modules_handler(names, version)
    return [[
        local tree, version = "]] .. LUADIR .. [[/", "]] .. version .. [["
        for _, name in ipairs(]] .. lua_list(names) .. [[) do
            local file = package.searchpath(name, package.path)
            local ok, mod = pcall(require, name)
            local v = type(mod) == "table" and mod._VERSION or nil
            if not ok then
                ngx.say("FAIL ", name, " ", (tostring(mod):gsub("\n", " | ")))
            elseif not file or file:sub(1, #tree) ~= tree then
                ngx.say("FAIL ", name, " loaded from ", tostring(file))
            elseif type(mod) ~= "table" then
                ngx.say("FAIL ", name, " is a ", type(mod), ", not a module table")
            elseif v ~= nil and v ~= version then
                ngx.say("FAIL ", name, " _VERSION is ", tostring(v), ", not ", version)
            else
                ngx.say("ok ", name, " ", file)
            end
        end
        for _, name in ipairs(]] .. lua_list(NAMED) .. [[) do
            local mod = package.loaded[name]
            if type(mod) == "table" and mod._VERSION ~= version then
                ngx.say("FAIL ", name, " has no _VERSION")
            end
        end
        ngx.say("lib ", require("gray.ffi").lib_path)
]]
end

--- 3. and 4.: nginx with only the tree on its lua paths.
local function nginx_check(version, mc)
    local names = module_names()
    local nginx = harness.nginx({
        memcached_port = mc.port,
        log_level = "warn",
        package_path = LUADIR .. "/?.lua;/usr/share/lua/5.1/?.lua",
        package_cpath = LIBDIR .. "/?.so",
        servers = [[
    server {
        listen 127.0.0.1:$PORT;
        location = /modules {
            default_type text/plain;
            content_by_lua_block {
]] .. modules_handler(names, version) .. [[
            }
        }
        location / {
            set $gray_memcached 127.0.0.1:$MC;
            content_by_lua_file ]] .. LUADIR .. [[/gray/dep.lua;
        }
        location @server      { default_type text/plain; return 200 "stable\n"; }
        location @server_test { default_type text/plain; return 200 "gray\n"; }
    }
]],
    })
    local ok, err = pcall(function()
        local function log_tail()
            return "\nerror.log:\n" .. nginx:error_log():sub(-2000)
        end
        local res = nginx:get("/modules")
        check(res.status == 200, "/modules answered " .. tostring(res.status) .. ": " .. res.body
                                 .. log_tail())
        local n = 0
        for line in res.body:gmatch("[^\n]+") do
            check(not line:find("^FAIL"), "nginx: " .. line)
            n = n + (line:find("^ok ") and 1 or 0)
        end
        check(n == #names, "nginx loaded " .. n .. " of " .. #names .. " modules:\n" .. res.body)
        local lib = res.body:match("\nlib (%S+)")
        check(starts_with(lib, LIBDIR .. "/"), "nginx loaded libgray.so from " .. tostring(lib))
        print("rock-check: nginx: " .. n .. " modules from " .. LUADIR .. ", " .. lib)

        -- the drop-in as installed: 127.0.0.2 is not gray, 127.0.0.3 is
        mc:set("127.0.0.3", "1")
        for _, case in ipairs({ { "127.0.0.2", "stable\n" }, { "127.0.0.3", "gray\n" } }) do
            res = nginx:get("/", { headers = { ["X-Real-IP"] = case[1] } })
            check(res.status == 200 and res.body == case[2],
                  "dep.lua from the tree, client " .. case[1] .. ": " .. tostring(res.status)
                  .. " " .. res.body .. log_tail())
        end
        local bad = harness.bad_log_lines(nginx:error_log())
        check(#bad == 0, "error.log:\n" .. table.concat(bad, "\n"))
        print("rock-check: nginx: content_by_lua_file " .. LUADIR
              .. "/gray/dep.lua -> @server, and @server_test for a gray client")
    end)
    nginx:stop()
    check(ok, err)
end

--- 5. gray-admin and gray-admin.1 from the tree.
local function admin_check(version)
    local out, code = harness.sh(harness.quote(tree .. "/bin/gray-admin") .. " --version")
    check(code == 0 and out == "gray-admin " .. version .. "\n",
          tree .. "/bin/gray-admin --version: " .. out)
    local man = harness.sh("find " .. harness.quote(tree) .. " -name gray-admin.1 -path '*/doc/*'")
                       :match("^(%S+)\n$")
    check(man, "gray-admin.1 is not in one doc directory of " .. tree)
    check(read(man) == read("build/gray-admin.1"), man .. " differs from build/gray-admin.1")
    check(read(man):find('\n%.TH GRAY%-ADMIN 1 %S+ "gray%-admin ' .. pattern_escape(version) .. '"'),
          "build/gray-admin.1's .TH line (csrc/cli/gray-admin.1.in) does not say gray-admin " .. version)
    print("rock-check: " .. tree .. "/bin/gray-admin " .. version .. ", " .. man)
end

local function main()
    local version = luajit_check()
    version_check(version)
    admin_check(version)
    local mc = harness.memcached()
    local ok, err = pcall(nginx_check, version, mc)
    mc:destroy()
    check(ok, err)
end

local ok, err = pcall(main)
if not ok then
    io.stderr:write("rock-check: FAIL: ", tostring(err), "\n")
    os.exit(1)
end
print("rock-check: ok")
