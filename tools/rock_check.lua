-- Run by "make rock-check" with LUA_PATH/LUA_CPATH pointing only at a
-- luarocks tree: gray.ffi must load libgray.so from that tree and work.
local g = require "gray.ffi"
assert(g.lib_path:find("rock-tree", 1, true), "loaded from " .. g.lib_path)
assert(g.canonical_ip("::FFFF:192.168.2.20") == "192.168.2.20")
print("rock-check: gray.ffi " .. g.VERSION .. " from " .. g.lib_path)
