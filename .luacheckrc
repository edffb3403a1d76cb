-- luacheck --std ngx_lua --codes lua spec bench
-- A --std on the command line replaces any std set here, so the busted
-- globals are also listed as read_globals, which the CLI does not override.
files["spec"] = {
    std = "+busted",
    read_globals = {
        "describe", "it", "pending", "setup", "teardown", "before_each",
        "after_each", "lazy_setup", "lazy_teardown", "strict_setup",
        "strict_teardown", "insulate", "expose", "finally", "spy", "stub",
        "mock", "async", "randomize",
        assert = { other_fields = true },
    },
}
