-- fn_lengths.lua: the longest functions of Lua and C files, in lines from
-- the line that opens a function to the line that closes it. A Lua function
-- opens with `function` (named, as a statement) and closes with the `end`
-- at its indentation; a C function opens at column 0 and closes with the
-- `}` at column 0.
--
--   luajit tools/fn_lengths.lua [N] file...     (N longest, default 10)

local args = { ... }
local top = tonumber(args[1]) and tonumber(table.remove(args, 1)) or 10
local rows = {}

local function lua_file(path)
    local lines = {}
    for line in io.lines(path) do
        lines[#lines + 1] = line
    end
    for i, line in ipairs(lines) do
        local indent, name = line:match("^(%s*)local%s+function%s+([%w_.:]+)")
        if not name then
            indent, name = line:match("^(%s*)function%s+([%w_.:]+)")
        end
        if name and not line:find("%f[%w]end%s*$") then
            for j = i + 1, #lines do
                if lines[j]:match("^" .. indent .. "end%f[^%w]") then
                    rows[#rows + 1] = { j - i + 1, path .. ":" .. i, name }
                    break
                end
            end
        end
    end
end

local function c_file(path)
    local n, start, name, head = 0, nil, nil, {}
    for line in io.lines(path) do
        n = n + 1
        if start then
            if line:match("^}") then
                rows[#rows + 1] = { n - start + 1, path .. ":" .. start, name }
                start, head = nil, {}
            end
        elseif line:match("^[%a_].*%)%s*{%s*$") or line == "{"
               or (head[1] and line:match("^%s.*%)%s*{%s*$")) then
            -- the signature may span lines: its name is before the first '('
            head[#head + 1] = line
            start = n - #head + 1
            name = table.concat(head, " "):match("([%w_]+)%s*%(") or "?"
        elseif line:match("^[%a_]") and not line:find("[;}]%s*$") then
            head = { line }
        elseif head[1] and line:match("^%s") and not line:find(";%s*$") then
            head[#head + 1] = line
        else
            head = {}
        end
    end
end

for _, path in ipairs(args) do
    if path:match("%.lua$") then
        lua_file(path)
    elseif path:match("%.[ch]$") then
        c_file(path)
    end
end
table.sort(rows, function(a, b) return a[1] > b[1] end)
for i = 1, math.min(top, #rows) do
    io.write(string.format("%5d  %-28s %s\n", rows[i][1], rows[i][3], rows[i][2]))
end
