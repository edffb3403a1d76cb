-- gray.status: the status page of a node. An HTML page that refreshes
-- itself, or with ?format=json the same data: per target, requests/s, the
-- 5xx ratio and the p95 response time over the window (gray.outcome's
-- counts, every worker's); the halts with their reasons; the ramp, the
-- share in force and its next step; the percentage; the lists (version:
-- memcached's CAS, entries). The routers shown are those built in this
-- worker (or opts.router).
--
--   http {
--       lua_shared_dict gray_metrics 1m;
--       log_by_lua_file /path/to/lua-resty-gray/lua/gray/outcome.lua;
--       server {
--           location = /gray/status {
--               allow 10.0.0.0/8; deny all;           # operators only
--               content_by_lua_block { require("gray.status").render() }
--           }
--       }
--   }
--
-- render(opts): opts.router (a gray router; default: every router of the
-- worker), opts.window (s, 1 to 60, default 60), opts.refresh (s between
-- two reloads of the page, default 5), opts.shm (the metrics dict, default
-- gray_metrics). data(opts) gives the table that ?format=json encodes.
-- A handler's work, not the request path's (60 x 13 shared-dict reads per
-- target, as gray.outcome.window).

local outcome = require "gray.outcome"

local ngx = ngx
local type, pairs, ipairs, tostring, pcall, next = type, pairs, ipairs, tostring, pcall, next
local floor = math.floor
local concat, sort = table.concat, table.sort
local format = string.format

local _M = { _VERSION = "0.1.0" }

local WINDOW = 60
local REFRESH = 5

-- The default target's name on the page and in JSON ("1" inside the
-- router's records on some versions).
local function label(name)
    return name == "1" and "gray" or name
end

-- The fleet-wide halt of a target, from gray.halt when this version has
-- it: { since, node, reason }, or false.
local function halt_of(name)
    local ok, halt = pcall(require, "gray.halt")
    if not ok or type(halt) ~= "table" or not halt.record then
        return false
    end
    local rec = halt.record(name)
    if not rec then
        return false
    end
    return { since = rec.at or false, node = rec.node or "?", reason = rec.reason or "" }
end

local function routers_of(opts)
    if opts.router then
        return { opts.router }
    end
    local list = {}
    for r in pairs(require("gray").routers) do
        list[#list + 1] = r
    end
    return list
end

--- The page's data: { time, window, refresh, targets = { { name, requests,
-- rps, errors, error_ratio, p95 (s or false), halt (false or { since,
-- node, reason }) } }, ramp (false or { key, start, share, step, steps,
-- next_at, next_share, frozen, frozen_since }), percent (in force), percent_key, lists
-- = { { key, kind, version, entries } } }.
function _M.data(opts)
    opts = opts or {}
    local window = opts.window or WINDOW
    if type(window) ~= "number" or window < 1 or window > WINDOW then
        error("gray.status: window must be a number of seconds from 1 to " .. WINDOW, 2)
    end
    local d = {
        time = ngx.now(), window = window, refresh = opts.refresh or REFRESH,
        targets = {}, ramp = false, percent = false, percent_key = false, lists = {},
    }
    local names, seen = {}, {}
    for _, r in ipairs(routers_of(opts)) do
        for name in pairs(r.target_names or {}) do
            if not seen[name] then
                seen[name] = true
                names[#names + 1] = name
            end
        end
        local st = r:list_stats()
        if st.ramp and not d.ramp then
            d.ramp = st.ramp
        end
        if not d.percent_key then
            d.percent, d.percent_key = st.percent, st.percent_key or false
        end
        for _, img in ipairs(st.images or {}) do
            if not seen["list " .. img.key] then
                seen["list " .. img.key] = true
                d.lists[#d.lists + 1] = img
            end
        end
    end
    -- stable first, then the default target, then the others by name
    sort(names, function(a, b)
        local ra = a == "stable" and 0 or (a == "1" or a == "gray") and 1 or 2
        local rb = b == "stable" and 0 or (b == "1" or b == "gray") and 1 or 2
        if ra ~= rb then
            return ra < rb
        end
        return a < b
    end)
    for _, name in ipairs(names) do
        local requests, errors, p95 = outcome.window(name, window, opts.shm)
        local t = {
            name = label(name), requests = requests or 0, rps = (requests or 0) / window,
            errors = errors or 0, error_ratio = false, p95 = p95 or false,
            halt = name ~= "stable" and halt_of(label(name)) or false,
        }
        if requests and requests > 0 then
            t.error_ratio = errors / requests
        end
        d.targets[#d.targets + 1] = t
    end
    return d
end

-- ---- JSON ------------------------------------------------------------------

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function json(v, out)
    local t = type(v)
    if t == "string" then
        out[#out + 1] = '"' .. v:gsub('[%c"\\]', function(c)
            return ESC[c] or format("\\u%04x", c:byte())
        end) .. '"'
    elseif t == "number" then
        if v ~= v or v == math.huge or v == -math.huge then
            out[#out + 1] = "null"
        elseif v == floor(v) and v > -1e15 and v < 1e15 then
            out[#out + 1] = format("%d", v)
        else
            out[#out + 1] = format("%.6g", v)
        end
    elseif t == "boolean" then
        out[#out + 1] = v and "true" or "false"
    elseif t == "table" then
        if v[1] ~= nil or next(v) == nil then
            out[#out + 1] = "["
            for i, item in ipairs(v) do
                if i > 1 then out[#out + 1] = "," end
                json(item, out)
            end
            out[#out + 1] = "]"
        else
            local keys = {}
            for k in pairs(v) do
                keys[#keys + 1] = tostring(k)
            end
            sort(keys)
            out[#out + 1] = "{"
            for i, k in ipairs(keys) do
                if i > 1 then out[#out + 1] = "," end
                json(k, out)
                out[#out + 1] = ":"
                json(v[k], out)
            end
            out[#out + 1] = "}"
        end
    else
        out[#out + 1] = "null"
    end
    return out
end

--- The data as JSON text (false as false, an empty list as []).
function _M.json(d)
    return concat(json(d, {}))
end

-- ---- HTML ------------------------------------------------------------------

local function esc(s)
    return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
                                           ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local function utc(t)
    return os.date("!%Y-%m-%d %H:%M:%S UTC", floor(t))
end

local function span(s)
    s = floor(s + 0.5)
    if s < 0 then s = -s end
    local h, m, sec = floor(s / 3600), floor(s / 60) % 60, s % 60
    if h > 0 then
        return format("%dh%02dm", h, m)
    elseif m > 0 then
        return format("%dm%02ds", m, sec)
    end
    return format("%ds", sec)
end

local function pct(x)
    return format("%.2f%%", x)
end

local CSS = [[
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f5f6f8;
color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 28px;display:flex;align-items:baseline;gap:18px}
header h1{font-size:19px;margin:0;font-weight:600}header span{color:#aab3c5;font-size:13px}
main{padding:18px 28px;display:grid;gap:18px;max-width:1100px}
section{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:14px 18px}
h2{font-size:14px;text-transform:uppercase;letter-spacing:.06em;color:#5b6475;margin:0 0 10px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:7px 10px;
border-bottom:1px solid #eef0f4}th{font-size:12px;color:#5b6475;font-weight:600}
td.n{font-variant-numeric:tabular-nums;text-align:right;white-space:nowrap;width:7em}
th.n{text-align:right;white-space:nowrap}
.ok{color:#17803d;font-weight:600}.halted{color:#b42318;font-weight:700}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;font-weight:600}
.b-ok{background:#e3f6e8;color:#17803d}.b-halt{background:#fde7e5;color:#b42318}
.b-frozen{background:#fff2d6;color:#8a5a00}.muted{color:#7a8394}
.bar{height:14px;background:#eef0f4;border-radius:7px;position:relative;margin:8px 0 4px}
.fill{height:14px;background:#3b6fd8;border-radius:7px}
.steps{display:flex;gap:8px;flex-wrap:wrap;margin-top:6px}
.step{border:1px solid #dde1e8;border-radius:6px;padding:3px 8px;font-size:13px}
.step.now{border-color:#3b6fd8;background:#eaf0fd;font-weight:600}
.step.done{color:#7a8394}
]]

local function targets_html(d, out)
    out[#out + 1] = '<section id="targets"><h2>Targets, last ' .. d.window .. ' s</h2><table>'
                    .. '<tr><th>target</th><th class="n">requests/s</th><th class="n">5xx'
                    .. ' ratio</th><th class="n">p95</th><th>state</th></tr>'
    for _, t in ipairs(d.targets) do
        local state
        if t.halt then
            state = '<span class="badge b-halt">halted</span> '
                    .. (t.halt.since and "since " .. esc(utc(t.halt.since)) .. " " or "")
                    .. "by " .. esc(t.halt.node) .. ': <span class="halted">'
                    .. esc(t.halt.reason) .. "</span>"
        else
            state = '<span class="badge b-ok">routed</span>'
        end
        out[#out + 1] = format('<tr data-target="%s"><td><b>%s</b></td><td class="n">%.2f</td>'
                               .. '<td class="n">%s</td><td class="n">%s</td><td>%s</td></tr>',
                               esc(t.name), esc(t.name), t.rps,
                               t.error_ratio and pct(t.error_ratio * 100) or "&ndash;",
                               t.p95 and format("%d ms", floor(t.p95 * 1000 + 0.5))
                               or "&ndash;", state)
    end
    if #d.targets == 0 then
        out[#out + 1] = '<tr><td colspan="5" class="muted">no router in this worker yet</td></tr>'
    end
    out[#out + 1] = "</table></section>"
end

local function ramp_html(d, out)
    local r = d.ramp
    out[#out + 1] = '<section id="ramp"><h2>Ramp</h2>'
    if not r then
        out[#out + 1] = format('<p>No ramp: the percentage is in force, <b id="percent">%s</b>'
                               .. ' (%s).</p></section>', pct(d.percent or 0),
                               esc(d.percent_key or "none"))
        return
    end
    out[#out + 1] = format('<p>Share in force <b id="share">%s</b> (step %d of %d)%s, started %s'
                           .. ' (%s ago), %s.</p>', pct(r.share), r.step, #r.steps,
                           r.frozen and ' <span class="badge b-frozen">frozen by the halt of'
                           .. " gray" .. (r.frozen_since and " since " .. esc(utc(r.frozen_since))
                           or "") .. '</span>' or "", esc(utc(r.start)), span(d.time - r.start),
                           esc(r.key))
    out[#out + 1] = format('<div class="bar"><div class="fill" style="width:%.2f%%"></div></div>',
                           r.share)
    if r.next_at then
        out[#out + 1] = format('<p id="next">Next: <b>%s</b> at %s (in %s).</p>',
                               pct(r.next_share), esc(utc(r.next_at)), span(r.next_at - d.time))
    else
        out[#out + 1] = '<p id="next">' .. (r.frozen and "No next step while halted: after"
                        .. " the resume the ramp goes on from this step, its later steps later"
                        .. " by the halt's duration." or "The last step is in force.") .. "</p>"
    end
    out[#out + 1] = '<div class="steps">'
    for i, s in ipairs(r.steps) do
        local cls = i == r.step and "step now" or i < r.step and "step done" or "step"
        out[#out + 1] = format('<span class="%s">%s @ %s</span>', cls, pct(s.share / 100),
                               i == 1 and "start" or "+" .. span(s.at))
    end
    out[#out + 1] = format('</div><p class="muted">The percentage (%s) is not in force while'
                           .. ' the ramp exists.</p></section>', esc(d.percent_key or "none"))
end

local function lists_html(d, out)
    out[#out + 1] = '<section id="lists"><h2>Lists</h2><table><tr><th>key</th><th>kind</th>'
                    .. '<th class="n">version</th><th class="n">entries</th></tr>'
    for _, l in ipairs(d.lists) do
        out[#out + 1] = format('<tr><td>%s</td><td>%s</td><td class="n">%s</td>'
                               .. '<td class="n">%d</td></tr>', esc(l.key), esc(l.kind),
                               l.version and esc(l.version) or '<span class="muted">none</span>',
                               l.entries or 0)
    end
    if #d.lists == 0 then
        out[#out + 1] = '<tr><td colspan="4" class="muted">no lists configured</td></tr>'
    end
    out[#out + 1] = "</table></section>"
end

--- The data as the HTML page (meta refresh every d.refresh s).
function _M.html(d)
    local out = {
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        format('<meta http-equiv="refresh" content="%d">', d.refresh),
        "<title>gray status</title><style>", CSS, "</style></head><body>",
        format("<header><h1>lua-resty-gray</h1><span>%s &middot; refreshes every %d s &middot;"
               .. ' <a style="color:#aab3c5" href="?format=json">json</a></span></header><main>',
               esc(utc(d.time)), d.refresh),
    }
    targets_html(d, out)
    ramp_html(d, out)
    lists_html(d, out)
    out[#out + 1] = "</main></body></html>\n"
    return concat(out)
end

--- Answers the request with the page (?format=json: the data as JSON).
function _M.render(opts)
    local d = _M.data(opts)
    ngx.header["Cache-Control"] = "no-store"
    if ngx.var.arg_format == "json" then
        ngx.header["Content-Type"] = "application/json"
        ngx.print(_M.json(d), "\n")
    else
        ngx.header["Content-Type"] = "text/html; charset=utf-8"
        ngx.print(_M.html(d))
    end
end

return _M
