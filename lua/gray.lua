-- gray: the gray-release router. Build one router per configuration and
-- reuse it; per request it picks the client address (trusted proxies only),
-- looks its decision up in a per-worker cache, then asks memcached, and
-- answers with the location to go to and why. It never fails a request: any
-- trouble with memcached routes to the stable location (or a recent cached
-- answer), within one deadline (`timeout`).
--
--   local router = assert(gray.new({ memcached = "127.0.0.1:11211" }))
--   local target, reason, source = router:decide()
--   router:exec()      -- decide() then ngx.exec(target)
--
-- This file builds the router (new) and answers for it (decide, exec);
-- the parts live in their own modules:
--   gray.options    the options, their defaults and checks
--   gray.client     the client's address (trusted proxies' headers)
--   gray.rules      the decision rules, in precedence order
--   gray.cache      the worker's decision caches (addresses, identities)
--   gray.shcache    the cache shared by the workers, and its lock protocol
--   gray.memcached  the store client
--   gray.lists      id lists, ranges and the percentage
--   gray.metrics    the counters (gray.outcome: the log phase's)

local gray_ffi = require "gray.ffi"
local options = require "gray.options"
local util = require "gray.util"
local option_error, worded = util.option_error, util.worded
local client = require "gray.client"
local ids_mod = require "gray.ids"
local lists_mod = require "gray.lists"
local rules = require "gray.rules"
local decide_rules = rules.decide
local metrics = require "gray.metrics"
local count_decision = metrics.decision
local note_outcome = require("gray.outcome").note
local halt = require "gray.halt"
local halted = halt.halted
local client_key_of = client.key
local gray_log = require "gray.log"
local gray_cache = require "gray.cache"
local shcache = require "gray.shcache"

local ngx = ngx
local ngx_exec = ngx.exec
local get_phase = ngx.get_phase
local worker_exiting = ngx.worker.exiting
local ngx_var = ngx.var
local ngx_header = ngx.header
local ngx_log = ngx.log
local WARN = ngx.WARN
local pairs, ipairs, tostring = pairs, ipairs, tostring
local setmetatable = setmetatable
local math_max = math.max
local format, concat, sort = string.format, table.concat, table.sort

local _M = { _VERSION = "0.1.0", VERSION = "0.1.0" }
local mt = { __index = _M }

-- Every option and its default (gray.options, where they are checked).
_M.DEFAULTS = options.DEFAULTS
_M.check_location = options.check_location

-- A decision: where a rule sends the client (location), the target name
-- that got it there (name: the label of $gray_target_name and the metrics)
-- and, for the unknown-target decision only, the reason that replaces the
-- rule's (else false). One record per target name and router, made here
-- once: the caches hold these records, never what memcached sent, so a hit
-- allocates nothing.
local function new_decision(name, location, reason)
    return { location = location, name = name, reason = reason or false }
end

-- The decisions into self: by target name ("gray", the default target,
-- also value "1"; `targets`; and "stable", reserved: pinned to the stable
-- location), and by index as the compiled lists number them. Returns the
-- target names in that order: index 1 is "1" and index 2 "gray" (one
-- decision: a list line may name either), the last "stable"; the
-- unknown-target decision comes after them.
local function build_decisions(self, o)
    self.targets = { gray = new_decision("gray", o.target),
                     stable = new_decision("stable", o.stable) }
    for name, location in pairs(o.targets) do
        self.targets[name] = new_decision(name, location)
    end
    self.default_target = self.targets.gray
    self.stable_target = self.targets.stable
    -- a value naming no target: stable, whatever the later rules say
    self.unknown_target = new_decision("stable", o.stable, "unknown-target")
    -- a halted target's requests: stable, reason "halted"
    self.halted_target = new_decision("stable", o.stable, "halted")
    -- the metrics' labels: target name -> itself
    self.target_names = {}
    for name in pairs(self.targets) do
        self.target_names[name] = name
    end
    local names = {}
    for name in pairs(self.targets) do
        if name ~= "gray" and name ~= "stable" then
            names[#names + 1] = name
        end
    end
    sort(names)
    table.insert(names, 1, "gray")
    table.insert(names, 1, "1")
    names[#names + 1] = "stable"
    -- value "1", the classic recipe's: the default target
    self.targets["1"] = self.default_target
    self.decisions = {}
    for i, name in ipairs(names) do
        self.decisions[i] = self.targets[name]
    end
    self.decisions[#names + 1] = self.unknown_target
    return names
end

-- The per-worker caches into self (its key_prefix and ids set): cache_ttl,
-- neg_ttl, stale_ttl, cache_size; and the log (log_interval).
local function build_cache(self, o)
    local cache_ttl, neg_ttl = o.cache_ttl, o.neg_ttl
    -- the cache keeps an entry until ttl, then returns it as stale until it
    -- is evicted; a ttl of 0 would still count as fresh within the same
    -- millisecond, so "no fresh life" is a slightly negative ttl instead.
    self.pos_ttl = cache_ttl > 0 and cache_ttl or -0.001
    self.neg_ttl = neg_ttl > 0 and neg_ttl or -0.001
    self.use_fresh = cache_ttl > 0 or neg_ttl > 0
    self.stale_limit = math_max(cache_ttl, neg_ttl) + o.stale_ttl
    -- an entry holds a decision (a record of self.decisions: a target's,
    -- the unknown-target one, or false) and when it was stored, never what
    -- memcached sent
    self.cache = gray_cache.lru(o.cache_size, self.decisions)
    self.log = gray_log.new(o.log_interval)
    -- Only canonical addresses are keys of self.cache (identities, lists
    -- and the like must never share it), so a header or peer whose text is
    -- a key there is known to be that address: gray.client then skips its
    -- parse. With a key_prefix no raw text can match.
    self.probe = not self.key_prefix and self.cache
    -- each identity's decisions in a cache of its own, keyed by the raw
    -- value: a hit needs no key built and no key check (only values that
    -- passed the check get in)
    for _, id in ipairs(self.ids or {}) do
        ids_mod.bind(id, self.secret, gray_cache.new(o.cache_size))
    end
end

-- The cache shared by the workers (option shm), or false. Its entries are
-- set apart from other routers' in the same dict by a namespace: a hash of
-- what gives a key its decision here (servers, placement, targets).
local function build_shared(self, o, names)
    self.shared = false
    if o.shm == false then
        return true
    end
    -- the servers as parsed ("a,b" and "a, b" are one cluster), their
    -- placement, what counts as a value (value_max), and the targets
    local parts = { tostring(o.distribution), tostring(o.value_max) }
    for _, name in ipairs(self.mc:server_names()) do
        parts[#parts + 1] = name
    end
    -- the decisions by index, as the compiled lists number them; the last
    -- one is the unknown-target decision
    for i, name in ipairs(names) do
        parts[#parts + 1] = name .. "=" .. self.decisions[i].location
    end
    parts[#parts + 1] = "?=" .. self.stable
    local shared, err = shcache.new({
        dict = o.shm, locations = self.decisions,
        namespace = format("g%08x", gray_ffi.murmur3(concat(parts, "\n"))),
        pos_ttl = self.pos_ttl, neg_ttl = self.neg_ttl, keep = self.stale_limit,
        timeout = self.mc:timeout_ms(), log = self.log,
    })
    if not shared then
        return option_error("shm", err)
    end
    self.shared = shared
    return true
end

-- The upstream of each decision (option upstreams: by target name, the
-- default target's as "gray"), keyed by the decision record, so that
-- upstream() costs one table read; false without the option.
local function upstreams_of(self, ups)
    if not ups then
        return false
    end
    local of = {}
    for name, d in pairs(self.targets) do
        of[d] = ups[name] or (d == self.default_target and ups.gray)
    end
    of[self.unknown_target] = ups.stable
    of[self.halted_target] = ups.stable
    return of
end

-- The routers built in this worker (weak: a router dropped is gone), for
-- the status page (gray.status).
local made = setmetatable({}, { __mode = "k" })
_M.routers = made

--- Builds a router from options (gray.options checks them); nil and the
-- refusal record (gray.util) of a bad one, which gray.dep words with the
-- nginx variable's name.
local function new_router(opts)
    local o, err = options.check(opts)
    if not o then
        return nil, err
    end
    -- the router record: what gray.rules decides with (its caches, lists,
    -- decisions and clients), built here; after, only start() changes it
    local self = {
        mc = o.mc, client = o.client, stable = o.stable, ids = o.ids,
        force_var = o.force_var, force_from = o.force_from, secret = o.secret,
        debug_header = o.debug_header, metrics_shm = o.metrics_shm,
        -- false, not nil: a field that is present costs the JIT no metatable lookup
        key_prefix = o.key_prefix ~= "" and o.key_prefix or false,
        metrics = false,        -- on once started and the dict exists
        started = false,        -- the list refresh and the metrics' timers
        mapped = false,         -- images and halts taken by a worker shutting down
    }
    local names = build_decisions(self, o)
    self.upstream_of = upstreams_of(self, o.upstreams)
    build_cache(self, o)
    local ok
    ok, err = build_shared(self, o, names)
    if not ok then
        return nil, err
    end
    -- target name -> its halt key: the lists' refresh reads them, the guard writes them
    local halt_keys = o.halt_key and halt.keys(o.halt_key, names) or nil
    self.lists, err = lists_mod.new({
        mc = self.mc, ranges_key = o.ranges_key, percent_key = o.percent_key,
        ramp_key = o.ramp_key,
        lists = o.lists or nil, interval = o.refresh_interval, timeout = o.refresh_timeout,
        max_bytes = o.list_max, names = names, decisions = self.decisions,
        unknown = self.unknown_target, log = self.log, dir = o.lists_dir,
        distribution = o.distribution,
        halts = halt_keys,
    })
    if not self.lists then
        return option_error("lists_dir", err)
    end
    made[self] = true
    -- exec as the router's own field: router:exec() is one slot read in the
    -- request's trace, not a miss in this table, its metatable, then _M
    self.exec = _M.exec
    self.halts = o.halt_key and true or false
    self.guard = o.guard and { guard = o.guard, keys = halt_keys, mc = self.mc,
                               shm = o.metrics_shm } or false
    return setmetatable(self, mt)
end
_M._new = new_router

--- Builds a router. Every option is checked; nil, err names the bad one.
_M.new = worded(new_router, options.text)

--- The memcached key for this request: the canonical client address (with
-- key_prefix), or nil when there is none (a unix-socket peer).
local function client_key(self)
    local key = client_key_of(self.client)
    if key and self.key_prefix then
        key = self.key_prefix .. key
    end
    return key
end
_M.client_key = client_key

-- Starts what runs beside the requests, once per worker: the list refresh
-- and the metrics' timers.
local function start(self)
    self.started = true
    -- the metrics first: the lists' start seeds the node's halts, share and
    -- ramp from their dict, which must be this router's (metrics_shm)
    if self.metrics_shm then
        self.metrics = metrics.enable(self.metrics_shm)
        if self.metrics and self.shared then
            self.shared:count_waits()
        end
    end
    local ok, err = self.lists:start()
    if not ok then
        self.log:report("timer", "cannot start the list refresh: " .. tostring(err))
    end
    if self.guard then
        local gok, gerr = require("gray.guard").start(self.guard)
        if not gok then
            self.log:report("timer", "cannot start the guard: " .. tostring(gerr))
        end
    end
end

-- decide_rules, counted for gray.metrics when the dict is there: the
-- decision (a record: location, name), reason, source; nil, err.
local function decide_target(self)
    -- no timers from a worker that is shutting down: a refresh started
    -- then leaves a socket open at its exit (nginx alerts "open socket")
    if not self.started and get_phase() ~= "init" then
        if not worker_exiting() then
            start(self)
        elseif not self.mapped then
            -- no timers from a worker that is shutting down, but its first
            -- decision uses the node's images and halts all the same (an
            -- old worker over a reload may never have decided before)
            self.mapped = true
            self.lists:start(true)
        end
    end
    local target, reason, source = decide_rules(self)
    -- a halted target's requests go to stable; the tester override still
    -- reaches it
    if self.halts and target and reason ~= "force" and halted(target.name) then
        target, reason = self.halted_target, "halted"
    end
    if self.metrics and target then
        count_decision(target.name, self.target_names, reason, source)
    end
    return target, reason, source
end

--- Decides without side effects on the request: returns the location, the
-- reason and where the entry came from ("cache", "shm", "memcached", "stale", or
-- nil). Reasons, in precedence order: "force" (the tester override),
-- "id:<name>" (an identity's entry), "ip" (the address's entry),
-- "list:<name>" (an id list), "range", "percent", then "default" (not
-- gray), "store-error" / "store-down" (memcached failed, nothing else
-- matched) or "no-client" (no address: a unix-socket peer); an entry or
-- line naming no target is "unknown-target" (stable). nil, err where
-- a cache miss cannot ask memcached (a phase without cosockets).
local function decide(self)
    local target, reason, source = decide_target(self)
    if not target then
        return nil, reason
    end
    return target.location, reason, source
end

_M.decide = decide

--- decide(), then ngx.exec() to the location (with the debug header, when
-- configured).
--
-- When nginx.conf defines $gray_target_name or $gray_reason (`set` at
-- server level), exec() fills them for log_format: the target's name
-- ("stable", "gray" for the default target, or a name of `targets`) and the
-- reason; each is filled if defined, whether the other is or not. Whether
-- one is defined is found once per worker; when neither is, this costs two
-- field tests per request. With the metrics dict, it notes the target for
-- gray.outcome's log phase (log_by_lua_file .../gray/outcome.lua).
local log_target_name, log_reason = nil, nil    -- nil: not known yet; then true or false

local function set_log_var(name, value)
    ngx_var[name] = value
end

-- Whether $<name> can be written (nginx.conf defines it); found once.
local function log_var_defined(name)
    local ok, err = pcall(set_log_var, name, "")
    if ok then
        return true
    elseif not tostring(err):find("not found for writing", 1, true) then
        ngx_log(WARN, "gray: $", name, " cannot be written: ", err)
    end
    return false
end

-- What exec() and set_upstream() do with a decision besides routing:
-- the debug header (its first part: a location or an upstream), the log
-- variables, the outcome's note.
local function mark(self, target, reason, where)
    if self.debug_header then
        ngx_header[self.debug_header] = where .. "; " .. reason
    end
    if log_target_name ~= false then
        if log_target_name == nil then
            log_target_name = log_var_defined("gray_target_name")
        end
        if log_target_name then
            ngx_var.gray_target_name = target.name
        end
    end
    if log_reason ~= false then
        if log_reason == nil then
            log_reason = log_var_defined("gray_reason")
        end
        if log_reason then
            ngx_var.gray_reason = reason
        end
    end
    if self.metrics then
        -- for the log phase's gray.outcome (ngx.exec clears ngx.ctx)
        note_outcome(target.name)
    end
end

function _M.exec(self)
    local target, reason = decide_target(self)
    if not target then
        target, reason = self.stable_target, "error"
    end
    local location = target.location
    mark(self, target, reason, location)
    return ngx_exec(location)
end

--- upstream(): decide(), as the upstream name of the decision's target
-- (option upstreams), for proxy_pass http://$var without named locations:
-- the upstream, the reason, the target's name; with the metrics dict it
-- notes the target for gray.outcome's log phase. nil, err without the
-- option.
function _M.upstream(self)
    local of = self.upstream_of
    if not of then
        return nil, "gray: upstream() needs the option 'upstreams'"
    end
    local target, reason = decide_target(self)
    if not target then
        target, reason = self.stable_target, "error"
    end
    if self.metrics then
        note_outcome(target.name)
    end
    return of[target], reason, target.name
end

--- set_upstream(): upstream(), written to $gray_upstream (which nginx.conf
-- defines: `set $gray_upstream <stable upstream>;`), with the debug
-- header, $gray_target_name / $gray_reason and the outcome's note as
-- exec() does. From the access (or rewrite) phase. Returns the upstream,
-- or nil, err without the option.
function _M.set_upstream(self)
    local of = self.upstream_of
    if not of then
        return nil, "gray: set_upstream() needs the option 'upstreams'"
    end
    local target, reason = decide_target(self)
    if not target then
        target, reason = self.stable_target, "error"
    end
    local up = of[target]
    mark(self, target, reason, up)
    ngx_var.gray_upstream = up
    return up
end

--- What the router's lists hold: ranges, list sizes, percentage, compiles.
function _M.list_stats(self)
    return self.lists:stats()
end

return _M
