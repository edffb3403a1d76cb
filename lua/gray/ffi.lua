-- gray.ffi: the only module that knows libgray.so exists. It loads the
-- library from package.cpath, declares its functions once and wraps them in
-- plain Lua functions that take and return Lua strings, with nil, err on
-- failure. Scratch buffers are module-level and reused: no call yields
-- between filling one and reading it back.

local ffi = require "ffi"
local split_list = require("gray.util").split_list

local ffi_new = ffi.new
local ffi_string = ffi.string
local ffi_typeof = ffi.typeof
local ffi_cast = ffi.cast
local ffi_copy = ffi.copy
local setmetatable = setmetatable
local tonumber = tonumber
local band = bit.band
local type = type
local concat = table.concat
local ok_new, table_new = pcall(require, "table.new")
if not ok_new then
    table_new = function() return {} end
end

local VERSION = "0.1.0"

-- Declared once: a second load (another copy of this file, a reload) would
-- otherwise fail on "attempt to redefine".
if not pcall(ffi_typeof, "gray_walk_t") then
    ffi.cdef [[
typedef struct gray_ip { uint8_t b[16]; } gray_ip_t;
typedef struct gray_range { gray_ip_t lo; gray_ip_t hi; } gray_range_t;
typedef struct gray_walk { gray_ip_t addr; uint32_t hops; int32_t stop; } gray_walk_t;
typedef struct gray_mc_line {
    int32_t kind; uint32_t msg_off; uint32_t msg_len; uint64_t number;
} gray_mc_line_t;
typedef struct gray_mc_value {
    uint32_t key_off; uint32_t key_len; uint32_t data_off; uint32_t data_len;
    uint32_t flags; uint32_t has_cas; uint64_t cas;
} gray_mc_value_t;
typedef struct gray_mc_meta {
    int32_t kind; uint32_t index; uint32_t req_off; uint32_t req_len; uint32_t has;
    uint32_t key_off; uint32_t key_len; uint32_t data_off; uint32_t data_len;
    uint32_t opaque_off; uint32_t opaque_len; uint32_t flags; uint64_t cas;
} gray_mc_meta_t;
typedef struct gray_rentry4 { uint32_t lo; uint32_t hi; uint32_t line; uint32_t target; } gray_rentry4_t;
typedef struct gray_rentry6 {
    gray_ip_t lo; gray_ip_t hi; uint32_t line; uint16_t prefix; uint16_t target;
} gray_rentry6_t;
typedef struct gray_ranges_stats {
    uint32_t lines; uint32_t taken; uint32_t n4; uint32_t n6; uint32_t bad; uint32_t unknown;
    uint32_t bad_lines[8]; uint32_t unknown_lines[8];
} gray_ranges_stats_t;
typedef struct gray_run4 { uint8_t start[4]; uint8_t target; } gray_run4_t;
typedef struct gray_run6 { gray_ip_t start; uint8_t target; } gray_run6_t;
typedef struct gray_rangeset {
    gray_run4_t *v4; gray_run6_t *v6; uint32_t *v4_index; uint32_t *v6_index;
    uint32_t n4; uint32_t n6; uint8_t v4_skip; uint8_t v4_bits; uint8_t v6_skip; uint8_t v6_bits;
} gray_rangeset_t;

const char *gray_strerror(int code);
const char *gray_version(void);
int gray_ip_parse(const char *s, size_t len, gray_ip_t *out);
int gray_ip_parse_host(const char *s, size_t len, gray_ip_t *out);
int gray_ip_format(const gray_ip_t *ip, char *buf, size_t cap);
int gray_ip_canonical(const char *s, size_t len, char *buf, size_t cap);
int gray_ip_is_v4(const gray_ip_t *ip);
int gray_cidr_parse(const char *s, size_t len, gray_range_t *out, size_t *n);
size_t gray_ipset_build(gray_range_t *ranges, size_t n);
int gray_ipset_contains(const gray_range_t *ranges, size_t n, const gray_ip_t *ip);
void gray_ranges_room(const char *text, size_t len, size_t *room4, size_t *room6);
int gray_target_name_ok(const char *s, size_t len);
int gray_ranges_parse(const char *text, size_t len, const char *names, size_t names_len,
                      uint32_t unknown, gray_rentry4_t *e4, size_t cap4, gray_rentry6_t *e6, size_t cap6,
                      gray_ranges_stats_t *st);
size_t gray_rangeset_index_len(size_t runs);
int gray_rangeset_build(gray_rangeset_t *set, gray_rentry4_t *e4, size_t n4,
                        gray_rentry6_t *e6, size_t n6);
int gray_rangeset_find(const gray_rangeset_t *set, const gray_ip_t *ip);
int gray_rangeset_find_text(const gray_rangeset_t *set, const char *s, size_t len);
int gray_xff_walk(const char *hdr, size_t len, const gray_range_t *trusted,
                  size_t ntrusted, gray_walk_t *walk);
int gray_forwarded_walk(const char *hdr, size_t len, const gray_range_t *trusted,
                        size_t ntrusted, gray_walk_t *walk);
int gray_peer_key(const char *peer, size_t len, const gray_range_t *trusted,
                  size_t ntrusted, char *buf, size_t cap);
int gray_header_key(const char *hdr, size_t len, const gray_range_t *trusted,
                    size_t ntrusted, char *buf, size_t cap);
int gray_client_key(const char *peer, size_t peer_len, const char *real_ip, size_t real_ip_len,
                    const char *xff, size_t xff_len, const char *fwd, size_t fwd_len,
                    const gray_range_t *trusted, size_t ntrusted, gray_walk_t *walk,
                    int32_t *from, char *buf, size_t cap);
uint32_t gray_hash_oaat(const char *key, size_t len);
uint32_t gray_murmur3_32(const char *key, size_t len, uint32_t seed);
uint32_t gray_percent_bucket(const char *key, size_t len);
int gray_mc_key_ok(const char *key, size_t len);
int gray_mc_parse_line(const char *buf, size_t len, gray_mc_line_t *line);
int gray_mc_parse_get(const char *buf, size_t len, const char *keys, size_t keys_len,
                      gray_mc_value_t *vals, size_t *nvals, gray_mc_line_t *line,
                      size_t *need);
int gray_mc_parse_meta(const char *buf, size_t len, const char *keys, size_t keys_len,
                       int mode, gray_mc_meta_t *vals, size_t *nvals, gray_mc_line_t *line,
                       size_t *need);
int gray_mc_meta_request(const char *keys, size_t keys_len, const char *flags, size_t flags_len,
                         char *out, size_t cap);
int gray_mc_meta_list(const char *k1, size_t l1, const char *k2, size_t l2, const char *k3,
                      size_t l3, const char *k4, size_t l4, const char *k5, size_t l5,
                      char *out, size_t cap);
typedef struct gray_dist_server {
    const char *host; uint32_t host_len; uint32_t port; uint32_t weight;
} gray_dist_server_t;
typedef struct gray_dist_point { uint32_t value; uint32_t server; } gray_dist_point_t;
typedef struct gray_dist {
    gray_dist_point_t *points; uint32_t room; uint32_t npoints; uint32_t nservers; int32_t mode;
} gray_dist_t;
size_t gray_dist_room(int mode, size_t nservers);
int gray_dist_build(gray_dist_t *d, int mode, const gray_dist_server_t *servers, size_t n);
uint32_t gray_dist_hash(int mode, const char *key, size_t len);
int gray_dist_find(const gray_dist_t *d, uint32_t hash, uint32_t *probes);
int gray_dist_server(const gray_dist_t *d, const char *key, size_t len);
void gray_md5(const char *data, size_t len, uint8_t digest[16]);
typedef struct gray_server_spec {
    uint32_t item_off; uint32_t item_len; uint32_t name_len; uint32_t host_off;
    uint32_t host_len; uint32_t port; uint32_t weight;
} gray_server_spec_t;
int gray_servers_parse(const char *s, size_t len, gray_server_spec_t *out, size_t cap,
                       gray_server_spec_t *bad);
const char *gray_server_error(int code);
int gray_secret_len(const char *s, size_t len);
int gray_token_make(const char *ctx, size_t ctx_len, const char *key, size_t key_len,
                    const char *subject, size_t subject_len, int64_t expiry,
                    char *buf, size_t cap);
int gray_token_check(const char *ctx, size_t ctx_len, const char *key, size_t key_len,
                     const char *tok, size_t len, int64_t now, int64_t *expiry);
]]
end

