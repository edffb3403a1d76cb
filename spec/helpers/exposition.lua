-- helpers.exposition: the Prometheus text format 0.0.4 checker (what
-- `promtool check metrics` checks), with a histogram's rules (every series
-- of buckets has an le label, bounds rising to +Inf, counts that never fall,
-- and a +Inf bucket equal to its _count). The one checker of the specs that
-- read the metrics page (metrics_spec, which also tests it, outcome_spec).

local assert = require "luassert"

local M = {}

-- Whether s is valid UTF-8 (RFC 3629: no overlong form, no surrogate,
-- nothing above U+10FFFF); false and the offset of the first bad byte.
local function utf8_valid(s)
    local i, n = 1, #s
    while i <= n do
        local c = s:byte(i)
        local len, min
        if c < 0x80 then
            len = 1
        elseif c >= 0xC2 and c <= 0xDF then
            len, min = 2, 0x80
        elseif c >= 0xE0 and c <= 0xEF then
            len, min = 3, 0x800
        elseif c >= 0xF0 and c <= 0xF4 then
            len, min = 4, 0x10000
        else
            return false, i
        end
        if len > 1 then
            if i + len - 1 > n then
                return false, i
            end
            local cp = c % 2 ^ (7 - len)
            for j = i + 1, i + len - 1 do
                local b = s:byte(j)
                if b < 0x80 or b > 0xBF then
                    return false, j
                end
                cp = cp * 64 + (b - 0x80)
            end
            if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then
                return false, i
            end
        end
        i = i + len
    end
    return true
end

-- A sample value as the text format has it: a Go float, NaN, +Inf or -Inf.
local function valid_value(v)
    if v == "NaN" or v == "+Inf" or v == "-Inf" then
        return true
    end
    local m, e = v:match("^[+-]?([%d.]+)(.*)$")
    return m ~= nil and m:find("%d") ~= nil and not m:find("%..*%.")
           and (e == "" or e:match("^[eE][+-]?%d+$") ~= nil)
end

