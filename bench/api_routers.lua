-- api_routers: the Lua API routers of make bench's identity rows, built
-- once per worker on first use. The identities read headers every curl
-- request carries (User-Agent, Accept), so the batches need no extra
-- headers; memcached holds nothing for them, so both are looked up (and
-- cached as "not gray") before the address decides.
--
--   api-ids            2 identities, cached: what each identity adds
--   api-nocache        no identity, cache_ttl 0: one key per request
--   api-nocache-ids    2 identities, cache_ttl 0: three keys, one multi-get
--   api-upstream       the single router's options, upstreams: set_upstream()
--   api-distinct-ids   2 identities from X-Uid and X-Dev, the defaults' 1 s
--                      cache: every request from a client not seen before,
--                      so three keys per request, one multi-get

local gray = require "gray"

local IDS = "uid=header:User-Agent, dev=header:Accept"
-- under callgrind everything runs tens of times slower: a 50 ms deadline
-- can pass on a cold first lookup
local TIMEOUT = 1000
-- the lists are refreshed hourly here: a refresh costs per second, not per
-- request, and under callgrind's slowed clock one or two would land in a
-- batch and blur the per-request difference these rows measure
local REFRESH = 3600
-- the same for the cached rows' expiry: at cache_ttl 1 s each expiry costs a
-- lookup per key (three here) per second, not per request, and how many
-- land in a batch depends on how slow callgrind ran that time
local CACHED_TTL = 3600
local OPTS = {
    ["api-ids"] = { client_headers = { "X-Real-IP" }, ids = IDS, refresh_interval = REFRESH,
                    cache_ttl = CACHED_TTL },
    ["api-nocache"] = { client_headers = { "X-Real-IP" }, cache_ttl = 0, timeout = TIMEOUT,
                        refresh_interval = REFRESH },
    ["api-nocache-ids"] = { client_headers = { "X-Real-IP" }, ids = IDS, cache_ttl = 0,
                            timeout = TIMEOUT, refresh_interval = REFRESH },
    -- the single router's options (api_router.lua), with upstreams
    ["api-upstream"] = { client_headers = { "X-Real-IP" }, timeout = TIMEOUT,
                         refresh_interval = REFRESH, cache_ttl = CACHED_TTL,
                         upstreams = "stable=stable, gray=test" },
    ["api-distinct-ids"] = { client_headers = { "X-Real-IP" },
                             ids = "uid=header:X-Uid, dev=header:X-Dev", timeout = TIMEOUT,
                             refresh_interval = REFRESH },
}

local routers = {}

return function(name)
    local r = routers[name]
    if not r then
        r = assert(gray.new(OPTS[name]))
        routers[name] = r
    end
    return r
end
