-- gray.nginxconf: the configuration file of an nginx command line, and
-- which directives its files (the includes followed) use: table-driven
-- cases on real files, hostile ones beside (a missing include, a glob in a
-- directory, an include of itself, a mention in a comment or a string,
-- shell characters in a glob, the bounds), and gray.ffi.glob (glob(3)).
-- The nginx side (reads_upstream_status()) is in outcome_spec.

local harness = require "helpers.harness"
local conf = require "gray.nginxconf"

local function write(path, text)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
end

describe("gray.nginxconf.conf_path", function()
    local CONFIGURE = "--with-cc-opt='-g -O2' --prefix=/usr/share/nginx"
                      .. " --conf-path=/etc/nginx/nginx.conf --http-log-path=/var/log/x"
    local cases = {
        -- cmdline, prefix, configure, want
        { "nginx\0-p\0/t/\0-c\0/t/nginx.conf\0", "/t/", CONFIGURE, "/t/nginx.conf" },
        { "nginx\0-c/x/a.conf\0", "/t/", CONFIGURE, "/x/a.conf" },
        { "nginx\0-p\0/t\0-c\0conf/n.conf\0", "/t", CONFIGURE, "/t/conf/n.conf" },
        { "nginx\0-c\0n.conf\0", "/t/", CONFIGURE, "/t/n.conf" },
        -- a master's title (setproctitle): space-separated
        { "nginx: master process /usr/sbin/nginx -p /t/ -e /t/e.log -c /t/nginx.conf",
          "/t/", CONFIGURE, "/t/nginx.conf" },
        -- no -c: the build's --conf-path; without one, conf/nginx.conf
        { "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;",
          "/usr/share/nginx/", CONFIGURE, "/etc/nginx/nginx.conf" },
        { "nginx\0", "/usr/local/nginx/", "--with-debug", "/usr/local/nginx/conf/nginx.conf" },
        { "nginx\0", "/usr/local/nginx/", nil, "/usr/local/nginx/conf/nginx.conf" },
        -- the last -c wins, as in nginx
        { "nginx\0-c\0/a.conf\0-c\0/b.conf\0", "/", nil, "/b.conf" },
        -- a relative path and no prefix: unknown
        { "nginx\0-c\0n.conf\0", nil, nil, nil },
        { "nginx\0-c\0n.conf\0", "", nil, nil },
        { "", "/p/", nil, "/p/conf/nginx.conf" },
    }
    for i, c in ipairs(cases) do
        it("case " .. i .. ": " .. c[1]:gsub("%z", " "), function()
            assert.equal(c[4], conf.conf_path(c[1], c[2], c[3]))
        end)
    end
end)

