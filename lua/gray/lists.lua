-- gray.lists: the memcached values a router compiles instead of asking per
-- request: the address ranges (`gray:ranges`), id lists (`gray:list:<name>`)
-- and the percentage (`gray:percent`).
--
-- Ranges and id lists are compiled once per node into list images (see
-- gray.h): flat files in a tmpfs directory (lists_dir, default
-- /dev/shm/lua-resty-gray, 0700) that every worker maps read-only and
-- looks up in place. One image per list key, servers, distribution and
-- target names (its file is named by their hash), so every router of every
-- worker with the same list shares it. Per image, one worker of the node
-- holds a lock file (flock, freed by the kernel when the worker dies: the
-- next worker to try takes over). The holder asks memcached "mg <key> c"
-- (the CAS alone, ~30 bytes) every refresh_interval; only a new CAS is
-- fetched (a split list's parts one at a time, each copied into the
-- compile job in 256 kB slices, one event-loop turn each) and compiled by
-- the helper process gray-compile (its own scheduling group at nice 19;
-- started and waited for by a C thread of the job; the thread compiles
-- where the helper cannot start), then renamed into place. The other
-- workers read the image's header (its version, the CAS) every interval
-- and map a new one; a worker
-- maps the current image when its router starts, before its first
-- decision. No request waits for a fetch or a compile.
--
-- A failed refresh keeps the last good image; a split list with a part
-- missing is retried with a backoff, not each interval. When the directory
-- cannot be used, each worker compiles its own images in memory (in a
-- thread too) and says so once in the log. Images no worker has used for
-- an hour (their lock free and untouched) are removed by a holder.
--
-- The percentage is a tiny value: each worker checks its CAS with mg once
-- per interval (whichever of its routers comes first; the others share
-- the value) and reads it when it changed. So is a timed ramp (`gray:ramp`,
-- gray.ramp): while it exists its share in force replaces the percentage,
-- taken from this node's clock at each refresh and at each step's time (a
-- timer). The halts (gray.halt, <halt_key>:<target>) are read after the
-- percentage, all in one multi-get: "END" alone while none is set.

local gray_ffi = require "gray.ffi"
local metrics = require "gray.metrics"
local ramp_mod = require "gray.ramp"
local halt = require "gray.halt"

local image_find_id = gray_ffi.image_find_id
local image_find_ip = gray_ffi.image_find_ip
local image_open = gray_ffi.image_open
local image_peek = gray_ffi.image_peek
local image_info = gray_ffi.image_info
local image_version = gray_ffi.image_version
local image_compile_start = gray_ffi.image_compile_start
local image_poll = gray_ffi.image_poll
local image_job_free = gray_ffi.image_job_free
local image_job_new = gray_ffi.image_job_new
local image_job_add = gray_ffi.image_job_add
local image_job_run = gray_ffi.image_job_run
local image_job_image = gray_ffi.image_job_image
local image_hash = gray_ffi.image_hash
local lock_try, lock_release = gray_ffi.lock_try, gray_ffi.lock_release
local bucket = gray_ffi.bucket
local timer_every = ngx.timer.every
local timer_at = ngx.timer.at
local sleep = ngx.sleep
local ngx_log = ngx.log
local WARN, ERR, INFO = ngx.WARN, ngx.ERR, ngx.INFO
local tonumber, tostring, pairs, ipairs, pcall, type, next = tonumber, tostring, pairs, ipairs,
    pcall, type, next
local concat = table.concat
local floor, min, max = math.floor, math.min, math.max
local update_time, ngx_now = ngx.update_time, ngx.now
local setmetatable = setmetatable

local _M = { _VERSION = gray_ffi.VERSION }
local mt = { __index = _M }

local PARTS_MAX = 1024
local BACKOFF_MAX = 60          -- s between two retries of a list with a part missing
local POLL_EVERY = 0.02         -- s between two polls of a running compile
local SLICE = 256 * 1024        -- bytes copied into a compile job at a time (~0.2 ms)
-- s slept between two reads or slices (sleep(0) warns without OpenResty's
-- delayed-events patch, which Debian's nginx lacks)
local YIELD = 0.001
local ABSENT = "0"              -- the version of "no list" (memcached never hands out CAS 0)
-- an image whose lock no worker has held (nor touched) for STALE_AGE s is
-- removed, by a holder, at most every SWEEP_EVERY s per directory
local STALE_AGE = 3600
local SWEEP_EVERY = 600
_M.DEFAULT_DIR = "/dev/shm/lua-resty-gray"

local function now_precise()
    update_time()
    return ngx_now()
end

-- The ms left before deadline (a refresh's one deadline: every memcached
-- call of one refresh shares it, so a slow server holds a worker, and an
-- exiting worker, for refresh_timeout at most), or nil when none is left.
local ms_left = require("gray.util").ms_left_fresh

-- This worker's images: image name -> feed (shared by its routers).
local feeds = {}
-- This worker's percentages: servers and key -> { key, threshold, cas,
-- compiles, checked_at, busy }, shared by its routers (one mg per interval
-- per worker, not per router).
local percents = {}
local NO_PERCENT = { threshold = 0, compiles = 0 }
-- directory -> when this worker may next remove stale images from it
local next_sweep = {}
-- directories already reported unusable (logged once per worker)
local dir_warned = {}