-- The labels of a sample from s's "{" at i: a table and the offset after
-- "}", or nil, what is wrong. Escapes: \\, \" and \n only.
local function parse_labels(s, i)
    local labels = {}
    i = i + 1
    if s:sub(i, i) == "}" then
        return labels, i + 1
    end
    while true do
        local name, j = s:match('^([%a_][%w_]*)="()', i)
        if not name then
            return nil, "bad label name at " .. i
        end
        if labels[name] then
            return nil, "label " .. name .. " twice"
        end
        i = j
        local buf = {}
        while true do
            local c = s:sub(i, i)
            if c == "" then
                return nil, "unterminated label value"
            elseif c == '"' then
                i = i + 1
                break
            elseif c == "\\" then
                local e = s:sub(i + 1, i + 1)
                if e == "\\" or e == '"' then
                    buf[#buf + 1] = e
                elseif e == "n" then
                    buf[#buf + 1] = "\n"
                else
                    return nil, "bad escape \\" .. e
                end
                i = i + 2
            elseif c:find("%c") then
                return nil, ("control byte %d in a label value"):format(c:byte())
            else
                buf[#buf + 1] = c
                i = i + 1
            end
        end
        labels[name] = table.concat(buf)
        local c = s:sub(i, i)
        if c == "}" then
            return labels, i + 1
        elseif c ~= "," then
            return nil, "',' or '}' expected at " .. i
        end
        i = i + 1
    end
end

-- The text exposition format 0.0.4, as `promtool check metrics` checks it
-- (Debian 12 has promtool only in the 96 MB prometheus package): valid
-- UTF-8; HELP and TYPE at most once per name, TYPE before its samples;
-- metric and label names, label values with their escapes, and values;
-- each name's samples together; no series twice; counters end in _total,
-- nothing else does, and count up from 0. Returns the problems found.
local TYPES = { counter = true, gauge = true, histogram = true, summary = true, untyped = true }
local function exposition_problems(text)
    local problems = {}
    local function bad(n, msg)
        problems[#problems + 1] = "line " .. n .. ": " .. msg
    end
    local ok, at = utf8_valid(text)
    if not ok then
        bad(select(2, text:sub(1, at):gsub("\n", "")) + 1, "not UTF-8 at byte " .. at)
    end
    if text ~= "" and text:sub(-1) ~= "\n" then
        bad(0, "no newline at the end")
    end
    local typed, helped, done, series, hists = {}, {}, {}, {}, {}
    local current
    local n = 0
    for line in text:gmatch("([^\n]*)\n") do
        n = n + 1
        if line:find("^#") then
            local what, name, rest = line:match("^# (%u+) ([%a_:][%w_:]*) ?(.*)$")
            if what == "TYPE" then
                if typed[name] or done[name] or name == current then
                    bad(n, "TYPE of " .. name .. " again or after its samples")
                elseif not TYPES[rest] then
                    bad(n, "unknown type " .. rest)
                end
                typed[name] = rest
            elseif what == "HELP" then
                if helped[name] then
                    bad(n, "HELP of " .. name .. " twice")
                end
                helped[name] = true
            end
        elseif line ~= "" then
            local name, i = line:match("^([%a_:][%w_:]*)()")
            if not name then
                bad(n, "no metric name: " .. line)
            else
                local labels, after = {}, i
                if line:sub(i, i) == "{" then
                    labels, after = parse_labels(line, i)
                end
                if not labels then
                    bad(n, after .. ": " .. line)
                else
                    local value = line:sub(after):match("^ (%S+)$")
                                  or line:sub(after):match("^ (%S+) %-?%d+$")
                    if not value or not valid_value(value) then
                        bad(n, "bad value: " .. line)
                    end
                    if name ~= current then
                        if done[name] then
                            bad(n, name .. "'s samples are not together")
                        end
                        if current then
                            done[current] = true
                        end
                        current = name
                    end
                    local kind = typed[name]
                    if kind == "counter" and (not name:find("_total$")
                                              or (value and tonumber(value) and tonumber(value) < 0)) then
                        bad(n, "a counter named without _total or below 0: " .. line)
                    elseif kind and kind ~= "counter" and name:find("_total$") then
                        bad(n, "a " .. kind .. " named _total: " .. line)
                    end
                    local names = {}
                    for k, v in pairs(labels) do
                        names[#names + 1] = k .. "=" .. v
                    end
                    table.sort(names)
                    local id = name .. "\0" .. table.concat(names, "\0")
                    if series[id] then
                        bad(n, "series twice: " .. line)
                    end
                    series[id] = true
                    local family, part = name:match("^(.-)_(%a+)$")
                    if family and typed[family] == "histogram" and value then
                        local le = labels.le
                        labels.le = nil
                        local rest = {}
                        for k, v in pairs(labels) do
                            rest[#rest + 1] = k .. "=" .. v
                        end
                        table.sort(rest)
                        local hid = family .. "\0" .. table.concat(rest, "\0")
                        local h = hists[hid] or { buckets = {}, line = n }
                        hists[hid] = h
                        if part == "bucket" then
                            if not le then
                                bad(n, "a bucket without le: " .. line)
                            else
                                h.buckets[#h.buckets + 1] = { le = le, v = tonumber(value), n = n }
                            end
                        elseif part == "count" then
                            h.count = tonumber(value)
                        end
                    end
                end
            end
        end
    end
    for _, h in pairs(hists) do
        local last_le, last_v = -math.huge, 0
        for _, b in ipairs(h.buckets) do
            local le = b.le == "+Inf" and math.huge or tonumber(b.le)
            if not le or le <= last_le then
                bad(b.n, "bucket bound " .. b.le .. " not above the one before")
            elseif b.v < last_v then
                bad(b.n, "bucket count below the one before")
            end
            last_le, last_v = le or last_le, b.v
        end
        if last_le ~= math.huge then
            bad(h.line, "a histogram without its +Inf bucket")
        elseif h.count ~= last_v then
            bad(h.line, "a histogram's _count " .. tostring(h.count) .. " is not its +Inf bucket "
                        .. tostring(last_v))
        end
    end
    return problems
end
M.problems = exposition_problems

--- Asserts that a page is valid exposition text; returns it.
function M.valid_page(text)
    assert.same({}, exposition_problems(text), text)
    return text
end

return M

