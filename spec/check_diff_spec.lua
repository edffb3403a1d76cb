-- gray-admin check against the router (issue 12): over generated
-- configurations (targets, some sharing a location; the id lists the
-- router reads), memcached entries, id lists, ranges lists and percentages
-- (valid or not), check's answer (target name and reason) must be what real
-- nginx running the drop-in answers for the same request: its debug header
-- (location; reason) and $gray_target_name. Seeded, so a failure is
-- reproduced by running the spec again (GRAY_DIFF_SEED picks another seed).
--
-- One nginx per configuration; its requests go in one curl, check's runs in
-- one shell.

local harness = require "helpers.harness"

local sh, quote = harness.sh, harness.quote
local REPO = os.getenv("GRAY_REPO") or (sh("pwd"):gsub("%s+$", ""))
local BIN = os.getenv("GRAY_ADMIN") or REPO .. "/build/gray-admin"

local SEED = tonumber(os.getenv("GRAY_DIFF_SEED") or "") or 12
local CONFIGS = 8
local CASES = 250           -- per configuration: 2000 in all (even: two halves)

local SERVERS = [[
  server {
    listen 127.0.0.1:$PORT;
    set $gray_target_name "";
    set $gray_reason "";

    location / {
        set $gray_memcached 127.0.0.1:$MC;
        # time is not the subject here: 2 s, not 50 ms, so that a loaded machine
        # does not turn a lookup into a store-error
        set $gray_timeout 2000;
        set $gray_trusted 127.0.0.1;
        set $gray_cache_ttl 0;
        set $gray_ids "uid=cookie:uid, dev=header:X-Dev";
        set $gray_debug_header "X-Gray-Debug";
        set $gray_ranges_key "d:ranges";
        set $gray_percent_key "d:percent";
        $SETTINGS
        content_by_lua_file $REPO/lua/gray/dep.lua;
    }
    location @server      { return 200 "$sent_http_x_gray_debug|$gray_target_name"; }
    location @server_test { return 200 "$sent_http_x_gray_debug|$gray_target_name"; }
    location @t_a         { return 200 "$sent_http_x_gray_debug|$gray_target_name"; }
    location @t_b         { return 200 "$sent_http_x_gray_debug|$gray_target_name"; }
  }
]]

-- what configurations, entries and lines are made of
local NAMES = { "v2", "v3", "beta", "x-1" }             -- target names a router may have
local LOCATIONS = { "@t_a", "@t_b", "@server_test" }
local VALUES = { "1", "gray", "0", "", "stable", "v9", "x#y", "\195\169", "v2", "v3", "beta",
                 "x-1", "V2" }
local LINE_NAMES = { "", "", "gray", "1", "stable", "v9", "0", "a#b", "\195\169", ("n"):rep(65),
                     "v2", "v3", "beta", "x-1" }
local PERCENTS = { false, "0", "25", "37.5", "100", "abc", "150", " 50 ", "12.345", "60" }
local UIDS, DEVS = {}, {}
for i = 1, 14 do
    UIDS[i] = "u" .. i
    DEVS[i] = "d" .. i
end

-- A small deterministic generator (an LCG), the same on every machine.
local function rng(seed)
    local state = seed
    return function(n)
        state = (state * 1103515245 + 12345) % 2147483648
        return math.floor(state / 65536) % n + 1
    end
end