-- ---- the node's copies ------------------------------------------------------

-- What a refresh read last on this node (the percentage's threshold, the
-- ramp's value) is also kept in the metrics dict, as gray.halt keeps the
-- halts: a worker started later (a reload, a respawn) decides with it from
-- its first request (start), not from its first refresh. Until that refresh
-- confirms it, it is the node's last known value: the first refresh reads
-- the value itself (no CAS is copied), whatever the copy said.
local function node_dict()
    return metrics.dict() or ngx.shared[metrics.dict_name()]
end

local function keep_copy(key, value)
    local dict = node_dict()
    if dict then
        if value == nil then
            dict:delete(key)
        else
            dict:set(key, value)
        end
    end
end

-- ---- images ----------------------------------------------------------------

local function metric_labels(feed)
    return { key = feed.key }
end

-- Maps the image at feed.path when its version differs from the one
-- mapped. Returns true when a new image was taken.
local function map_file(feed)
    local v = image_peek(feed.path)
    if not v or v == feed.version then
        return false
    end
    if v == ABSENT then
        feed.img, feed.entries, feed.version = nil, 0, v
        return true
    end
    local t0 = now_precise()
    local img, err = image_open(feed.path)
    feed.map_ms = (now_precise() - t0) * 1000
    if not img then
        feed.log:report("image:" .. feed.key, "cannot map the image of " .. feed.key .. " ("
                        .. feed.path .. "): " .. tostring(err))
        return false
    end
    feed.img = img
    feed.version = image_version(img)
    feed.entries = image_info(img).entries
    feed.compiles = feed.compiles + 1
    return true
end

-- What a compile reported: its bad lines and unknown targets, once per
-- change and per list, with their line numbers.
local function log_lines(feed, st)
    if st.bad == 0 and st.unknown == 0 then
        return
    end
    local what = {}
    if st.bad > 0 then
        what[1] = st.bad .. " bad lines (" .. concat(st.bad_lines, ", ") .. ")"
    end
    if st.unknown > 0 then
        what[#what + 1] = st.unknown .. " lines naming an unknown target ("
                          .. concat(st.unknown_lines, ", ") .. ": their "
                          .. (feed.kind == "ranges" and "addresses" or "ids")
                          .. " go to the stable location)"
    end
    ngx_log(WARN, "gray: ", feed.key, ": ", concat(what, " and "), "; ",
            st.taken - st.unknown, " lines route")
end

local function compiled(feed, cas, st)
    feed.cas = cas
    feed.pending, feed.backoff = nil, 0
    feed.node_compiles = feed.node_compiles + 1
    log_lines(feed, st)
    if metrics.on then
        local labels = metric_labels(feed)
        metrics.add("gray_list_compiles_total", labels)
        metrics.set("gray_list_compile_seconds", labels, st.compile_ms / 1000)
        metrics.set("gray_list_version", labels, tonumber(cas) or 0)
        metrics.set("gray_list_entries", labels, st.entries)
    end
end

local function failed(feed, cas, msg)
    local t = now_precise()
    feed.pending = cas
    feed.backoff = min(BACKOFF_MAX, max(feed.backoff * 2, feed.interval * 2))
    feed.retry_at = t + feed.backoff
    feed.log:report("compile:" .. feed.key, msg .. "; the last copy stays (next try in "
                    .. feed.backoff .. " s)")
end

local poll_job

local function poll_later(feed)
    local ok, err = timer_at(POLL_EVERY, poll_job, feed)
    if not ok then
        -- the next refresh polls it
        ngx_log(WARN, "gray: cannot poll the compile of ", feed.key, ": ", err)
    end
end

-- Polls the feed's compile: false while it runs; when done, the new image
-- is mapped (or the failure logged) and the job freed.
local function poll_feed(feed)
    local job = feed.job
    if not job then
        return true
    end
    local ok, err = image_poll(job)
    if ok == false then
        return false
    end
    local img, img_err
    if ok and not feed.path then
        -- in memory (no image directory): this worker's own image
        img, img_err = image_job_image(job)
        if not img then
            ok, err = nil, img_err
        end
    end
    feed.job, feed.job_text = nil, nil
    image_job_free(job)
    if ok then
        compiled(feed, feed.job_cas, err)
        if img then
            feed.img, feed.version, feed.entries = img, feed.job_cas, err.entries
            feed.compiles = feed.compiles + 1
        else
            map_file(feed)
        end
        -- what a change cost, step by step (the event loop waits only for
        -- the job's start and the map; the fetch yields, the compile is a
        -- thread's)
        ngx_log(INFO, "gray: new image of ", feed.key, ", version ", feed.job_cas, " at ",
                feed.fetch_t0, " fetched in ",
                floor(feed.fetch_ms), " ms (", feed.fetch_parts, " parts, ", feed.fetch_bytes,
                " bytes), job started in ", feed.start_ms, " ms, compiled in ",
                floor((now_precise() - feed.job_t0) * 1000), " ms (",
                err.helper and "helper: " or "thread: ", err.compile_ms,
                " ms, ", err.cpu_ms, " ms CPU), mapped in ", feed.map_ms, " ms")
    else
        failed(feed, feed.job_cas, feed.key .. ": compile failed: " .. tostring(err))
    end
    return true
end

function poll_job(premature, feed)
    if premature then
        -- the worker exits: a compile still running must not rename an
        -- image over a newer holder's
        if feed.job then
            image_job_free(feed.job)
        end
        return
    end
    if not poll_feed(feed) then
        poll_later(feed)
    end
end

-- "No list" (the key is not in memcached) as version ABSENT: an empty
-- image every worker maps (in memory: none).
local function compile(feed, text, cas)
    if not feed.path then
        feed.cas, feed.img, feed.version, feed.entries = cas, nil, cas, 0
        return
    end
    local t0 = now_precise()
    local job, err = image_compile_start(feed.kind, text, feed.names_text, cas, feed.path,
                                         feed.unknown)
    feed.job_t0 = now_precise()
    feed.start_ms = (feed.job_t0 - t0) * 1000
    if not job then
        return failed(feed, cas, feed.key .. ": compile failed: " .. tostring(err))
    end
    feed.job, feed.job_cas, feed.job_text = job, cas, text
    poll_later(feed)
end

-- Copies text into a compile job in slices of about SLICE bytes, each cut
-- after a line break, yielding between them: no event-loop turn copies a
-- whole list. true, or nil, err.
local function add_text(job, text)
    local len, pos = #text, 1
    if len == 0 then
        return image_job_add(job, text)
    end
    while pos <= len do
        local stop = pos + SLICE - 1
        if stop < len then
            stop = text:find("\n", stop, true) or len
        else
            stop = len
        end
        local ok, err = image_job_add(job, text, pos, stop)
        if not ok then
            return nil, err
        end
        pos = stop + 1
        if pos <= len then
            sleep(YIELD)
        end
    end
    return true
end

-- Runs a job whose text is in (see holder_refresh) as version cas.
local function run_job(feed, job, cas)
    local t0 = now_precise()
    local ok, err = image_job_run(job)
    feed.job_t0 = now_precise()
    feed.start_ms = (feed.job_t0 - t0) * 1000
    if not ok then
        image_job_free(job)
        return failed(feed, cas, feed.key .. ": compile failed: " .. tostring(err))
    end
    feed.job, feed.job_cas, feed.job_text = job, cas, nil
    poll_later(feed)
end

-- Reads a split list's parts into job, each as it arrives (and garbage at
-- once): the part count, or nil, err when one is missing.
local function fetch_parts(feed, header, job)
    local key = feed.key
    local n, tag = header:match("^#gray%-parts (%d+) (%S+)")
    n = tonumber(n)
    if not n or n < 1 or n > PARTS_MAX then
        return nil, key .. ": bad parts header '" .. header:sub(1, 60) .. "'"
    end
    -- one part at a time, yielding between them: a read and decode of a
    -- part (under 1 MB) is the longest this worker's requests wait, not
    -- the whole list's; all within one deadline (refresh_timeout)
    for i = 1, n do
        local part_key = key .. ":" .. tag .. ":" .. i
        local left = ms_left(feed.deadline)
        if not left then
            return nil, key .. ": parts: timeout"
        end
        local res, bad, err = feed.mc:get_multi_bulk({ part_key }, { timeout = left,
                                                               max_bytes = feed.max_bytes })
        if bad then
            return nil, key .. ": parts: " .. tostring(err)
        end
        local part = res[part_key]
        if part == nil then
            return nil, key .. ": part " .. part_key .. " is missing"
        end
        feed.fetch_bytes = feed.fetch_bytes + #part
        -- the turn that took the reply (its decode, the string) ends here:
        -- the copies into the job come in turns of their own
        sleep(YIELD)
        local ok, aerr = add_text(job, part)
        if not ok then
            return nil, key .. ": compile failed: " .. tostring(aerr)
        end
        sleep(YIELD)
    end
    return n
end

-- The holder's check: mg <key> c; a new CAS is fetched and compiled.
local function holder_refresh(feed)
    local key = feed.key
    local left = ms_left(feed.deadline)
    if not left then
        feed.log:report("refresh:" .. key, "refreshing " .. key .. " failed, the last copy"
                        .. " stays: no time left in refresh_timeout")
        return
    end
    local cas, value, kind = feed.mc:meta_cas(key, { timeout = left,
                                                     max_bytes = feed.max_bytes })
    if cas == nil then
        feed.log:report("refresh:" .. key, "refreshing " .. key .. " failed, the last copy stays: "
                        .. tostring(value) .. (kind and " (" .. kind .. ")" or ""))
        return
    end
    if cas == false then
        -- not in memcached (deleted): no list, for every worker
        if feed.cas ~= ABSENT and (feed.img or (feed.version and feed.version ~= ABSENT)) then
            compile(feed, "", ABSENT)
        end
        feed.cas = ABSENT
        return
    end
    if cas == feed.cas or (cas == feed.pending and ngx_now() < feed.retry_at) then
        return
    end
    local fetch_t0 = now_precise()
    feed.fetch_t0 = fetch_t0
    local text = value
    if text == nil then
        left = ms_left(feed.deadline)
        if not left then
            return
        end
        local res, bad, err = feed.mc:get_multi_bulk({ key }, { cas = true, timeout = left,
                                                          max_bytes = feed.max_bytes })
        if bad then
            feed.log:report("refresh:" .. key, "refreshing " .. key
                            .. " failed, the last copy stays: " .. tostring(err))
            return
        end
        local entry = res[key]
        if not entry then
            return              -- deleted meanwhile: the next check says so
        end
        text, cas = entry.value, entry.cas or cas
    end
    -- the text goes into a compile job as it arrives, a slice at a time;
    -- its thread writes the image (or, without an image directory, builds
    -- it in this worker's memory)
    local job, jerr = image_job_new(feed.kind, feed.names_text, cas, feed.path, feed.unknown)
    if not job then
        return failed(feed, cas, key .. ": compile failed: " .. tostring(jerr))
    end
    feed.fetch_bytes, feed.fetch_parts = 0, 1
    if text:find("^#gray%-parts ") then
        local n, err = fetch_parts(feed, text:match("^[^\n]*"), job)
        if not n then
            image_job_free(job)
            return failed(feed, cas, err)
        end
        feed.fetch_parts = n
    else
        feed.fetch_bytes = #text
        local ok, err = add_text(job, text)
        if not ok then
            image_job_free(job)
            return failed(feed, cas, key .. ": compile failed: " .. tostring(err))
        end
    end
    feed.fetch_ms = (now_precise() - fetch_t0) * 1000
    return run_job(feed, job, cas)
end

local function try_lock(feed)
    local fd = lock_try(feed.lock_path)
    if not fd then
        return false
    end
    feed.holder = fd
    -- this worker fetches the list afresh once (the image on disk may
    -- come from another memcached's life), then only on a new CAS
    feed.cas = nil
    gray_ffi.image_clean_tmp(feed.path)
    return true
end

-- Removes the images of the feed's directory no worker has used for
-- STALE_AGE (another configuration's, or a list no longer named): at most
-- every SWEEP_EVERY per directory, by a holder.
local function sweep(feed)
    local dir = feed.path:match("^(.*)/[^/]*$")
    local t = ngx_now()
    if (next_sweep[dir] or 0) > t then
        return
    end
    next_sweep[dir] = t + SWEEP_EVERY
    local n, err = gray_ffi.image_clean_stale(dir, max(STALE_AGE, feed.interval * 10))
    if not n then
        ngx_log(WARN, "gray: cannot remove stale images from ", dir, ": ", err)
    elseif n > 0 then
        ngx_log(INFO, "gray: removed ", n, " images no worker used from ", dir)
    end
end

local function refresh_feed(feed)
    if feed.job and not poll_feed(feed) then
        return
    end
    if feed.path and not feed.holder and not try_lock(feed) then
        map_file(feed)
        return
    end
    if feed.holder then
        -- in use: gray_image_clean_stale spares it
        gray_ffi.lock_touch(feed.holder)
        sweep(feed)
    end
    holder_refresh(feed)
end

-- Frees this worker's locks (at its exit), so that a new worker takes over
-- at once rather than when this one has closed its last connection.
local function release_all()
    for _, feed in pairs(feeds) do
        if feed.holder then
            lock_release(feed.holder)
            feed.holder = false
        end
    end
end

-- ---- routers ---------------------------------------------------------------

local function image_name(key, kind, ident, names_text, unknown)
    local h = image_hash(concat({ ident, kind, key, names_text, tostring(unknown) }, "\n"))
    local safe = key:gsub("[^%w_.-]", "_"):sub(1, 64)
    return safe .. "-" .. tostring(h):gsub("ULL$", "") .. "." .. kind
end

-- The directory a worker uses for lists_dir (created and checked in the
-- worker, never in the master: the workers' user owns it), or false (in
-- memory, logged once per worker). The default gets the workers' user id
-- appended, so that workers of different users never share it.
local resolved_dirs = {}
local function resolve_dir(dir)
    local r = resolved_dirs[dir]
    if r ~= nil then
        return r
    end
    r = dir
    if dir == _M.DEFAULT_DIR then
        r = dir .. "-" .. gray_ffi.euid()
    end
    local ok, err = gray_ffi.dir_prepare(r)
    if not ok then
        if not dir_warned[r] then
            dir_warned[r] = true
            ngx_log(ERR, "gray: lists_dir ", r, " ", err, ": each worker compiles",
                    " its own copy of the lists, in memory")
        end
        r = false
    end
    resolved_dirs[dir] = r
    return r
end

local function resolve(feed)
    if feed.resolved then
        return
    end
    feed.resolved = true
    local dir = feed.dir and resolve_dir(feed.dir)
    if dir then
        feed.path = dir .. "/" .. feed.name .. ".img"
        feed.lock_path = dir .. "/" .. feed.name .. ".lock"
    end
end

local function feed_for(self, opts, key, kind)
    local name = image_name(key, kind, self.ident, self.names_text, self.unknown_index)
    local dir = self.dir
    local id = tostring(dir) .. "/" .. name
    local feed = feeds[id]
    if feed then
        feed.interval = min(feed.interval, opts.interval)
        return feed
    end
    feed = {
        key = key, kind = kind, mc = opts.mc, timeout = opts.timeout,
        max_bytes = opts.max_bytes, interval = opts.interval, log = opts.log,
        names_text = self.names_text, unknown = self.unknown_index,
        -- set in the worker, at start (resolve): false for in memory
        name = name, dir = dir, path = false, lock_path = false, resolved = false,
        img = nil, version = nil, entries = 0,
        holder = false, cas = nil, pending = nil, retry_at = 0, backoff = 0,
        job = nil, job_cas = nil, job_text = nil,
        -- the last change's steps, for the log: fetch (wall, yielding),
        -- the job's start and the map (both on the event loop)
        fetch_t0 = 0, fetch_ms = 0, fetch_parts = 0, fetch_bytes = 0, start_ms = 0, job_t0 = 0, map_ms = 0,
        busy = false, checked_at = -1,
        compiles = 0,           -- images this worker mapped
        node_compiles = 0,      -- compiles this worker ran
    }
    feeds[id] = feed
    return feed
end

--- The lists of one router. opts: mc (a gray.memcached client),
-- ranges_key and percent_key (false: none), lists (id list names), interval
-- (s), timeout (ms for one refresh), max_bytes (one list's limit), names
-- (target names, index 1 = "1"), halts (target name -> halt key: read each
-- refresh, gray.halt; nil: none), decisions (the router's decision for each
-- of them, by index), unknown (the decision for a name not in names: its
-- index is #names + 1), log (a gray.log), dir (the image directory; false:
-- in memory), distribution (the servers' placement). Returns the lists, or nil, err (about dir).
function _M.new(opts)
    local dir = opts.dir
    if dir == nil then
        dir = _M.DEFAULT_DIR
    end
    if dir ~= false then
        if type(dir) ~= "string" or not dir:find("^/") or #dir > 3900 or dir:find("/%.%.?/")
           or dir:find("/%.%.?$") then
            return nil, "must be an absolute path (or false: images in each worker's memory)"
        end
        dir = dir:gsub("/+$", "")
        if dir == "" then
            return nil, "must be a directory of its own, not /"
        end
    end
    -- what names the memcached cluster: the servers as parsed and their
    -- placement (two routers naming them alike share the images)
    local ident = { tostring(opts.distribution) }
    for _, name in ipairs(opts.mc:server_names()) do
        ident[#ident + 1] = name
    end
    local self = setmetatable({
        mc = opts.mc, interval = opts.interval, timeout = opts.timeout,
        names = opts.names, decisions = opts.decisions, unknown = opts.unknown,
        log = opts.log, dir = dir, ident = concat(ident, ","),
        names_text = concat(opts.names, "\n"),
        feeds = {},             -- the images this router uses
        id_feeds = {},          -- id list name -> feed
        id_feed_list = {},
        ranges_feed = false,
        percent_key = opts.percent_key or false,
        pct = NO_PERCENT,       -- the percentage, shared by the worker's routers
        threshold = 0,          -- percent * 100 in force (buckets below it are gray): the
                                -- ramp's share, else the percentage's as of this
                                -- router's last refresh
        ramp = opts.ramp_key and ramp_mod.new(opts.ramp_key) or false,
        -- the node's copy of the ramp's value (see keep_copy)
        ramp_copy = opts.ramp_key and "~ramp|" .. concat(ident, ",") .. "\n" .. opts.ramp_key
                    or false,
        ramp_timer_for = false, -- the step time a timer is set for
        halts = opts.halts or false,    -- target name -> halt key (gray.halt)
        refreshes = 0,          -- refreshes run
        refreshing = false,     -- a timer's refresh is running
        started = false,
    }, mt)
    if self.percent_key then
        local id = self.ident .. "\n" .. self.percent_key
        local p = percents[id]
        if not p then
            -- threshold: percent * 100 (buckets below it are gray);
            -- compiles: the values this worker read
            p = { key = self.percent_key, threshold = 0, cas = nil, compiles = 0,
                  checked_at = -1, busy = false, copy = "~pct|" .. id, seeded = false }
            percents[id] = p
        end
        self.pct = p
        self.threshold = p.threshold
    end
    local decisions = self.decisions
    self.unknown_index = #self.names + 1
    decisions[self.unknown_index] = self.unknown
    if opts.ranges_key then
        self.ranges_feed = feed_for(self, opts, opts.ranges_key, "ranges")
        self.feeds[#self.feeds + 1] = self.ranges_feed
    end
    for _, name in ipairs(opts.lists or {}) do
        -- a name given twice is one list (has_idlists looks at 4 at most:
        -- the identities' bound)
        if not self.id_feeds[name] then
            local feed = feed_for(self, opts, "gray:list:" .. name, "ids")
            self.id_feeds[name] = feed
            self.id_feed_list[#self.id_feed_list + 1] = feed
            self.feeds[#self.feeds + 1] = feed
        end
    end
    self.started = #self.feeds == 0 and not self.percent_key and not self.ramp and not self.halts
    return self
end

-- The percentage in key's text, now in use in p (the record the worker's
-- routers share): pct, or nil, err (the last one stays in use).
local function compile_percent(p, key, text)
    text = text:match("^%s*(.-)%s*$")
    local pct = (text:find("^%d+$") or text:find("^%d+%.%d%d?$")) and tonumber(text)
    if not pct or pct > 100 then
        return nil, key .. ": '" .. text:sub(1, 40) .. "' is not a percentage (0 to 100, at"
                    .. " most two decimals)"
    end
    p.threshold = floor(pct * 100 + 0.5)
    return pct
end

-- The percentage's check, once per worker and interval whichever router
-- asks (p: the record the routers with this key and servers share).
local function refresh_percent(p, mc, log, deadline)
    local key = p.key
    local left = ms_left(deadline)
    if not left then
        return
    end
    local cas, value, kind = mc:meta_cas(key, { timeout = left })
    if cas == nil then
        log:report("refresh:" .. key, "refreshing " .. key .. " failed, the last copy stays: "
                        .. tostring(value) .. (kind and " (" .. kind .. ")" or ""))
        return
    end
    if cas == false then
        -- a threshold taken from the node's copy (seeded, no CAS) goes too
        if p.cas or p.threshold ~= 0 then
            p.threshold, p.cas = 0, nil
            keep_copy(p.copy, nil)
            if metrics.on then
                metrics.set("gray_sticky_ratio", { key = key }, 0)
            end
        end
        return
    end
    if cas == p.cas then
        return
    end
    if value == nil then
        left = ms_left(deadline)
        if not left then
            return
        end
        local res, bad, err = mc:get_multi_bulk({ key }, { cas = true, timeout = left })
        if bad then
            log:report("refresh:" .. key, "refreshing " .. key
                            .. " failed, the last copy stays: " .. tostring(err))
            return
        end
        local entry = res[key]
        if not entry then
            return
        end
        value, cas = entry.value, entry.cas or cas
    end
    local pct, err = compile_percent(p, key, value)
    if not pct then
        p.cas = cas      -- logged once per change
        log:report("compile", err .. "; the last copy stays")
        return
    end
    p.cas = cas
    p.compiles = p.compiles + 1
    keep_copy(p.copy, p.threshold)
    if metrics.on then
        metrics.add("gray_list_compiles_total", { key = key })
        metrics.set("gray_sticky_ratio", { key = key }, pct / 100)
    end
end

--- One refresh: each image checked (at most once per half interval,
-- whichever router of the worker asks), then the percentage. Failures are
-- logged (the last copies stay); nothing is returned.
function _M.refresh(self)
    self.refreshes = self.refreshes + 1
    local t = now_precise()
    local deadline = t + self.timeout / 1000
    for _, feed in ipairs(self.feeds) do
        resolve(feed)
        if not feed.busy and t - feed.checked_at >= self.interval * 0.5 then
            feed.busy, feed.checked_at, feed.deadline = true, t, deadline
            local ok, err = pcall(refresh_feed, feed)
            feed.busy = false
            if not ok then
                ngx_log(WARN, "gray: refreshing ", feed.key, " failed: ", err)
            end
        end
    end
    local p = self.pct
    if self.percent_key and not p.busy and t - p.checked_at >= self.interval * 0.5 then
        p.busy, p.checked_at = true, t
        local ok, err = pcall(refresh_percent, p, self.mc, self.log, deadline)
        p.busy = false
        if not ok then
            ngx_log(WARN, "gray: refreshing ", p.key, " failed: ", err)
        end
    end
    if self.halts and next(self.halts) then
        local left = ms_left(deadline)
        if left then
            halt.refresh(self.halts, self.mc, left, self.log)
        end
    end
    if self.ramp and ramp_mod.refresh(self.ramp, self.mc, self.log, deadline) then
        keep_copy(self.ramp_copy, self.ramp.value or nil)
    end
    _M.settle_share(self)
end

-- Whether the default target is halted (gray.halt), which freezes the
-- ramp: since when (halt.since).
local function default_halted()
    return halt.since("gray")
end

local on_step

--- Sets the share in force (the threshold the request path compares):
-- the ramp's step in force at this node's clock while there is a ramp,
-- else the percentage's. When the ramp's next step comes before the next
-- refresh, a timer sets it at its time.
function _M.settle_share(self)
    local r = self.ramp
    local share, next_at
    if r then
        share, next_at = ramp_mod.share(r, now_precise(), default_halted())
    end
    local threshold = share or self.pct.threshold
    if threshold ~= self.threshold and metrics.on then
        metrics.set("gray_sticky_ratio", { key = share and r.key or self.percent_key or "" },
                    threshold / 10000)
    end
    self.threshold = threshold
    if next_at and next_at - ngx_now() < self.interval and self.ramp_timer_for ~= next_at
       and not ngx.worker.exiting() then
        local ok, err = timer_at(max(0, next_at - ngx_now()), on_step, self)
        if ok then
            self.ramp_timer_for = next_at
        else
            ngx_log(WARN, "gray: cannot time the ramp's next step (the next refresh sets it): ",
                    err)
        end
    end
end

function on_step(premature, self)
    if not premature then
        _M.settle_share(self)
    end
end

-- A refresh runs every few seconds, never often enough to be worth a
-- trace: left to the interpreter, its loops cannot make LuaJIT record and
-- abort traces in the middle of the request path's hot counters.

local function on_timer(premature, self)
    if premature then
        release_all()
        return
    end
    -- one refresh of a router at a time: one slower than the interval (a
    -- loaded machine) is not overlapped by the next, whose reads could come
    -- back first and be taken over by its older ones (the ramp's, the halts')
    if self.refreshing then
        return
    end
    self.refreshing = true
    local ok, err = pcall(_M.refresh, self)
    self.refreshing = false
    if not ok then
        ngx_log(WARN, "gray: refreshing the lists failed: ", err)
    end
end

-- Takes the node's last known percentage and ramp (keep_copy) into a
-- worker that has read neither yet, and sets the share in force from them:
-- at start, before the first decision.
local function seed(self)
    local dict = node_dict()
    if not dict then
        return
    end
    local p = self.pct
    if self.percent_key and p.cas == nil and p.compiles == 0 and not p.seeded then
        p.seeded = true
        local v = dict:get(p.copy)
        if type(v) == "number" and v >= 0 and v <= 10000 then
            p.threshold = v
        end
    end
    if self.ramp then
        ramp_mod.seed(self.ramp, dict:get(self.ramp_copy))
    end
    _M.settle_share(self)
end

--- Maps the node's current images (at once: a worker started by a reload
-- decides with them from its first request), then starts the refresh
-- timer (and a first refresh now); from a phase where timers may be
-- created. Returns true (at once when started already), or nil, err.
function _M.start(self, no_timers)
    if self.started then
        return true
    end
    for _, feed in ipairs(self.feeds) do
        resolve(feed)
        if feed.path and not feed.img then
            pcall(map_file, feed)
        end
    end
    if self.halts then
        halt.seed(self.halts)
    end
    seed(self)
    if no_timers then
        -- a worker that is shutting down (an old one over a reload) starts
        -- no timer, but decides with the node's images and halts
        return true
    end
    local ok, err = timer_at(0, on_timer, self)
    if ok then
        ok, err = timer_every(self.interval, on_timer, self)
    end
    if not ok then
        return nil, err
    end
    self.started = true
    return true
end

-- ---- the request path: no allocation, C lookups in the mapped image -------

--- Whether an id list of this name has an image mapped.
function _M.has_list(self, name)
    local feed = self.id_feeds[name]
    return feed ~= nil and feed.img ~= nil
end

--- Whether any id list has an image mapped.
function _M.has_idlists(self)
    -- straight-line over the (at most 4) lists, not a loop: a loop of one
    -- or two turns on the request path makes LuaJIT start a trace there
    -- that aborts ("leaving loop in root trace")
    local list = self.id_feed_list
    local a, b, c, d = list[1], list[2], list[3], list[4]
    return (a ~= nil and a.img ~= nil) or (b ~= nil and b.img ~= nil)
           or (c ~= nil and c.img ~= nil) or (d ~= nil and d.img ~= nil)
end

--- Whether a ranges image is mapped.
function _M.has_ranges(self)
    local feed = self.ranges_feed
    return feed ~= false and feed.img ~= nil
end

--- The decision an id list gives an identity's value, or nil.
function _M.listed(self, name, value)
    local feed = self.id_feeds[name]
    if feed == nil then
        return nil
    end
    local img = feed.img
    if img == nil then
        return nil
    end
    local index = image_find_id(img, value)
    return index and self.decisions[index]
end

--- The decision of the most specific range holding a canonical address,
-- or nil.
function _M.range(self, addr)
    local feed = self.ranges_feed
    if not feed then
        return nil
    end
    local img = feed.img
    if img == nil then
        return nil
    end
    local index = image_find_ip(img, addr)
    return index and self.decisions[index]
end

--- Whether a percentage is set (above 0).
function _M.percent_on(self)
    return self.threshold > 0
end

--- Whether an identity key falls in the percentage.
function _M.in_percent(self, key)
    local threshold = self.threshold
    return threshold > 0 and bucket(key) < threshold
end

--- What is mapped, for logs, specs and the status page: ranges (lines),
-- lists (name -> ids), images ({ key, kind, entries, version (the CAS, or
-- false: none) } per list), percent (in force), ramp (gray.ramp.info, or
-- false), compiles (new images mapped and percentages read by this
-- worker for this router), refreshes, holder (keys this worker fetches).
function _M.stats(self)
    local lists, compiles, held, images = {}, self.pct.compiles, {}, {}
    for name, feed in pairs(self.id_feeds) do
        if feed.img then
            lists[name] = feed.entries
        end
    end
    for _, feed in ipairs(self.feeds) do
        images[#images + 1] = { key = feed.key, kind = feed.kind, entries = feed.entries,
                                version = feed.img and feed.version or false }
        compiles = compiles + feed.compiles
        if feed.holder or not feed.path then
            held[#held + 1] = feed.key
        end
    end
    local rf = self.ranges_feed
    return {
        ranges = rf and rf.img and rf.entries or 0,
        lists = lists,
        percent = self.threshold / 100,
        ramp = self.ramp and ramp_mod.info(self.ramp, ngx_now(), default_halted()) or false,
        percent_key = self.percent_key,
        images = images,
        compiles = compiles,
        refreshes = self.refreshes,
        holder = held,
        dir = self.dir and resolved_dirs[self.dir] or false,
    }
end

-- Everything but the request path runs in timers (or once, in new and
-- start), every few seconds: left to the interpreter (a trace started in a
-- helper would abort on returning into an interpreted caller). One line
-- each: spec/jit_spec.lua reads them (TIMER_ONLY).
require("jit").off(now_precise)
require("jit").off(metric_labels)
require("jit").off(map_file)
require("jit").off(log_lines)
require("jit").off(compiled)
require("jit").off(failed)
require("jit").off(poll_later)
require("jit").off(poll_feed)
require("jit").off(poll_job)
require("jit").off(compile)
require("jit").off(add_text)
require("jit").off(run_job)
require("jit").off(fetch_parts)
require("jit").off(holder_refresh)
require("jit").off(try_lock)
require("jit").off(sweep)
require("jit").off(refresh_feed)
require("jit").off(release_all)
require("jit").off(image_name)
require("jit").off(feed_for)
require("jit").off(resolve_dir)
require("jit").off(resolve)
require("jit").off(compile_percent)
require("jit").off(refresh_percent)
require("jit").off(default_halted)
require("jit").off(_M.settle_share)
require("jit").off(on_step)
require("jit").off(on_timer)
require("jit").off(node_dict)
require("jit").off(keep_copy)
require("jit").off(seed)
require("jit").off(_M.new)
require("jit").off(_M.refresh)
require("jit").off(_M.start)
require("jit").off(_M.stats)

return _M
