-- The complete examples of README.md and docs/*.md run as shown: each
-- ```nginx block whose first line is "# /tmp/gray-<name>/nginx.conf", with
-- the ```sh blocks after it (up to the next section, ## or ###) and the
-- ```text blocks that show their output. A recipe is a ```nginx block whose
-- first line is "# /tmp/gray-recipes/gray.conf: <what>": the settings that
-- the README's /tmp/gray-recipes/nginx.conf includes; it runs on that
-- nginx.conf, started before its shell lines. (```bash blocks are
-- illustrations, not run.)
--
-- What is changed before running, and nothing else:
--   - every port written 127.0.0.1:<port> (or memcached's -p <port>) becomes
--     a free one, the same free one wherever it appears;
--   - /tmp/gray-<name> becomes a scratch directory;
--   - "memcached ... -d" lines start memcached through the harness (so it
--     can be stopped); a README that relies on the default 127.0.0.1:11211
--     gets one too, named to the drop-in ($gray_memcached) and to
--     gray-admin (--servers);
--   - a leading "sleep N;" is dropped: shown output is waited for instead;
--   - each server {} block sets $gray_timeout 2000 first (LOOKUP_MS), unless
--     the conf names $gray_timeout: a setting of its own (location, gray.conf,
--     run()) comes later and wins;
--   - the README's ask() (curl printing the body and the X-Gray-Debug
--     header) is defined first in every example's shell.
-- The shell lines run in one bash, from the repository's top directory, as
-- the README says. A curl or ask line's trailing comment is its whole
-- output (waited for, as lists take a refresh to show); a
-- ```text block is the output of the command just before it (metrics with
-- several workers: the series shown must be there and add up to the same).
-- The README's own sed line fills in the checkout's path. Also checked: every
-- $gray_* variable the conf names is one the library reads, and error.log
-- has no warning or error but those an example causes on purpose
-- (EXPECTED_LOG: each must be there, as many times as it says).

local harness = require "helpers.harness"

local REPO = os.getenv("GRAY_REPO") or io.popen("pwd"):read("*l")
local WAIT = 4          -- s to wait for shown output (metrics flush every second)
-- ms for one memcached lookup while the examples run: they show what a
-- request gets, not how long it takes, and with the default 50 ms a lookup
-- under nice 10 on a busy machine timed out (a "read ... timeout" error in
-- error.log, a store-error answer) where the README shows none
local LOOKUP_MS = 2000

-- The warnings an example causes on purpose, by its name (/tmp/gray-<name>):
-- { pattern, times }. Each must match exactly that many lines of its
-- error.log, and no other warning or error is allowed. The guard's example
-- (docs/progressive.md) halts gray once and resumes it once, one node, one
-- worker: the guard's halt, the node's halt and its end, each logged once.
local EXPECTED_LOG = {
    guard = {
        { "%[warn%] .*gray: guard halts target gray %(gray:halt:gray%): errors: 5xx ", 1 },
        { "%[warn%] .*gray: target gray is halted %(gray:halt:gray = '%d+ %S+ guard: errors:"
          .. " 5xx [^']*'%): its requests go to the stable location", 1 },
        { "%[warn%] .*gray: target gray is resumed %(gray:halt:gray deleted%): its requests are"
          .. " routed again", 1 },
    },
}

local function read(path)
    return assert(harness.read_file(path), "cannot read " .. path)
end

local function trim(s)
    return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- The names the library reads as $gray_* variables: the drop-in's options
-- and the log variables the router writes.
local function known_variables()
    local known = {}
    for name in read(REPO .. "/lua/gray/dep.lua"):gmatch('{ "gray_([%w_]+)", "') do
        known[name] = true
    end
    for name in read(REPO .. "/lua/gray.lua"):gmatch("ngx_var%.gray_([%w_]+)") do
        known[name] = true
    end
    return known
end

-- The fenced blocks of a text, in order: { lang = , body = , heading = }.
local function blocks(text)
    local out, heading = {}, ""
    local lines, i = {}, 1
    for line in (text .. "\n"):gmatch("(.-)\n") do
        lines[#lines + 1] = line
    end
    while i <= #lines do
        local line = lines[i]
        if line:find("^##%#? ") then
            heading = line
        end
        local lang = line:match("^```(%S*)%s*$")
        if lang then
            local body = {}
            i = i + 1
            while i <= #lines and not lines[i]:find("^```%s*$") do
                body[#body + 1] = lines[i]
                i = i + 1
            end
            out[#out + 1] = { lang = lang, body = table.concat(body, "\n"), heading = heading }
        end
        i = i + 1
    end
    return out
end

-- The sh/text blocks after all[i] in the same section.
local function steps_after(all, i)
    local steps = {}
    for j = i + 1, #all do
        local c = all[j]
        if c.heading ~= all[i].heading or c.lang == "nginx" then
            break
        end
        if c.lang == "sh" or c.lang == "text" then
            steps[#steps + 1] = c
        end
    end
    return steps
end

--- Every example of a document's blocks, in order: { name = "gray-<x>"
-- directory name, label = , conf = nginx.conf, gray_conf = a recipe's
-- settings or nil, steps = }. A recipe's conf is the document's
-- /tmp/gray-recipes/nginx.conf (base: that block's text, if any).
local function examples(all, base)
    for _, b in ipairs(all) do
        if b.lang == "nginx" and b.body:find("^# /tmp/gray%-recipes/nginx%.conf\n") then
            base = b.body
        end
    end
    local out = {}
    for i, b in ipairs(all) do
        if b.lang == "nginx" then
            local name = b.body:match("^# /tmp/gray%-([%w_%-]+)/nginx%.conf\n")
            local what = b.body:match("^# /tmp/gray%-recipes/gray%.conf:%s*([^\n]*)")
            if name then
                out[#out + 1] = { name = name, label = name, conf = b.body,
                                  steps = steps_after(all, i) }
            elseif what then
                out[#out + 1] = { name = "recipes", label = "recipe: " .. what, conf = base,
                                  gray_conf = b.body, steps = steps_after(all, i) }
            end
        end
    end
    return out, base
end

-- A shell line split into the command and its trailing comment (a '#'
-- after a blank, outside quotes), or nil for a comment-only or blank line.
local function split_comment(line)
    local quote_char
    for k = 1, #line do
        local c = line:sub(k, k)
        if quote_char then
            if c == quote_char then quote_char = nil end
        elseif c == "'" or c == '"' then
            quote_char = c
        elseif c == "#" and (k == 1 or line:sub(k - 1, k - 1):find("%s")) then
            local cmd = trim(line:sub(1, k - 1))
            return cmd ~= "" and cmd or nil, trim(line:sub(k + 1))
        end
    end
    line = trim(line)
    return line ~= "" and line or nil, nil
end

-- gray_decisions_total{...} 3 lines -> { series = value }, sum
local function series(text)
    local out, sum, n = {}, 0, 0
    for line in text:gmatch("[^\n]+") do
        local key, v = line:match("^(gray_[%w_]+%b{}) (%d+)$")
        if key then
            out[key] = tonumber(v)
            sum = sum + tonumber(v)
            n = n + 1
        end
    end
    return out, sum, n
end

-- Does the output match the shown one? exact: values too (one worker).
local function matches(shown, got, exact)
    local want, want_sum, nwant = series(shown)
    if nwant == 0 then
        return trim(got) == trim(shown)
    end
    local have, have_sum = series(got)
    for key, v in pairs(want) do
        if not have[key] or (exact and have[key] ~= v) then
            return false
        end
    end
    if exact then
        for key in pairs(have) do
            if not want[key] then return false end
        end
    end
    return want_sum == have_sum
end

--- Runs an example; returns a report of what went wrong (empty if nothing).
-- What it starts is stopped by the functions it adds to `cleanup`.
local function run(ex, ask, cleanup)
    local name = ex.name
    local problems = {}
    local function check(ok, what)
        if not ok then problems[#problems + 1] = what end
        return ok
    end

    if not check(ex.conf, "no /tmp/gray-recipes/nginx.conf for the recipe") then
        return problems
    end
    local known = known_variables()
    for var in (ex.conf .. (ex.gray_conf or "")):gmatch("%$gray_([%w_]+)") do
        check(known[var], "nginx.conf: the library reads no $gray_" .. var)
    end

    -- the shell lines (continuations joined), and which text block follows which
    local cmds = {}
    for _, step in ipairs(ex.steps) do
        if step.lang == "sh" then
            for line in (step.body:gsub("\\\n", " ") .. "\n"):gmatch("(.-)\n") do
                local cmd, comment = split_comment(line)
                if cmd then
                    cmds[#cmds + 1] = { cmd = cmd, comment = comment }
                end
            end
        elseif #cmds > 0 then
            cmds[#cmds].shown = step.body
        end
    end

    -- memcached servers first: their ports are the harness's
    local dir = harness.tmpdir()
    -- nginx's workers (nobody, when started as root) read a secret there
    harness.sh("chmod 755 " .. harness.quote(dir))
    cleanup[#cleanup + 1] = function()
        if #problems == 0 and not os.getenv("GRAY_KEEP_TMP") then
            harness.sh("rm -rf " .. harness.quote(dir))
        end
    end
    local ports, used, nservers = {}, {}, 0
    local function start_memcached()
        local mc = harness.memcached()
        cleanup[#cleanup + 1] = function() mc:destroy() end
        used[mc.port], nservers = true, nservers + 1
        return mc
    end
    local default_mc
    for _, c in ipairs(cmds) do
        local port = c.cmd:find("^memcached ") and c.cmd:match("%-p (%d+)")
        if port then
            ports[port] = start_memcached().port
            c.skip = true
        end
    end
    if nservers == 0 then
        default_mc = start_memcached()
    end
    local function map_port(port)
        if not ports[port] then
            local p
            repeat p = harness.free_port() until not used[p]
            ports[port], used[p] = p, true
        end
        return "127.0.0.1:" .. ports[port]
    end
    local function subst(s)
        s = s:gsub("127%.0%.0%.1:(%d+)", map_port):gsub("/tmp/gray%-" .. name, dir)
        return s
    end

    local conf = subst(ex.conf)
    if default_mc then
        -- the drop-ins: content-phase (dep.lua) and access-phase (route.lua)
        conf = conf:gsub("content_by_lua_file ", 'set $gray_memcached "127.0.0.1:'
                         .. default_mc.port .. '"; %0')
                   :gsub("access_by_lua_file ", 'set $gray_memcached "127.0.0.1:'
                         .. default_mc.port .. '"; %0')
    end
    if not conf:find("gray_timeout", 1, true) then
        conf = conf:gsub("(\n[ \t]*server[ \t]*{)", "%1 set $gray_timeout " .. LOOKUP_MS .. ";")
    end
    if ex.gray_conf then
        -- a recipe: the README's sed line, then its settings
        conf = conf:gsub("/path/to/lua%-resty%-gray", REPO)
        local g = assert(io.open(dir .. "/gray.conf", "wb"))
        g:write(subst(ex.gray_conf))
        g:close()
    end
    local f = assert(io.open(dir .. "/nginx.conf", "wb"))
    f:write(conf)
    f:close()
    -- stopped as the conf's comment says (harmless if it never started)
    local stop = ex.conf:match("#%s+stop:%s+([^\n]+)") or "nginx -p /tmp/gray-" .. name
                                                          .. " -c nginx.conf -s quit"
    cleanup[#cleanup + 1] = function()
        harness.sh(subst(stop))
        for _ = 1, 250 do
            if not harness.read_file(dir .. "/nginx.pid") then break end
            harness.sleep(0.02)
        end
    end

    local script = { "cd " .. harness.quote(REPO), subst(ask) }
    -- what a command run again needs: ask() and the shell variables set so far
    local prelude = { "cd " .. harness.quote(REPO), subst(ask) }
    if ex.gray_conf then
        script[#script + 1] = subst("nginx -p /tmp/gray-" .. name .. " -c nginx.conf")
    end
    for i, c in ipairs(cmds) do
        if not c.skip then
            local cmd = subst(c.cmd):gsub("^sleep [%d.]+; *", "")
            if default_mc then
                cmd = cmd:gsub("^build/gray%-admin ", "%0--servers 127.0.0.1:"
                               .. default_mc.port .. " ")
            end
            c.run = table.concat(prelude, "\n") .. "\n" .. cmd
            if cmd:find("^[%a_][%w_]*=") then
                prelude[#prelude + 1] = cmd
            end
            script[#script + 1] = "echo '@@cmd " .. i .. "'"
            if c.comment and (cmd:find("^curl ") or cmd:find("^ask ")) then
                -- the output shown as the comment: lists and the percentage
                -- show after a refresh, so it is waited for (in this shell,
                -- which holds the variables the line may use)
                c.said = true
                script[#script + 1] = "for __i in $(seq " .. WAIT * 5 .. "); do __out=$(" .. cmd
                    .. "); __rc=$?; [ \"$__out\" = " .. harness.quote(c.comment)
                    .. " ] && break; sleep 0.2; done; printf '%s\\n' \"$__out\""
                script[#script + 1] = "echo \"@@rc " .. i .. " $__rc\""
            else
                script[#script + 1] = cmd
                script[#script + 1] = "echo \"@@rc " .. i .. " $?\""
            end
        end
    end
    local out = harness.sh("bash -c " .. harness.quote(table.concat(script, "\n")))
    local exact = not ex.conf:find("worker_processes") or ex.conf:find("worker_processes%s+1;")

    for i, c in ipairs(cmds) do
        if not c.skip then
            local got, rc = out:match("@@cmd " .. i .. "\n(.-)@@rc " .. i .. " (%d+)\n")
            if check(got, "no output for: " .. c.cmd .. "\n" .. out) then
                rc = tonumber(rc)
                local said = c.said
                if c.shown then
                    -- shown output may come later (metrics: each worker
                    -- flushes every second): the command is run again
                    local deadline = os.time() + WAIT
                    while not (rc == 0 and matches(c.shown, got, exact))
                          and os.time() <= deadline do
                        harness.sleep(0.1)
                        got, rc = harness.sh("bash -c " .. harness.quote(c.run))
                    end
                    check(matches(c.shown, got, exact), c.cmd .. ": got\n" .. got
                                                        .. "README shows\n" .. c.shown)
                end
                check(rc == 0, c.cmd .. ": exit " .. tostring(rc) .. ": " .. got)
                if said then
                    check(trim(got) == c.comment, c.cmd .. ": got '" .. trim(got)
                                                  .. "', README shows '" .. c.comment .. "'")
                end
            end
        end
    end

    local log = harness.read_file(dir .. "/error.log") or "(no error.log)"
    local expected, seen = EXPECTED_LOG[name] or {}, {}
    for line in log:gmatch("[^\n]+") do
        local meant
        for k, e in ipairs(expected) do
            if line:find(e[1]) then
                seen[k], meant = (seen[k] or 0) + 1, true
                break
            end
        end
        check(meant or not (line:find("%[error%]") or line:find("%[warn%]")
                            or line:find("uninitialized", 1, true)), "error.log: " .. line)
    end
    for k, e in ipairs(expected) do
        check((seen[k] or 0) == e[2], "error.log: " .. (seen[k] or 0) .. " lines like '" .. e[1]
                                      .. "', expected " .. e[2] .. ":\n" .. log)
    end
    for _, line in ipairs(harness.bad_log_lines(log)) do
        check(false, "error.log: " .. line)
    end

    return problems
end

describe("README.md and docs/*.md examples", function()
    local readme = read(REPO .. "/README.md")
    local all, base = examples(blocks(readme))
    local ask = readme:match("\n(ask%(%) {[^\n]-})\n")
    local docs = {}
    for path in io.popen("ls " .. REPO .. "/docs/*.md"):lines() do
        docs[#docs + 1] = path
    end
    table.sort(docs)
    for _, path in ipairs(docs) do
        for _, ex in ipairs((examples(blocks(read(path)), base))) do
            ex.label = path:match("docs/.*") .. ": " .. ex.label
            all[#all + 1] = ex
        end
    end

    -- hostile inputs for the parts the spec relies on
    it("reads comments and shown output as meant", function()
        assert.same({ "curl -s 'a # b'", "gray" }, { split_comment("curl -s 'a # b'   # gray") })
        assert.same({ 'S="x#y"' }, { split_comment('S="x#y"') })
        assert.is_nil((split_comment("   # only a comment")))
        assert.is_false(matches("gray\n", "stable\n", true))
        assert.is_true(matches('gray_a{x="1"} 2\n', 'gray_a{x="1"} 2\n# HELP\n', true))
        assert.is_false(matches('gray_a{x="1"} 2\n', 'gray_a{x="1"} 3\n', true))
        assert.is_true(matches('gray_a{x="1"} 2\ngray_a{x="2"} 1\n',
                               'gray_a{x="1"} 1\ngray_a{x="2"} 2\n', false))
        assert.is_false(matches('gray_a{x="1"} 2\n', 'gray_a{x="2"} 2\n', false))
    end)

    it("finds the README's ask() and every recipe", function()
        assert.truthy(ask, "README.md defines no ask() { ... } on one line")
        local labels = {}
        for _, ex in ipairs(all) do
            labels[#labels + 1] = ex.label
        end
        local have = table.concat(labels, "\n")
        for _, recipe in ipairs({ "a sticky share of users", "beta testers by id",
                                  "office ranges", "testers' override", "excluding users",
                                  "pulling a canary back", "moving to a memcached cluster",
                                  "watching it", "a timed ramp" }) do
            assert.truthy(have:find("recipe: " .. recipe, 1, true), "no recipe '" .. recipe
                          .. "' in:\n" .. have)
        end
        assert.truthy(have:find("docs/internals.md: shm", 1, true), have)
        assert.truthy(have:find("docs/progressive.md: ramp", 1, true), have)
        assert.truthy(have:find("docs/progressive.md: guard", 1, true), have)
    end)

    for _, ex in ipairs(all) do
        it("runs " .. ex.label .. " as shown", function()
            assert.is_true(#ex.steps > 0, "no shell block after " .. ex.label)
            local cleanup = {}
            finally(function()
                for i = #cleanup, 1, -1 do
                    cleanup[i]()
                end
            end)
            local problems = run(ex, ask, cleanup)
            assert.equal("", table.concat(problems, "\n\n"))
        end)
    end
end)
