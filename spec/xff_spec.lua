-- gray.ffi.client_ip(set, peer, real_ip, xff, forwarded) -> key, source, stop:
-- nginx realip with real_ip_recursive on, X-Real-IP first (walked as nginx
-- walks it), then X-Forwarded-For, then RFC 7239 Forwarded. Table-driven;
-- spec/realip_spec.lua runs the same choice beside nginx itself.

local gray = require "gray.ffi"

local client_ip = gray.client_ip
local fmt = string.format
local concat = table.concat

-- The proxies: loopback, 10/8 and one IPv6 /48.
local TRUSTED, set_err = gray.new_ipset("127.0.0.1, ::1, 10.0.0.0/8, 2001:db8:ffff::/48")
assert(TRUSTED, set_err)

local function show(v)
    if type(v) ~= "string" then
        return "<" .. tostring(v) .. ">"
    end
    if #v > 60 then
        v = v:sub(1, 28) .. "..." .. v:sub(-28)
    end
    return '"' .. v:gsub("[%c\127-\255\"\\]", function(c)
        return fmt("\\%d", c:byte())
    end) .. '"'
end

-- n comma-separated trusted addresses 10.x.y.z, leftmost first; the
-- leftmost is returned too.
local function trusted_chain(n, sep)
    local t = {}
    for i = 1, n do
        t[i] = fmt("10.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
    end
    return concat(t, sep or ", "), t[1]
end

local CHAIN_10K, CHAIN_10K_LEFT = trusted_chain(10000)
local FWD_CHAIN = {}
do
    local t = {}
    for i = 1, 10000 do
        t[i] = fmt("for=10.%d.%d.%d;proto=https", math.floor(i / 65536) % 256,
                   math.floor(i / 256) % 256, i % 256)
    end
    FWD_CHAIN.text = concat(t, ", ")
end

-- Every case: peer, the headers (nil = absent), and the expected
-- { key, source, stop }. stop = false means the brief does not fix it.
local CASES = {
    -- no headers, untrusted peers
    { name = "trusted peer, no header", peer = "127.0.0.1",
      want = { "127.0.0.1", "peer", "empty" } },
    { name = "untrusted peer, no header", peer = "1.2.3.4",
      want = { "1.2.3.4", "peer", "untrusted-peer" } },
    { name = "untrusted peer is canonicalised", peer = "2001:DB8::0001",
      want = { "2001:db8::1", "peer", "untrusted-peer" } },
    { name = "mapped peer is trusted like its IPv4 form", peer = "::ffff:10.0.0.1",
      xff = "1.2.3.4", want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "mapped untrusted peer gives the dotted quad", peer = "::FFFF:1.2.3.4",
      xff = "5.6.7.8", want = { "1.2.3.4", "peer", "untrusted-peer" } },
    { name = "IPv6 peer in the trusted /48", peer = "2001:db8:ffff::9",
      xff = "1.2.3.4", want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },

    -- spoofing from an untrusted peer: every header ignored
    { name = "spoofed XFF from 127.0.0.2", peer = "127.0.0.2", xff = "10.0.0.1",
      want = { "127.0.0.2", "peer", "untrusted-peer" } },
    { name = "spoofed XFF chain from 127.0.0.2", peer = "127.0.0.2",
      xff = "1.2.3.4, 127.0.0.1", want = { "127.0.0.2", "peer", "untrusted-peer" } },
    { name = "spoofed Forwarded from 127.0.0.2", peer = "127.0.0.2", fwd = "for=10.0.0.1",
      want = { "127.0.0.2", "peer", "untrusted-peer" } },
    { name = "spoofed X-Real-IP from 127.0.0.2", peer = "127.0.0.2", real = "1.2.3.4",
      want = { "127.0.0.2", "peer", "untrusted-peer" } },
    { name = "spoofed everything from 127.0.0.2", peer = "127.0.0.2", real = "1.2.3.4",
      xff = "5.6.7.8", fwd = "for=9.9.9.9", want = { "127.0.0.2", "peer", "untrusted-peer" } },

    -- X-Forwarded-For: hops
    { name = "one trusted hop", peer = "10.0.0.1", xff = "1.2.3.4",
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "several trusted hops", peer = "10.0.0.1", xff = "1.2.3.4, 10.0.0.2, 10.0.0.3",
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "first untrusted from the right wins", peer = "10.0.0.1",
      xff = "1.1.1.1, 2.2.2.2, 10.0.0.2", want = { "2.2.2.2", "x-forwarded-for", "untrusted" } },
    { name = "untrusted right next to the peer", peer = "10.0.0.1",
      xff = "10.0.0.9, 1.1.1.1, 2.2.2.2", want = { "2.2.2.2", "x-forwarded-for", "untrusted" } },
    { name = "all trusted gives the leftmost", peer = "10.0.0.1", xff = "10.0.0.5, 10.0.0.2",
      want = { "10.0.0.5", "x-forwarded-for", "all-trusted" } },
    { name = "a single trusted element", peer = "127.0.0.1", xff = "127.0.0.1",
      want = { "127.0.0.1", "x-forwarded-for", "all-trusted" } },
    { name = "no space after commas", peer = "10.0.0.1", xff = "1.2.3.4,10.0.0.2,10.0.0.3",
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },

    -- blanks: as in nginx, ' ' separates like ',' and a tab is a byte of
    -- its element (so that element is junk)
    { name = "a space separates elements", peer = "10.0.0.1", xff = "1.2.3.4 5.6.7.8",
      want = { "5.6.7.8", "x-forwarded-for", "untrusted" } },
    { name = "spaces only between elements", peer = "10.0.0.1",
      xff = "1.2.3.4 10.0.0.2   10.0.0.3", want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "space-separated trusted elements are stepped over", peer = "10.0.0.1",
      xff = "1.2.3.4, 10.0.0.2 10.0.0.3, 10.0.0.4",
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "a tab before an element makes it junk", peer = "10.0.0.1",
      xff = "1.2.3.4,\t10.0.0.2", want = { "10.0.0.1", "peer", "junk" } },
    { name = "a tab after an element makes it junk", peer = "10.0.0.1",
      xff = "1.2.3.4, 10.0.0.2\t", want = { "10.0.0.1", "peer", "junk" } },
    { name = "a tab inside an element makes it junk", peer = "10.0.0.1",
      xff = "1.2.3.4, 10.0.\t0.2", want = { "10.0.0.1", "peer", "junk" } },
    { name = "a tab-only element is junk", peer = "10.0.0.1",
      xff = " \t1.2.3.4 \t,\t 10.0.0.2  ", want = { "10.0.0.2", "x-forwarded-for", "junk" } },
    { name = "tabs around every element", peer = "10.0.0.1", xff = "5.6.7.8\t,\t10.0.0.2\t",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "a tab left of an untrusted element is never reached", peer = "10.0.0.1",
      xff = "\t, 1.2.3.4, 10.0.0.2", want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },

    -- empty elements and empty headers
    { name = "empty element in the middle", peer = "10.0.0.1", xff = "1.2.3.4,,10.0.0.2",
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    -- nginx glues a leading comma to the first element (never splits at
    -- the first byte): a documented deviation, we split there too
    { name = "leading and trailing commas", peer = "10.0.0.1", xff = ",1.2.3.4,",
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "blank empty elements", peer = "10.0.0.1", xff = " , 10.0.0.2 ,, , ",
      want = { "10.0.0.2", "x-forwarded-for", "all-trusted" } },
    { name = "commas only", peer = "10.0.0.1", xff = ",,,",
      want = { "10.0.0.1", "peer", "empty" } },
    { name = "commas and spaces only", peer = "10.0.0.1", xff = " , ,, ",
      want = { "10.0.0.1", "peer", "empty" } },
    { name = "commas and a tab", peer = "10.0.0.1", xff = " ,\t, ",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "empty header", peer = "10.0.0.1", xff = "",
      want = { "10.0.0.1", "peer", "empty" } },
    { name = "spaces-only header", peer = "10.0.0.1", xff = "   ",
      want = { "10.0.0.1", "peer", "empty" } },
    { name = "a header of a tab", peer = "10.0.0.1", xff = " \t ",
      want = { "10.0.0.1", "peer", "junk" } },

    -- junk
    { name = "unknown alone", peer = "10.0.0.1", xff = "unknown",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "unknown rightmost", peer = "10.0.0.1", xff = "1.2.3.4, unknown",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "unknown left of a trusted hop", peer = "10.0.0.1", xff = "unknown, 10.0.0.2",
      want = { "10.0.0.2", "x-forwarded-for", "junk" } },
    { name = "unknown between untrusted and trusted", peer = "10.0.0.1",
      xff = "1.2.3.4, unknown, 10.0.0.2, 10.0.0.3",
      want = { "10.0.0.2", "x-forwarded-for", "junk" } },
    { name = "unknown left of an untrusted address is never reached", peer = "10.0.0.1",
      xff = "unknown, 1.2.3.4", want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "bad address as junk", peer = "10.0.0.1", xff = "1.2.3.4, 01.2.3.4, 10.0.0.2",
      want = { "10.0.0.2", "x-forwarded-for", "junk" } },
    { name = "port out of range is junk", peer = "10.0.0.1", xff = "1.2.3.4:65536",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "port 0 is junk", peer = "10.0.0.1", xff = "1.2.3.4, 10.0.0.2:0",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "port 00000 is junk", peer = "10.0.0.1", xff = "1.2.3.4:00000",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "bracketed port 0 is junk", peer = "10.0.0.1", xff = "1.2.3.4, [2001:db8:ffff::1]:0",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "empty port is junk", peer = "10.0.0.1", xff = "1.2.3.4, 10.0.0.2:",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "ports with leading zeros (ngx_atoi takes them)", peer = "10.0.0.1",
      xff = "1.2.3.4:080, 10.0.0.2:00080, [2001:db8:ffff::1]:0443",
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "a port padded with zeros to 64 bytes", peer = "10.0.0.1",
      xff = "1.2.3.4:" .. ("0"):rep(54) .. "80", want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "a port padded past 64 bytes is junk (nginx has no bound)", peer = "10.0.0.1",
      xff = "1.2.3.4:" .. ("0"):rep(55) .. "80", want = { "10.0.0.1", "peer", "junk" } },
    { name = "a signed port is junk", peer = "10.0.0.1", xff = "1.2.3.4:+80",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "brackets around IPv4 are junk", peer = "10.0.0.1", xff = "[1.2.3.4], 10.0.0.2",
      want = { "10.0.0.2", "x-forwarded-for", "junk" } },
    { name = "zone id is junk", peer = "10.0.0.1", xff = "fe80::1%eth0",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "semicolon-joined list is junk", peer = "10.0.0.1", xff = "1.2.3.4;5.6.7.8",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "an overlong element is junk", peer = "10.0.0.1",
      xff = ("1"):rep(300) .. ", 10.0.0.2", want = { "10.0.0.2", "x-forwarded-for", "junk" } },
    { name = "a NUL byte is junk", peer = "10.0.0.1", xff = "1.2.3.4\0, 10.0.0.2",
      want = { "10.0.0.2", "x-forwarded-for", "junk" } },

    -- host forms inside XFF
    { name = "IPv4 with port", peer = "10.0.0.1", xff = "1.2.3.4:80",
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "trusted IPv4 with port is stepped over", peer = "10.0.0.1",
      xff = "1.2.3.4:80, 10.0.0.2:8080", want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "bracketed IPv6 with port", peer = "10.0.0.1", xff = "[2001:db8::1]:443",
      want = { "2001:db8::1", "x-forwarded-for", "untrusted" } },
    { name = "bracketed IPv6 without a port is junk (nginx declines it)", peer = "10.0.0.1",
      xff = "[2001:DB8::1]", want = { "10.0.0.1", "peer", "junk" } },
    { name = "bracketed IPv6 without a port left of a trusted hop", peer = "10.0.0.1",
      xff = "1.2.3.4, [2001:db8:ffff::1], 10.0.0.2",
      want = { "10.0.0.2", "x-forwarded-for", "junk" } },
    { name = "bracketed mapped IPv4 without a port is junk", peer = "10.0.0.1",
      xff = "[::ffff:1.2.3.4]", want = { "10.0.0.1", "peer", "junk" } },
    { name = "trusted bracketed IPv6 with port", peer = "::1",
      xff = "[2001:db8::1]:443, [2001:db8:ffff::2]:443",
      want = { "2001:db8::1", "x-forwarded-for", "untrusted" } },

    -- IPv6 and mapped forms: the result is canonical
    { name = "IPv6 canonicalised", peer = "10.0.0.1", xff = "2001:0DB8:0:0:0:0:0:0001",
      want = { "2001:db8::1", "x-forwarded-for", "untrusted" } },
    { name = "mapped trusted hop is stepped over", peer = "10.0.0.1",
      xff = "1.2.3.4, ::FFFF:10.0.0.2", want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "mapped client gives the dotted quad", peer = "10.0.0.1", xff = "::ffff:1.2.3.4",
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "mapped client in hex", peer = "10.0.0.1", xff = "[::ffff:c0a8:214]:80",
      want = { "192.168.2.20", "x-forwarded-for", "untrusted" } },
    { name = "mapped leftmost when all trusted", peer = "10.0.0.1",
      xff = "::ffff:10.0.0.7, 10.0.0.2", want = { "10.0.0.7", "x-forwarded-for", "all-trusted" } },
    { name = "IPv4-compatible is not IPv4", peer = "10.0.0.1", xff = "::10.0.0.2",
      want = { "::a00:2", "x-forwarded-for", "untrusted" } },
    { name = "trusted IPv6 chain", peer = "::1", xff = "2001:db8::5, ::1, 2001:db8:ffff::1",
      want = { "2001:db8::5", "x-forwarded-for", "untrusted" } },

    -- several header lines joined with ", "
    { name = "two header lines joined", peer = "10.0.0.1",
      xff = concat({ "5.5.5.5, 1.2.3.4", "10.0.0.2", "10.0.0.3" }, ", "),
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "joined lines, one of them empty", peer = "10.0.0.1",
      xff = concat({ "1.2.3.4", "", "10.0.0.3" }, ", "),
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },

    -- 10,000 elements
    { name = "10,000 trusted elements give the leftmost", peer = "10.0.0.1", xff = CHAIN_10K,
      want = { CHAIN_10K_LEFT, "x-forwarded-for", "all-trusted" } },
    { name = "10,000 trusted elements behind an untrusted one", peer = "10.0.0.1",
      xff = "1.2.3.4, " .. CHAIN_10K, want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "10,000 trusted elements behind junk", peer = "10.0.0.1",
      xff = "1.2.3.4, unknown, " .. CHAIN_10K,
      want = { CHAIN_10K_LEFT, "x-forwarded-for", "junk" } },
    { name = "10,000 trusted elements without blanks", peer = "10.0.0.1",
      xff = "9.9.9.9," .. (trusted_chain(10000, ",")),
      want = { "9.9.9.9", "x-forwarded-for", "untrusted" } },
    { name = "10,000 empty elements", peer = "10.0.0.1", xff = (", "):rep(10000),
      want = { "10.0.0.1", "peer", "empty" } },

    -- X-Real-IP
    { name = "X-Real-IP wins over XFF", peer = "10.0.0.1", real = "1.2.3.4",
      xff = "5.6.7.8", fwd = "for=9.9.9.9", want = { "1.2.3.4", "x-real-ip", false } },
    { name = "X-Real-IP alone", peer = "10.0.0.1", real = "1.2.3.4",
      want = { "1.2.3.4", "x-real-ip", false } },
    { name = "X-Real-IP all trusted gives its leftmost, XFF unread", peer = "10.0.0.1",
      real = "10.0.0.9", xff = "1.2.3.4", want = { "10.0.0.9", "x-real-ip", false } },
    { name = "X-Real-IP with spaces", peer = "10.0.0.1", real = "  1.2.3.4  ",
      want = { "1.2.3.4", "x-real-ip", false } },
    { name = "X-Real-IP with tabs is junk", peer = "10.0.0.1", real = " \t1.2.3.4 \t",
      xff = "5.6.7.8", want = { "5.6.7.8", "x-forwarded-for", "untrusted" } },
    { name = "X-Real-IP IPv6 host form", peer = "10.0.0.1", real = " [2001:DB8::1]:443 ",
      want = { "2001:db8::1", "x-real-ip", false } },
    { name = "X-Real-IP IPv4 with port", peer = "10.0.0.1", real = "1.2.3.4:80",
      want = { "1.2.3.4", "x-real-ip", false } },
    { name = "X-Real-IP mapped", peer = "10.0.0.1", real = "::ffff:1.2.3.4",
      want = { "1.2.3.4", "x-real-ip", false } },
    { name = "X-Real-IP junk falls back to XFF", peer = "10.0.0.1", real = "garbage",
      xff = "1.2.3.4, 10.0.0.2", want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    -- nginx (real_ip_header X-Real-IP, recursive) walks a list in X-Real-IP
    { name = "X-Real-IP list: the first untrusted from the right", peer = "10.0.0.1",
      real = "5.6.7.8, 9.9.9.9", xff = "1.2.3.4", want = { "9.9.9.9", "x-real-ip", false } },
    { name = "X-Real-IP list walked over trusted hops", peer = "10.0.0.1",
      real = "5.6.7.8, 10.0.0.7 10.0.0.8", xff = "1.2.3.4",
      want = { "5.6.7.8", "x-real-ip", false } },
    { name = "X-Real-IP list with a trailing comma", peer = "10.0.0.1", real = "5.6.7.8,",
      xff = "1.2.3.4", want = { "5.6.7.8", "x-real-ip", false } },
    { name = "X-Real-IP list stopped by junk after a hop", peer = "10.0.0.1",
      real = "5.6.7.8, unknown, 10.0.0.7", xff = "1.2.3.4",
      want = { "10.0.0.7", "x-real-ip", false } },
    { name = "X-Real-IP list with junk rightmost falls back", peer = "10.0.0.1",
      real = "5.6.7.8, unknown", xff = "1.2.3.4",
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "X-Real-IP bracketed IPv6 without a port falls back", peer = "10.0.0.1",
      real = "[2001:db8::1]", xff = "1.2.3.4",
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "X-Real-IP with port 0 falls back", peer = "10.0.0.1", real = "5.6.7.8:0",
      xff = "1.2.3.4", want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "X-Real-IP commas only falls back", peer = "10.0.0.1", real = ",, ,",
      fwd = "for=1.2.3.4", want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "X-Real-IP unknown falls back to Forwarded", peer = "10.0.0.1", real = "unknown",
      fwd = "for=1.2.3.4", want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "X-Real-IP junk and nothing else", peer = "10.0.0.1", real = "1.2.3",
      want = { "10.0.0.1", "peer", "empty" } },
    { name = "X-Real-IP empty", peer = "10.0.0.1", real = "", xff = "1.2.3.4",
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "X-Real-IP blank", peer = "10.0.0.1", real = "  ", xff = "1.2.3.4",
      want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
    { name = "X-Real-IP with inner space: junk rightmost", peer = "10.0.0.1", real = "1.2.3.4 5",
      xff = "5.6.7.8", want = { "5.6.7.8", "x-forwarded-for", "untrusted" } },
    { name = "X-Real-IP with a NUL byte", peer = "10.0.0.1", real = "1.2.3.4\0",
      xff = "5.6.7.8", want = { "5.6.7.8", "x-forwarded-for", "untrusted" } },
    { name = "X-Real-IP from an untrusted peer", peer = "1.1.1.1", real = "1.2.3.4",
      want = { "1.1.1.1", "peer", "untrusted-peer" } },

    -- XFF before Forwarded
    { name = "XFF is preferred to Forwarded", peer = "10.0.0.1", xff = "1.2.3.4",
      fwd = "for=5.6.7.8", want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },

    -- Forwarded: values
    { name = "Forwarded token", peer = "10.0.0.1", fwd = "for=1.2.3.4",
      want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded quoted", peer = "10.0.0.1", fwd = 'for="1.2.3.4"',
      want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded quoted IPv4 with port", peer = "10.0.0.1", fwd = 'for="1.2.3.4:8080"',
      want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded bracketed IPv6 with port", peer = "10.0.0.1",
      fwd = 'for="[2001:db8:cafe::17]:4711"',
      want = { "2001:db8:cafe::17", "forwarded", "untrusted" } },
    -- RFC 7239's own form for IPv6 without a port: an address here, unlike
    -- "[v6]" in X-Forwarded-For (which nginx declines)
    { name = "Forwarded bracketed IPv6", peer = "10.0.0.1", fwd = 'for="[2001:DB8::1]"',
      want = { "2001:db8::1", "forwarded", "untrusted" } },
    -- ports as in X-Forwarded-For: 1..65535, leading zeros taken
    { name = "Forwarded port 0 is junk", peer = "10.0.0.1", fwd = 'for="1.2.3.4:0"',
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded bracketed port 0 is junk", peer = "10.0.0.1",
      fwd = 'for=1.2.3.4, for="[2001:db8:ffff::1]:0"', want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded port with leading zeros", peer = "10.0.0.1",
      fwd = 'for="[2001:db8::1]:0443", for="10.0.0.2:080"',
      want = { "2001:db8::1", "forwarded", "untrusted" } },
    { name = "Forwarded port 65536 is junk", peer = "10.0.0.1", fwd = 'for="1.2.3.4:65536"',
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded bracketed mapped", peer = "10.0.0.1", fwd = 'for="[::ffff:1.2.3.4]"',
      want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded For= capitalised", peer = "10.0.0.1", fwd = "For=1.2.3.4",
      want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded FOR= upper case", peer = "10.0.0.1", fwd = 'FOR="1.2.3.4"',
      want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded fOr= mixed with trusted hops", peer = "10.0.0.1",
      fwd = "fOr=1.2.3.4, FoR=10.0.0.2", want = { "1.2.3.4", "forwarded", "untrusted" } },

    -- Forwarded: walk
    { name = "Forwarded all trusted", peer = "10.0.0.1", fwd = "for=10.0.0.2, for=10.0.0.3",
      want = { "10.0.0.2", "forwarded", "all-trusted" } },
    { name = "Forwarded first untrusted from the right", peer = "10.0.0.1",
      fwd = "for=1.1.1.1, for=2.2.2.2, for=10.0.0.2",
      want = { "2.2.2.2", "forwarded", "untrusted" } },
    { name = "Forwarded several pairs", peer = "10.0.0.1",
      fwd = "for=1.2.3.4;proto=https;by=10.0.0.1",
      want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded for not the first pair", peer = "10.0.0.1",
      fwd = "proto=https;host=example.com;for=1.2.3.4",
      want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded several pairs, several elements", peer = "10.0.0.1",
      fwd = 'for=1.2.3.4;proto=https;by=10.0.0.1, for="10.0.0.2:80";by="[::1]"',
      want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded spaces around commas and semicolons", peer = "10.0.0.1",
      fwd = "for=1.2.3.4 ; proto=https , for=10.0.0.2 ;by=10.0.0.1 ,for=10.0.0.3",
      want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded tabs around commas and semicolons", peer = "10.0.0.1",
      fwd = "\tfor=1.2.3.4\t;\tproto=https\t,\tfor=10.0.0.2\t",
      want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded empty elements", peer = "10.0.0.1", fwd = ",for=1.2.3.4,, ,for=10.0.0.2,",
      want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded empty", peer = "10.0.0.1", fwd = "",
      want = { "10.0.0.1", "peer", "empty" } },
    { name = "Forwarded commas only", peer = "10.0.0.1", fwd = " , ,, ",
      want = { "10.0.0.1", "peer", "empty" } },

    -- Forwarded: non-address identifiers are junk
    { name = "Forwarded unknown", peer = "10.0.0.1", fwd = "for=unknown",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded quoted unknown", peer = "10.0.0.1", fwd = 'for="unknown"',
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded obfuscated", peer = "10.0.0.1", fwd = "for=_hidden",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded obfuscated with port", peer = "10.0.0.1", fwd = 'for="_gazonk:_p1"',
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded obfuscated left of a trusted hop", peer = "10.0.0.1",
      fwd = "for=1.2.3.4, for=_hidden, for=10.0.0.2",
      want = { "10.0.0.2", "forwarded", "junk" } },
    { name = "Forwarded unknown left of an untrusted address", peer = "10.0.0.1",
      fwd = "for=unknown, for=1.2.3.4", want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded obfuscated rightmost", peer = "10.0.0.1",
      fwd = "for=1.2.3.4, for=10.0.0.2, for=_x", want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded junk, trusted, junk, trusted", peer = "10.0.0.1",
      fwd = "for=_a, for=10.0.0.2, for=_b, for=10.0.0.3",
      want = { "10.0.0.3", "forwarded", "junk" } },
    { name = "Forwarded two junk in a row before a trusted hop", peer = "10.0.0.1",
      fwd = "for=_a, for=10.0.0.5, for=_b, for=_c, for=10.0.0.3",
      want = { "10.0.0.3", "forwarded", "junk" } },
    { name = "Forwarded junk left of untrusted left of junk", peer = "10.0.0.1",
      fwd = "for=_a, for=10.0.0.5, for=1.2.3.4, for=_b, for=10.0.0.3, for=10.0.0.4",
      want = { "10.0.0.3", "forwarded", "junk" } },
    { name = "Forwarded junk then untrusted", peer = "10.0.0.1",
      fwd = "for=_a, for=10.0.0.5, for=_b, for=1.2.3.4, for=10.0.0.4",
      want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded junk then several trusted", peer = "10.0.0.1",
      fwd = "for=5.6.7.8, for=_x, for=10.0.0.2, for=10.0.0.3",
      want = { "10.0.0.2", "forwarded", "junk" } },
    { name = "Forwarded bad address is junk", peer = "10.0.0.1",
      fwd = 'for="01.2.3.4", for=10.0.0.2', want = { "10.0.0.2", "forwarded", "junk" } },
    { name = "Forwarded zone id is junk", peer = "10.0.0.1",
      fwd = 'for="[fe80::1%eth0]"', want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded element without for", peer = "10.0.0.1",
      fwd = "proto=https;by=10.0.0.1", want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded element without for rightmost", peer = "10.0.0.1",
      fwd = "for=1.2.3.4, proto=https", want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded element without for left of a trusted hop", peer = "10.0.0.1",
      fwd = "for=1.2.3.4, by=10.0.0.9, for=10.0.0.2",
      want = { "10.0.0.2", "forwarded", "junk" } },
    { name = "Forwarded empty pairs only", peer = "10.0.0.1", fwd = ";;",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded duplicated for", peer = "10.0.0.1", fwd = "for=1.2.3.4;for=5.6.7.8",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded duplicated for, different case", peer = "10.0.0.1",
      fwd = "for=1.2.3.4, for=10.0.0.2;FOR=10.0.0.3",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded duplicated for left of a trusted hop", peer = "10.0.0.1",
      fwd = "for=1.2.3.4, for=10.0.0.2;for=10.0.0.3, for=10.0.0.4",
      want = { "10.0.0.4", "forwarded", "junk" } },
    { name = "Forwarded duplicated identical for", peer = "10.0.0.1",
      fwd = "for=1.2.3.4;for=1.2.3.4", want = { "10.0.0.1", "peer", "junk" } },

    -- Forwarded: quoted strings must not split elements or pairs
    { name = "Forwarded comma and semicolon inside a quoted extension", peer = "10.0.0.1",
      fwd = 'for=1.2.3.4, for=10.0.0.2;ext="a,b;c=d, for=9.9.9.9", for=10.0.0.3',
      want = { "1.2.3.4", "forwarded", "untrusted" } },
    { name = "Forwarded comma inside a quoted for", peer = "10.0.0.1",
      fwd = 'for="1.2.3.4,5.6.7.8"', want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded comma inside a quoted for, left of a trusted hop", peer = "10.0.0.1",
      fwd = 'for="1.2.3.4, 5.6.7.8", for=10.0.0.2',
      want = { "10.0.0.2", "forwarded", "junk" } },
    { name = "Forwarded semicolon inside a quoted for", peer = "10.0.0.1",
      fwd = 'for="1.2.3.4;by=5.6.7.8"', want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded quoted for=... inside another value", peer = "10.0.0.1",
      fwd = 'for=1.2.3.4;x=";for=10.0.0.2"', want = { "1.2.3.4", "forwarded", "untrusted" } },

    -- Forwarded: syntax errors make the rest one junk element at the right end
    { name = "Forwarded unterminated quote", peer = "10.0.0.1", fwd = 'for="1.2.3.4',
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded unterminated quote after a good element", peer = "10.0.0.1",
      fwd = 'for=1.2.3.4, for="10.0.0.2', want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded unterminated quote swallows the rest", peer = "10.0.0.1",
      fwd = 'for=10.0.0.2, for="1.2.3.4, for=10.0.0.3',
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded unterminated quote in an extension", peer = "10.0.0.1",
      fwd = 'for=10.0.0.2;ext="abc, for=10.0.0.3', want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded empty value", peer = "10.0.0.1", fwd = "for=1.2.3.4, for=",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded pair without =", peer = "10.0.0.1", fwd = "for=1.2.3.4, for",
      want = { "10.0.0.1", "peer", "junk" } },
    { name = "Forwarded bare value", peer = "10.0.0.1", fwd = "1.2.3.4",
      want = { "10.0.0.1", "peer", "junk" } },

    -- Forwarded: size
    { name = "Forwarded 10,000 trusted elements", peer = "10.0.0.1", fwd = FWD_CHAIN.text,
      want = { CHAIN_10K_LEFT, "forwarded", "all-trusted" } },
    { name = "Forwarded 10,000 trusted elements behind an untrusted one", peer = "10.0.0.1",
      fwd = "for=1.2.3.4, " .. FWD_CHAIN.text, want = { "1.2.3.4", "forwarded", "untrusted" } },
}

describe("gray.ffi.client_ip", function()
    for _, case in ipairs(CASES) do
        local title = fmt("%s: peer %s, X-Real-IP %s, XFF %s, Forwarded %s", case.name,
                          show(case.peer), show(case.real), show(case.xff), show(case.fwd))
        it(title, function()
            local key, source, stop = client_ip(TRUSTED, case.peer, case.real, case.xff,
                                                case.fwd)
            assert.equal(case.want[1], key)
            assert.equal(case.want[2], source)
            if case.want[3] then
                assert.equal(case.want[3], stop)
            end
        end)
    end

    describe("with a one-address trusted set", function()
        local only_lo = assert(gray.new_ipset({ "127.0.0.1" }))
        local ONLY_LO = {
            { peer = "127.0.0.2", xff = "10.0.0.1", want = { "127.0.0.2", "peer", "untrusted-peer" } },
            { peer = "127.0.0.1", xff = "127.0.0.2, 127.0.0.1",
              want = { "127.0.0.2", "x-forwarded-for", "untrusted" } },
            { peer = "127.0.0.1", xff = "10.0.0.1", want = { "10.0.0.1", "x-forwarded-for", "untrusted" } },
            { peer = "::ffff:127.0.0.1", xff = "::1", want = { "::1", "x-forwarded-for", "untrusted" } },
        }
        for _, case in ipairs(ONLY_LO) do
            it(fmt("peer %s, XFF %s", show(case.peer), show(case.xff)), function()
                local key, source, stop = client_ip(only_lo, case.peer, nil, case.xff, nil)
                assert.equal(case.want[1], key)
                assert.equal(case.want[2], source)
                assert.equal(case.want[3], stop)
            end)
        end
    end)

    -- as in nginx, where ngx_cidr_match takes a mapped address as IPv4 and
    -- never matches across families: a CIDR written in IPv6 trusts no IPv4
    -- peer or hop, whatever its range
    describe("with IPv6-written CIDRs around IPv4", function()
        local mapped = assert(gray.new_ipset({ "::ffff:127.0.0.0/104", "::ffff:10.0.0.0/104",
                                               "::ffff:1.2.3.4/128", "::1", "::/1" }))
        local MAPPED = {
            { peer = "127.0.0.1", xff = "5.6.7.8", want = { "127.0.0.1", "peer", "untrusted-peer" } },
            { peer = "::ffff:127.0.0.1", xff = "5.6.7.8",
              want = { "127.0.0.1", "peer", "untrusted-peer" } },
            { peer = "::1", xff = "5.6.7.8, 10.0.0.1",
              want = { "10.0.0.1", "x-forwarded-for", "untrusted" } },
            { peer = "::1", xff = "5.6.7.8, ::ffff:10.0.0.1",
              want = { "10.0.0.1", "x-forwarded-for", "untrusted" } },
            { peer = "::1", xff = "5.6.7.8, 1.2.3.4",
              want = { "1.2.3.4", "x-forwarded-for", "untrusted" } },
            { peer = "::1", xff = "5.6.7.8, 2001:db8::1",
              want = { "5.6.7.8", "x-forwarded-for", "untrusted" } },
            { peer = "::1", real = "5.6.7.8, 10.0.0.1", want = { "10.0.0.1", "x-real-ip", "x-real-ip" } },
        }
        for _, case in ipairs(MAPPED) do
            it(fmt("peer %s, XFF %s, X-Real-IP %s", show(case.peer), show(case.xff),
                   show(case.real)), function()
                local key, source, stop = client_ip(mapped, case.peer, case.real, case.xff, nil)
                assert.equal(case.want[1], key)
                assert.equal(case.want[2], source)
                assert.equal(case.want[3], stop)
            end)
        end
    end)

    describe("with an empty trusted set", function()
        local none = assert(gray.new_ipset({}))
        it("the peer is always the client", function()
            local key, source, stop = client_ip(none, "127.0.0.1", "1.2.3.4", "5.6.7.8",
                                                "for=9.9.9.9")
            assert.equal("127.0.0.1", key)
            assert.equal("peer", source)
            assert.equal("untrusted-peer", stop)
        end)
    end)

    describe("returns nil, err when the peer is", function()
        local BAD_PEERS = { "unix:", "", "localhost", "1.2.3.4 ", " 1.2.3.4", "1.2.3",
                            "10.0.0.0/8", "unknown", "1.2.3.4\0", 167772161, {} }
        for _, peer in ipairs(BAD_PEERS) do
            it(show(peer), function()
                local key, err = client_ip(TRUSTED, peer, "1.2.3.4", "5.6.7.8", "for=9.9.9.9")
                assert.is_nil(key)
                assert.is_string(err)
            end)
        end
        it("nil", function()
            local key, err = client_ip(TRUSTED, nil, "1.2.3.4", "5.6.7.8", "for=9.9.9.9")
            assert.is_nil(key)
            assert.is_string(err)
        end)
    end)
end)

describe("gray.ffi.peer_ip", function()
    local set = assert(gray.new_ipset("127.0.0.0/8, ::1, 2001:db8::/32"))
    -- { peer, canonical text, trusted }
    local cases = {
        { "127.0.0.1", "127.0.0.1", true },
        { "127.255.255.255", "127.255.255.255", true },
        { "128.0.0.1", "128.0.0.1", false },
        { "::1", "::1", true },
        { "::ffff:127.0.0.9", "127.0.0.9", true },
        { "2001:DB8:0::9", "2001:db8::9", true },
        { "2001:db9::9", "2001:db9::9", false },
        { "203.0.113.7", "203.0.113.7", false },
        { "[::1]:80", "::1", true },
    }
    for _, c in ipairs(cases) do
        it(c[1] .. " -> " .. c[2] .. (c[3] and ", trusted" or ", not trusted"), function()
            local key, trusted = gray.peer_ip(set, c[1])
            assert.equal(c[2], key)
            assert.equal(c[3], trusted)
        end)
    end
    for _, peer in ipairs({ "unix:", "", "1.2.3", "1.2.3.4 ", 42 }) do
        it("refuses " .. show(peer), function()
            local key, err = gray.peer_ip(set, peer)
            assert.is_nil(key)
            assert.is_string(err)
        end)
    end
    it("agrees with client_ip when no header is given", function()
        for i = 1, 300 do
            local peer = (i % 3 == 0) and ("2001:db8::" .. string.format("%x", i))
                         or ("12" .. (i % 10) .. "." .. (i % 256) .. ".0." .. (i % 200))
            local key, trusted = gray.peer_ip(set, peer)
            local ckey, source = gray.client_ip(set, peer)
            assert.equal(ckey, key, peer)
            assert.equal("peer", source)
            assert.equal(gray.ipset_contains(set, peer), trusted, peer)
        end
    end)
end)
