-- gray.nginxconf: which directives nginx's configuration files use, for a
-- choice a module can make once at load instead of on every request (nginx
-- gives Lua no view of its configuration). It reads the files nginx read:
-- the -c file of nginx's command line (the master's /proc/<pid>/cmdline;
-- without -c, the build's --conf-path), relative to nginx's prefix, and
-- every file an `include` names (relative to the main file's directory, as
-- nginx takes them; a glob expanded by glob(3), as nginx does, through
-- gray.ffi: no process, no shell), and looks for directive
-- names in them. Whole-line comments are left out; any other mention (an
-- inline comment, a string, Lua code) counts: the answers err toward
-- "mentioned". A file it cannot read, or a bound below reached, makes the
-- answer unknown (nil, err): the caller keeps its safe choice.
-- Blocking file reads: for init_by_lua or a timer, never a request.

local ngx = ngx
local gray_ffi = require "gray.ffi"
local io_open = io.open
local find, sub, gsub, match, gmatch = string.find, string.sub, string.gsub, string.match,
                                       string.gmatch
local glob = gray_ffi.glob
local type, tostring = type, tostring

local _M = { _VERSION = "0.1.0" }

local MAX_FILES = 256                   -- files read at most (the -c file and includes)
local MAX_BYTES = 8 * 1024 * 1024       -- bytes read at most from one file
local MAX_TOTAL = 32 * 1024 * 1024      -- bytes read at most from all files
_M.MAX_FILES, _M.MAX_BYTES, _M.MAX_TOTAL = MAX_FILES, MAX_BYTES, MAX_TOTAL

local function read(path)
    local f, err = io_open(path, "rb")
    if not f then
        return nil, err
    end
    local text = f:read(MAX_BYTES + 1)
    f:close()
    if not text then
        return ""
    end
    if #text > MAX_BYTES then
        return nil, path .. ": larger than " .. MAX_BYTES .. " bytes"
    end
    return text
end

--- The configuration file named by an nginx command line (cmdline: as
-- /proc/<pid>/cmdline has it, arguments NUL-separated as started, or the
-- master's title, "nginx: master process /usr/sbin/nginx -c /x.conf",
-- space-separated), made absolute with prefix (nginx's -p, with its "/");
-- without -c, the build's default (configure: nginx's ./configure
-- arguments, --conf-path). nil when it cannot tell.
function _M.conf_path(cmdline, prefix, configure)
    local conf
    local prev
    for arg in gmatch(cmdline, "[^%z ]+") do
        if prev == "-c" then
            conf = arg
        elseif sub(arg, 1, 2) == "-c" and #arg > 2 then
            conf = sub(arg, 3)
        end
        prev = arg
    end
    if not conf then
        conf = match(configure or "", "%-%-conf%-path=(%S+)") or "conf/nginx.conf"
    end
    if sub(conf, 1, 1) ~= "/" then
        if type(prefix) ~= "string" or prefix == "" then
            return nil
        end
        conf = (sub(prefix, -1) == "/" and prefix or prefix .. "/") .. conf
    end
    return conf
end

-- The text without whole-line comments (a "#" first on its line: never
-- part of a directive; a "#" elsewhere may sit in a string or Lua code).
local function strip_comments(text)
    return (gsub("\n" .. text, "\n[ \t\r]*#[^\n]*", "\n"))
end

-- The files an include's argument names: itself, or what its glob
-- matches (room at most). As nginx's ngx_conf_include: a "*", "?" or "["
-- anywhere makes it a glob; ngx_open_glob calls glob(3) with flags 0
-- (sorted, no dot files from "*") and takes no match as none. One
-- difference: glob(3) there skips a directory it cannot list, nginx's
-- master (root) may list one this worker cannot, so GLOB_ERR here makes
-- it (or a missing one) unknown, never "none".
local function expand(pattern, room)
    if not find(pattern, "[*?%[]") then
        return { pattern }
    end
    local files, err = glob(pattern, room)
    if not files then
        return nil, "include " .. err
    end
    return files
end

--- Whether any of names (directive names, or their beginnings:
-- "header_filter_by_lua" finds its _block and _file forms) appears in the
-- configuration files from path (the main file) on: the first name found,
-- or false; nil, err (the answer is unknown) when a file cannot be read,
-- a glob's directory cannot be listed, or a bound (MAX_FILES, MAX_BYTES,
-- MAX_TOTAL) is reached.
function _M.mentions(path, names)
    local conf_dir = match(path, "^(.*/)") or "./"
    -- each file once (an include of itself, a snippet included in every
    -- location), MAX_FILES of them at most
    local queue, seen, total = { path }, { [path] = true }, 0
    local i = 1
    while queue[i] do
        local file = queue[i]
        i = i + 1
        local text, err = read(file)
        if not text then
            return nil, err
        end
        total = total + #text
        if total > MAX_TOTAL then
            return nil, "more than " .. MAX_TOTAL .. " bytes of configuration files"
        end
        text = strip_comments(text)
        for k = 1, #names do
            if find(text, names[k], 1, true) then
                return names[k]
            end
        end
        -- includes: a directive at a line's or a statement's start
        for arg in gmatch(text, "[%s;{}]include%s+([^;]+);") do
            arg = match(arg, '^"(.*)"%s*$') or match(arg, "^'(.*)'%s*$")
                  or match(arg, "^(.-)%s*$")
            if sub(arg, 1, 1) ~= "/" then
                arg = conf_dir .. arg
            end
            local files, gerr = expand(arg, MAX_FILES)
            if not files then
                return nil, gerr
            end
            for j = 1, #files do
                local f = files[j]
                if not seen[f] then
                    if #queue >= MAX_FILES then
                        return nil, "more than " .. MAX_FILES .. " configuration files"
                    end
                    seen[f] = true
                    queue[#queue + 1] = f
                end
            end
        end
    end
    return false
end

-- nginx's command line: the master's (a worker's own was replaced by its
-- title), or this process's (init_by_lua, or no master process).
local function cmdline()
    local pid
    if ngx.get_phase() ~= "init" then
        local ok, process = pcall(require, "ngx.process")
        pid = ok and process.get_master_pid and process.get_master_pid()
    end
    local text, err = read("/proc/" .. (pid or "self") .. "/cmdline")
    if not text then
        return nil, err
    end
    return text
end

--- The running nginx's main configuration file (absolute), or nil, err.
function _M.running_conf_path()
    local line, err = cmdline()
    if not line then
        return nil, "nginx's command line: " .. tostring(err)
    end
    local path = _M.conf_path(line, ngx.config.prefix(), ngx.config.nginx_configure())
    if not path then
        return nil, "no configuration file in nginx's command line: " .. gsub(line, "%z", " ")
    end
    return path, line
end

--- mentions() on the running nginx's configuration: the first name found,
-- false, or nil, err (unknown). The command line counts as a file (its -g
-- directives); an include there is not followed: unknown.
function _M.running_mentions(names)
    local path, line = _M.running_conf_path()
    if not path then
        return nil, line
    end
    for k = 1, #names do
        if find(line, names[k], 1, true) then
            return names[k], "nginx's command line"
        end
    end
    if find(line, "include", 1, true) then
        return nil, "an include in nginx's command line (-g) is not followed"
    end
    local found, err = _M.mentions(path, names)
    if found == nil then
        return nil, err
    end
    return found, path
end

return _M
