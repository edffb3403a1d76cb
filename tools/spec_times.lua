-- A busted output handler that says where a spec run's time goes: the wall
-- time of each spec file and its slowest tests, longest first (for placing
-- the files in the Makefile's lanes and finding a test that waits).
--
--   busted --lua=luajit -o tools/spec_times.lua spec/lists_spec.lua spec/admin_spec.lua
--   SPEC_TIMES_TOP=20 busted --lua=luajit -o tools/spec_times.lua spec/*_spec.lua
--
-- Failures are listed with their message; the exit status is busted's.

local ffi = require "ffi"

if not pcall(ffi.typeof, "gray_spec_times_timespec_t") then
    ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } gray_spec_times_timespec_t;
int gray_spec_times_clock_gettime(int clock, gray_spec_times_timespec_t *ts)
    __asm__("clock_gettime");
]]
end

local ts = ffi.new("gray_spec_times_timespec_t")

local function now()
    ffi.C.gray_spec_times_clock_gettime(1, ts)        -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

return function()
    local busted = require "busted"
    local handler = require("busted.outputHandlers.base")()
    local top = tonumber(os.getenv("SPEC_TIMES_TOP") or "") or 5
    local started, tests, files, order, failed = {}, {}, {}, {}, {}
    local t_suite = now()

    local function file_start(element)
        started[element] = now()
        order[#order + 1] = element.name
        return nil, true
    end

    local function file_end(element)
        files[element.name] = now() - started[element]
        return nil, true
    end

    local function test_start(element)
        started[element] = now()
        return nil, true
    end

    local function test_end(element)
        local file = element.trace and element.trace.short_src or "?"
        tests[#tests + 1] = { now() - started[element], file, handler.getFullName(element) }
        return nil, true
    end

    local function report(element, _, message)
        if message then
            failed[#failed + 1] = handler.getFullName(element) .. ": " .. tostring(message)
        end
        return nil, true
    end

    local function suite_end()
        local rows = {}
        for _, name in ipairs(order) do
            rows[#rows + 1] = { files[name] or 0, name }
        end
        table.sort(rows, function(a, b) return a[1] > b[1] end)
        table.sort(tests, function(a, b) return a[1] > b[1] end)
        io.write(("%d files, %d tests, %.2f s wall\n"):format(#rows, #tests, now() - t_suite))
        for _, row in ipairs(rows) do
            io.write(("%7.2f s  %s\n"):format(row[1], row[2]))
            local shown = 0
            for _, t in ipairs(tests) do
                if t[2] == row[2] and shown < top then
                    io.write(("          %6.2f  %s\n"):format(t[1], t[3]))
                    shown = shown + 1
                end
            end
        end
        for _, f in ipairs(failed) do
            io.write("FAILED: ", f, "\n")
        end
        io.write(("%d failed\n"):format(#failed))
        return nil, true
    end

    busted.subscribe({ "file", "start" }, file_start)
    busted.subscribe({ "file", "end" }, file_end)
    busted.subscribe({ "test", "start" }, test_start)
    busted.subscribe({ "test", "end" }, test_end)
    busted.subscribe({ "failure" }, report)
    busted.subscribe({ "error" }, report)
    busted.subscribe({ "suite", "end" }, suite_end)
    return handler
end
