rockspec_format = "3.0"
package = "lua-resty-gray"
version = "scm-1"
source = {
   url = "git+https://example.invalid/lua-resty-gray.git",
}
description = {
   summary = "Gray-release (canary) router for nginx/OpenResty, memcached-backed, with a C core",
   detailed = [[
A C shared object (libgray.so), loaded through LuaJIT's FFI, parses IP
addresses, walks X-Forwarded-For/Forwarded behind trusted proxies and decodes
memcached replies; the Lua modules route each request to a stable or gray
location with membership kept in memcached.
]],
   license = "BSD-2-Clause",
}
-- LuaJIT only (FFI); nothing from the LuaRocks registry is needed.
dependencies = {
   "lua == 5.1",
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
   },
}