local function pick(r, t)
    return t[r(#t)]
end

-- An address: mostly inside 10.1-4.0-3.*, where the ranges are.
local function address(r)
    if r(8) == 1 then
        return "192.0.2." .. r(40)
    end
    return ("10.%d.%d.%d"):format(r(4), r(4) - 1, r(12))
end

local function cidr(r)
    local k = r(3)
    if k == 1 then
        return ("10.%d.0.0/16"):format(r(4))
    elseif k == 2 then
        return ("10.%d.%d.0/24"):format(r(4), r(4) - 1)
    end
    return ("10.%d.%d.%d"):format(r(4), r(4) - 1, r(12))
end

-- A list or ranges line: first field, maybe a name, now and then a third
-- field, a comment or a blank line.
local function line(r, first)
    local k = r(20)
    if k == 1 then
        return "# a comment"
    elseif k == 2 then
        return ""
    end
    local name = pick(r, LINE_NAMES)
    local text = first .. (name ~= "" and " " .. name or "")
    if k == 3 then
        text = text .. " extra"
    end
    return text
end

-- One configuration and its memcached values.
local function config(r)
    local c = { targets = {}, location = { gray = "@server_test", stable = "@server" } }
    for _, name in ipairs(NAMES) do
        if r(2) == 1 then
            local loc = pick(r, LOCATIONS)
            c.targets[#c.targets + 1] = name .. "=" .. loc
            c.location[name] = loc
        end
    end
    local lists = {}
    for _, name in ipairs({ "uid", "dev" }) do
        if r(2) == 1 then
            lists[#lists + 1] = name
        end
    end
    c.targets = table.concat(c.targets, ", ")
    c.lists = table.concat(lists, ", ")

    local values = {}
    for _ = 1, 25 do
        values[address(r)] = pick(r, VALUES)
    end
    for _ = 1, 6 do
        values["uid:" .. pick(r, UIDS)] = pick(r, VALUES)
        values["dev:" .. pick(r, DEVS)] = pick(r, VALUES)
    end
    for _, kind in ipairs({ "uid", "dev" }) do
        local ids, text = kind == "uid" and UIDS or DEVS, {}
        for _ = 1, r(10) do
            text[#text + 1] = line(r, pick(r, ids))
        end
        -- a pinned sentinel of each id list tells when its image is mapped
        -- (each list compiles on its own: the ranges' sentinel says nothing
        -- of them); no case asks for this id
        text[#text + 1] = "sentinel stable"
        values["gray:list:" .. kind] = table.concat(text, "\n")
    end
    -- a pinned sentinel tells when the router has compiled the lists
    local ranges = { "198.51.100.0/24 stable" }
    for _ = 1, r(8) do
        ranges[#ranges + 1] = line(r, cidr(r))
    end
    values["d:ranges"] = table.concat(ranges, "\n")
    c.percent = pick(r, PERCENTS)
    values["d:percent"] = c.percent or nil
    c.values = values
    return c
end

describe("gray-admin check agrees with the router", function()
    after_each(harness.no_error_log)
    local mc, nginx

    setup(function()
        mc = harness.memcached()
    end)

    local lists_dirs = {}
    teardown(function()
        if nginx then nginx:stop() end
        if mc then mc:destroy() end
        for _, dir in ipairs(lists_dirs) do
            harness.sh("rm -rf " .. harness.quote(dir))
        end
    end)

    it("over " .. CONFIGS * CASES .. " generated cases", function()
        local r = rng(SEED)
        local disagree, total, reasons, written = {}, 0, {}, {}
        for n = 1, CONFIGS do
            local c = config(r)
            -- the last configuration's keys go first
            local del = {}
            for key in pairs(written) do
                del[#del + 1] = "delete " .. key .. "\r\n"
            end
            if #del > 0 then
                mc:cmd_file(table.concat(del))
            end
            mc:set_many(c.values)
            written = c.values

            -- a list directory of this configuration's own: another one's
            -- images (same keys and names) would be mapped at start, before
            -- the refresh sees memcached's new values
            local lists_dir = ("/dev/shm/gray-check-diff-%d-%d"):format(harness.now() * 1000 % 1e9, n)
            lists_dirs[#lists_dirs + 1] = lists_dir
            local settings = { 'set $gray_lists_dir "' .. lists_dir .. '";' }
            if c.targets ~= "" then
                settings[#settings + 1] = 'set $gray_targets "' .. c.targets .. '";'
            end
            if c.lists ~= "" then
                settings[#settings + 1] = 'set $gray_lists "' .. c.lists .. '";'
            end
            nginx = harness.nginx({ memcached_port = mc.port,
                                    servers = SERVERS:gsub("%$SETTINGS",
                                                           table.concat(settings, "\n")) })
            local t0 = os.time()
            while nginx:get("/", { headers = { ["X-Real-IP"] = "198.51.100.1" } }).body
                  ~= "@server; range|stable" do
                assert(os.time() - t0 < 5, "the router never compiled the lists: "
                                           .. nginx:error_log():sub(-2000))
                harness.sleep(0.05)
            end
            for _, kind in ipairs({ "uid", "dev" }) do
                if (", " .. c.lists .. ","):find(", " .. kind .. ",", 1, true) then
                    local headers = { ["X-Real-IP"] = "198.51.100.1" }
                    if kind == "uid" then
                        headers.Cookie = "uid=sentinel"
                    else
                        headers["X-Dev"] = "sentinel"
                    end
                    while nginx:get("/", { headers = headers }).body
                          ~= "@server; list:" .. kind .. "|stable" do
                        assert(os.time() - t0 < 5, "the router never compiled gray:list:" .. kind
                                                   .. ": " .. nginx:error_log():sub(-2000))
                        harness.sleep(0.05)
                    end
                end
            end

            local cases, reqs, script = {}, {}, {}
            for i = 1, CASES do
                local k = { ip = address(r), uid = r(2) == 1 and pick(r, UIDS) or nil,
                            dev = r(2) == 1 and pick(r, DEVS) or nil }
                cases[i] = k
                local headers = { ["X-Real-IP"] = k.ip, ["X-Dev"] = k.dev }
                if k.uid then
                    headers.Cookie = "uid=" .. k.uid
                end
                reqs[i] = { "/", headers = headers }
                local args = { BIN, "--servers 127.0.0.1:" .. mc.port,
                               "--ranges-key d:ranges --percent-key d:percent",
                               "--targets " .. quote(c.targets), "--lists " .. quote(c.lists),
                               "check", k.ip }
                if k.uid then args[#args + 1] = "--id uid=" .. k.uid end
                if k.dev then args[#args + 1] = "--id dev=" .. k.dev end
                script[i] = "echo @@" .. i .. "; " .. table.concat(args, " ") .. " 2>&1"
            end
            -- check's runs in two shells, in the background while curl asks
            -- nginx
            local dir, half = nginx.dir, math.floor(CASES / 2)
            for part = 1, 2 do
                local f = assert(io.open(dir .. "/check" .. part .. ".sh", "wb"))
                f:write(table.concat(script, "\n", part == 1 and 1 or half + 1,
                                     part == 1 and half or CASES), "\n")
                f:close()
            end
            sh("(sh " .. dir .. "/check1.sh > " .. dir .. "/check1.out; touch " .. dir
               .. "/check1.done) >/dev/null 2>&1 & (sh " .. dir .. "/check2.sh > " .. dir
               .. "/check2.out; touch " .. dir .. "/check2.done) >/dev/null 2>&1 & true")
            local answers = nginx:sequence(reqs)
            local t1 = os.time()
            local function exists(path)
                local f = io.open(path)
                if f then
                    f:close()
                end
                return f ~= nil
            end
            while not (exists(dir .. "/check1.done") and exists(dir .. "/check2.done")) do
                assert(os.time() - t1 < 30, "gray-admin check never finished")
                harness.sleep(0.02)
            end
            local out = sh("cat " .. dir .. "/check1.out " .. dir .. "/check2.out")
            local checks, pos = {}, 1
            while true do
                local s, e, i = out:find("@@(%d+)\n", pos)
                if not s then
                    break
                end
                local nexts = out:find("@@%d+\n", e + 1) or #out + 1
                checks[tonumber(i)] = out:sub(e, nexts - 1)
                pos = nexts
            end

            for i, k in ipairs(cases) do
                total = total + 1
                local loc, reason, label = answers[i].body:match("^(%S+); (%S+)|(.*)$")
                local text = checks[i] or ""
                local target, creason = text:match("\ndecision: (%S+) %(reason (%S+)%)")
                reasons[tostring(reason)] = (reasons[tostring(reason)] or 0) + 1
                if answers[i].status ~= 200 or target ~= label or creason ~= reason
                   or c.location[target] ~= loc then
                    disagree[#disagree + 1] = ("config %d (targets '%s', lists '%s', percent %s):"
                        .. " %s uid=%s dev=%s: router %s (%s), check %s (%s)\n%s")
                        :format(n, c.targets, c.lists, tostring(c.percent), k.ip,
                                tostring(k.uid), tostring(k.dev), answers[i].body,
                                answers[i].status, tostring(target), tostring(creason), text)
                end
            end
            assert.same({}, harness.bad_log_lines(nginx:error_log()))
            nginx:stop()
            nginx = nil
        end

        local seen = {}
        for reason, count in pairs(reasons) do
            seen[#seen + 1] = reason .. "=" .. count
        end
        table.sort(seen)
        if os.getenv("GRAY_SPEC_REPORT") then
            print(("\n  check vs router: %d cases, %d disagreements; %s"):format(
                  total, #disagree, table.concat(seen, " ")))
        end
        assert.equal(CONFIGS * CASES, total)
        -- every rule and outcome came up, so the cases meant something
        for _, reason in ipairs({ "ip", "id:uid", "id:dev", "list:uid", "list:dev", "range",
                                  "percent", "default", "unknown-target" }) do
            assert(reasons[reason], "no case ended with reason " .. reason .. ": "
                                    .. table.concat(seen, " "))
        end
        assert(#disagree == 0, #disagree .. " of " .. total .. " cases disagree; the first:\n"
                               .. table.concat(disagree, "\n", 1, math.min(5, #disagree)))
    end)
end)
