-- api_router: the router as a Lua user would set it up, for make bench's
-- /api-router row: built once per worker (the first require), only the
-- X-Real-IP header trusted, everything else default (memcached at
-- 127.0.0.1:11211) but the hourly cache and refresh below. The location calls
--
--   content_by_lua_block {
--       (package.loaded.api_router or require("api_router")):exec()
--   }
--
-- (package.loaded first: require is a plain C function, which ends a LuaJIT
-- trace, and the row measures the router, not require).

local gray = require "gray"

-- timeout: under callgrind everything runs tens of times slower, and a
-- 50 ms deadline can pass on the cold first lookup
-- refresh_interval, cache_ttl: see api_routers.lua (the drop-in rows keep
-- the defaults)
return assert(gray.new({ client_headers = { "X-Real-IP" }, timeout = 1000,
                         refresh_interval = 3600, cache_ttl = 3600 }))
