-- gray-admin's man page (csrc/cli/gray-admin.1, written by hand) against
-- its command and option tables (csrc/cli/main.c), as --help prints them:
-- the page documents exactly the commands and the options gray-admin has,
-- none missing and none that it does not have.

local harness = require "helpers.harness"

local sh, quote = harness.sh, harness.quote
local REPO = os.getenv("GRAY_REPO") or (sh("pwd"):gsub("%s+$", ""))
local BIN = REPO .. "/build/gray-admin"
local MAN = REPO .. "/csrc/cli/gray-admin.1"

-- the text between "\n<start>" and the next "\n<stop>"
local function section(text, start, stop)
    local from = assert(text:find("\n" .. start, 1, true), "no " .. start)
    local to = text:find("\n" .. stop, from + 1, true) or #text
    return text:sub(from, to)
end

local function sorted_keys(set)
    local list = {}
    for k in pairs(set) do
        list[#list + 1] = k
    end
    table.sort(list)
    return list
end

-- the option names in a text ("--servers", "-v"), after a blank, a quote or
-- its start
local function options_in(text, set)
    for opt in (" " .. text):gmatch("[%s\"%[](%-%-?%a[%w%-]*)") do
        set[opt] = true
    end
    return set
end

--- The commands and options of --help: names of the command rows (each
--- form's first word), and the options of the Options rows and of the
--- command forms (token's own).
local function from_help(help)
    local commands, options = {}, {}
    for line in section(help, "Commands:", "Options:"):gmatch("\n  (%l[^\n]*)") do
        commands[line:match("^%l+")] = true
        options_in(line, options)
    end
    for head in section(help, "Options:", "Exit status"):gmatch("\n  (%-[^\n]-)  ") do
        options_in(head, options)
    end
    return commands, options
end

-- a roff line as plain words: no font escapes, \- as -, no quotes
local function plain(line)
    return (line:gsub("\\f[BIRP]", ""):gsub("\\%-", "-"):gsub('"', ""))
end

--- The commands and options of the man page: the first word of each tagged
--- paragraph's tag under COMMANDS, and the options in the tags under OPTIONS.
local function from_man(page)
    local commands, options = {}, {}
    for tag in section(page, ".SH COMMANDS", ".SH "):gmatch("\n%.TP\n%.%a+ ([^\n]*)") do
        commands[plain(tag):match("^%s*(%l+)")] = true
    end
    for tag in section(page, ".SH OPTIONS", ".SH "):gmatch("\n%.TP\n%.%a+ ([^\n]*)") do
        options_in(plain(tag), options)
    end
    return commands, options
end

describe("gray-admin.1 and gray-admin's tables", function()
    local help, page

    setup(function()
        local out, code = sh("make -s -C " .. quote(REPO) .. " build/gray-admin")
        assert(code == 0, "building gray-admin failed: " .. out)
        help = sh(BIN .. " --help")
        page = assert(harness.read_file(MAN), "no " .. MAN)
    end)

    it("--help shows the tables", function()
        local commands, options = from_help(help)
        assert.same({ "add", "check", "get", "halt", "import", "list", "percent", "ramp",
                      "ranges", "remove", "resume", "status", "token" }, sorted_keys(commands))
        for _, opt in ipairs({ "--servers", "--ttl", "--id", "--secret-file", "--reason",
                               "--halt-key", "-v",
                               "--verbose", "-h", "--help", "--version" }) do
            assert.is_true(options[opt], opt .. " not in --help")
        end
    end)

    it("the man page has a COMMANDS entry for each command, and no other", function()
        assert.same(sorted_keys((from_help(help))), sorted_keys((from_man(page))))
    end)

    it("the man page has an OPTIONS entry for each option, and no other", function()
        local _, help_options = from_help(help)
        local _, man_options = from_man(page)
        assert.same(sorted_keys(help_options), sorted_keys(man_options))
    end)

    it("the exit statuses of --help are the man page's", function()
        local exit = section(help, "Exit status", "\0")
        local codes = {}
        for code in exit:gmatch("%f[%d](%d) %l") do
            codes[#codes + 1] = code
        end
        assert.same({ "0", "1", "2", "3", "4" }, codes)
        local man_codes = {}
        for code in section(page, ".SH EXIT STATUS", ".SH "):gmatch("\n%.B (%d)\n") do
            man_codes[#man_codes + 1] = code
        end
        assert.same(codes, man_codes)
    end)
end)
