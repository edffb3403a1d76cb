-- dist.c through gray.ffi: keys must land on the server libmemcached 1.1
-- puts them on, in every distribution. The reference is the real
-- libmemcached.so.11 (Debian 12's libmemcached11) loaded through FFI, never
-- numbers copied from it: the same server lists are built on both sides
-- and 100,000 keys are placed by each. No server runs: placement needs none.

local ffi = require "ffi"
local gray = require "gray.ffi"

local fmt = string.format

-- Each alone: another spec may declare some of these already.
local LIBMEMCACHED_DECLS = {
    "typedef struct memcached_st memcached_st",
    "typedef struct memcached_instance_st memcached_instance_st",
    "memcached_st *memcached_create(memcached_st *ptr)",
    "memcached_st *memcached(const char *string, size_t string_length)",
    "void memcached_free(memcached_st *ptr)",
    "int memcached_server_add(memcached_st *ptr, const char *hostname, uint16_t port)",
    "int memcached_server_add_with_weight(memcached_st *ptr, const char *hostname,"
        .. " uint16_t port, uint32_t weight)",
    "int memcached_behavior_set(memcached_st *ptr, int flag, uint64_t data)",
    "uint64_t memcached_behavior_get(memcached_st *ptr, int flag)",
    "uint32_t memcached_generate_hash(const memcached_st *ptr, const char *key, size_t key_length)",
    "uint32_t memcached_generate_hash_value(const char *key, size_t key_length, int hash_algorithm)",
    "uint32_t memcached_server_count(const memcached_st *ptr)",
    "const memcached_instance_st *memcached_server_instance_by_position(const memcached_st *ptr,"
        .. " uint32_t server_key)",
    "const char *memcached_server_name(const memcached_instance_st *self)",
    "uint16_t memcached_server_port(const memcached_instance_st *self)",
    "void libhashkit_md5_signature(const unsigned char *key, size_t length, unsigned char *result)",
    "typedef struct memcached_server_st memcached_server_st",
    "memcached_server_st *memcached_servers_parse(const char *server_strings)",
    "int memcached_server_push(memcached_st *ptr, const memcached_server_st *list)",
    "void memcached_server_list_free(memcached_server_st *ptr)",
}
for _, decl in ipairs(LIBMEMCACHED_DECLS) do
    pcall(ffi.cdef, decl .. ";")
end

local MC = ffi.load("libmemcached.so.11")
local HK = ffi.load("libhashkit.so.2")

-- /usr/include/libmemcached-1.0/types/{behavior,hash,return}.h
local MEMCACHED_SUCCESS = 0
local MEMCACHED_BEHAVIOR_KETAMA = 3
local MEMCACHED_BEHAVIOR_DISTRIBUTION = 9
local MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED = 16
local MEMCACHED_HASH_DEFAULT = 0
local MEMCACHED_HASH_MD5 = 1
-- types/server_distribution.h
local MEMCACHED_DISTRIBUTION_MODULA = 0
local MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA = 2
local MEMCACHED_DISTRIBUTION_CONSISTENT_WEIGHTED = 5

local KEYS = 100000

-- 100,000 keys of every kind the router sends: addresses, identities,
-- random bytes (>= 0x80 too: the hash adds signed chars), lengths up to 250.
local keys = {}
do
    local rnd = 0x2545f491
    local function rand()
        rnd = (rnd * 1103515245 + 12345) % 2147483648
        return rnd
    end
    for i = 1, KEYS do
        local kind = i % 5
        if kind == 0 then
            keys[i] = fmt("%d.%d.%d.%d", rand() % 256, rand() % 256, rand() % 256, rand() % 256)
        elseif kind == 1 then
            keys[i] = "uid:" .. i
        elseif kind == 2 then
            keys[i] = fmt("2001:db8::%x:%x", rand() % 65536, i)
        elseif kind == 3 then
            local t = {}
            for j = 1, 1 + rand() % 40 do
                t[j] = string.char(33 + rand() % 223)
            end
            keys[i] = table.concat(t)
        else
            keys[i] = ("k" .. i):rep(1 + rand() % 40):sub(1, 250)
        end
    end
    keys[1] = ""
end

-- The server lists: 1, 2, 3 and 8 servers, default and other ports, IPv4
-- loopback addresses only; weights for ketama-weighted (0 is 1 in
-- libmemcached).
local LISTS = {
    { name = "1 server, default port", servers = {
        { host = "127.0.0.1", port = 11211, weight = 5 },
    } },
    { name = "2 servers, default port", servers = {
        { host = "127.0.0.1", port = 11211, weight = 1 },
        { host = "127.0.0.2", port = 11211, weight = 3 },
    } },
    { name = "3 servers, other ports", servers = {
        { host = "127.0.0.1", port = 11212, weight = 2 },
        { host = "127.0.0.1", port = 11213, weight = 1 },
        { host = "127.0.0.1", port = 21211, weight = 7 },
    } },
    { name = "8 servers, mixed ports", servers = {
        { host = "127.0.0.1", port = 11211, weight = 1 },
        { host = "127.0.0.2", port = 11212, weight = 2 },
        { host = "127.0.0.3", port = 11211, weight = 0 },
        { host = "127.0.0.4", port = 1, weight = 10 },
        { host = "127.0.0.5", port = 65535, weight = 1 },
        { host = "127.0.1.6", port = 11211, weight = 3 },
        { host = "127.10.0.7", port = 40000, weight = 100 },
        { host = "127.255.255.254", port = 11211, weight = 1 },
    } },
    -- where libmemcached's float arithmetic floors a share one lower than
    -- exact arithmetic would: 39 * 4 points per server, not 40 * 4 ...
    { name = "25 servers, equal weights", servers = (function()
        local t = {}
        for i = 1, 25 do
            t[i] = { host = "127.0.0." .. i, port = i % 2 == 0 and 11211 or 11300 + i, weight = 1 }
        end
        return t
    end)() },
    -- ... and 7 * 4 and 47 * 4, not 8 * 4 and 48 * 4
    { name = "5 servers, weights 1,6,6,6,6", servers = {
        { host = "127.0.0.1", port = 11211, weight = 1 },
        { host = "127.0.0.2", port = 11211, weight = 6 },
        { host = "127.0.0.3", port = 11212, weight = 6 },
        { host = "127.0.0.4", port = 11211, weight = 6 },
        { host = "127.0.0.5", port = 11213, weight = 6 },
    } },
}

local function has_weights(servers)
    for _, s in ipairs(servers) do
        if s.weight ~= 1 then
            return true
        end
    end
    return false
end

-- the same list with every weight 1: ketama and modula take no weights
local function unweighted(servers)
    local t = {}
    for i, s in ipairs(servers) do
        t[i] = { host = s.host, port = s.port, weight = 1 }
    end
    return t
end

-- libmemcached set up as a client in that mode sets it up: the behaviour
-- first, then the servers (memcached_server_add for weight 1).
local function libmemcached_for(servers, mode)
    local memc = ffi.gc(MC.memcached_create(nil), MC.memcached_free)
    assert(memc ~= nil, "memcached_create")
    local rc = MEMCACHED_SUCCESS
    if mode == "ketama" then
        rc = MC.memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA, 1)
    elseif mode == "ketama-weighted" then
        rc = MC.memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1)
    end
    assert(rc == MEMCACHED_SUCCESS, "memcached_behavior_set: " .. tonumber(rc))
    for _, s in ipairs(servers) do
        if s.weight == 1 then
            rc = MC.memcached_server_add(memc, s.host, s.port)
        else
            rc = MC.memcached_server_add_with_weight(memc, s.host, s.port, s.weight)
        end
        assert(rc == MEMCACHED_SUCCESS, "memcached_server_add: " .. tonumber(rc))
    end
    return memc