-- The list images (image.c, imagejob.c): their own guard, so that a copy
-- of this file without them and one with them can both load.
if not pcall(ffi_typeof, "gray_image_stats_t") then
    ffi.cdef [[
typedef struct gray_image_part { const char *buf; size_t len; } gray_image_part_t;
typedef struct gray_image_stats {
    uint32_t lines; uint32_t taken; uint32_t entries; uint32_t runs; uint32_t bad;
    uint32_t unknown; uint32_t bad_lines[8]; uint32_t unknown_lines[8]; uint32_t ntargets;
    int32_t sys_errno; uint64_t bytes; uint64_t wall_ns; uint64_t cpu_ns; uint32_t helper;
    uint32_t reserved;
} gray_image_stats_t;
typedef struct gray_image_job gray_image_job_t;
typedef struct gray_image gray_image_t;
uint64_t gray_image_hash(const char *buf, size_t len);
int gray_image_build(int kind, const gray_image_part_t *parts, size_t nparts,
                     const char *names, size_t names_len, uint32_t unknown, uint64_t cas,
                     void **out, size_t *out_len, gray_image_stats_t *st);
void gray_image_free_buf(void *buf);
int gray_image_compile(int kind, const gray_image_part_t *parts, size_t nparts,
                       const char *names, size_t names_len, uint32_t unknown, uint64_t cas,
                       const char *path, gray_image_stats_t *st);
int gray_image_compile_start(int kind, const gray_image_part_t *parts, size_t nparts,
                             const char *names, size_t names_len, uint32_t unknown,
                             uint64_t cas, const char *path, gray_image_job_t **out);
int gray_image_job_new(int kind, const char *names, size_t names_len, uint32_t unknown,
                       uint64_t cas, const char *path, gray_image_job_t **out);
int gray_image_job_add(gray_image_job_t *job, const char *buf, size_t len);
int gray_image_job_run(gray_image_job_t *job);
int gray_image_job_image(gray_image_job_t *job, gray_image_t **out);
int gray_image_poll(gray_image_job_t *job, gray_image_stats_t *st);
const char *gray_image_helper(const char *path, int set);
int gray_image_job_free(gray_image_job_t *job);
int gray_image_open(const char *path, int flags, gray_image_t **out);
int gray_image_open_mem(const void *buf, size_t len, int flags, gray_image_t **out);
int gray_image_peek(const char *path, uint64_t *cas);
void gray_image_close(gray_image_t *img);
int gray_image_find_id(const gray_image_t *img, const char *id, size_t len);
int gray_image_find_ip(const gray_image_t *img, const gray_ip_t *ip);
int gray_image_find_text(const gray_image_t *img, const char *s, size_t len);
uint64_t gray_image_version(const gray_image_t *img);
int gray_image_kind(const gray_image_t *img);
void gray_image_info(const gray_image_t *img, gray_image_stats_t *st);
const char *gray_image_target(const gray_image_t *img, uint32_t k, size_t *len);
]]
end

-- Timed ramps (ramp.c): their own guard, as the images'.
if not pcall(ffi_typeof, "gray_ramp_step_t") then
    ffi.cdef [[
typedef struct gray_ramp_step { uint32_t at; uint32_t share; } gray_ramp_step_t;
int gray_ramp_parse(const char *s, size_t len, gray_ramp_step_t *steps, size_t cap,
                    size_t *err_at);
int gray_ramp_value_parse(const char *s, size_t len, int64_t *start, gray_ramp_step_t *steps,
                          size_t cap, size_t *err_at);
size_t gray_ramp_at(const gray_ramp_step_t *steps, size_t n, int64_t elapsed);
]]
end

-- The node's image directory (listdir.c): functions only, which LuaJIT lets
-- a second load declare again (only types would clash), so no guard.
ffi.cdef [[
int gray_dir_prepare(const char *path);
int gray_lock_try(const char *path);
int gray_lock_release(int fd);
int gray_lock_touch(int fd);
int gray_image_clean_stale(const char *dir, unsigned int max_age);
int gray_image_clean_tmp(const char *path);
unsigned int gray_euid(void);
]]

