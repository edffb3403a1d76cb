-- gray.nginxconf: the configuration file of an nginx command line, and
-- which directives its files (the includes followed) use: table-driven
-- cases on real files, hostile ones beside (a missing include, a glob in a
-- directory, an include of itself, a mention in a comment or a string).
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
        -- unknown: an include that is not there, a glob in a directory
        { "http { include nothere.conf; }", nil, "nothere.conf" },
        { "http { include */e.conf; }", nil, "a glob only in the file name" },
        -- a directory it cannot list (none there): unknown, never "none"
        { "http { include nodir/*.conf; }", nil, "cannot list" },
        { "http { include a*b/x.conf; }", nil, "a glob only in the file name" },
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

    it("follows a file name with shell characters literally", function()
        os.execute("mkdir -p '" .. dir .. "/q d'")
        write(dir .. "/q d/x'y.conf", "error_page 404 /x;\n")
        write(dir .. "/main-q.conf", "http { include \"q d/x*\"; }")
        assert.equal("error_page", (conf.mentions(dir .. "/main-q.conf", NAMES)))
        write(dir .. "/main-r.conf", "http { include \"q d/$(touch pwned)`touch pwned2`*\"; }")
        assert.equal(false, (conf.mentions(dir .. "/main-r.conf", NAMES)))
        assert.is_nil(io.open(dir .. "/q d/pwned"))
        assert.is_nil(io.open(dir .. "/q d/pwned2"))
    end)
end)
