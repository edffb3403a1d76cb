-- Reference text forms of IPv6 addresses for the specs, written apart from
-- the library's (csrc/ip.c) so that a spec can hold one against the other.
--
--   local ip_text = require "helpers.ip_text"
--   ip_text.rfc5952({ 0x2001, 0xdb8, 0, 0, 0, 0, 0, 1 })   --> "2001:db8::1"

local fmt, concat = string.format, table.concat

local _M = {}

--- Eight groups (numbers 0..0xffff) as RFC 5952 text: each group in
-- lower-case hex without leading zeros (upper-case with upper), the
-- longest run of two or more zero groups, the first on a tie, as "::".
function _M.rfc5952(g, upper)
    local run_start, run_len = nil, 1
    local i = 1
    while i <= 8 do
        if g[i] == 0 then
            local j = i
            while j <= 8 and g[j] == 0 do
                j = j + 1
            end
            if j - i > run_len then
                run_start, run_len = i, j - i
            end
            i = j
        else
            i = i + 1
        end
    end
    local form = upper and "%X" or "%x"
    local function hex_list(from, to)
        local t = {}
        for k = from, to do
            t[#t + 1] = fmt(form, g[k])
        end
        return concat(t, ":")
    end
    if not run_start then
        return hex_list(1, 8)
    end
    return hex_list(1, run_start - 1) .. "::" .. hex_list(run_start + run_len, 8)
end

return _M