-- glob(3) from libc (gray.nginxconf follows an include's glob as nginx
-- does, without a shell): its own guard. gray_glob_t is glibc's glob_t
-- (musl's has the same size); only the first two fields are read.
if not pcall(ffi_typeof, "gray_glob_t") then
    ffi.cdef [[
/* libc's <glob.h>, not gray.h */
typedef struct gray_glob {
    size_t gl_pathc; char **gl_pathv; size_t gl_offs; int gl_flags;
    void *gl_closedir; void *gl_readdir; void *gl_opendir; void *gl_lstat; void *gl_stat;
} gray_glob_t;
int glob(const char *pattern, int flags, void *errfunc, gray_glob_t *pglob);
void globfree(gray_glob_t *pglob);
]]
end

-- Finds libgray.so the way lua-resty-signal finds its library: every
-- package.cpath template with "?" replaced, first one that loads wins.
local function load_library()
    local tried = {}
    for template in package.cpath:gmatch("[^;]+") do
        local path = template:gsub("%?", "libgray")
        local f = io.open(path, "rb")
        if f then
            f:close()
            local ok, lib = pcall(ffi.load, path)
            if ok then
                return lib, path
            end
            tried[#tried + 1] = path .. " (" .. tostring(lib) .. ")"
        else
            tried[#tried + 1] = path
        end
    end
    error("gray.ffi: libgray.so not found; tried:\n    " .. concat(tried, "\n    ")
          .. "\n(build it with 'make' and add <repo>/build/?.so to lua_package_cpath)", 2)
end

local C, lib_path = load_library()

if ffi_string(C.gray_version()) ~= VERSION then
    error("gray.ffi: " .. lib_path .. " is version " .. ffi_string(C.gray_version())
          .. " but the Lua code is " .. VERSION, 2)
end

-- Must match gray.h.
local GRAY_EAGAIN = -2
local TARGETS_MAX = 255
local TARGET_NAME_MAX = 64
local RANGES_REPORT = 8
local IP_TEXT_MAX = 46
local MC_END = 8
local STOP_NAMES = { [0] = "untrusted-peer", "untrusted", "all-trusted", "junk", "empty" }
local SOURCE_NAMES = { [0] = "peer", "x-real-ip", "x-forwarded-for", "forwarded" }
local FROM_REAL_IP = 1
local PEER_TRUSTED = 0x10000
local KEY_VERBATIM = 0x20000
local KEY_LEN_MASK = 0xffff
local MC_KINDS = {
    "STORED", "NOT_STORED", "EXISTS", "NOT_FOUND", "DELETED", "TOUCHED", "OK",
    "END", "ERROR", "CLIENT_ERROR", "SERVER_ERROR", "VERSION", "NUMBER",
    "VA", "HD", "EN", "MN",
}
local MC_ERROR = 9
local MC_SERVER_ERROR = 11
local MC_VA = 14
local META_PIPELINE = 1
local META_VALUE = 2
local META_QUIET = 4
local META_HAS_CAS = 1
local META_HAS_FLAGS = 2

local ip_buf = ffi_new("gray_ip_t[1]")
local text_buf = ffi_new("char[?]", IP_TEXT_MAX)
local walk = ffi_new("gray_walk_t")
local from_buf = ffi_new("int32_t[1]")
local line = ffi_new("gray_mc_line_t")
local count_buf = ffi_new("size_t[1]")
local need_buf = ffi_new("size_t[1]")
local vals_cap = 16
local vals = ffi_new("gray_mc_value_t[?]", vals_cap)
local metas_cap = 16
local metas = ffi_new("gray_mc_meta_t[?]", metas_cap)
local range_array_t = ffi_typeof("gray_range_t[?]")
local rentry4_array_t = ffi_typeof("gray_rentry4_t[?]")
local rentry6_array_t = ffi_typeof("gray_rentry6_t[?]")
local u32_array_t = ffi_typeof("uint32_t[?]")
local run4_array_t = ffi_typeof("gray_run4_t[?]")
local run6_array_t = ffi_typeof("gray_run6_t[?]")
local rangeset_t = ffi_typeof("gray_rangeset_t")
local ranges_stats = ffi_new("gray_ranges_stats_t")
local room_buf = ffi_new("size_t[1]")
local char_ptr_t = ffi_typeof("const char *")

-- A cas unique as decimal text: it may not fit a Lua number, and text is
-- what a "cas" command needs.
local function cas_text(v)
    if v.has_cas == 1 then
        return (tostring(v.cas):gsub("ULL$", ""))
    end
    return nil
end

local function strerror(rc)
    return ffi_string(C.gray_strerror(rc))
end

local _M = {
    VERSION = VERSION,
    _VERSION = VERSION,
    lib_path = lib_path,
    strerror = strerror,
}

--- Canonical text of an address in any accepted form ("1.2.3.4:80",
-- "[v6]:443", "::FFFF:1.2.3.4"...), the form used as a memcached key.
function _M.canonical_ip(s)
    if type(s) ~= "string" then
        return nil, "not a string"
    end
    local n = C.gray_ip_canonical(s, #s, text_buf, IP_TEXT_MAX)
    if n < 0 then
        return nil, strerror(n)
    end
    return ffi_string(text_buf, n)
end

-- gray_cidr_parse keeps nothing of an IPv6-written CIDR inside
-- ::ffff:0:0/96, as nginx never matches one against an IPv4 peer: say so,
-- with the IPv4 CIDR that was probably meant.
local function mapped_cidr_warning(cidr)
    local addr, len = cidr:match("^([^/]*)/?(%d*)$")
    local v4 = _M.canonical_ip(addr) or addr
    if len ~= "" then
        v4 = v4 .. "/" .. (tonumber(len) - 96)
    end
    return "'" .. cidr .. "' is an IPv6 CIDR inside the IPv4-mapped block: nginx never"
           .. " matches it against IPv4 peers; write " .. v4
end

--- A compiled set of CIDRs (array of strings, or one string separated by
-- commas or blanks). Returns the set, or nil and a message naming the bad
-- entry. A CIDR with host bits set is accepted, masked, and listed in
-- set.warnings.
function _M.new_ipset(list)
    list = split_list(list)
    if type(list) ~= "table" then
        return nil, "expected a list of CIDRs (table or string)"
    end
    local n = #list
    -- a CIDR can become two ranges (see gray_cidr_parse)
    local ranges = ffi_new(range_array_t, n > 0 and 2 * n or 1)
    local used = 0
    local warnings = {}
    for i = 1, n do
        local cidr = list[i]
        if type(cidr) ~= "string" then
            return nil, "entry " .. i .. " is not a string"
        end
        local rc = C.gray_cidr_parse(cidr, #cidr, ranges + used, count_buf)
        if rc < 0 then
            return nil, "bad CIDR '" .. cidr .. "': " .. strerror(rc)
        elseif rc == 1 then
            warnings[#warnings + 1] = cidr .. " has host bits set; used as a network"
        end
        local got = tonumber(count_buf[0])
        if got == 0 then
            warnings[#warnings + 1] = mapped_cidr_warning(cidr)
        end
        used = used + got
    end
    local count = tonumber(C.gray_ipset_build(ranges, used))
    return { ranges = ranges, count = count, warnings = warnings }
end

--- Whether an address (any accepted text form) is in the set; nil, err for
-- text that is not an address.
function _M.ipset_contains(set, addr)
    if type(addr) ~= "string" then
        return nil, "not a string"
    end
    local rc = C.gray_ip_parse_host(addr, #addr, ip_buf)
    if rc ~= 0 then
        return nil, strerror(rc)
    end
    return C.gray_ipset_contains(set.ranges, set.count, ip_buf) == 1
end

--- The peer's canonical text and whether it is a trusted proxy (only then
-- are the forwarding headers worth reading and client_ip() worth asking);
-- nil, err when the peer is not an address (a unix socket). One C call.
function _M.peer_ip(set, peer)
    if type(peer) ~= "string" then
        return nil, "peer is not an IP address"
    end
    local n = C.gray_peer_key(peer, #peer, set.ranges, set.count, text_buf, IP_TEXT_MAX)
    if n < 0 then
        return nil, "peer is not an IP address"
    end
    local text = band(n, KEY_VERBATIM) ~= 0 and peer or ffi_string(text_buf, band(n, KEY_LEN_MASK))
    return text, band(n, PEER_TRUSTED) ~= 0
end

--- The client address, as nginx's realip module picks it with
-- real_ip_recursive on. peer is $remote_addr; the headers (nil when absent)
-- count only when the peer is in the trusted set: a valid X-Real-IP wins,
-- else X-Forwarded-For is walked, else Forwarded. Returns the canonical text,
-- the source ("peer", "x-real-ip", "x-forwarded-for", "forwarded") and why
-- the walk stopped (see STOP_NAMES); nil, err when the peer is not an address.
-- One C call.
function _M.client_ip(set, peer, real_ip, xff, forwarded)
    if type(peer) ~= "string" then
        return nil, "peer is not an IP address"
    end
    if type(real_ip) ~= "string" then real_ip = nil end
    if type(xff) ~= "string" then xff = nil end
    if type(forwarded) ~= "string" then forwarded = nil end
    local n = C.gray_client_key(peer, #peer, real_ip, real_ip and #real_ip or 0,
                                xff, xff and #xff or 0, forwarded, forwarded and #forwarded or 0,
                                set.ranges, set.count, walk, from_buf, text_buf, IP_TEXT_MAX)
    if n < 0 then
        return nil, "peer is not an IP address"
    end
    local from = from_buf[0]
    return ffi_string(text_buf, n), SOURCE_NAMES[from],
           from == FROM_REAL_IP and "x-real-ip" or STOP_NAMES[walk.stop]
end

--- The hot path behind gray.client, lean on purpose (no type checks: the
-- caller passes $remote_addr and header strings). Each returns a key string
-- without making a new one when the input is already canonical text.
-- peer_trusted(set, peer): whether the peer is a trusted proxy.
function _M.peer_trusted(set, peer)
    local n = C.gray_peer_key(peer, #peer, set.ranges, set.count, text_buf, IP_TEXT_MAX)
    return n >= 0 and band(n, PEER_TRUSTED) ~= 0
end

-- peer_key(set, peer): the peer's canonical text, nil when not an address.
function _M.peer_key(set, peer)
    local n = C.gray_peer_key(peer, #peer, set.ranges, set.count, text_buf, IP_TEXT_MAX)
    if n < 0 then
        return nil
    elseif band(n, KEY_VERBATIM) ~= 0 then
        return peer
    end
    return ffi_string(text_buf, band(n, KEY_LEN_MASK))
end

-- header_key(set, hdr): the client named by one forwarding header of a
-- trusted peer (X-Real-IP or X-Forwarded-For, walked as realip walks them),
-- nil when no element of it is an address.
function _M.header_key(set, hdr)
    local n = C.gray_header_key(hdr, #hdr, set.ranges, set.count, text_buf, IP_TEXT_MAX)
    if n >= KEY_VERBATIM then
        return hdr
    elseif n > 0 then
        return ffi_string(text_buf, n)
    end
    return nil
end

-- client_key(set, peer, real_ip, xff, forwarded): the whole choice in one
-- call (gray_client_key): the canonical client text and where it came from
-- (FROM_REAL_IP, ...), or nil when the peer is not an address.
function _M.client_key(set, peer, real_ip, xff, forwarded)
    local n = C.gray_client_key(peer, #peer, real_ip, real_ip and #real_ip or 0,
                                xff, xff and #xff or 0, forwarded, forwarded and #forwarded or 0,
                                set.ranges, set.count, walk, from_buf, text_buf, IP_TEXT_MAX)
    if n < 0 then
        return nil
    end
    return ffi_string(text_buf, n), from_buf[0]
end
_M.FROM_PEER, _M.FROM_REAL_IP, _M.FROM_XFF, _M.FROM_FORWARDED = 0, FROM_REAL_IP, 2, 3

--- libmemcached's default key hash (Jenkins one-at-a-time), a number.
-- (The hash functions keep their number in a local: a trace that LuaJIT
-- begins at such a function's entry, as it does when interpreted code calls
-- it often, cannot end in a tail call to tonumber; it aborts, "leaving loop
-- in root trace at tonumber", and the function stays interpreted there.)
function _M.hash(key)
    local h = tonumber(C.gray_hash_oaat(key, #key))
    return h
end

--- The 1-based index of the server holding key among n, as libmemcached's
-- default distribution (hash modulo the server count) places it.
function _M.server_index(key, n)
    return tonumber(C.gray_hash_oaat(key, #key) % n) + 1
end

--- MurmurHash3_x86_32 of s with seed (default 0), a number.
function _M.murmur3(s, seed)
    local h = tonumber(C.gray_murmur3_32(s, #s, seed or 0))
    return h
end

-- ---- timed ramps (ramp.c) ---------------------------------------------------

local RAMP_STEPS_MAX = 64
local ramp_steps = ffi_new("gray_ramp_step_t[?]", RAMP_STEPS_MAX)
local ramp_start = ffi_new("int64_t[1]")
local ramp_err_at = ffi_new("size_t[1]")
_M.RAMP_STEPS_MAX = RAMP_STEPS_MAX

-- The steps parsed into ramp_steps as a list of { at = s, share = percent
-- * 100 }, or nil and what is wrong, with the step at fault.
local function ramp_result(text, n)
    if n < 0 then
        local at = tonumber(ramp_err_at[0])
        local step = text:sub(at + 1):match("^%S*")
        return nil, strerror(n) .. (step ~= "" and " at '" .. step:sub(1, 40) .. "'" or "")
               .. " (expected steps like '5% 25%@10m 50%@30m 100%@1h': rising offsets in s,"
               .. " m or h, shares from 0 to 100% with at most two decimals, never falling,"
               .. " at most " .. RAMP_STEPS_MAX .. ")"
    end
    local steps = {}
    for i = 0, n - 1 do
        steps[i + 1] = { at = tonumber(ramp_steps[i].at), share = tonumber(ramp_steps[i].share) }
    end
    return steps
end

--- A ramp schedule ("5% 25%@10m 100%@1h") as its steps ({ at = s after
-- the start, share = percent * 100 }, the first at 0), or nil, err.
function _M.ramp_parse(text)
    if type(text) ~= "string" then
        return nil, "not a string"
    end
    return ramp_result(text, C.gray_ramp_parse(text, #text, ramp_steps, RAMP_STEPS_MAX,
                                               ramp_err_at))
end

--- A ramp value ("<start> <schedule>"): its start (unix seconds) and
-- steps, or nil, err.
function _M.ramp_value_parse(text)
    if type(text) ~= "string" then
        return nil, "not a string"
    end
    local n = C.gray_ramp_value_parse(text, #text, ramp_start, ramp_steps, RAMP_STEPS_MAX,
                                      ramp_err_at)
    local steps, err = ramp_result(text, n)
    if not steps then
        return nil, err
    end
    return tonumber(ramp_start[0]), steps
end

--- The percentage bucket of an identity key ("uid:42", "192.168.2.20"),
-- 0..9999: murmur3 (seed 0) modulo 10000. The key is in at percent p when
-- bucket < p * 100.
function _M.bucket(s)
    local b = tonumber(C.gray_percent_bucket(s, #s))
    return b
end

local DEFAULT_TARGET_NAMES = { "1" }

local function line_numbers(arr, n)
    local t = {}
    for i = 1, n < RANGES_REPORT and n or RANGES_REPORT do
        t[i] = arr[i - 1]
    end
    return t
end

--- Compiles a ranges list: lines "<address or CIDR> [<target name>]", '#'
-- comments, blank lines, LF or CRLF. names (default { "1" }) lists the
-- known target names; a line without a name gets index 1, a line naming
-- names[k] gets k. Returns the set, a table to keep for as long as it is
-- looked up in: count (lines compiled), bad and unknown (lines skipped as
-- malformed or for a name not in names), bad_lines and unknown_lines (the
-- first 8 line numbers of each), lines, names, runs and bytes (what the
-- compiled set holds). unknown (optional): the index given to lines naming
-- a target name not in names (they are still counted in `unknown`);
-- without it they are skipped. nil, err only for a text or names that are
-- not usable at all.
function _M.new_rangeset(text, names, unknown)
    if type(text) ~= "string" then
        return nil, "ranges list must be a string"
    end
    names = names or DEFAULT_TARGET_NAMES
    if type(names) ~= "table" or #names == 0 or #names > TARGETS_MAX then
        return nil, "target names must be a list of 1 to " .. TARGETS_MAX .. " names"
    end
    for i = 1, #names do
        if not _M.target_name_ok(names[i]) then
            return nil, "target name " .. i .. " is not a target name (1 to "
                        .. TARGET_NAME_MAX .. " printable bytes without '#', not 0)"
        end
    end
    unknown = unknown or 0
    if type(unknown) ~= "number" or unknown < 0 or unknown > TARGETS_MAX or unknown % 1 ~= 0 then
        return nil, "unknown must be a target index from 0 to " .. TARGETS_MAX
    end
    local list = concat(names, "\n")

    -- bound, allocate, fill, allocate, build: C allocates nothing
    C.gray_ranges_room(text, #text, count_buf, room_buf)
    local room4, room6 = tonumber(count_buf[0]), tonumber(room_buf[0])
    local e4 = ffi_new(rentry4_array_t, room4)
    local e6 = ffi_new(rentry6_array_t, room6)
    local rc = C.gray_ranges_parse(text, #text, list, #list, unknown, e4, room4, e6, room6,
                                   ranges_stats)
    if rc ~= 0 then
        return nil, strerror(rc)
    end
    local n4, n6 = ranges_stats.n4, ranges_stats.n6
    local cset = ffi_new(rangeset_t)
    local ix4 = tonumber(C.gray_rangeset_index_len(2 * n4))
    local ix6 = tonumber(C.gray_rangeset_index_len(2 * n6))
    local v4, v6 = ffi_new(run4_array_t, 2 * n4), ffi_new(run6_array_t, 2 * n6)
    local v4_index, v6_index = ffi_new(u32_array_t, ix4), ffi_new(u32_array_t, ix6)
    cset.v4, cset.v6, cset.v4_index, cset.v6_index = v4, v6, v4_index, v6_index
    rc = C.gray_rangeset_build(cset, e4, n4, e6, n6)
    if rc ~= 0 then
        return nil, strerror(rc)
    end
    local st = ranges_stats
    return {
        cset = cset,
        -- the arrays cset points into live as long as the set does
        v4 = v4, v6 = v6, v4_index = v4_index, v6_index = v6_index,
        names = names,
        lines = st.lines,
        count = st.taken,
        bad = st.bad,
        unknown = st.unknown,
        bad_lines = line_numbers(st.bad_lines, st.bad),
        unknown_lines = line_numbers(st.unknown_lines, st.unknown),
        runs = cset.n4 + cset.n6,
        bytes = 2 * n4 * 5 + 2 * n6 * 17 + 4 * (ix4 + ix6),
    }
end

--- The target index (1..#set.names) of the most specific range holding an
-- address (any text form canonical_ip takes); nil when no range holds it or
-- it is not an address.
function _M.rangeset_find(set, addr)
    if type(addr) ~= "string" then
        return nil
    end
    local t = C.gray_rangeset_find_text(set.cset, addr, #addr)
    if t > 0 then
        return t
    end
    return nil
end

-- Must match gray.h: GRAY_TOKEN_MAX, and a token's shortest form.
local TOKEN_MAX = 257             -- 200-byte subject, ".", 12 digits, ".", 43
local TOKEN_MIN = 4 + 43
local token_buf = ffi_new("char[?]", TOKEN_MAX)
local expiry_buf = ffi_new("int64_t[1]")

--- The key bytes of a secret file's text (trailing blanks dropped), or
-- nil, err when they are too few (under 16) or too many (over 1024).
function _M.secret(text)
    local n = C.gray_secret_len(text, #text)
    if n < 0 then
        return nil, "must hold 16 to 1024 bytes (trailing blanks and newlines aside)"
    end
    return text:sub(1, n)
end

--- A token for subject under context ctx ("force", "id:<name>") and key,
-- valid before expiry (unix seconds); nil, err.
function _M.token_make(ctx, key, subject, expiry)
    local n = C.gray_token_make(ctx, #ctx, key, #key, subject, #subject, expiry, token_buf,
                                TOKEN_MAX)
    if n < 0 then
        return nil, strerror(n)
    end
    return ffi_string(token_buf, n)
end

--- The subject of tok when it is a token of context ctx under key that has
-- not expired at now (unix seconds), and its expiry; nil, err ("malformed
-- input", "bad signature", "expired"). Cheap on what cannot be a token.
function _M.token_check(ctx, key, tok, now)
    local len = #tok
    if len < TOKEN_MIN or len > TOKEN_MAX then
        return nil, "malformed input"
    end
    local n = C.gray_token_check(ctx, #ctx, key, #key, tok, len, now, expiry_buf)
    if n < 0 then
        return nil, strerror(n)
    end
    return tok:sub(1, n), tonumber(expiry_buf[0])
end

--- Whether name is a target name: 1 to 64 printable bytes (0x21..0x7e)
-- without '#', not "0". The one rule for the router's targets, the names
-- in list and range lines, and gray-admin.
function _M.target_name_ok(name)
    return type(name) == "string" and C.gray_target_name_ok(name, #name) == 1
end
_M.TARGET_NAME_MAX = TARGET_NAME_MAX

--- Whether a string may be sent as a memcached key.

function _M.mc_key_ok(key)
    return type(key) == "string" and C.gray_mc_key_ok(key, #key) == 1
end

--- Decodes one reply line at the start of buf: kind ("STORED", ...,
-- "NUMBER"), the text after the keyword (a message, a version, the digits of
-- a number) or nil, and the bytes consumed; nil, "again"
-- when the line is incomplete; nil, err when it is malformed.
function _M.mc_parse_line(buf)
    local rc = C.gray_mc_parse_line(buf, #buf, line)
    if rc < 0 then
        return nil, rc == GRAY_EAGAIN and "again" or strerror(rc)
    end
    local payload
    if line.msg_len > 0 then
        payload = ffi_string(ffi_cast(char_ptr_t, buf) + line.msg_off, line.msg_len)
    end
    return MC_KINDS[line.kind], payload, rc
end

local function reply_error(p)
    local msg = ffi_string(ffi_cast(char_ptr_t, p) + line.msg_off, line.msg_len)
    return MC_KINDS[line.kind] .. (msg ~= "" and " " .. msg or "")
end

-- Shared by the decoders, over len bytes at p (a Lua string or a reply
-- buffer's memory): returns consumed and the value count, or nil, err, need.
local function parse_get(p, len, keys, max_values)
    count_buf[0] = max_values
    local rc = C.gray_mc_parse_get(p, len, keys, keys and #keys or 0,
                                   vals, count_buf, line, need_buf)
    if rc < 0 then
        if rc == GRAY_EAGAIN then
            return nil, "again", tonumber(need_buf[0])
        end
        return nil, strerror(rc)
    end
    if line.kind ~= MC_END then
        return nil, reply_error(p)
    end
    return rc, tonumber(count_buf[0])
end

--- Decodes a reply to "get <key>": the value (false on a miss), the bytes
-- consumed, flags and cas (decimal text; nil unless "gets"). nil, "again", need when
-- more bytes are needed; nil, err for a malformed or error reply.
function _M.mc_decode_get1(buf, key)
    local consumed, n, need = parse_get(buf, #buf, key, 1)
    if not consumed then
        return nil, n, need
    end
    if n == 0 then
        return false, consumed
    end
    local v = vals[0]
    return ffi_string(ffi_cast(char_ptr_t, buf) + v.data_off, v.data_len),
           consumed, tonumber(v.flags), cas_text(v)
end

local function ensure_capacity(keys, max_values)
    if type(keys) ~= "string" then
        return nil, "keys must be a string"
    end
    -- every key is at least one byte plus a space: an upper bound, no scan
    if max_values == nil then
        max_values = math.floor((#keys + 1) / 2)
    elseif type(max_values) ~= "number" or max_values < 0 or max_values % 1 ~= 0
           or max_values > 1e7 then
        return nil, "max_values must be an integer from 0 to 10000000"
    end
    if max_values > vals_cap then
        vals_cap = max_values
        vals = ffi_new("gray_mc_value_t[?]", vals_cap)
    end
    return max_values
end

-- The multi-key decoders share all but how a value is represented.
local function decode_many(p, len, keys, max_values, with_meta)
    local cap, err = ensure_capacity(keys, max_values)
    if not cap then
        return nil, err
    end
    local consumed, n, need = parse_get(p, len, keys, cap)
    if not consumed then
        return nil, n, need
    end
    local cp = ffi_cast(char_ptr_t, p)    -- a new local: p may be a string
    local out = table_new(0, n)
    for i = 0, n - 1 do
        local v = vals[i]
        local data = ffi_string(cp + v.data_off, v.data_len)
        if with_meta then
            data = { value = data, flags = tonumber(v.flags), cas = cas_text(v) }
        end
        out[ffi_string(cp + v.key_off, v.key_len)] = data
    end
    return out, consumed
end

--- Decodes a reply to "get k1 k2 ..." (keys: the key list exactly as sent).
-- Returns a table key -> value and the bytes consumed; nil, "again", need;
-- or nil, err. max_values (default: as many as the key list can hold)
-- bounds how many values are accepted.
function _M.mc_decode_get(buf, keys, max_values)
    return decode_many(buf, #buf, keys, max_values, false)
end

--- As mc_decode_get, for "gets": key -> { value = , flags = , cas = } with
-- cas as decimal text (nil when the reply carried none).
function _M.mc_decode_gets(buf, keys, max_values)
    return decode_many(buf, #buf, keys, max_values, true)
end

-- A reply buffer for multi-key replies: what the socket returns is appended
-- once (the memory doubles when full, so appending is linear overall) and
-- decoded in place, so a large reply is never copied per read as
-- `buf = buf .. more` would.
local bytes_t = ffi_typeof("char[?]")
local Buffer = {}
Buffer.__index = Buffer

--- An empty reply buffer (initial capacity `size`, default 4096 bytes).
function _M.new_reply_buffer(size)
    size = size or 4096
    return setmetatable({ mem = ffi_new(bytes_t, size), cap = size, len = 0 }, Buffer)
end

--- Appends the bytes of s.
function Buffer.append(self, s)
    local n = #s
    local len = self.len + n
    if len > self.cap then
        local cap = self.cap * 2
        while cap < len do
            cap = cap * 2
        end
        local mem = ffi_new(bytes_t, cap)
        ffi_copy(mem, self.mem, self.len)
        self.mem, self.cap = mem, cap
    end
    ffi_copy(self.mem + self.len, s, n)
    self.len = len
end

--- mc_decode_get / mc_decode_gets (with_cas) over the bytes appended so far.
function Buffer.decode(self, keys, max_values, with_cas)
    return decode_many(self.mem, self.len, keys, max_values, with_cas)
end

-- ---- memcached meta protocol: replies to mg (and mn) ----------------------

_M.META_PIPELINE, _M.META_VALUE, _M.META_QUIET = META_PIPELINE, META_VALUE, META_QUIET

local function meta_cas_text(v)
    if band(v.has, META_HAS_CAS) ~= 0 then
        return (tostring(v.cas):gsub("ULL$", ""))
    end
    return nil
end

-- Shared by the meta decoders: returns consumed and the hit count, or
-- nil, err, need. An error line (ERROR, CLIENT_ERROR, SERVER_ERROR) is an
-- error: its text, e.g. "ERROR" from a server without the meta protocol.
local function parse_meta(p, len, keys, mode, max_values)
    count_buf[0] = max_values
    local rc = C.gray_mc_parse_meta(p, len, keys, keys and #keys or 0, mode,
                                    metas, count_buf, line, need_buf)
    if rc < 0 then
        if rc == GRAY_EAGAIN then
            return nil, "again", tonumber(need_buf[0])
        end
        return nil, strerror(rc)
    end
    local kind = line.kind
    if kind >= MC_ERROR and kind <= MC_SERVER_ERROR then
        return nil, reply_error(p)
    end
    return rc, tonumber(count_buf[0])
end

--- Decodes the reply to one "mg <key> <flags>" (with_value: "v" was
-- asked): the value (VA), true (HD: a hit, no value asked) or false (EN: a
-- miss), the bytes consumed, flags and cas (decimal text) when the reply
-- carried them (f, c). nil, "again", need when more bytes are needed; nil,
-- err for a malformed or error reply ("ERROR": the server refused mg).
function _M.mc_decode_meta1(buf, key, with_value)
    local consumed, n, need = parse_meta(buf, #buf, key, with_value and META_VALUE or 0, 1)
    if not consumed then
        return nil, n, need
    end
    if n == 0 then
        return false, consumed
    end
    local v = metas[0]
    local flags = band(v.has, META_HAS_FLAGS) ~= 0 and tonumber(v.flags) or nil
    if v.kind ~= MC_VA then
        return true, consumed, flags, meta_cas_text(v)
    end
    return ffi_string(ffi_cast(char_ptr_t, buf) + v.data_off, v.data_len),
           consumed, flags, meta_cas_text(v)
end

local function decode_meta_many(p, len, keys, max_values, mode, with_meta)
    local cap, err = ensure_capacity(keys, max_values)
    if not cap then
        return nil, err
    end
    if cap > metas_cap then
        metas_cap = cap
        metas = ffi_new("gray_mc_meta_t[?]", metas_cap)
    end
    if type(mode) ~= "number" or mode < 0 or mode > 7 or mode % 1 ~= 0 then
        return nil, "mode must be an integer from 0 to 7"
    end
    local consumed, n, need = parse_meta(p, len, keys, mode, cap)
    if not consumed then
        return nil, n, need
    end
    local cp = ffi_cast(char_ptr_t, p)
    local kp = ffi_cast(char_ptr_t, keys)
    local out = table_new(0, n)
    for i = 0, n - 1 do
        local v = metas[i]
        local data = true
        if v.kind == MC_VA then
            data = ffi_string(cp + v.data_off, v.data_len)
        end
        if with_meta then
            data = { value = data ~= true and data or nil, cas = meta_cas_text(v),
                     flags = band(v.has, META_HAS_FLAGS) ~= 0 and tonumber(v.flags) or nil }
        end
        out[ffi_string(kp + v.req_off, v.req_len)] = data
    end
    return out, consumed
end

--- Decodes the replies to pipelined "mg" requests, one per key of keys
-- (the keys as sent, single spaces between them), ended by "mn" (mode:
-- META_PIPELINE plus META_VALUE when "v" was asked, META_QUIET for "q").
-- Returns a table key -> value (true for a hit without a value) and the
-- bytes consumed; with with_meta, key -> { value = , flags = , cas = }. A
-- miss is absent. nil, "again", need; or nil, err.
function _M.mc_decode_meta(buf, keys, max_values, mode, with_meta)
    return decode_meta_many(buf, #buf, keys, max_values, mode, with_meta)
end

local request_cap = 1024
local request_buf = ffi_new("char[?]", request_cap)

--- The pipelined request "mg <key> <flags> O<i>\r\n" for each key of keys
-- (single spaces between them, as sent to mc_decode_meta; i the key's
-- position from 0), then "mn\r\n": one string, built in C. nil, err for
-- an invalid key (or an empty one: a double space).
function _M.mc_meta_request(keys, flags)
    if type(keys) ~= "string" or type(flags) ~= "string" then
        return nil, "keys and flags must be strings"
    end
    -- at most (#keys + 1) / 2 keys, each line "mg " .. key .. " " .. flags
    -- .. " O" .. up to 10 digits .. "\r\n"
    local room = #keys + math.floor((#keys + 1) / 2) * (#flags + 18) + 4
    if room > request_cap then
        request_cap = room
        request_buf = ffi_new("char[?]", request_cap)
    end
    local n = C.gray_mc_meta_request(keys, #keys, flags, #flags, request_buf, request_cap)
    if n < 0 then
        return nil, strerror(n)
    end
    return ffi_string(request_buf, n)
end

-- room for 5 keys of at most 250 bytes, each line "mg " .. key .. " v q O<i>\r\n", then "mn\r\n"
local LIST_CAP = 5 * (3 + 250 + 9) + 4
local list_buf = ffi_new("char[?]", LIST_CAP)

--- The request path's pipeline, "mg <key> v q O<i>\r\n" for each key given
-- (k1..k5, each a string or nil: skipped; i its position among the keys
-- given, from 0), then "mn\r\n": built in C from the separate keys, no
-- joined list. The keys must be checked already (mc_key_ok): only their
-- lengths are checked here. nil, err for no key or a bad length. Its
-- reply: mc_decode_meta_list with list_keys(n) for the keys.
function _M.mc_meta_list(k1, k2, k3, k4, k5)
    local n = C.gray_mc_meta_list(k1, k1 and #k1 or 0, k2, k2 and #k2 or 0, k3,
                                  k3 and #k3 or 0, k4, k4 and #k4 or 0, k5, k5 and #k5 or 0,
                                  list_buf, LIST_CAP)
    if n < 0 then
        return nil, strerror(n)
    end
    -- not a tail call: LuaJIT aborts a trace past 15 of them (the request's
    -- path makes many: resty.core's shdict, ngx.now)
    local req = ffi_string(list_buf, n)
    return req
end

-- Stand-ins for the keys of an mc_meta_list pipeline, by count: its replies
-- carry O<i> and no key (no k flag is asked), matched by position alone.
local LIST_KEYS = { "k", "k k", "k k k", "k k k k", "k k k k k" }
_M.LIST_KEYS = LIST_KEYS

--- mc_decode_meta over the bytes appended so far.
function Buffer.decode_meta(self, keys, max_values, mode, with_meta)
    return decode_meta_many(self.mem, self.len, keys, max_values, mode, with_meta)
end

-- One hit of decode_meta_list into out, at its request's position.
local function put_hit(out, cp, i)
    local v = metas[i]
    if v.kind == MC_VA then
        out[v.index + 1] = ffi_string(cp + v.data_off, v.data_len)
    else
        out[v.index + 1] = true
    end
end

--- Buffer.decode_meta_list(keys, nkeys): the reply to
-- mc_meta_request(keys, "v q") (nkeys keys) over the bytes appended so far,
-- by position: out[i] is the value of the i-th key, false
-- when memcached lacks it (true for a hit without a value); and the bytes
-- consumed. nil, "again", need; or nil, err. For the request path: no
-- table keyed by key, no key copied, no loop for up to 5 keys (a loop of
-- a few turns would abort the request's trace).
local function decode_meta_list(p, len, keys, nkeys, into)
    if nkeys > metas_cap then
        metas_cap = nkeys
        metas = ffi_new("gray_mc_meta_t[?]", metas_cap)
    end
    local consumed, n, need = parse_meta(p, len, keys, META_PIPELINE + META_VALUE + META_QUIET,
                                         nkeys)
    if not consumed then
        return nil, n, need
    end
    -- into: the caller's table, refilled (no table per reply)
    local out = into
    if out then
        out[1], out[2], out[3], out[4], out[5] = false, false, false, false, false
    else
        out = { false, false, false, false, false }
    end
    local cp = ffi_cast(char_ptr_t, p)
    if nkeys > 5 then
        for i = 6, nkeys do
            out[i] = false
        end
        for i = 5, n - 1 do
            put_hit(out, cp, i)
        end
    end
    if n > 0 then put_hit(out, cp, 0) end
    if n > 1 then put_hit(out, cp, 1) end
    if n > 2 then put_hit(out, cp, 2) end
    if n > 3 then put_hit(out, cp, 3) end
    if n > 4 then put_hit(out, cp, 4) end
    return out, consumed
end

function Buffer.decode_meta_list(self, keys, nkeys, into)
    local out, consumed, need = decode_meta_list(self.mem, self.len, keys, nkeys, into)
    return out, consumed, need
end

--- Buffer.decode_meta_list over a string (a reply that came in one read:
-- no buffer needed). into: a table to fill instead of a new one.
function _M.mc_decode_meta_list(buf, keys, nkeys, into)
    local out, consumed, need = decode_meta_list(buf, #buf, keys, nkeys, into)  -- not a tail call
    return out, consumed, need
end


-- ---- server placement: libmemcached 1.1's distributions (dist.c) ----------

-- Must match gray.h.
local DIST_MODES = { modula = 0, ketama = 1, ["ketama-weighted"] = 2 }
local DIST_SERVERS_MAX = 4096
local DIST_HOST_MAX = 1024
local DIST_DEFAULT_PORT = 11211
local dist_t = ffi_typeof("gray_dist_t")
local dist_point_array_t = ffi_typeof("gray_dist_point_t[?]")
local dist_server_array_t = ffi_typeof("gray_dist_server_t[?]")
local md5_buf = ffi_new("uint8_t[16]")
local probes_buf = ffi_new("uint32_t[1]")
local floor = math.floor

local function whole(v, lo, hi)
    return type(v) == "number" and v == floor(v) and v >= lo and v <= hi
end

local server_spec_array_t = ffi_typeof("gray_server_spec_t[?]")
local server_bad = ffi_new("gray_server_spec_t")

--- Parses a server list in the $gray_memcached syntax ("127.0.0.1:11211,
-- [::1]:11212/?3") with gray-admin's rule (gray_servers_parse, dist.c):
-- returns a list of { item = "host:port/?N" as written, name = "host:port",
-- host = the host as written without brackets (what libmemcached hashes),
-- port =, weight = (1 when not written), bracketed = true for IPv6 }, or
-- nil, "bad server '<item>' (<reason>)" / "no server given".
function _M.parse_servers(spec)
    if type(spec) ~= "string" then
        return nil, "expected a string"
    end
    -- at most one server per two bytes ("a:1" is three)
    local cap = floor(#spec / 2) + 1
    if cap > DIST_SERVERS_MAX then
        cap = DIST_SERVERS_MAX
    end
    local out = ffi_new(server_spec_array_t, cap)
    local n = C.gray_servers_parse(spec, #spec, out, cap, server_bad)
    if n < 0 then
        local reason = ffi_string(C.gray_server_error(n))
        if server_bad.item_len == 0 then
            return nil, "no server given (expected 'host:port[, host:port...]')"
        end
        local item = spec:sub(server_bad.item_off + 1, server_bad.item_off + server_bad.item_len)
        return nil, "bad server '" .. item .. "' (" .. reason .. ")"
    end
    local list = {}
    for i = 0, n - 1 do
        local sp = out[i]
        local ho = sp.host_off
        list[i + 1] = {
            item = spec:sub(sp.item_off + 1, sp.item_off + sp.item_len),
            name = spec:sub(sp.item_off + 1, sp.item_off + sp.name_len),
            host = spec:sub(ho + 1, ho + sp.host_len),
            port = tonumber(sp.port),
            weight = tonumber(sp.weight),
            bracketed = ho > sp.item_off or nil,
        }
    end
    return list
end

--- The placement of keys on servers, as libmemcached 1.1 places them.
-- servers is a list of { host = "127.0.0.1", port = 11211, weight = 1 } in
-- libmemcached's server order (the order added); port defaults to 11211 and
-- weight to 1 (0 means 1, as in libmemcached). The host is hashed as
-- written, not resolved. mode (default "ketama"):
--   "modula"          hash % n, one-at-a-time: libmemcached's default;
--   "ketama"          MEMCACHED_BEHAVIOR_KETAMA: 100 points a server;
--   "ketama-weighted" MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED: points in
--                     proportion to weight, MD5 key hash.
-- Weights other than 1 need "ketama-weighted": libmemcached's ketama turns
-- weighted only for servers added after the mode is set, so what a client
-- gets there depends on its call order. Returns the continuum (a table to
-- keep while in use: mode, servers, points), or nil, err.
function _M.new_continuum(servers, mode)
    mode = mode or "ketama"
    local cmode = DIST_MODES[mode]
    if not cmode then
        return nil, "distribution must be modula, ketama or ketama-weighted, not "
                    .. tostring(mode)
    end
    if type(servers) ~= "table" or #servers == 0 or #servers > DIST_SERVERS_MAX then
        return nil, "servers must be a list of 1 to " .. DIST_SERVERS_MAX .. " servers"
    end
    local n = #servers
    local cservers = ffi_new(dist_server_array_t, n)
    for i = 1, n do
        local s = servers[i]
        if type(s) ~= "table" then
            return nil, "server " .. i .. " is not a table"
        end
        local host, port, weight = s.host, s.port or DIST_DEFAULT_PORT, s.weight or 1
        if type(host) ~= "string" or #host == 0 or #host > DIST_HOST_MAX or host:find("\0", 1, true) then
            return nil, "server " .. i .. ": host must be 1 to " .. DIST_HOST_MAX
                        .. " bytes without NUL"
        end
        if not whole(port, 0, 65535) then
            return nil, "server " .. i .. ": port must be 0..65535"
        end
        if not whole(weight, 0, 0xffffffff) then
            return nil, "server " .. i .. ": weight must be a whole number 0..4294967295"
        end
        if weight > 1 and mode ~= "ketama-weighted" then
            return nil, "server " .. i .. ": a weight needs distribution ketama-weighted"
        end
        local c = cservers[i - 1]
        c.host, c.host_len, c.port, c.weight = host, #host, port, weight
    end

    local room = tonumber(C.gray_dist_room(cmode, n))
    local points = ffi_new(dist_point_array_t, room > 0 and room or 1)
    local d = ffi_new(dist_t)
    d.points, d.room = points, room
    -- servers (and so every host string cservers points to) is live here
    local rc = C.gray_dist_build(d, cmode, cservers, n)
    if rc ~= 0 then
        return nil, strerror(rc)
    end
    return {
        dist = d,
        mem = points,           -- d.points points into it
        mode = mode,
        servers = n,
        points = tonumber(d.npoints),
    }
end

--- The 1-based index of the server holding key (a string), as
-- memcached_generate_hash() (plus 1) names it.
function _M.server_for(continuum, key)
    return C.gray_dist_server(continuum.dist, key, #key) + 1
end

--- The key hash of a distribution mode (a number).
function _M.dist_hash(key, mode)
    local h = tonumber(C.gray_dist_hash(DIST_MODES[mode or "ketama"], key, #key))
    return h
end

--- The 1-based server for a hash value, and the points compared to find it.
function _M.continuum_find(continuum, hash)
    local s = C.gray_dist_find(continuum.dist, hash, probes_buf)
    return s + 1, tonumber(probes_buf[0])
end

--- MD5 of s as 32 lowercase hex digits.
function _M.md5_hex(s)
    C.gray_md5(s, #s, md5_buf)
    local t = {}
    for i = 0, 15 do
        t[i + 1] = ("%02x"):format(md5_buf[i])
    end
    return concat(t)
end


-- ---- compiled list images (image.c, idlist.c, imagejob.c) -----------------

-- Must match gray.h.
local IMAGE_KINDS = { ids = 1, ranges = 2 }
local IMAGE_KIND_NAMES = { "ids", "ranges" }
local IMAGE_VERIFY = 1
local JOB_RUNNING = 1
local GRAY_EIO = -21
local IMAGE_PARTS_MAX = 1024
local image_stats = ffi_new("gray_image_stats_t")
local image_out = ffi_new("gray_image_t *[1]")
local job_out = ffi_new("gray_image_job_t *[1]")
local u64_buf = ffi_new("uint64_t[1]")
local parts_array_t = ffi_typeof("gray_image_part_t[?]")
local u64_t = ffi_typeof("uint64_t")
local ffi_gc, ffi_errno = ffi.gc, ffi.errno
local U64_MAX_TEXT = "18446744073709551615"

-- A CAS (a whole number, decimal text as cas_text gives it, or a uint64_t
-- cdata) as a uint64_t, or nil.
local function to_u64(v)
    local t = type(v)
    if t == "number" then
        if v >= 0 and v % 1 == 0 and v <= 2 ^ 53 then
            return ffi_new(u64_t, v)
        end
    elseif t == "string" then
        if v:find("^%d+$") and (#v < 20 or (#v == 20 and v <= U64_MAX_TEXT)) then
            local x = ffi_new(u64_t, 0)
            for i = 1, #v do
                x = x * 10 + (v:byte(i) - 48)
            end
            return x
        end
    elseif t == "cdata" and ffi.istype(u64_t, v) then
        return v
    end
    return nil
end

local function u64_text(v)
    return (tostring(v):gsub("ULL$", ""))
end

local function image_err(rc)
    if rc == GRAY_EIO then
        return strerror(rc) .. ": errno " .. ffi_errno()
    end
    return strerror(rc)
end

-- text (a string, or a list of parts) as a parts array; the strings must
-- stay reachable while C reads them.
local function make_parts(text)
    if type(text) == "string" then
        local p = ffi_new(parts_array_t, 1)
        p[0].buf, p[0].len = text, #text
        return p, 1
    end
    if type(text) ~= "table" or #text > IMAGE_PARTS_MAX then
        return nil, "list text must be a string or a list of at most " .. IMAGE_PARTS_MAX
                    .. " strings"
    end
    local n = #text
    local p = ffi_new(parts_array_t, n > 0 and n or 1)
    for i = 1, n do
        local part = text[i]
        if type(part) ~= "string" then
            return nil, "part " .. i .. " is not a string"
        end
        p[i - 1].buf, p[i - 1].len = part, #part
    end
    return p, n
end

-- names: nil (the list's own names are collected), a list, or '\n'-separated text.
local function names_text(names)
    if names == nil then
        return nil, 0
    end
    if type(names) == "table" then
        names = concat(names, "\n")
    end
    if type(names) ~= "string" or names == "" then
        return nil, nil, "target names must be a list of names"
    end
    return names, #names
end

-- A compile's arguments, checked and in C's form: a record (kind, parts,
-- n, names, names_len, cas, unknown), or nil, err.
local function image_args(kind, text, names, cas, unknown)
    local k = IMAGE_KINDS[kind]
    if not k then
        return nil, "kind must be \"ids\" or \"ranges\""
    end
    local parts, n = make_parts(text)
    if not parts then
        return nil, n
    end
    local ntext, nlen, err = names_text(names)
    if err then
        return nil, err
    end
    local v = to_u64(cas or 0)
    if not v then
        return nil, "cas must be a whole number or its decimal text"
    end
    unknown = unknown or 0
    if type(unknown) ~= "number" or unknown < 0 or unknown > TARGETS_MAX or unknown % 1 ~= 0 then
        return nil, "unknown must be a target index from 0 to " .. TARGETS_MAX
    end
    return { kind = k, parts = parts, n = n, names = ntext, names_len = nlen, cas = v,
             unknown = unknown }
end

-- The arguments of image_compile and image_compile_start (a compile to the
-- file at path): image_args' record and its path, or nil, err.
local function file_image_args(kind, text, names, cas, path, unknown)
    local a, err = image_args(kind, text, names, cas, unknown)
    if not a then
        return nil, err
    end
    if type(path) ~= "string" then
        return nil, "path must be a string"
    end
    a.path = path
    return a
end

-- The error of a compile that failed with rc: an I/O error names the errno
-- its stats hold.
local function compile_err(rc)
    if rc == GRAY_EIO then
        return strerror(rc) .. ": errno " .. image_stats.sys_errno
    end
    return strerror(rc)
end

local function stats_table(st)
    return {
        lines = st.lines,
        taken = st.taken,
        entries = st.entries,
        runs = st.runs,
        bad = st.bad,
        unknown = st.unknown,
        bad_lines = line_numbers(st.bad_lines, st.bad),
        unknown_lines = line_numbers(st.unknown_lines, st.unknown),
        targets = st.ntargets,
        bytes = tonumber(st.bytes),
        compile_ms = tonumber(st.wall_ns) / 1e6,
        cpu_ms = tonumber(st.cpu_ns) / 1e6,
        helper = st.helper == 1,
    }
end

--- Compiles a list to an image file and waits (tests, tools; a worker
-- uses image_compile_start). kind: "ids" or "ranges"; text: a string or a
-- list of parts (joined with a line break after a part lacking one);
-- names: the target names (index k = names[k]; a line without a name gets
-- 1) or nil to take the names the list uses ("1" first); cas: the version
-- stored (number or decimal text); unknown (default 0): the index a line
-- naming a target not in names gets (0: the line is skipped), as
-- new_rangeset's. Returns the stats (lines, taken, entries, runs, bad,
-- unknown, bad_lines, unknown_lines, targets, bytes, compile_ms, cpu_ms),
-- or nil, err.
function _M.image_compile(kind, text, names, cas, path, unknown)
    local a, err = file_image_args(kind, text, names, cas, path, unknown)
    if not a then
        return nil, err
    end
    local rc = C.gray_image_compile(a.kind, a.parts, a.n, a.names, a.names_len, a.unknown, a.cas,
                                    a.path, image_stats)
    if rc ~= 0 then
        return nil, compile_err(rc)
    end
    return stats_table(image_stats)
end

-- running jobs, anchored here until seen done: the finalizer frees only a
-- finished job (gray_image_job_free leaves a running one to its caller), so
-- a job its caller drops is collected, and freed, after its thread ends.
-- The thread reads a copy of the text (the C job owns it), not these strings.
local live_jobs = {}

local function reap_jobs()
    for job in pairs(live_jobs) do
        if C.gray_image_poll(job.cjob, nil) ~= JOB_RUNNING then
            live_jobs[job] = nil
        end
    end
end

--- The same compile in a thread: returns a job to poll, or nil, err. The
-- job copies the text: the strings may go once this returns.
function _M.image_compile_start(kind, text, names, cas, path, unknown)
    local a, err = file_image_args(kind, text, names, cas, path, unknown)
    if not a then
        return nil, err
    end
    reap_jobs()
    local rc = C.gray_image_compile_start(a.kind, a.parts, a.n, a.names, a.names_len, a.unknown,
                                          a.cas, a.path, job_out)
    if rc ~= 0 then
        return nil, image_err(rc)
    end
    -- the finalizer runs once the job is unreachable, so never while running
    local job = { cjob = ffi_gc(job_out[0], C.gray_image_job_free) }
    live_jobs[job] = true
    return job
end

--- A job built in steps (the lists' fetch adds each part as it arrives,
-- so that no call copies a whole list): returns a job to add parts to,
-- then run, or nil, err. Arguments as image_compile_start's, less text;
-- path nil or false: the image is built in memory (image_job_image).
function _M.image_job_new(kind, names, cas, path, unknown)
    local a, err = image_args(kind, "", names, cas, unknown)
    if not a then
        return nil, err
    end
    if path ~= nil and path ~= false and type(path) ~= "string" then
        return nil, "path must be a string (or nil: in memory)"
    end
    local rc = C.gray_image_job_new(a.kind, a.names, a.names_len, a.unknown, a.cas,
                                    path or nil, job_out)
    if rc ~= 0 then
        return nil, image_err(rc)
    end
    -- not running yet: the finalizer frees it
    return { cjob = ffi_gc(job_out[0], C.gray_image_job_free) }
end

--- Copies a part (a string; or its bytes first..last) into a job not yet
-- run: true, or nil, err. A part given in slices is cut after its line
-- breaks (a slice that lacks one ends its part).
function _M.image_job_add(job, part, first, last)
    if job.cjob == nil or type(part) ~= "string" then
        return nil, "the job was freed, or the part is not a string"
    end
    first, last = first or 1, last or #part
    if first < 1 or last > #part or last < first - 1 then
        return nil, "slice out of the part"
    end
    local rc = C.gray_image_job_add(job.cjob, ffi_cast(char_ptr_t, part) + (first - 1),
                                    last - first + 1)
    if rc ~= 0 then
        return nil, image_err(rc)
    end
    return true
end

--- Starts the job's compile in its thread: true, or nil, err.
function _M.image_job_run(job)
    if job.cjob == nil then
        return nil, "the job was freed"
    end
    reap_jobs()
    local rc = C.gray_image_job_run(job.cjob)
    if rc ~= 0 then
        return nil, image_err(rc)
    end
    live_jobs[job] = true
    return true
end

--- The image a finished in-memory job built (freed when collected), or
-- nil, err; once per job.
function _M.image_job_image(job)
    if job.cjob == nil then
        return nil, "the job was freed"
    end
    local rc = C.gray_image_job_image(job.cjob, image_out)
    if rc ~= 0 then
        return nil, image_err(rc)
    end
    return ffi_gc(image_out[0], C.gray_image_close)
end

--- false while the job runs; true, stats when it is done; nil, err, stats
-- when it failed.
function _M.image_poll(job)
    if job.cjob == nil then
        return nil, "the job was freed"
    end
    local rc = C.gray_image_poll(job.cjob, image_stats)
    if rc == JOB_RUNNING then
        return false
    end
    live_jobs[job] = nil
    if rc ~= 0 then
        return nil, compile_err(rc), stats_table(image_stats)
    end
    return true, stats_table(image_stats)
end

--- The helper executable a job with an image path compiles in (path: set
-- it; "": none, compile in the job's thread; nil: ask): the one in use, or
-- nil when none.
function _M.image_helper(path)
    local p
    if path == nil then
        p = C.gray_image_helper(nil, 0)
    else
        p = C.gray_image_helper(path, 1)
    end
    return p ~= nil and ffi_string(p) or nil
end

--- Frees a finished job (true); a running one is asked to stop and stays
-- (false): poll it, then free it again.
function _M.image_job_free(job)
    if job.cjob == nil then
        return true
    end
    if C.gray_image_job_free(job.cjob) == JOB_RUNNING then
        return false
    end
    ffi_gc(job.cjob, nil)
    job.cjob = nil
    live_jobs[job] = nil
    return true
end

--- How many started jobs have not been seen done (their text is anchored).
function _M.image_jobs_live()
    reap_jobs()
    local n = 0
    for _ in pairs(live_jobs) do
        n = n + 1
    end
    return n
end

--- Maps an image file read-only and checks it (verify: every byte too).
-- Returns the image (unmapped when collected, or by image_close), or
-- nil, err.
function _M.image_open(path, verify)
    if type(path) ~= "string" then
        return nil, "path must be a string"
    end
    local rc = C.gray_image_open(path, verify and IMAGE_VERIFY or 0, image_out)
    if rc ~= 0 then
        return nil, image_err(rc)
    end
    return ffi_gc(image_out[0], C.gray_image_close)
end

function _M.image_close(img)
    ffi_gc(img, nil)
    C.gray_image_close(img)
end

--- The version (CAS, decimal text) and kind of the image at path, reading
-- its header only; nil, err.
function _M.image_peek(path)
    local rc = C.gray_image_peek(path, u64_buf)
    if rc < 0 then
        return nil, image_err(rc)
    end
    return u64_text(u64_buf[0]), IMAGE_KIND_NAMES[rc]
end

--- The target index an id list image gives id, or nil.
function _M.image_find_id(img, id)
    if type(id) ~= "string" then
        return nil
    end
    local t = C.gray_image_find_id(img, id, #id)
    if t > 0 then
        return t
    end
    return nil
end

--- The target index a ranges image gives an address (any text form
-- canonical_ip takes), or nil.
function _M.image_find_ip(img, addr)
    if type(addr) ~= "string" then
        return nil
    end
    local t = C.gray_image_find_text(img, addr, #addr)
    if t > 0 then
        return t
    end
    return nil
end

--- The image's version: the CAS it was compiled from, as decimal text.
function _M.image_version(img)
    return u64_text(C.gray_image_version(img))
end

--- What the image holds: its compile's stats (compile_ms and cpu_ms are 0),
-- kind, version and names (index -> target name).
function _M.image_info(img)
    C.gray_image_info(img, image_stats)
    local t = stats_table(image_stats)
    t.kind = IMAGE_KIND_NAMES[C.gray_image_kind(img)]
    t.version = u64_text(C.gray_image_version(img))
    local names = {}
    for k = 1, t.targets do
        local p = C.gray_image_target(img, k, count_buf)
        names[k] = ffi_string(p, count_buf[0])
    end
    t.names = names
    return t
end

--- Compiles a list into an image in memory and maps it there (the lists'
-- fallback when no image directory can be used; blocks like
-- image_compile). Returns the image (its buffer freed when it is
-- collected), stats; or nil, err.
function _M.image_build_open(kind, text, names, cas, unknown)
    local a, err = image_args(kind, text, names, cas, unknown)
    if not a then
        return nil, err
    end
    local out, out_len = ffi_new("void *[1]"), ffi_new("size_t[1]")
    local rc = C.gray_image_build(a.kind, a.parts, a.n, a.names, a.names_len, a.unknown, a.cas,
                                  out, out_len, image_stats)
    if rc ~= 0 then
        return nil, strerror(rc)
    end
    local stats = stats_table(image_stats)
    local buf = out[0]
    rc = C.gray_image_open_mem(buf, out_len[0], 0, image_out)
    if rc ~= 0 then
        C.gray_image_free_buf(buf)
        return nil, strerror(rc)
    end
    -- the image and then its buffer, when the image is collected
    local img = image_out[0]
    return ffi_gc(img, function(p)
        C.gray_image_close(p)
        C.gray_image_free_buf(buf)
    end), stats
end

--- Creates the image directory (0700) if missing and checks it is this
-- user's alone: true, or nil, err.
function _M.dir_prepare(path)
    if type(path) ~= "string" then
        return nil, "must be a string"
    end
    local rc = C.gray_dir_prepare(path)
    if rc ~= 0 then
        if rc == GRAY_EIO then
            return nil, "cannot be used: errno " .. ffi_errno()
        end
        return nil, "must be an absolute path of at most " .. (4000 - 64) .. " bytes"
    end
    return true
end

--- Takes the lock file at path without waiting: its fd (a number), false
-- when another process (or open file) holds it, or nil, err.
function _M.lock_try(path)
    local fd = C.gray_lock_try(path)
    if fd >= 0 then
        return fd
    end
    if fd == -25 then
        return false
    end
    return nil, image_err(fd)
end

--- The process's effective user id (the workers' user, in a worker).
function _M.euid()
    return tonumber(C.gray_euid())
end

function _M.lock_release(fd)
    return C.gray_lock_release(fd) == 0
end

--- Sets a held lock file's mtime to now (the list is in use).
function _M.lock_touch(fd)
    return C.gray_lock_touch(fd) == 0
end

--- Removes the images in dir whose lock file is free and older than
-- max_age seconds (no worker used them): how many, or nil, err.
function _M.image_clean_stale(dir, max_age)
    if type(dir) ~= "string" or type(max_age) ~= "number" or max_age < 0 then
        return nil, "dir must be a string, max_age a number of seconds"
    end
    local n = C.gray_image_clean_stale(dir, max_age)
    if n < 0 then
        return nil, image_err(n)
    end
    return n
end

--- Removes the temporary files of path's compiles that dead processes (or
-- this one) left: how many, or nil, err.
function _M.image_clean_tmp(path)
    local n = C.gray_image_clean_tmp(path)
    if n < 0 then
        return nil, image_err(n)
    end
    return n
end

local libc = ffi.C
local GLOB_ERR = 1                      -- <glob.h>: glibc's and musl's values
local GLOB_NOSPACE, GLOB_ABORTED, GLOB_NOMATCH = 1, 2, 3
local GLOB_MAX = 4096                   -- matches returned at most (max's default)

--- The paths that pattern (a glob(3) pattern: "*", "?", "[...]" in any
-- part of the path) matches, in glob(3)'s order (sorted, by the process's
-- LC_COLLATE: nginx's, which sets no locale, "C"); a leading "." only
-- matched by a "." (no dot files from "*"). No match: an empty list. nil,
-- err when a directory on the way cannot be listed (GLOB_ERR: glob(3)
-- would skip it silently) or more than max (default GLOB_MAX) match. No
-- process, no shell: quotes, "$()", spaces are bytes of the pattern.
function _M.glob(pattern, max)
    if type(pattern) ~= "string" or pattern == "" or pattern:find("%z") then
        return nil, "pattern must be a non-empty string without NUL bytes"
    end
    max = max or GLOB_MAX
    local g = ffi_new("gray_glob_t")
    local rc = libc.glob(pattern, GLOB_ERR, nil, g)
    local paths, err = {}, nil
    if rc == 0 then
        local n = tonumber(g.gl_pathc)
        if n > max then
            paths, err = nil, pattern .. ": more than " .. max .. " matches"
        else
            for i = 0, n - 1 do
                paths[i + 1] = ffi_string(g.gl_pathv[i])
            end
        end
    elseif rc == GLOB_ABORTED then
        paths, err = nil, pattern .. ": a directory cannot be listed"
    elseif rc == GLOB_NOSPACE then
        paths, err = nil, pattern .. ": out of memory"
    elseif rc ~= GLOB_NOMATCH then
        paths, err = nil, pattern .. ": glob() failed (" .. tonumber(rc) .. ")"
    end
    libc.globfree(g)
    return paths, err
end

--- gray_image_hash of s (a uint64_t cdata).
function _M.image_hash(s)
    return C.gray_image_hash(s, #s)
end

return _M