end

local EXPECTED_DISTRIBUTION = {
    modula = MEMCACHED_DISTRIBUTION_MODULA,
    ketama = MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA,
    ["ketama-weighted"] = MEMCACHED_DISTRIBUTION_CONSISTENT_WEIGHTED,
}

-- Places every key on both sides; returns the agreements, the first
-- disagreement, and the keys per server (ours).
local function agree(memc, cont, nservers)
    local same, first_diff = 0, nil
    local per_server = {}
    for s = 1, nservers do
        per_server[s] = 0
    end
    for i = 1, KEYS do
        local key = keys[i]
        local theirs = tonumber(MC.memcached_generate_hash(memc, key, #key)) + 1
        local ours = gray.server_for(cont, key)
        if theirs == ours then
            same = same + 1
        elseif not first_diff then
            first_diff = fmt("key %q: libmemcached %d, ours %d", key, theirs, ours)
        end
        if per_server[ours] then
            per_server[ours] = per_server[ours] + 1
        end
    end
    return same, first_diff, per_server
end

local report = {}

describe("gray.ffi.new_continuum places keys as libmemcached 1.1 does", function()
    for _, mode in ipairs({ "modula", "ketama", "ketama-weighted" }) do
        for _, list in ipairs(LISTS) do
            local variants = { { "", unweighted(list.servers) } }
            if mode == "ketama-weighted" and has_weights(list.servers) then
                variants[2] = { ", weighted", list.servers }
            end
            for _, v in ipairs(variants) do
                local label, servers = v[1], v[2]
                it(fmt("%s, %s%s: %d keys on the same server", mode, list.name, label, KEYS), function()
                    local memc = libmemcached_for(servers, mode)
                    -- the reference is in the mode meant, its servers in our order
                    assert.are.equal(EXPECTED_DISTRIBUTION[mode],
                                     tonumber(MC.memcached_behavior_get(memc, MEMCACHED_BEHAVIOR_DISTRIBUTION)))
                    assert.are.equal(#servers, MC.memcached_server_count(memc))
                    for i, s in ipairs(servers) do
                        local inst = MC.memcached_server_instance_by_position(memc, i - 1)
                        assert.are.equal(s.host, ffi.string(MC.memcached_server_name(inst)))
                        assert.are.equal(s.port, MC.memcached_server_port(inst))
                    end

                    local cont = assert(gray.new_continuum(servers, mode))
                    local same, first_diff, per_server = agree(memc, cont, #servers)
                    report[#report + 1] = fmt("%-16s %-26s %6d / %d", mode,
                                              list.name .. label, same, KEYS)
                    assert.are.equal(KEYS, same, first_diff)
                    -- and the keys spread: no server of a list goes without
                    for s = 1, #servers do
                        assert.is_true(per_server[s] > 0, "server " .. s .. " got no key")
                    end
                end)
            end
        end
    end

    -- "host:port/?weight" in a libmemcached configuration string is the
    -- weight a server gets (libmemcached's own parser), default port left out
    it("ketama-weighted from a configuration string with /?weight", function()
        local conf = "--SERVER=127.0.0.1:11212/?3 --SERVER=127.0.0.2/?1 --SERVER=127.0.0.3:11300/?6"
        local memc = ffi.gc(MC.memcached(conf, #conf), MC.memcached_free)
        assert(memc ~= nil, "memcached(): " .. conf)
        assert.are.equal(MEMCACHED_SUCCESS,
                         MC.memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1))
        local cont = assert(gray.new_continuum({
            { host = "127.0.0.1", port = 11212, weight = 3 },
            { host = "127.0.0.2", weight = 1 },
            { host = "127.0.0.3", port = 11300, weight = 6 },
        }, "ketama-weighted"))
        local same, first_diff = agree(memc, cont, 3)
        report[#report + 1] = fmt("%-16s %-26s %6d / %d", "ketama-weighted", "config string, 3", same, KEYS)
        assert.are.equal(KEYS, same, first_diff)
    end)

    -- weights change the placement: the check above is not vacuous
    it("weights move keys in ketama-weighted", function()
        local servers = LISTS[3].servers
        local a = assert(gray.new_continuum(unweighted(servers), "ketama-weighted"))
        local b = assert(gray.new_continuum(servers, "ketama-weighted"))
        local moved = 0
        for i = 1, 10000 do
            if gray.server_for(a, keys[i]) ~= gray.server_for(b, keys[i]) then
                moved = moved + 1
            end
        end
        assert.is_true(moved > 1000, "only " .. moved .. " keys moved")
        -- weight 7 of 10 holds about 70% of the points
        local per = { 0, 0, 0 }
        assert.are.equal(480, b.points)
        for i = 0, b.points - 1 do
            local s = b.mem[i].server + 1
            per[s] = per[s] + 1
        end
        assert.are.same({ 96, 48, 336 }, { per[1], per[2], per[3] })
    end)

    teardown(function()
        if #report > 0 then
            io.stderr:write("\nplacement agreement with libmemcached.so.11 (keys on the same server):\n  ",
                            table.concat(report, "\n  "), "\n")
        end
    end)
end)

-- How a server is spelled: libmemcached hashes the name it is given, never
-- a canonical form of it, so the router and gray-admin must both hash what
-- the operator wrote (gray_servers_parse keeps it) and refuse the spellings
-- that would connect to one address under two names.
describe("server names as written", function()
    local spelled = {}
    teardown(function()
        io.stderr:write("\nservers as written, parsed by gray.parse_servers (keys on libmemcached's"
                        .. " server):\n  ", table.concat(spelled, "\n  "), "\n")
    end)

    local function names(memc)
        local t = {}
        for i = 0, MC.memcached_server_count(memc) - 1 do
            local inst = MC.memcached_server_instance_by_position(memc, i)
            t[#t + 1] = ffi.string(MC.memcached_server_name(inst)) .. " "
                        .. MC.memcached_server_port(inst)
        end
        return table.concat(t, ", ")
    end

    -- libmemcached as gray-admin sets it up: memcached_server_add(host, port)
    local function added(hosts, mode)
        local list = {}
        for i, h in ipairs(hosts) do
            list[i] = { host = h, port = 11300 + i - 1, weight = 1 }
        end
        return libmemcached_for(list, mode), list
    end

    it("memcached_server_add keeps every spelling as written", function()
        for _, h in ipairs({ "0:0:0:0:0:0:0:1", "::1", "0000::0001", "::ffff:127.0.0.1",
                             "127.000.000.001", "127.0.0.1" }) do
            local memc = added({ h }, "ketama")
            assert.are.equal(h .. " 11300", names(memc))
        end
    end)

    it("libmemcached's own list parser (MEMCACHED_SERVERS in its tools) keeps the brackets", function()
        -- a fact for the README: libmemcached's tools hash "[::1]", not "::1"
        local list = MC.memcached_servers_parse("[0:0:0:0:0:0:0:1]:11300,[::1]:11301,127.0.0.1:11302")
        assert(list ~= nil)
        local memc = ffi.gc(MC.memcached_create(nil), MC.memcached_free)
        assert.are.equal(MEMCACHED_SUCCESS, MC.memcached_server_push(memc, list))
        MC.memcached_server_list_free(list)
        assert.are.equal("[0:0:0:0:0:0:0:1] 11300, [::1] 11301, 127.0.0.1 11302", names(memc))
    end)

    -- one address, two spellings: libmemcached places keys differently, so
    -- a side that canonicalised would look on the wrong server
    for _, c in ipairs({
        { "long and short IPv6", { "0:0:0:0:0:0:0:1", "0:0:0:0:0:0:0:1", "0:0:0:0:0:0:0:1" },
          { "::1", "::1", "::1" } },
        { "IPv4 with and without leading zeros", { "127.000.000.001", "127.0.0.1", "127.0.0.1" },
          { "127.0.0.1", "127.0.0.1", "127.0.0.1" } },
    }) do
        it(c[1] .. " are placed differently by libmemcached (ketama)", function()
            local a = added(c[2], "ketama")
            local b = added(c[3], "ketama")
            local moved = 0
            for i = 1, 10000 do
                local k = keys[i]
                if MC.memcached_generate_hash(a, k, #k) ~= MC.memcached_generate_hash(b, k, #k) then
                    moved = moved + 1
                end
            end
            assert.is_true(moved > 1000, "only " .. moved .. " of 10000 keys moved")
        end)
    end

    -- the router's and gray-admin's parser, then our placement, against
    -- libmemcached given each host as written
    local SPECS = {
        "[0:0:0:0:0:0:0:1]:11300, [0:0:0:0:0:0:0:1]:11301, [0:0:0:0:0:0:0:1]:11302",
        "[::1]:11300,[::1]:11301 [::1]:11302",
        "[0000:0::0001]:11300, [::1]:11301, 127.0.0.1:11211",
        "[::ffff:127.0.0.1]:11300, [2001:DB8::1]:11301/?3, 127.0.0.1:11302/?2",
    }
    for _, spec in ipairs(SPECS) do
        for _, mode in ipairs({ "ketama", "ketama-weighted", "modula" }) do
            local weighted = spec:find("/?", 1, true)
            if mode == "ketama-weighted" or not weighted then
                it(("%s: %s places %d keys as libmemcached"):format(mode, spec, KEYS), function()
                    local parsed = assert(gray.parse_servers(spec))
                    local list = {}
                    for i, p in ipairs(parsed) do
                        list[i] = { host = p.host, port = p.port, weight = p.weight }
                        assert.is_nil(p.host:find("[%[%]]"), "brackets kept in " .. p.host)
                        assert.truthy(spec:find(p.host, 1, true), "host rewritten: " .. p.host)
                    end
                    local memc = libmemcached_for(list, mode)
                    local cont = assert(gray.new_continuum(list, mode))
                    local same, first_diff = agree(memc, cont, #list)
                    spelled[#spelled + 1] = fmt("%-16s %-72s %6d / %d", mode, spec, same, KEYS)
                    assert.are.equal(KEYS, same, first_diff)
                end)
            end
        end
    end

    it("parse_servers: what each item gives", function()
        local s = assert(gray.parse_servers(" [0:0:0:0:0:0:0:1]:11300/?3,127.0.0.1:0011211\t"))
        assert.are.same({
            { item = "[0:0:0:0:0:0:0:1]:11300/?3", name = "[0:0:0:0:0:0:0:1]:11300",
              host = "0:0:0:0:0:0:0:1", port = 11300, weight = 3, bracketed = true },
            { item = "127.0.0.1:0011211", name = "127.0.0.1:0011211", host = "127.0.0.1",
              port = 11211, weight = 1 },
        }, s)
    end)

    -- what neither side takes, and why
    for _, c in ipairs({
        { "", "no server given" },
        { " , ", "no server given" },
        { "127.000.000.001:11211", "must be an IP address" },   -- libmemcached: another name
        { "127.0.0.010:11211", "must be an IP address" },       -- getaddrinfo: octal 8
        { "localhost:11211", "must be an IP address" },
        { "::1:11211", "must be an IP address" },               -- IPv6 needs brackets
        { "[127.0.0.1]:11211", "must be an IP address" },       -- brackets are for IPv6
        { "[fe80::1%eth0]:11211", "must be an IP address" },
        { "[::1]", "expected host:port" },
        { "[::1]11211", "expected host:port" },
        { "127.0.0.1", "expected host:port" },
        { "127.0.0.1:0", "port must be 1 to 65535" },
        { "127.0.0.1:65536", "port must be 1 to 65535" },
        { "127.0.0.1:", "port must be 1 to 65535" },
        { "127.0.0.1:11211/?0", "bad weight" },
        { "127.0.0.1:11211/?100001", "bad weight" },
        { "127.0.0.1:11211/3", "bad weight" },
        { "127.0.0.1:11211, 127.0.0.1:x", "'127.0.0.1:x'" },
    }) do
        it(fmt("parse_servers refuses %q", c[1]), function()
            local s, err = gray.parse_servers(c[1])
            assert.is_nil(s)
            assert.truthy(err:find(c[2], 1, true), err)
        end)
    end
end)

describe("gray.ffi hashes as libhashkit does", function()
    -- RFC 1321's test suite
    local rfc1321 = {
        { "", "d41d8cd98f00b204e9800998ecf8427e" },
        { "a", "0cc175b9c0f1b6a831c399e269772661" },
        { "abc", "900150983cd24fb0d6963f7d28e17f72" },
        { "message digest", "f96b697d7cb7938d525a2f31aaf161d0" },
        { "abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b" },
        { "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
          "d174ab98d277d9f5a5611c2c9f419d9f" },
        { ("1234567890"):rep(8), "57edf4a22be3c955ac49da2e2107b67a" },
    }
    for _, c in ipairs(rfc1321) do
        it(fmt("md5(%q) is RFC 1321's", c[1]), function()
            assert.are.equal(c[2], gray.md5_hex(c[1]))
        end)
    end

    it("md5 equals libhashkit_md5_signature at every length 0..300 (padding edges)", function()
        local out = ffi.new("unsigned char[16]")
        for len = 0, 300 do
            local s = {}
            for j = 1, len do
                s[j] = string.char((j * 37 + len) % 256)
            end
            s = table.concat(s)
            HK.libhashkit_md5_signature(s, len, out)
            local hex = {}
            for j = 0, 15 do
                hex[j + 1] = fmt("%02x", out[j])
            end
            assert.are.equal(table.concat(hex), gray.md5_hex(s), "length " .. len)
        end
    end)

    it("key hashes equal memcached_generate_hash_value (default, MD5)", function()
        for i = 1, 2000 do
            local k = keys[i]
            assert.are.equal(tonumber(MC.memcached_generate_hash_value(k, #k, MEMCACHED_HASH_DEFAULT)),
                             gray.dist_hash(k, "ketama"))
            assert.are.equal(tonumber(MC.memcached_generate_hash_value(k, #k, MEMCACHED_HASH_DEFAULT)),
                             gray.dist_hash(k, "modula"))
            assert.are.equal(tonumber(MC.memcached_generate_hash_value(k, #k, MEMCACHED_HASH_MD5)),
                             gray.dist_hash(k, "ketama-weighted"))
        end
    end)
end)

describe("continuum lookup", function()
    local function log2_ceil(n)
        local b = 0
        while 2 ^ b < n do
            b = b + 1
        end
        return b
    end

    -- Not timed: the points compared. A lower bound over n sorted points
    -- compares at most ceil(log2(n + 1)) of them, a scan up to n.
    for _, c in ipairs({ { "ketama", 2 }, { "ketama", 64 }, { "ketama-weighted", 8 },
                         { "ketama", 4096 } }) do
        local mode, n = c[1], c[2]
        it(fmt("%s over %d servers compares O(log points)", mode, n), function()
            local servers = {}
            for i = 1, n do
                servers[i] = { host = fmt("127.%d.%d.1", math.floor(i / 256), i % 256), port = 11211 }
            end
            local cont = assert(gray.new_continuum(servers, mode))
            local bound = log2_ceil(cont.points + 1)
            local worst = 0
            for i = 1, 20000 do
                local h = (i * 2654435761) % 4294967296
                local _, probes = gray.continuum_find(cont, h)
                if probes > worst then
                    worst = probes
                end
            end
            assert.is_true(worst <= bound, fmt("%d compares over %d points", worst, cont.points))
            assert.is_true(worst >= bound - 1, "searched fewer points than a lower bound can")
        end)
    end

    it("takes the first point at or after the hash, the first past the last", function()
        local cont = assert(gray.new_continuum({
            { host = "127.0.0.1" }, { host = "127.0.0.2" }, { host = "127.0.0.3" },
        }, "ketama"))
        local p, n = cont.mem, cont.points
        assert.are.equal(300, n)
        for i = 1, n - 1 do
            assert.is_true(p[i - 1].value <= p[i].value, "not sorted at " .. i)
        end
        local first, last = p[0], p[n - 1]
        assert.are.equal(first.server + 1, (gray.continuum_find(cont, 0)))
        assert.are.equal(first.server + 1, (gray.continuum_find(cont, first.value)))
        assert.are.equal(last.server + 1, (gray.continuum_find(cont, last.value)))
        if last.value < 4294967295 then
            assert.are.equal(first.server + 1, (gray.continuum_find(cont, last.value + 1)))
        end
        -- a hash equal to a point's value (or just past the point before)
        -- takes the first point of that value
        local first_of = 0
        for i = 0, n - 1 do
            if i > 0 and p[i].value > p[i - 1].value then
                first_of = i
                assert.are.equal(p[i].server + 1, (gray.continuum_find(cont, p[i - 1].value + 1)))
            end
            assert.are.equal(p[first_of].server + 1, (gray.continuum_find(cont, p[i].value)), "point " .. i)
        end
    end)
end)

describe("gray.ffi.new_continuum refuses", function()
    local ok1 = { host = "127.0.0.1", port = 11211 }
    local cases = {
        { "an unknown mode", { ok1 }, "consistent", "distribution must be" },
        { "a mode of the wrong type", { ok1 }, 1, "distribution must be" },
        { "no list", nil, "ketama", "servers must be" },
        { "an empty list", {}, "ketama", "servers must be" },
        { "a server that is not a table", { "127.0.0.1:11211" }, "ketama", "not a table" },
        { "no host", { { port = 11211 } }, "ketama", "host must be" },
        { "an empty host", { { host = "" } }, "modula", "host must be" },
        { "a host with NUL", { { host = "127.0.0.1\0x" } }, "ketama", "host must be" },
        { "a host over 1024 bytes", { { host = ("a"):rep(1025) } }, "ketama", "host must be" },
        { "port 65536", { { host = "127.0.0.1", port = 65536 } }, "ketama", "port must be" },
        { "port -1", { { host = "127.0.0.1", port = -1 } }, "ketama", "port must be" },
        { "port 1.5", { { host = "127.0.0.1", port = 1.5 } }, "ketama", "port must be" },
        { "port as text", { { host = "127.0.0.1", port = "11211" } }, "ketama", "port must be" },
        { "weight -1", { { host = "127.0.0.1", weight = -1 } }, "ketama-weighted", "weight must be" },
        { "weight 2^32", { { host = "127.0.0.1", weight = 2 ^ 32 } }, "ketama-weighted", "weight must be" },
        { "weight 0.5", { { host = "127.0.0.1", weight = 0.5 } }, "ketama-weighted", "weight must be" },
        { "a weight in ketama", { ok1, { host = "127.0.0.2", weight = 2 } }, "ketama", "ketama%-weighted" },
        { "a weight in modula", { { host = "127.0.0.2", weight = 2 } }, "modula", "ketama%-weighted" },
    }
    for _, c in ipairs(cases) do
        it(c[1], function()
            local cont, err = gray.new_continuum(c[2], c[3])
            assert.is_nil(cont)
            assert.matches(c[4], err)
        end)
    end

    it("more than 4096 servers", function()
        local servers = {}
        for i = 1, 4097 do
            servers[i] = ok1
        end
        local cont, err = gray.new_continuum(servers, "modula")
        assert.is_nil(cont)
        assert.matches("servers must be", err)
        servers[4097] = nil
        assert.is_table(gray.new_continuum(servers, "modula"))
    end)

    it("but takes a 1024-byte host, weight 0 as 1, and defaults", function()
        assert.is_table(gray.new_continuum({ { host = ("a"):rep(1024) } }, "ketama-weighted"))
        local a = assert(gray.new_continuum({ { host = "127.0.0.1", weight = 0 },
                                              { host = "127.0.0.2", port = 0 } }, "ketama-weighted"))
        local b = assert(gray.new_continuum({ { host = "127.0.0.1" }, { host = "127.0.0.2" } }))
        assert.are.equal("ketama", b.mode)
        local c = assert(gray.new_continuum({ { host = "127.0.0.1", weight = 1 },
                                              { host = "127.0.0.2", port = 11211 } }, "ketama-weighted"))
        assert.are.equal(320, a.points)
        assert.are.equal(200, b.points)
        for i = 1, 1000 do
            assert.are.equal(gray.server_for(c, keys[i]), gray.server_for(a, keys[i]))
        end
    end)
end)
