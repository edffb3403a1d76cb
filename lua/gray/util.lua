-- gray.util: what several modules share, with no dependency of its own
-- (gray.ffi uses it too): splitting a comma or blank separated list, the
-- record of a refused option, and the time left before a deadline that
-- several waits share (the shared cache's, a refresh's).
--
--   util.split_list("10.0.0.0/8, ::1")   -- { "10.0.0.0/8", "::1" }
--   return util.option_error("cache_ttl", "must be a number of seconds ...")
--   util.option_text(err)                -- "option 'cache_ttl' must be ..."
--   util.option_text(err, "$gray_cache_ttl") -- "$gray_cache_ttl must be ..."
--   local timeout = util.ms_left(deadline)   -- ms, or nil: none left

local type = type
-- nil outside nginx (the unit specs load this module too)
local ngx_now = ngx and ngx.now
local update_time = ngx and ngx.update_time

local _M = {}

--- A list given as one string, items separated by commas or blanks, as a
-- table of its items; a table (or anything else) is returned as it is.
function _M.split_list(list)
    if type(list) == "string" then
        local t = {}
        for item in list:gmatch("[^,%s]+") do
            t[#t + 1] = item
        end
        return t
    end
    return list
end

--- nil and the record of a refused option: the data, so that each layer
-- names the option in its own words (the Lua option, an nginx variable)
-- without rewriting a message. Fields:
--   option   the option's name, or nil when no single option is at fault
--            (the options are not a table, an unknown option)
--   message  what is wrong, the text after the option's name
--   index    the entry of a table option at fault ("v2" of targets), or nil
--   sep      what stands between the name and the message: " " or ": "
function _M.option_error(option, message, index, sep)
    return nil, { option = option, message = message, index = index or false,
                  sep = sep or " " }
end

--- A refusal record as a sentence: the option named as `name` (say
-- "$gray_targets"), by default as "option '<option>'".
function _M.option_text(err, name)
    local option = err.option
    if option == nil then
        return err.message
    end
    local index = err.index and "[" .. err.index .. "]" or ""
    if name then
        return name .. index .. err.sep .. err.message
    end
    return "option '" .. option .. index .. "'" .. err.sep .. err.message
end

--- The constructor `new` (opts -> object, or nil and a refusal record) as
-- one that returns nil and the refusal as a sentence, worded by `text`
-- (option_text by default); what follows the object (say warnings) is
-- passed on.
function _M.worded(new, text)
    text = text or _M.option_text
    return function(opts)
        local self, err, extra = new(opts)
        if not self then
            return nil, text(err)
        end
        return self, nil, extra
    end
end

--- Milliseconds left before deadline (seconds, as ngx.now() counts), or nil
-- when less than 1 is, by the event loop's clock: fresh after a wait (the
-- shared cache's waits, on the request path: never jit.off).
function _M.ms_left(deadline)
    local left = (deadline - ngx_now()) * 1000
    if left < 1 then
        return nil
    end
    return left
end

--- ms_left by a clock read afresh first, for code that works between its
-- waits (the refreshes' timers), where the event loop's clock may be a
-- whole iteration old.
function _M.ms_left_fresh(deadline)
    update_time()
    return _M.ms_left(deadline)
end

-- Timer-only: left to the interpreter (spec/jit_spec.lua reads this line).
require("jit").off(_M.ms_left_fresh)

return _M
