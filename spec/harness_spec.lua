-- The integration harness's own HTTP/1.1 client and error-log marks
-- (spec/helpers/harness.lua), against real nginx: the framings an answer
-- can have, keep-alive and its end, a deadline, and what a request sends.

local harness = require "helpers.harness"

local SERVERS = [[
  server {
    listen 127.0.0.1:$PORT;
    keepalive_requests 3;
    location = /len     { return 200 "abc"; }
    location = /conn    { return 200 "$connection $connection_requests"; }
    location = /chunked {
        content_by_lua_block {
            for i = 1, 3 do
                ngx.print(("x"):rep(i * 1000))
                ngx.flush(true)
            end
        }
    }
    location = /headers {
        content_by_lua_block {
            ngx.say(ngx.var.http_x_a or "none", " ", ngx.var.http_x_blank or "none", " ",
                    ngx.var.http_host, " ", ngx.req.get_method(), " ",
                    tostring(#(ngx.req.get_headers()["x-b"] or {})))
        }
    }
    location = /slow    { content_by_lua_block { ngx.sleep(1) ngx.say("late") } }
    location = /every3  {
        content_by_lua_block {
            ngx.status = ngx.var.connection_requests == "3" and 404 or 200
            ngx.say("n")
        }
    }
    location = /alert   { content_by_lua_block { ngx.log(ngx.ALERT, "spec alert") ngx.say("ok") } }
]] .. harness.EVAL_LOCATION .. [[
  }
  server {
    listen 127.0.0.1:$PORT2;
    keepalive_timeout 0;
    location / { return 200 "closed after"; }
    location = /eof {
        chunked_transfer_encoding off;
        content_by_lua_block { ngx.print("to the close") }
    }
  }
]]

describe("the harness's HTTP client", function()
    after_each(harness.no_error_log)
    local nginx

    setup(function()
        nginx = harness.nginx({ servers = SERVERS })
    end)

    teardown(function()
        if nginx then nginx:stop() end
    end)

    it("reads an answer by Content-Length, chunked, or to the close", function()
        local res = nginx:get("/len")
        assert.same({ 200, "abc", "3" }, { res.status, res.body, res.headers["content-length"] })
        res = nginx:get("/chunked")
        assert.equal("chunked", res.headers["transfer-encoding"])
        assert.equal(("x"):rep(1000) .. ("x"):rep(2000) .. ("x"):rep(3000), res.body)
        res = nginx:get("/eof", { port = nginx.port2 })
        assert.same({ 200, "to the close", "close" },
                    { res.status, res.body, res.headers.connection })
        assert.is_nil(res.headers["content-length"] or res.headers["transfer-encoding"])
        res = nginx:request("/len", { method = "HEAD" })
        assert.same({ 200, "" }, { res.status, res.body })
    end)

    it("keeps one connection, and makes a new one when the server ends it", function()
        local client = nginx:client()
        local conns = {}
        for i = 1, 7 do
            local res = client:request("/conn")
            assert.equal(200, res.status)
            local conn, n = res.body:match("^(%d+) (%d+)$")
            -- keepalive_requests 3: three on each connection, in order
            assert.equal(tostring((i - 1) % 3 + 1), n, res.body)
            conns[conn] = true
        end
        client:close()
        local n = 0
        for _ in pairs(conns) do n = n + 1 end
        assert.equal(3, n)
        -- and a client whose server closes after every answer
        client = nginx:client({ port = nginx.port2 })
        for _ = 1, 3 do
            assert.equal("closed after", client:request("/").body)
        end
        client:close()
    end)

    it("sends the headers given, one line per value, none for a blank value (as curl)", function()
        local res = nginx:get("/headers", { headers = { ["X-A"] = "1", ["X-Blank"] = " ",
                                                        ["X-B"] = { "p", "q" } } })
        assert.equal("1 none 127.0.0.1:" .. nginx.port .. " GET 2\n", res.body)
        res = nginx:get("/headers", { headers = { Host = "example.test" }, body = "b" })
        assert.equal("none none example.test POST 0\n", res.body)
    end)

    it("gives up at max_time: status 0 and the error, as curl's 000", function()
        local res = nginx:get("/slow", { max_time = 0.2 })
        assert.equal(0, res.status)
        assert.equal("timeout", res.err)
        assert.is_true(res.time >= 0.19 and res.time < 2, tostring(res.time))
        -- nothing listening: an error, at once
        res = nginx:get("/", { port = harness.free_port() })
        assert.equal(0, res.status)
        assert.truthy(res.err:find("refused", 1, true), res.err)
    end)

    it("counts a batch's answers by status", function()
        assert.equal("3 200", nginx:batch("/len", 3))
        -- every third request on a connection answers 404
        assert.equal("5 200 2 404", nginx:batch("/every3", 7))
    end)

    it("sends a concurrent batch side by side, one connection each, within its deadline",
       function()
        -- /slow takes 1 s: 4 of them one after the other would take 4 s
        local t0 = harness.now()
        assert.equal("4 200", nginx:concurrent("/slow", 4))
        local took = harness.now() - t0
        assert.truthy(took >= 0.9 and took < 2.5, took)
        -- each on its own connection: the first request of each (no 404)
        assert.equal("7 200", nginx:concurrent("/every3", 7))
        assert.equal("2 200 1 404", nginx:batch("/every3", 3))
        -- the deadline: no answer counts as 000
        t0 = harness.now()
        assert.equal("2 000", nginx:concurrent("/slow", 2, nil, { max_time = 0.3 }))
        assert.truthy(harness.now() - t0 < 0.8)
        -- headers go with each request
        assert.equal("2 200", nginx:concurrent("/headers", 2, { "X-A: v" }))
    end)

    it("runs requests in parallel: answers in order, each timed as it came", function()
        local res = nginx:parallel({ { "/slow" }, { "/len" },
                                     { "/headers", headers = { ["X-A"] = "p" } } })
        assert.same({ 200, 200, 200 }, { res[1].status, res[2].status, res[3].status })
        assert.equal("late\n", res[1].body)
        assert.equal("abc", res[2].body)
        assert.truthy(res[3].body:find("^p none "), res[3].body)
        -- read as they answer: /len is not held up behind /slow
        assert.truthy(res[1].time >= 0.9, res[1].time)
        assert.truthy(res[2].time < 0.5 and res[3].time < 0.5, res[2].time .. " " .. res[3].time)
    end)

    it("runs a sequence in order, on one connection", function()
        local res = nginx:sequence({ { "/len" }, { "/conn" },
                                     { "/headers", headers = { ["X-A"] = "s" } } })
        assert.same({ 200, 200, 200 }, { res[1].status, res[2].status, res[3].status })
        assert.equal("abc", res[1].body)
        assert.matches("^%d+ 2$", res[2].body)
        assert.matches("^s none ", res[3].body)
    end)
end)

describe("the harness's refused_port", function()
    it("refuses connections and keeps servers off the port", function()
        local port = harness.refused_port()
        assert.is_false(harness.port_in_use(port))
        -- a server asked for that port cannot start there
        assert.has_error(function() harness.memcached({ port = port }) end)
        assert.is_false(harness.port_in_use(port))
    end)
end)

describe("the harness's error-log marks", function()
    after_each(harness.no_error_log)
    local nginx

    setup(function()
        nginx = harness.nginx({ servers = SERVERS })
    end)

    teardown(function()
        if nginx then nginx:stop() end
    end)

    it("new_log_lines gives what came after the last mark, and bad_new_log_lines the bad ones",
       function()
        nginx:log_mark()
        assert.same({}, nginx:bad_new_log_lines())
        assert.equal("ok\n", nginx:get("/alert").body)
        local bad = nginx:bad_new_log_lines()
        assert.equal(1, #bad)
        assert.truthy(bad[1]:find("spec alert", 1, true), bad[1])
        -- read once: the next call starts after it
        assert.same({}, nginx:bad_new_log_lines())
    end)

    it("no_error_log fails on a running server's new bad line, naming it, then starts after it",
       function()
        harness.no_error_log()
        assert.equal("ok\n", nginx:get("/alert").body)
        local ok, err = pcall(harness.no_error_log)
        assert.is_false(ok)
        assert.truthy(err:find("nginx on " .. nginx.port .. ": ", 1, true), err)
        assert.truthy(err:find("[alert]", 1, true) and err:find("spec alert", 1, true), err)
        harness.no_error_log()
        -- a stopped server is no longer looked at
        local other = harness.nginx({ servers = SERVERS })
        assert.equal("ok\n", other:get("/alert").body)
        other:stop()
        harness.no_error_log()
    end)
end)
