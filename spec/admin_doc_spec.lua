-- gray-admin's man page (build/gray-admin.1: the hand-written skeleton
-- csrc/cli/gray-admin.1.in with the COMMANDS section that gray-admin --man
-- prints) against its command and option tables (csrc/cli/main.c), as --help
-- prints them: the page documents exactly the commands and the options
-- gray-admin has, none missing and none that it does not have, and each
-- command form of the table with its usage and its text.

local harness = require "helpers.harness"

local sh, quote = harness.sh, harness.quote
local REPO = os.getenv("GRAY_REPO") or (sh("pwd"):gsub("%s+$", ""))
local BIN = REPO .. "/build/gray-admin"
local MAN = REPO .. "/build/gray-admin.1"
local SKELETON = REPO .. "/csrc/cli/gray-admin.1.in"

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

-- roff text as plain text: no font escapes, \- as -, \& dropped, \e as \
local function roff_plain(text)
    return (text:gsub("\\f[BIRP]", ""):gsub("\\%-", "-"):gsub("\\&", ""):gsub("\\e", "\\"))
end

--- The command forms of --help in order: { usage = "add <ip|...> ...",
--- text = its lines joined by spaces }.
local function help_rows(help)
    local rows = {}
    for line in section(help, "Commands:", "\n"):gmatch("\n([^\n]*)") do
        local usage = line:match("^  (%l.*)")
        if usage then
            rows[#rows + 1] = { usage = usage }
        elseif line:match("^      %S") then
            local row = rows[#rows]
            row.text = (row.text and row.text .. " " or "") .. line:match("^%s*(.-)%s*$")
        end
    end
    return rows
end

--- The paragraphs of the page's COMMANDS section in order: { tag = the tag
--- as plain text, text = the body's lines joined by spaces }.
local function man_rows(page)
    local rows = {}
    local commands = section(page, ".SH COMMANDS", ".SH ")
    for paragraph in commands:gsub("\n%.TP\n", "\0"):gmatch("%z([^%z]*)") do
        local tag, body = paragraph:match("^([^\n]*)\n(.-)%s*$")
        rows[#rows + 1] = { tag = roff_plain(tag), text = (roff_plain(body):gsub("\n", " ")) }
    end
    return rows
end

--- The commands and options of the man page: the first word of each tagged
--- paragraph's tag under COMMANDS, and the options in the tags under OPTIONS.
local function from_man(page)
    local commands, options = {}, {}
    for _, row in ipairs(man_rows(page)) do
        commands[row.tag:match("^%l+")] = true
    end
    for tag in section(page, ".SH OPTIONS", ".SH "):gmatch("\n%.TP\n%.%a+ ([^\n]*)") do
        options_in(plain(tag), options)
    end
    return commands, options
end

describe("gray-admin.1 and gray-admin's tables", function()
    local help, page

    setup(function()
        local out, code = sh("make -s -C " .. quote(REPO) .. " build/gray-admin build/gray-admin.1")
        assert(code == 0, "building gray-admin and its man page failed: " .. out)
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

    it("the page's COMMANDS are the table's forms: each usage, then its text", function()
        local want, got = help_rows(help), man_rows(page)
        assert.is_true(#want >= 19, help)
        assert.equal(#want, #got)
        for i, row in ipairs(want) do
            -- placeholders lose their <>, the text its first letter's case
            -- and gains a full stop; what the page adds (more) follows
            assert.equal((row.usage:gsub("[<>]", "")), got[i].tag)
            local text = row.text:gsub("^%l", string.upper):gsub("[<>]", ""):gsub("([^.])$", "%1.")
            assert.equal(text, got[i].text:sub(1, #text))
        end
    end)

    it("the page's command text is only the generated one", function()
        local skeleton = assert(harness.read_file(SKELETON), "no " .. SKELETON)
        assert.is_nil(skeleton:find("\n.SH COMMANDS", 1, true))
        assert.is_nil(skeleton:find("\n.TP\n.BI \"add ", 1, true))
        local _, markers = skeleton:gsub("\n%.\\\" @COMMANDS@", "")
        assert.equal(1, markers)
        local _, sections = page:gsub("\n%.SH COMMANDS\n", "")
        assert.equal(1, sections)
        assert.is_nil(page:find("@COMMANDS@", 1, true))
        local out, code = sh(BIN .. " --man")
        assert.equal(0, code, out)
        assert.truthy(page:find(out, 1, true), "build/gray-admin.1 is not made from --man")
    end)
end)
