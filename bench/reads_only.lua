-- The /reads-only location's chunk: like lua/gray/dep.lua, it hands the
-- request to a module function (see reads_floor.lua).
return (package.loaded.reads_floor or require("reads_floor")).run()