describe("gray.nginxconf.mentions", function()
    local dir
    local NAMES = { "error_page", "header_filter_by_lua", "proxy_cache" }

    setup(function()
        dir = harness.tmpdir()
        os.execute("mkdir -p " .. dir .. "/sites " .. dir .. "/conf.d " .. dir .. "/a*b")
        write(dir .. "/mime.types", "types { text/html html; }\n")
        write(dir .. "/sites/one", "server { listen 1; location / { proxy_pass http://x; } }\n")
        write(dir .. "/sites/two", "server {\n  # error_page 404 /x.html;\n  listen 2;\n}\n")
        write(dir .. "/sites/.hidden", "error_page 500 /x;\n")
        write(dir .. "/conf.d/e.conf", "server { listen 3; error_page 500 502 /50x.html; }\n")
        write(dir .. "/conf.d/f.conf", "header_filter_by_lua_block { ngx.status = 500 }\n")
        write(dir .. "/conf.d/e.off", "error_page 500 /x;\n")
        write(dir .. "/self.conf", "include self.conf;\ninclude " .. dir .. "/self.conf;\n")
    end)

    teardown(function()
        os.execute("rm -rf " .. dir)
    end)

    local cases = {
        -- the main file's text, what mentions() answers (or the error's words)
        { "http { include mime.types; include sites/*; }", false },
        { "http {\n    # error_page 404 /404.html;\n\t#proxy_cache c;\n}", false },
        -- an inline comment or a string counts (erring toward "mentioned")
        { "http { server { listen 1; } # error_page 404 /x;\n}", "error_page" },
        { "http { add_header X 'error_page'; }", "error_page" },
        { "http { server { location / { error_page 502 = @x; } } }", "error_page" },
        { "http { proxy_cache_path /c keys_zone=c:1m; }", "proxy_cache" },
        -- through includes: a glob, a quoted path, relative to the main file
        { "http { include conf.d/*.conf; }", "error_page" },
        { "http { include \"conf.d/f.conf\"; }", "header_filter_by_lua" },
        { "http {\ninclude '" .. "conf.d/e.off';\n}", "error_page" },
        { "http { include conf.d/*.none; include sites/t*; }", false },
        -- a hidden file is not in a glob's match, as in glob(3)
        { "http { include sites/*; }", false },
        { "http { include self.conf; }", false },
        -- a glob in a directory part, as nginx's glob(3) takes it
        { "http { include */e.conf; }", "error_page" },
        { "http { include */*.types; include s?tes/[ot]*; }", false },
        { "http { include a*b/x.conf; }", false },
        { "http { include a*b/*; include [a]?b/*; }", false },
        -- unknown: an include that is not there
        { "http { include nothere.conf; }", nil, "nothere.conf" },
        -- a directory it cannot list (none there): unknown, never "none"
        { "http { include nodir/*.conf; }", nil, "cannot be listed" },
        { "http { include conf.d/*.conf/*.conf; }", false },
    }
    for i, c in ipairs(cases) do
        it("case " .. i .. ": " .. c[1]:gsub("\n", " "), function()
            local main = dir .. "/main" .. i .. ".conf"
            write(main, c[1])
            local got, err = conf.mentions(main, NAMES)
            assert.equal(c[2], got, err)
            if c[2] == nil then
                assert.truthy(err:find(c[3], 1, true), err)
            end
        end)
    end

    it("answers nil, err for a main file that is not there", function()
        local got, err = conf.mentions(dir .. "/none.conf", NAMES)
        assert.is_nil(got)
        assert.truthy(err:find("none.conf", 1, true), err)
    end)

    it("takes shell characters in an include as bytes of the glob", function()
        os.execute("mkdir -p '" .. dir .. "/q d'")
        write(dir .. "/q d/x'y.conf", "error_page 404 /x;\n")
        write(dir .. "/q d/$(id)`id` a.conf", "proxy_cache c;\n")
        write(dir .. "/main-q.conf", "http { include \"q d/x*\"; }")
        assert.equal("error_page", (conf.mentions(dir .. "/main-q.conf", NAMES)))
        -- "$(", "`", " " and "'" matched literally
        write(dir .. "/main-s.conf", "http { include '" .. dir .. "/q d/$(id)`id` *'; }")
        assert.equal("proxy_cache", (conf.mentions(dir .. "/main-s.conf", NAMES)))
        local hostile = {
            "q d/$(touch pwned)`touch pwned2`*",
            "q d/*'; touch pwned; echo '",
            "q d/*\" && touch pwned #",
            "q d/x*$(touch${IFS}pwned)",
        }
        for k, pattern in ipairs(hostile) do
            local main = dir .. "/main-r" .. k .. ".conf"
            write(main, "http { include \"" .. pattern .. "\"; }")
            local got, err = conf.mentions(main, NAMES)
            assert.is_true(got ~= nil or type(err) == "string")
        end
        assert.is_nil(io.open(dir .. "/q d/pwned"))
        assert.is_nil(io.open(dir .. "/q d/pwned2"))
        assert.is_nil(io.open("pwned"))
        assert.is_nil(io.open(dir .. "/pwned"))
    end)

    it("answers unknown past its bounds: files, one file's bytes", function()
        os.execute("mkdir -p " .. dir .. "/many")
        for k = 1, conf.MAX_FILES do
            write(dir .. "/many/" .. k .. ".conf", "")
        end
        write(dir .. "/main-many.conf", "http { include many/*.conf; }")
        local got, err = conf.mentions(dir .. "/main-many.conf", NAMES)
        assert.is_nil(got)
        assert.truthy(err:find("more than " .. conf.MAX_FILES, 1, true), err)
        -- the same file named many times is read once: no bound reached
        write(dir .. "/main-same.conf", ("include mime.types;\n"):rep(conf.MAX_FILES * 2))
        assert.equal(false, (conf.mentions(dir .. "/main-same.conf", NAMES)))
        local f = assert(io.open(dir .. "/big.conf", "wb"))
        f:write(("#"):rep(conf.MAX_BYTES + 1))
        f:close()
        write(dir .. "/main-big.conf", "http { include big.conf; }")
        got, err = conf.mentions(dir .. "/main-big.conf", NAMES)
        assert.is_nil(got)
        assert.truthy(err:find("larger than", 1, true), err)
    end)
end)

describe("gray.ffi.glob", function()
    local gray_ffi = require "gray.ffi"
    local dir

    setup(function()
        dir = harness.tmpdir()
        os.execute("mkdir -p " .. dir .. "/d " .. dir .. "/d/sub")
        for _, name in ipairs({ "b.conf", "a.conf", "C.conf", ".hidden.conf", "z.off",
                                "sub/s.conf" }) do
            write(dir .. "/d/" .. name, "")
        end
    end)

    teardown(function()
        os.execute("rm -rf " .. dir)
    end)

    it("answers glob(3)'s sorted matches, no dot files from *", function()
        local d = dir .. "/d/"
        assert.same({ d .. "C.conf", d .. "a.conf", d .. "b.conf" },
                    gray_ffi.glob(d .. "*.conf"))
        assert.same({ d .. ".hidden.conf" }, gray_ffi.glob(d .. ".*.conf"))
        assert.same({ d .. "sub/s.conf" }, gray_ffi.glob(dir .. "/?/*/*.conf"))
        assert.same({ d .. "a.conf", d .. "b.conf" }, gray_ffi.glob(d .. "[ab].conf"))
        assert.same({}, gray_ffi.glob(d .. "*.none"))
    end)

    it("answers nil, err for a directory it cannot list, too many, a bad pattern", function()
        local got, err = gray_ffi.glob(dir .. "/nodir/*.conf")
        assert.is_nil(got)
        assert.truthy(err:find("cannot be listed", 1, true), err)
        got, err = gray_ffi.glob(dir .. "/d/*", 2)
        assert.is_nil(got)
        assert.truthy(err:find("more than 2", 1, true), err)
        for _, bad in ipairs({ "", "a\0b", 1 }) do
            got, err = gray_ffi.glob(bad)
            assert.is_nil(got)
            assert.truthy(err:find("pattern", 1, true), err)
        end
    end)
end)
