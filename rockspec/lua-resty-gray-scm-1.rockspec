rockspec_format = "3.0"
package = "lua-resty-gray"
version = "scm-1"
source = {
   url = "git+https://github.com/lua-resty-gray/lua-resty-gray.git",
   branch = "main",
}
description = {
   summary = "Gray-release (canary) router for nginx/OpenResty, memcached-backed, with a C core",
   detailed = [[
A C shared object (libgray.so), loaded through LuaJIT's FFI, parses IP
addresses, walks X-Forwarded-For/Forwarded behind trusted proxies and decodes
memcached replies; the Lua modules route each request to a stable or gray
location with membership kept in memcached. Includes a drop-in for the
classic dep.lua recipe (content_by_lua_file .../gray/dep.lua).
]],
   homepage = "https://github.com/lua-resty-gray/lua-resty-gray",
   license = "BSD-2-Clause",
   labels = { "nginx", "openresty", "memcached", "canary" },
}
-- LuaJIT (FFI) inside nginx's lua module or OpenResty. resty.core comes with
-- the nginx lua module and is not listed. On Debian, lua-resty-lrucache is a
-- Debian package; "make deps-rock" registers it in LuaRocks' rocks_provided
-- so that this installs offline (see the README, "With LuaRocks").
dependencies = {
   "lua == 5.1",
   "lua-resty-lrucache >= 0.10",
}
build = {
   type = "make",
   build_target = "all",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
      LIBFLAG = "$(LIBFLAG)",
   },
   install_target = "install",
   install_variables = {
      INST_LIBDIR = "$(LIBDIR)",
      INST_LUADIR = "$(LUADIR)",
      INST_BINDIR = "$(BINDIR)",
      -- gray-admin.1 beside the rock's other documents (luarocks doc)
      INST_MANDIR = "$(DOCDIR)",
   },
}
