-- gray.token: the secret behind signed tokens (the tester override, signed
-- identity cookies). The secret lives in a file, not in nginx.conf: it is
-- read once, when a router is built, and only its key bytes are kept.
--
--   local secret = assert(require("gray.token").read_secret("/etc/nginx/gray.secret"))
--   local target = require("gray.ffi").token_check("force", secret, value, ngx.time())

local gray_ffi = require "gray.ffi"

local io_open = io.open
local type, tostring = type, tostring

local _M = { _VERSION = gray_ffi.VERSION }

local READ_MAX = 8192           -- bytes read from a secret file (the key: 16 to 1024)

--- The key bytes of the secret file at path (trailing blanks and newlines
-- dropped), or nil, err saying what is wrong with the file.
function _M.read_secret(path)
    if type(path) ~= "string" or path == "" then
        return nil, "must be the path of a file holding the secret, got " .. tostring(path)
    end
    local f, err = io_open(path, "rb")
    if not f then
        return nil, "cannot be read: " .. tostring(err)
    end
    local text, rerr = f:read(READ_MAX + 1)
    f:close()
    if text == nil and rerr then
        -- a directory opens, then fails to read
        return nil, "cannot be read: " .. path .. ": " .. tostring(rerr)
    end
    text = text or ""
    if #text > READ_MAX then
        return nil, path .. " is over " .. READ_MAX .. " bytes: not a secret file"
    end
    local key
    key, err = gray_ffi.secret(text)
    if not key then
        return nil, path .. " " .. err
    end
    return key
end

return _M
