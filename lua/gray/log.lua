-- gray.log: error logging that cannot flood. Each kind of failure is logged
-- at most once per interval, with a count of the ones left out in between,
-- so a memcached outage at 50k requests/s writes a line every few seconds.
--
--   local log = require("gray.log").new(5)
--   log:report("timeout", "read from 127.0.0.1:11211: timeout")

local ngx_log = ngx.log
local ngx_now = ngx.now
local ERR = ngx.ERR
local setmetatable = setmetatable

local _M = {}
local mt = { __index = _M }

--- A reporter that logs each kind at most once per `interval` seconds.
function _M.new(interval)
    return setmetatable({ interval = interval, logged_at = {}, suppressed = {} }, mt)
end

--- Logs msg at ERR level unless this kind was logged within the interval;
-- returns true when it was written.
function _M.report(self, kind, msg)
    local t = ngx_now()
    local last = self.logged_at[kind]
    if last and t - last < self.interval then
        self.suppressed[kind] = (self.suppressed[kind] or 0) + 1
        return false
    end
    local left_out = self.suppressed[kind] or 0
    self.logged_at[kind] = t
    self.suppressed[kind] = 0
    if left_out > 0 then
        ngx_log(ERR, "gray: ", msg, " (", left_out, " more like it since the last report)")
    else
        ngx_log(ERR, "gray: ", msg)
    end
    return true
end

return _M
