-- The loader and the binding: lua/gray/ffi.lua must declare exactly what
-- csrc/gray.h declares, mirror its constants, find libgray.so on
-- package.cpath (and say where it looked when it cannot), and survive being
-- loaded twice. Both files are read as text; nothing here trusts the module
-- to describe itself.

local gray = require "gray.ffi"

local fmt = string.format

-- The repository root, from this file's own path ("@spec/ffi_spec.lua" when
-- busted runs from the root).
local function repo_root()
    local src = debug.getinfo(1, "S").source
    local dir = src:match("^@(.*)spec/ffi_spec%.lua$") or ""
    if dir:sub(1, 1) ~= "/" then
        local p = io.popen("pwd")
        local cwd = p:read("*l")
        p:close()
        dir = cwd .. "/" .. dir
    end
    return (dir:gsub("/%./", "/"):gsub("/+$", "")) .. "/"
end

local ROOT = repo_root()

local function read(path)
    local f = assert(io.open(ROOT .. path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

local HEADER = read("csrc/gray.h")
local MODULE = read("lua/gray/ffi.lua")

-------------------------------------------------------------------------------
-- C declarations as text

local function strip_c_comments(s)
    s = s:gsub("/%*.-%*/", " ")
    return (s:gsub("//[^\n]*", " "))
end

-- one line, single spaces, none around punctuation
local function norm(s)
    s = s:gsub("%s+", " ")
    for _ = 1, 2 do
        s = s:gsub(" ?([%(%)%*,%[%]{};]) ?", "%1")
    end
    return (s:gsub("^ ", ""):gsub(" $", ""))
end

-- Returns { functions = name -> prototype, structs = typedef name ->
-- { tag = , fields = { "type name", ... } }, other = { statement, ... } }.
local function parse_decls(text)
    text = "\n" .. strip_c_comments(text)
    text = text:gsub("\n[ \t]*#[^\n]*", "\n")          -- preprocessor lines
    text = text:gsub('extern%s*"C"%s*{', " ")
    local structs = {}
    text = text:gsub("typedef%s+struct%s+([%w_]+)%s*(%b{})%s*([%w_]+)%s*;",
                     function(tag, body, name)
                         local fields = {}
                         for decl in body:sub(2, -2):gmatch("[^;]+") do
                             decl = norm(decl)
                             if decl ~= "" then
                                 fields[#fields + 1] = decl
                             end
                         end
                         structs[name] = { tag = tag, fields = fields }
                         return " "
                     end)
    text = text:gsub("}", " ")                          -- the extern "C" close
    local functions, other = {}, {}
    for stmt in text:gmatch("[^;]+") do
        stmt = norm(stmt)
        if stmt ~= "" then
            local name = stmt:match("([%w_]+)%(")
            if name then
                functions[name] = stmt
            else
                other[#other + 1] = stmt
            end
        end
    end
    return { functions = functions, structs = structs, other = other }
end

-- every guarded cdef block of the module, read as one; a block marked
-- libc's (glob(3)) is not gray.h's
local CDEF, LIBC
for block in MODULE:gmatch("ffi%.cdef%s*%[%[(.-)%]%]") do
    if block:find("/* libc's", 1, true) then
        LIBC = (LIBC and LIBC .. "\n" or "") .. block
    else
        CDEF = (CDEF and CDEF .. "\n" or "") .. block
    end
end
local H = parse_decls(HEADER)
local L = parse_decls(CDEF or "")

local function union_names(a, b)
    local seen, names = {}, {}
    for _, t in ipairs({ a, b }) do
        for name in pairs(t) do
            if not seen[name] then
                seen[name] = true
                names[#names + 1] = name
            end
        end
    end
    table.sort(names)
    return names
end

local function count(t)
    local n = 0
    for _ in pairs(t) do
        n = n + 1
    end
    return n
end

describe("the cdef in gray/ffi.lua", function()
    it("is found in the module source", function()
        assert.is_string(CDEF)
    end)

    -- the parsers must see something, or every comparison below is vacuous
    local sanity = {
        { "gray.h functions", function() return count(H.functions) end, 15 },
        { "cdef functions", function() return count(L.functions) end, 15 },
        { "gray.h structs", function() return count(H.structs) end, 5 },
        { "cdef structs", function() return count(L.structs) end, 5 },
    }
    for _, c in ipairs(sanity) do
        it(fmt("parses at least %d %s", c[3], c[1]), function()
            assert.is_true(c[2]() >= c[3], c[1] .. ": " .. c[2]())
        end)
    end

    local must_have = { "gray_strerror", "gray_version", "gray_mc_parse_get", "gray_xff_walk" }
    for _, name in ipairs(must_have) do
        it("parses " .. name .. " out of gray.h", function()
            assert.is_string(H.functions[name])
        end)
    end

    for _, name in ipairs(union_names(H.functions, L.functions)) do
        it("declares " .. name .. " exactly as gray.h does", function()
            assert.is_string(H.functions[name], name .. " is in the cdef but not in gray.h")
            assert.is_string(L.functions[name], name .. " is in gray.h but not in the cdef")
            assert.are.equal(H.functions[name], L.functions[name])
        end)
    end

    for _, name in ipairs(union_names(H.structs, L.structs)) do
        it("lays out " .. name .. " exactly as gray.h does", function()
            assert.is_table(H.structs[name], name .. " is in the cdef but not in gray.h")
            assert.is_table(L.structs[name], name .. " is in gray.h but not in the cdef")
            assert.are.equal(H.structs[name].tag, L.structs[name].tag)
            assert.are.same(H.structs[name].fields, L.structs[name].fields)
        end)
    end

    it("declares only glob and globfree in libc's block", function()
        local names = {}
        for name in pairs(parse_decls(LIBC or "").functions) do
            names[#names + 1] = name
        end
        table.sort(names)
        assert.same({ "glob", "globfree" }, names)
    end)

    it("declares nothing else that gray.h lacks, and lacks nothing else", function()
        table.sort(H.other)
        table.sort(L.other)
        assert.are.same(H.other, L.other)
    end)
end)

-------------------------------------------------------------------------------
-- constants

local DEFINES = {}
for name, value in strip_c_comments(HEADER):gmatch("#define[ \t]+([%w_]+)[ \t]+([^\n]-)[ \t]*\n") do
    DEFINES[name] = tonumber(value) or value
end

-- a literal table assigned to a local in ffi.lua, evaluated on its own
local function module_table(name)
    local src = MODULE:match("\nlocal " .. name .. "%s*=%s*(%b{})")
    if not src then
        return nil
    end
    local chunk = assert(loadstring("return " .. src))
    return chunk()
end

local function module_number(name)
    return tonumber(MODULE:match("\nlocal " .. name .. "%s*=%s*(%-?%d+)"))
end

describe("the constants mirrored in gray/ffi.lua", function()
    local numbers = {
        { "GRAY_EAGAIN", "GRAY_EAGAIN", -2 },
        { "IP_TEXT_MAX", "GRAY_IP_TEXT_MAX", 46 },
        { "MC_END", "GRAY_MC_END", 8 },
        { "TARGETS_MAX", "GRAY_TARGETS_MAX", 255 },
        { "RANGES_REPORT", "GRAY_RANGES_REPORT", 8 },
        { "TOKEN_MAX", "GRAY_TOKEN_MAX", 257 },
        { "IMAGE_VERIFY", "GRAY_IMAGE_VERIFY", 1 },
        { "JOB_RUNNING", "GRAY_JOB_RUNNING", 1 },
        { "GRAY_EIO", "GRAY_EIO", -21 },
        { "IMAGE_PARTS_MAX", "GRAY_IMAGE_PARTS_MAX", 1024 },
        { "RAMP_STEPS_MAX", "GRAY_RAMP_STEPS_MAX", 64 },
    }
    for _, c in ipairs(numbers) do
        local lua_name, c_name, value = c[1], c[2], c[3]
        it(lua_name .. " equals " .. c_name, function()
            assert.are.equal(value, DEFINES[c_name])
            assert.are.equal(DEFINES[c_name], module_number(lua_name))
        end)
    end

    -- a cdef cannot name a macro, so gray.h writes the array length out
    it("gray_ranges_stats_t keeps GRAY_RANGES_REPORT line numbers of each kind", function()
        local ffi = require "ffi"
        local st = ffi.new("gray_ranges_stats_t")
        assert.are.equal(DEFINES.GRAY_RANGES_REPORT * 4, ffi.sizeof(st.bad_lines))
        assert.are.equal(DEFINES.GRAY_RANGES_REPORT * 4, ffi.sizeof(st.unknown_lines))
    end)

    it("gray_image_stats_t keeps GRAY_IMAGE_REPORT line numbers of each kind", function()
        local ffi = require "ffi"
        local st = ffi.new("gray_image_stats_t")
        assert.are.equal(DEFINES.GRAY_IMAGE_REPORT * 4, ffi.sizeof(st.bad_lines))
        assert.are.equal(DEFINES.GRAY_IMAGE_REPORT * 4, ffi.sizeof(st.unknown_lines))
    end)

    it("IMAGE_KINDS names GRAY_IMAGE_IDS and GRAY_IMAGE_RANGES", function()
        assert.are.same({ ids = DEFINES.GRAY_IMAGE_IDS, ranges = DEFINES.GRAY_IMAGE_RANGES },
                        module_table("IMAGE_KINDS"))
    end)

    it("VERSION in the source equals GRAY_VERSION", function()
        assert.is_string(DEFINES.GRAY_VERSION)
        assert.are.equal(DEFINES.GRAY_VERSION, '"' .. MODULE:match('\nlocal VERSION%s*=%s*"([^"]*)"') .. '"')
    end)

    -- GRAY_STOP_<suffix> -> the name ffi.lua reports for it
    local stop_names = {
        PEER = "untrusted-peer", UNTRUSTED = "untrusted", ALL = "all-trusted",
        JUNK = "junk", EMPTY = "empty",
    }
    local stops = {}
    for name, value in pairs(DEFINES) do
        local suffix = name:match("^GRAY_STOP_([%u_]+)$")
        if suffix then
            stops[#stops + 1] = { suffix, value }
        end
    end
    table.sort(stops, function(a, b) return a[2] < b[2] end)

    it("STOP_NAMES has one name per GRAY_STOP_* and no more", function()
        local t = module_table("STOP_NAMES")
        assert.is_table(t)
        assert.are.equal(5, #stops)
        assert.are.equal(#stops, count(t))
    end)
    for _, s in ipairs(stops) do
        it(fmt("STOP_NAMES[%d] names GRAY_STOP_%s", s[2], s[1]), function()
            assert.is_string(stop_names[s[1]], "GRAY_STOP_" .. s[1] .. " is new: name it here")
            assert.are.equal(stop_names[s[1]], module_table("STOP_NAMES")[s[2]])
        end)
    end

    local kinds = {}
    for name, value in pairs(DEFINES) do
        local suffix = name:match("^GRAY_MC_([%u_]+)$")
        if suffix and type(value) == "number" and not suffix:match("_MAX$") then
            kinds[#kinds + 1] = { suffix, value }
        end
    end
    table.sort(kinds, function(a, b) return a[2] < b[2] end)

    it("MC_KINDS has one name per GRAY_MC_* kind and no more", function()
        local t = module_table("MC_KINDS")
        assert.is_table(t)
        assert.are.equal(17, #kinds)
        assert.are.equal(#kinds, count(t))
    end)
    for _, k in ipairs(kinds) do
        it(fmt("MC_KINDS[%d] is %s", k[2], k[1]), function()
            assert.are.equal(k[1], module_table("MC_KINDS")[k[2]])
        end)
    end
end)

-------------------------------------------------------------------------------
describe("the loaded module", function()
    it("VERSION equals GRAY_VERSION in gray.h", function()
        assert.are.equal(HEADER:match('#define%s+GRAY_VERSION%s+"([^"]*)"'), gray.VERSION)
    end)

    it("lib_path points at build/libgray.so", function()
        assert.is_string(gray.lib_path)
        assert.matches("build/libgray%.so$", gray.lib_path)
        local loaded = assert(io.open(gray.lib_path, "rb"))
        local built = assert(io.open(ROOT .. "build/libgray.so", "rb"))
        local a, b = loaded:read("*a"), built:read("*a")
        loaded:close()
        built:close()
        assert.is_true(a == b, gray.lib_path .. " is not " .. ROOT .. "build/libgray.so")
    end)

    local reloads = {
        { "require after clearing package.loaded", function()
            package.loaded["gray.ffi"] = nil
            return require "gray.ffi"
        end },
        { "a third require", function()
            package.loaded["gray.ffi"] = nil
            return require "gray.ffi"
        end },
        { "running another copy of the file", function()
            return assert(loadfile(ROOT .. "lua/gray/ffi.lua"))()
        end },
    }
    for _, c in ipairs(reloads) do
        it("survives " .. c[1], function()
            local saved = package.loaded["gray.ffi"]
            local ok, mod = pcall(c[2])
            package.loaded["gray.ffi"] = saved
            assert.is_true(ok, tostring(mod))
            assert.is_table(mod)
            assert.are.equal(gray.VERSION, mod.VERSION)
            assert.is_true(mod.mc_key_ok("works"))
            assert.are.equal("STORED", (mod.mc_parse_line("STORED\r\n")))
        end)
    end
end)

-------------------------------------------------------------------------------
describe("require without libgray.so on package.cpath", function()
    local tmp = os.tmpname()
    os.remove(tmp)
    local bogus_dir = tmp .. ".d"

    setup(function()
        assert(os.execute("mkdir -p '" .. bogus_dir .. "'"))
        local f = assert(io.open(bogus_dir .. "/libgray.so", "wb"))
        f:write("this is not a shared library\n")
        f:close()
    end)

    teardown(function()
        os.remove(bogus_dir .. "/libgray.so")
        os.remove(bogus_dir)
    end)

    -- { name, LUA_CPATH, paths the message must list }
    local cases = {
        { "two missing directories", "/nonexistent/?.so;/tmp/also-not/?.so",
          { "/nonexistent/libgray.so", "/tmp/also-not/libgray.so" } },
        { "one missing directory", "/nonexistent/deeper/?.so", { "/nonexistent/deeper/libgray.so" } },
        { "templates with prefixes", "/nonexistent/lib?.so;/nonexistent/?-x.so",
          { "/nonexistent/liblibgray.so", "/nonexistent/libgray-x.so" } },
        { "a file that is not a library, then a missing one", bogus_dir .. "/?.so;/nonexistent/?.so",
          { bogus_dir .. "/libgray.so", "/nonexistent/libgray.so" } },
    }

    local probe = 'local ok, err = pcall(require, "gray.ffi") '
               .. 'io.write(tostring(ok), "\\n", tostring(err), "\\n")'

    for _, c in ipairs(cases) do
        local name, cpath, paths = c[1], c[2], c[3]
        it("lists every path tried: " .. name, function()
            local cmd = fmt("cd '%s' && LUA_PATH='%slua/?.lua' LUA_CPATH='%s' luajit -e '%s' 2>&1",
                            ROOT, ROOT, cpath, probe)
            local p = assert(io.popen(cmd))
            local out = p:read("*a")
            p:close()
            assert.are.equal("false\n", out:sub(1, 6), out)
            assert.is_truthy(out:find("libgray.so not found", 1, true), out)
            for _, path in ipairs(paths) do
                assert.is_truthy(out:find(path, 1, true), path .. " missing from: " .. out)
            end
        end)
    end
end)

-------------------------------------------------------------------------------
describe("strerror", function()
    local seen = {}
    for code = -14, -1 do
        it("names code " .. code, function()
            local text = gray.strerror(code)
            assert.is_string(text)
            assert.is_true(#text > 0)
            assert.are_not.equal("unknown error", text)
            assert.is_nil(seen[text], fmt("%d and %s share %q", code, tostring(seen[text]), text))
            seen[text] = code
        end)
    end

    local codes = {}
    for name in pairs(DEFINES) do
        if name:match("^GRAY_E%u+$") then
            codes[#codes + 1] = name
        end
    end
    table.sort(codes)
    for _, name in ipairs(codes) do
        it("names " .. name .. " from gray.h", function()
            assert.is_number(DEFINES[name])
            assert.are_not.equal("unknown error", gray.strerror(DEFINES[name]))
        end)
    end

    local unknown = { -15, -16, -100, 1, 2, 12, 13, 100, 2147483647, -2147483648 }
    for _, code in ipairs(unknown) do
        it("calls code " .. code .. " unknown", function()
            assert.are.equal("unknown error", gray.strerror(code))
        end)
    end
end)
