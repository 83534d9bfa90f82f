-- pm2-trace.lua: a Wireshark/tshark post-dissector for pm2-trace captures.
--
-- A pm2-trace capture is pcapng; every record is a packet on link type 252 (exported PDU)
-- whose tags say "json", followed by one JSON record (docs/capture-format.md). Wireshark
-- dissects the JSON on its own; this post-dissector adds what a person debugging pm2 wants:
--
--   Protocol     pm2-trace
--   Info         the line `pm2-trace replay` prints for the record (requests paired with
--                their replies, app names learnt from earlier records, daemon log lines)
--   Source/Destination   pm2 client (pid/conn) -> pm2 daemon, daemon -> app, app/pid -> kernel
--   fields       pm2trace.source/type/method/app_name/pm_id/pid/conn/signal/exit_code/
--                event/finding (and pm2trace.t, pm2trace.info)
--   a tree       the AMP message with its arguments, raw buffers decoded as AMP when they
--                are AMP frames
--
-- The interpretation mirrors src/timeline (interp.rs, entry.rs), src/pm2 (meaning.rs,
-- daemon_log.rs) and src/sources/procwatch/event.rs; tests/wireshark_dissector.rs checks,
-- on every shipped capture, that the Info column equals what `pm2-trace replay` says.
--
-- Works with Wireshark 3.x/4.x (Lua 5.1-5.4): it uses only Proto, ProtoField, Field,
-- register_postdissector, ByteArray/Tvb and plain Lua string functions.
--
-- Install: copy into the personal Lua plugin folder (Help > About Wireshark > Folders >
-- Personal Lua Plugins, usually ~/.local/lib/wireshark/plugins/), or for one run:
--   tshark -X lua_script:contrib/wireshark/pm2-trace.lua -r capture.bin

local p = Proto("pm2trace", "pm2-trace record")

local f = {
    source = ProtoField.string("pm2trace.source", "Source (rpc/bus/proc/recorder)"),
    type = ProtoField.string("pm2trace.type", "Record type"),
    t = ProtoField.uint64("pm2trace.t", "Monotonic time (ns)"),
    info = ProtoField.string("pm2trace.info", "Description"),
    method = ProtoField.string("pm2trace.method", "RPC method"),
    app_name = ProtoField.string("pm2trace.app_name", "App name"),
    pm_id = ProtoField.uint32("pm2trace.pm_id", "pm_id"),
    pid = ProtoField.int32("pm2trace.pid", "pid"),
    conn = ProtoField.uint32("pm2trace.conn", "Connection"),
    signal = ProtoField.string("pm2trace.signal", "Signal"),
    exit_code = ProtoField.int32("pm2trace.exit_code", "Exit code"),
    event = ProtoField.string("pm2trace.event", "Bus event"),
    finding = ProtoField.string("pm2trace.finding", "Finding"),
    amp = ProtoField.bytes("pm2trace.amp", "AMP message"),
    amp_version = ProtoField.uint8("pm2trace.amp.version", "AMP version"),
    amp_argc = ProtoField.uint8("pm2trace.amp.argc", "Arguments"),
    amp_arg = ProtoField.string("pm2trace.amp.arg", "Argument"),
    amp_len = ProtoField.uint32("pm2trace.amp.arg_len", "Length"),
    amp_raw = ProtoField.bytes("pm2trace.amp.raw", "Raw buffer"),
}
p.fields = {
    f.source, f.type, f.t, f.info, f.method, f.app_name, f.pm_id, f.pid, f.conn, f.signal,
    f.exit_code, f.event, f.finding, f.amp, f.amp_version, f.amp_argc, f.amp_arg, f.amp_len,
    f.amp_raw,
}

---------------------------------------------------------------------------------------
-- JSON: a small decoder that keeps object key order and number text, and an encoder that
-- writes what serde_json writes (compact; the captures were written by serde_json, so
-- number text round-trips exactly).
---------------------------------------------------------------------------------------

local NULL = setmetatable({}, { __tostring = function() return "null" end })

local function is_obj(v) return type(v) == "table" and v.__obj == true end
local function is_arr(v) return type(v) == "table" and v.__arr == true end
local function is_num(v) return type(v) == "table" and v.__num ~= nil end

local function get(o, k)
    if is_obj(o) then return o.map[k] end
    return nil
end

local decode_value

local function skip_ws(s, i)
    local _, e = s:find("^[ \t\r\n]*", i)
    return e + 1
end

local escapes = { ['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t' }

local function utf8_char(cp)
    if cp < 0x80 then return string.char(cp) end
    if cp < 0x800 then
        return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64)
    end
    if cp < 0x10000 then
        return string.char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
    end
    return string.char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
        0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
end

local function decode_string(s, i)
    -- s:sub(i, i) == '"'
    local out, j = {}, i + 1
    while true do
        local a, b = s:find('["\\]', j)
        if not a then error("unterminated string") end
        out[#out + 1] = s:sub(j, a - 1)
        if s:sub(a, a) == '"' then return table.concat(out), a + 1 end
        local c = s:sub(a + 1, a + 1)
        if c == "u" then
            local cp = tonumber(s:sub(a + 2, a + 5), 16)
            local nxt = a + 6
            if cp >= 0xD800 and cp < 0xDC00 and s:sub(nxt, nxt + 1) == "\\u" then
                local lo = tonumber(s:sub(nxt + 2, nxt + 5), 16)
                if lo and lo >= 0xDC00 and lo < 0xE000 then
                    cp = 0x10000 + (cp - 0xD800) * 1024 + (lo - 0xDC00)
                    nxt = nxt + 6
                end
            end
            out[#out + 1] = utf8_char(cp)
            j = nxt
        else
            out[#out + 1] = escapes[c] or c
            j = a + 2
        end
    end
end

decode_value = function(s, i)
    i = skip_ws(s, i)
    local c = s:sub(i, i)
    if c == "{" then
        local o = { __obj = true, keys = {}, map = {} }
        i = skip_ws(s, i + 1)
        if s:sub(i, i) == "}" then return o, i + 1 end
        while true do
            i = skip_ws(s, i)
            local k
            k, i = decode_string(s, i)
            i = skip_ws(s, i)
            if s:sub(i, i) ~= ":" then error("expected : at " .. i) end
            local v
            v, i = decode_value(s, i + 1)
            if o.map[k] == nil then o.keys[#o.keys + 1] = k end
            o.map[k] = v
            i = skip_ws(s, i)
            local d = s:sub(i, i)
            if d == "}" then return o, i + 1 end
            if d ~= "," then error("expected , or } at " .. i) end
            i = i + 1
        end
    elseif c == "[" then
        local a = { __arr = true, n = 0 }
        i = skip_ws(s, i + 1)
        if s:sub(i, i) == "]" then return a, i + 1 end
        while true do
            local v
            v, i = decode_value(s, i)
            a.n = a.n + 1
            a[a.n] = v
            i = skip_ws(s, i)
            local d = s:sub(i, i)
            if d == "]" then return a, i + 1 end
            if d ~= "," then error("expected , or ] at " .. i) end
            i = i + 1
        end
    elseif c == '"' then
        return decode_string(s, i)
    elseif s:sub(i, i + 3) == "true" then
        return true, i + 4
    elseif s:sub(i, i + 4) == "false" then
        return false, i + 5
    elseif s:sub(i, i + 3) == "null" then
        return NULL, i + 4
    else
        local a, b = s:find("^-?[0-9]+%.?[0-9]*[eE]?[-+]?[0-9]*", i)
        if not a then error("unexpected character at " .. i) end
        local raw = s:sub(a, b)
        return { __num = tonumber(raw), raw = raw }, b + 1
    end
end

local function json_decode(s)
    local ok, v = pcall(decode_value, s, 1)
    if ok then return v end
    return nil
end

local function encode_string(s)
    local out = s:gsub('[%c"\\]', function(ch)
        if ch == '"' then return '\\"' end
        if ch == "\\" then return "\\\\" end
        if ch == "\n" then return "\\n" end
        if ch == "\r" then return "\\r" end
        if ch == "\t" then return "\\t" end
        if ch == "\b" then return "\\b" end
        if ch == "\f" then return "\\f" end
        return string.format("\\u%04x", ch:byte())
    end)
    return '"' .. out .. '"'
end

local function json_encode(v)
    local tv = type(v)
    if tv == "string" then return encode_string(v) end
    if tv == "boolean" then return v and "true" or "false" end
    if v == NULL or v == nil then return "null" end
    if is_num(v) then return v.raw end
    if is_arr(v) then
        local parts = {}
        for k = 1, v.n do parts[k] = json_encode(v[k]) end
        return "[" .. table.concat(parts, ",") .. "]"
    end
    if is_obj(v) then
        local parts = {}
        for k, key in ipairs(v.keys) do parts[k] = encode_string(key) .. ":" .. json_encode(v.map[key]) end
        return "{" .. table.concat(parts, ",") .. "}"
    end
    return "null"
end

-- serde_json's as_u64 / as_i64 / as_str, and the lenient readers of meaning.rs.
local function as_str(v) if type(v) == "string" then return v end return nil end
local function is_int_text(raw) return raw:find("^-?[0-9]+$") ~= nil end
local function as_u64(v)
    if is_num(v) and is_int_text(v.raw) and v.__num >= 0 then return v.__num end
    return nil
end
local function as_i64(v)
    if is_num(v) and is_int_text(v.raw) then return v.__num end
    return nil
end
local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end
-- meaning.rs u64_of / i64_of: integers, floats cut toward zero, numeric strings.
local function int_of(v, signed)
    if v == nil then return nil end
    if is_num(v) then
        local n = v.__num
        if is_int_text(v.raw) then
            if signed or n >= 0 then return n end
            return nil
        end
        if n ~= n or n == math.huge or n == -math.huge or (not signed and n < 0) then return nil end
        if n >= 0 then return math.floor(n) end
        return math.ceil(n)
    end
    if type(v) == "string" then
        local s = trim(v)
        if s:find(signed and "^[-+]?[0-9]+$" or "^%+?[0-9]+$") then return tonumber(s) end
    end
    return nil
end
local function u64_of(v) return int_of(v, false) end
local function i64_of(v) return int_of(v, true) end
local function json_text(v)
    if type(v) == "string" then return v end
    return json_encode(v)
end
local function arr_items(v)
    local out = {}
    if is_arr(v) then for k = 1, v.n do out[k] = v[k] end end
    return out
end

---------------------------------------------------------------------------------------
-- Text helpers, as in the Rust code.
---------------------------------------------------------------------------------------

local CHAR = "[%z\1-\127\194-\244][\128-\191]*"

local function chars(s)
    local out = {}
    for ch in s:gmatch(CHAR) do out[#out + 1] = ch end
    return out
end

local function nchars(s)
    local n = 0
    for _ in s:gmatch(CHAR) do n = n + 1 end
    return n
end

local function take_chars(s, n)
    local out, k = {}, 0
    for ch in s:gmatch(CHAR) do
        if k >= n then break end
        k = k + 1
        out[k] = ch
    end
    return table.concat(out)
end

-- entry.rs shorten: at most `max` characters, the last one `…` when cut.
local function shorten(s, max)
    if nchars(s) <= max then return s end
    local n = max - 1
    if n < 0 then n = 0 end
    return take_chars(s, n) .. "…"
end

-- char::is_control: U+0000-U+001F and U+007F-U+009F.
local function is_control(ch)
    local b = ch:byte(1)
    if #ch == 1 then return b < 32 or b == 127 end
    if #ch == 2 and b == 0xC2 then
        local b2 = ch:byte(2)
        return b2 >= 0x80 and b2 <= 0x9F
    end
    return false
end

-- procwatch shorten: control characters become spaces, then at most `max` bytes cut on a
-- character boundary, marked `…`.
local function shorten_bytes(s, max)
    local cs, changed = chars(s), false
    for k, ch in ipairs(cs) do
        if is_control(ch) then cs[k] = " "; changed = true end
    end
    if changed then s = table.concat(cs) end
    if #s <= max then return s end
    local out, len = {}, 0
    for ch in s:gmatch(CHAR) do
        if len + #ch > max then break end
        out[#out + 1] = ch
        len = len + #ch
    end
    return table.concat(out) .. "…"
end

-- interp.rs cap_line.
local MAX_LINE_CHARS = 2000
local function cap_line(line)
    if #line <= MAX_LINE_CHARS then return line end
    return take_chars(line, MAX_LINE_CHARS) .. "…"
end

-- str::lines(): split on \n, drop one trailing \r per line, no empty last line.
local function lines_of(s)
    local out = {}
    if s == "" then return out end
    local start = 1
    while start <= #s do
        local a = s:find("\n", start, true)
        local line
        if a then line = s:sub(start, a - 1); start = a + 1 else line = s:sub(start); start = #s + 1 end
        if line:sub(-1) == "\r" then line = line:sub(1, -2) end
        out[#out + 1] = line
    end
    return out
end

local function d(n) return string.format("%d", n) end

-- entry.rs ms().
local function ms_words(ns)
    local ms = ns / 1e6
    if ms < 10 then return string.format("%.1f ms", ms) end
    if ms < 10000 then return d(math.floor(ms + 0.5)) .. " ms" end
    return string.format("%.1f s", ms / 1000)
end

-- procwatch fmt_ns().
local function fmt_ns(ns)
    if ns >= 10e9 then return d(math.floor(ns / 1e9)) .. " s" end
    if ns >= 1e9 then return string.format("%.3f s", ns / 1e9) end
    if ns >= 1e6 then return d(math.floor(ns / 1e6)) .. " ms" end
    return d(math.floor(ns / 1000)) .. " µs"
end

local function starts(s, prefix) return s:sub(1, #prefix) == prefix end
local function strip_prefix(s, prefix)
    if starts(s, prefix) then return s:sub(#prefix + 1) end
    return nil
end
local function strip_suffix(s, suffix)
    if #suffix == 0 then return s end
    if #s >= #suffix and s:sub(-#suffix) == suffix then return s:sub(1, #s - #suffix) end
    return nil
end
-- Last occurrence of a plain string.
local function rfind(s, needle)
    local last, from = nil, 1
    while true do
        local a = s:find(needle, from, true)
        if not a then return last end
        last, from = a, a + 1
    end
end
local function split_once(s, sep)
    local a = s:find(sep, 1, true)
    if not a then return nil end
    return s:sub(1, a - 1), s:sub(a + #sep)
end
local function rsplit_once(s, sep)
    local a = rfind(s, sep)
    if not a then return nil end
    return s:sub(1, a - 1), s:sub(a + #sep)
end
-- daemon_log num(): trimmed, 1..24 bytes, a plain integer.
local function num(s, signed)
    if s == nil then return nil end
    s = trim(s)
    if #s == 0 or #s > 24 then return nil end
    if signed then
        if s:find("^[-+]?[0-9]+$") then return tonumber(s) end
    elseif s:find("^%+?[0-9]+$") then
        return tonumber(s)
    end
    return nil
end

---------------------------------------------------------------------------------------
-- Daemon log lines (src/pm2/daemon_log.rs).
---------------------------------------------------------------------------------------

local function split_prefix(line)
    for _, level in ipairs({ "log", "error", "warn", "info" }) do
        local marker = ": PM2 " .. level .. ": "
        local pos = line:find(marker, 1, true)
        if pos and pos > 1 and pos - 1 <= 64 and not line:sub(1, pos - 1):find("[\r\n]") then
            return line:sub(pos + #marker)
        end
    end
    return line
end

local function name_id(s)
    local name, id = rsplit_once(s, ":")
    if not name then return nil end
    id = num(id)
    if not id then return nil end
    return name, id
end

-- `3` or `_old_3` (the outgoing worker of a cluster reload): the id and whether it is old.
local function old_id(sid)
    if sid == nil then return nil end
    local rest = strip_prefix(sid, "_old_")
    if rest then
        local n = num(rest)
        if n then return n, true end
        return nil
    end
    local n = num(sid)
    if n then return n, false end
    return nil
end

local function parse_daemon_message(msg)
    msg = msg:gsub("[\r\n]+$", "")
    local other = { line = "other", text = msg }
    local rest = strip_prefix(msg, "Stopping app:")
    if rest then
        local app, sid = rsplit_once(rest, " id:")
        local id, old = old_id(sid)
        if app and id then return { line = "stopping", app = app, id = id, old = old } end
        return other
    end
    rest = strip_prefix(msg, "pid=")
    if rest then
        local pid, m = split_once(rest, " msg=")
        pid = num(pid, true)
        if not pid then return other end
        local r = strip_prefix(m, "failed to kill - retrying in ")
        if r then
            local ms = num(strip_suffix(r, "ms"))
            if ms then return { line = "kill_retry", pid = pid, ms = ms } end
            return other
        end
        r = strip_prefix(m, "process tree killed (")
        if r then
            local n = num(strip_suffix(r, " pids)"))
            if n then return { line = "tree_killed", pid = pid, pids = n } end
            return other
        end
        if m == "process killed" then return { line = "process_killed", pid = pid } end
        return other
    end
    rest = strip_prefix(msg, "Process with pid ")
    if rest then
        local pidtxt = strip_suffix(rest, " could not be killed")
        if pidtxt then
            local pid = num(pidtxt, true)
            if pid then return { line = "could_not_be_killed", pid = pid } end
            return other
        end
        local pid, after = split_once(rest, " still alive after ")
        pid = num(pid, true)
        if not pid then return other end
        local ms, tail = split_once(after, "ms, sending ")
        ms = num(ms)
        if not ms then return other end
        if tail == "it SIGKILL now..." then return { line = "sigkill_after_timeout", pid = pid, ms = ms } end
        local n = strip_prefix(tail, "SIGKILL to ")
        n = n and strip_suffix(n, " remaining pids...")
        n = num(n)
        if n then return { line = "sigkill_after_timeout", pid = pid, ms = ms, remaining = n } end
        return other
    end
    rest = strip_prefix(msg, "App [")
    if rest then
        local head = strip_suffix(rest, "] online")
        if head then
            local app, id = name_id(head)
            if app then return { line = "online", app = app, id = id } end
            return other
        end
        local pos = rfind(rest, "] starting in -")
        if pos then
            local app, id = name_id(rest:sub(1, pos - 1))
            local mode = strip_suffix(rest:sub(pos + #"] starting in -"), " mode-")
            if app and mode then return { line = "starting", app = app, id = id, mode = mode } end
            return other
        end
        pos = rfind(rest, "] exited with code [")
        if pos then
            local app, sid = rsplit_once(rest:sub(1, pos - 1), ":")
            local id, old = old_id(sid)
            if not (app and id) then return other end
            local code, sig = split_once(rest:sub(pos + #"] exited with code ["), "] via signal [")
            code = num(code, true)
            sig = sig and strip_suffix(sig, "]")
            if code and sig then return { line = "exited", app = app, id = id, code = code, signal = sig, old = old } end
            return other
        end
        pos = rfind(rest, "] will restart in ")
        if pos then
            local app, id = name_id(rest:sub(1, pos - 1))
            local ms = num(strip_suffix(rest:sub(pos + #"] will restart in "), "ms"))
            if app and ms then return { line = "will_restart", app = app, id = id, ms = ms } end
            return other
        end
        pos = rfind(rest, "] stale exit event ignored (pid ")
        if pos then
            local app, id = name_id(rest:sub(1, pos - 1))
            local pid = strip_suffix(rest:sub(pos + #"] stale exit event ignored (pid "), ")")
            if app and pid then return { line = "stale_exit_ignored", app = app, id = id, pid = num(pid, true) } end
            return other
        end
        return other
    end
    rest = strip_prefix(msg, "Script ")
    if rest then
        local pos = rfind(rest, " had too many unstable restarts (")
        if not pos then return other end
        local count = split_once(rest:sub(pos + #" had too many unstable restarts ("), ")")
        count = num(count)
        if count then return { line = "too_many_unstable_restarts", script = rest:sub(1, pos - 1), count = count } end
        return other
    end
    rest = strip_prefix(msg, "app=")
    if rest then
        local head = strip_suffix(rest, " could not be stopped")
        if not head then return other end
        local h2, pid = rsplit_once(head, " pid=")
        if not h2 then return other end
        local app, id = rsplit_once(h2, " id=")
        id = num(id)
        if app and id then return { line = "could_not_be_stopped", app = app, id = id, pid = num(pid, true) } end
        return other
    end
    rest = strip_prefix(msg, "Error: spawn ")
    if rest then
        local program, code = rsplit_once(rest, " ")
        if program and program ~= "" and starts(code, "E") and #code < 16 then
            return { line = "spawn_failed", program = program, code = code }
        end
        return other
    end
    rest = strip_prefix(msg, "[PM2][WORKER] Process ")
    if rest then
        local id, tail = split_once(rest, " ")
        if id and starts(tail, "restarted because it exceeds --max-memory-restart") then
            local n = num(id)
            if n then return { line = "memory_restart", rid = n } end
        end
        return other
    end
    rest = strip_prefix(msg, "Change detected on path ")
    if rest then
        local path, tail = rsplit_once(rest, " for app ")
        local app = tail and strip_suffix(tail, " - restarting")
        if path and app then return { line = "watch_restart", path = path, wapp = app } end
        return other
    end
    rest = strip_prefix(msg, "App name:")
    if rest then
        local head = strip_suffix(rest, " disconnected")
        if not head then return other end
        local app, sid = rsplit_once(head, " id:")
        local id, old = old_id(sid)
        if app and id then return { line = "disconnected", app = app, id = id, old = old } end
        return other
    end
    if msg == "-reload- New worker listening" then return { line = "reload_ready", soft = false } end
    if msg == "-softReload- New worker listening" then return { line = "reload_ready", soft = true } end
    if msg == "-softReload- Old worker disconnected" then return { line = "soft_reload_old_gone" } end
    rest = strip_prefix(msg, "Process ")
    if rest then
        local id = num(strip_suffix(rest, " in a stopped status, starting it"))
        if id then return { line = "reload_became_restart", rid = id } end
    end
    return other
end

local function daemon_line_app(l)
    if l.app and l.id then return l.app, l.id end
    return nil
end

local function daemon_line_pid(l)
    if l.line == "kill_retry" or l.line == "tree_killed" or l.line == "process_killed"
        or l.line == "sigkill_after_timeout" or l.line == "could_not_be_killed"
        or l.line == "stale_exit_ignored" or l.line == "could_not_be_stopped" then
        return l.pid
    end
    return nil
end

local function describe_daemon_line(l)
    local k = l.line
    if k == "stopping" then
        if l.old then return "stopping the outgoing worker _old_" .. d(l.id) .. " of the reload" end
        return "stopping (daemon sends the kill signal)"
    end
    if k == "disconnected" then
        if l.old then return "outgoing worker _old_" .. d(l.id) .. " disconnected" end
        return "worker disconnected (cluster IPC closed)"
    end
    if k == "reload_ready" then
        if l.soft then return "graceful reload: new worker listening: the old one is told to shut down" end
        return "reload: new worker listening (or ready): the old one is stopped now"
    end
    if k == "soft_reload_old_gone" then return "graceful reload: old worker disconnected" end
    if k == "spawn_failed" then
        return "could not spawn " .. l.program .. ": " .. l.code .. " (program or working directory missing)"
    end
    if k == "will_restart" then return "will restart in " .. d(l.ms) .. " ms" end
    if k == "memory_restart" then return "pm_id " .. d(l.rid) .. " restarted: over max_memory_restart" end
    if k == "watch_restart" then return "change detected on " .. l.path .. ": restarting (watch)" end
    if k == "reload_became_restart" then
        return "reload of " .. d(l.rid) .. ": not online in cluster mode, so restarted instead"
    end
    if k == "kill_retry" then return "pid " .. d(l.pid) .. " still alive, retrying in " .. d(l.ms) .. " ms" end
    if k == "tree_killed" then
        return "pid " .. d(l.pid) .. ": process tree killed (" .. d(l.pids) .. " pid" .. (l.pids == 1 and "" or "s") .. ")"
    end
    if k == "process_killed" then return "pid " .. d(l.pid) .. ": process killed (main pid only)" end
    if k == "sigkill_after_timeout" then
        if l.remaining then
            return "pid " .. d(l.pid) .. " still alive after " .. d(l.ms) .. " ms: SIGKILL to " .. d(l.remaining) .. " remaining pid(s)"
        end
        return "pid " .. d(l.pid) .. " still alive after " .. d(l.ms) .. " ms: SIGKILL"
    end
    if k == "could_not_be_killed" then return "pid " .. d(l.pid) .. " could not be killed, even with SIGKILL" end
    if k == "exited" then
        local s = "exited code " .. d(l.code) .. " via " .. l.signal .. " (daemon says)"
        if l.old then return "outgoing worker _old_" .. d(l.id) .. " " .. s end
        return s
    end
    if k == "starting" then return "starting (" .. l.mode .. " mode)" end
    if k == "online" then return "online (daemon log)" end
    if k == "stale_exit_ignored" then
        if l.pid then return "stale exit of earlier pid " .. d(l.pid) .. " ignored" end
        return "stale exit of an earlier generation ignored"
    end
    if k == "too_many_unstable_restarts" then
        return "errored: too many unstable restarts (" .. d(l.count) .. ") of " .. l.script
    end
    if k == "could_not_be_stopped" then
        if l.pid then return "pid " .. d(l.pid) .. " could not be stopped: errored" end
        return "could not be stopped: errored"
    end
    return "daemon: " .. l.text
end

---------------------------------------------------------------------------------------
-- Process-watcher events (src/sources/procwatch/event.rs summaries).
---------------------------------------------------------------------------------------

local function app_label(app)
    if not is_obj(app) then return nil end
    local name = as_str(get(app, "name")) or ""
    local s = name .. ":" .. d(as_u64(get(app, "pm_id")) or 0)
    local g = as_u64(get(app, "generation"))
    if g then s = s .. " gen " .. d(g) end
    return s
end

local function who_label(who)
    local s = "pid " .. d(as_i64(get(who, "pid")) or 0)
    if get(who, "daemon") == true then s = s .. " (pm2 daemon)" end
    local a = app_label(get(who, "app"))
    if a then s = s .. " " .. a end
    return s
end

local function how_words(how)
    if not is_obj(how) then return nil end
    local from = as_str(get(how, "from"))
    if from == "environ" then return "from its environment" end
    if from == "ancestry" then return "forked by pid " .. d(as_i64(get(how, "parent")) or 0) end
    if from == "hint" then return "from " .. (as_str(get(how, "source")) or "") end
    return nil
end

local function timing_words(t)
    if not is_obj(t) then return nil end
    local how = as_str(get(t, "how"))
    if how == "start_time" then return "start time ±" .. fmt_ns(as_u64(get(t, "resolution_ns")) or 0) end
    if how == "between" then
        local a, b = as_u64(get(t, "not_before_ns")) or 0, as_u64(get(t, "observed_ns")) or 0
        local gap = b - a
        if gap < 0 then gap = 0 end
        return "sometime in the " .. fmt_ns(gap) .. " before it was noticed"
    end
    if how == "before_start" then return "before the watcher started" end
    return nil
end

local function status_words(st)
    local k = as_str(get(st, "kind"))
    if k == "code" then return "code " .. d(as_i64(get(st, "code")) or 0) end
    if k == "signal" then
        if get(st, "core") == true then return "signal " .. (as_str(get(st, "name")) or "") .. " (core dumped)" end
        return "signal " .. (as_str(get(st, "name")) or "")
    end
    return "status unknown (" .. (as_str(get(st, "why")) or "") .. ")"
end

local function reason_words(r)
    local k = as_str(get(r, "kind"))
    local function app(v)
        local id = as_u64(v)
        if id then return "pm_id " .. d(id) end
        return "all apps"
    end
    if k == "start" then return "watcher start" end
    if k == "stop_requested" then return "stop requested for " .. app(get(r, "pm_id")) end
    if k == "restart_requested" then return "restart requested for " .. app(get(r, "pm_id")) end
    if k == "new_generation" then
        local s = "new generation of pm_id " .. d(as_u64(get(r, "pm_id")) or 0)
        local g = as_u64(get(r, "generation"))
        if g then s = s .. " gen " .. d(g) end
        local pid = as_i64(get(r, "pid"))
        if pid then s = s .. " pid " .. d(pid) end
        return s
    end
    if k == "early_exit" then
        local s = "early exit of pid " .. d(as_i64(get(r, "pid")) or 0) .. " pm_id " .. d(as_u64(get(r, "pm_id")) or 0)
        local g = as_u64(get(r, "generation"))
        if g then s = s .. " gen " .. d(g) end
        local ms = as_u64(get(r, "lived_ms"))
        if ms then s = s .. " after " .. d(ms) .. " ms" end
        return s
    end
    if k == "requested" then return (as_str(get(r, "why")) or "") .. " (" .. app(get(r, "pm_id")) .. ")" end
    return k or "?"
end

local function socket_summary(h)
    local proto = as_str(get(h, "proto"))
    local what = "port"
    if proto == "unix" then what = "unix socket" elseif proto == "udp" or proto == "udp6" then what = "udp port" end
    local s = what .. " " .. (as_str(get(h, "addr")) or "") .. " held by pid " .. d(as_i64(get(h, "pid")) or 0)
    local daemon = get(h, "daemon") == true
    if daemon then s = s .. " (pm2 daemon)" end
    local a = app_label(get(h, "app"))
    if a then s = s .. " " .. a end
    if get(h, "in_tree") ~= true and not daemon then s = s .. " (outside pm2's tree)" end
    return s
end

-- The daemon's own unix sockets (rpc.sock, pub.sock, interactor.sock).
local function pm2_own_socket(h)
    if as_str(get(h, "proto")) ~= "unix" then return false end
    local addr = as_str(get(h, "addr")) or ""
    local base = addr:match("([^/]*)$") or addr
    return starts(base, "rpc.sock") or starts(base, "pub.sock") or starts(base, "interactor.sock")
end

-- Where a process was started from (StartPaths::summary).
local function start_paths_summary(p)
    local s = "pid " .. d(as_i64(get(p, "pid")) or 0)
    local cwd = as_str(get(p, "cwd"))
    if cwd then
        s = s .. " runs in " .. cwd
        if get(p, "cwd_deleted") == true then s = s .. " (deleted)" end
    end
    local sd = as_str(get(p, "start_dir"))
    if sd then s = s .. ", started from " .. sd end
    local links = {}
    for _, l in ipairs(arr_items(get(p, "symlinks"))) do
        links[#links + 1] = (as_str(get(l, "link")) or "") .. " -> " .. (as_str(get(l, "target")) or "") .. " now"
    end
    if #links > 0 then s = s .. " (" .. table.concat(links, ", ") .. ")" end
    local sc = as_str(get(p, "script"))
    if get(p, "script_exists") == false and sc then s = s .. ", script " .. sc .. " missing" end
    local exe = as_str(get(p, "exe"))
    if get(p, "exe_deleted") == true and get(p, "exe_exists") == false and exe then
        s = s .. ", interpreter " .. exe .. " missing"
    end
    return s
end

local function proc_summary(ev)
    local kind = as_str(get(ev, "kind"))
    local who = get(ev, "who")
    if kind == "mode" then
        local r = get(ev, "report")
        local mode = as_str(get(r, "mode")) or ""
        if mode == "proc_scan" then mode = "procscan" end
        local s = "process watcher: " .. mode .. ": " .. (as_str(get(r, "why")) or "")
        for _, l in ipairs(arr_items(get(r, "limits"))) do s = s .. "; " .. json_text(l) end
        return s
    end
    if kind == "tracked" then
        local s = "tracking " .. who_label(who)
        local h = how_words(get(who, "how"))
        if h then s = s .. " (" .. h .. ")" end
        local c = as_str(get(who, "cmd"))
        if c then s = s .. ": " .. shorten_bytes(c, 100) end
        local timing = get(ev, "timing")
        local w = timing_words(timing)
        if w and as_str(get(timing, "how")) ~= "before_start" then s = s .. " [" .. w .. "]" end
        return s
    end
    if kind == "fork" then
        local s = "fork pid " .. d(as_i64(get(ev, "parent")) or 0) .. " -> " .. who_label(who)
        local c = as_str(get(who, "cmd"))
        if c then s = s .. ": " .. shorten_bytes(c, 100) end
        local w = timing_words(get(ev, "timing"))
        if w then s = s .. " [" .. w .. "]" end
        return s
    end
    if kind == "exec" then
        return "exec " .. who_label(who) .. ": " .. shorten_bytes(as_str(get(who, "cmd")) or "?", 120)
    end
    if kind == "attributed" then
        local label = who_label(who)
        local first2 = {}
        for word in (label .. " "):gmatch("([^ ]*) ") do
            first2[#first2 + 1] = word
            if #first2 == 2 then break end
        end
        local s = table.concat(first2, " ") .. " is"
        local a = app_label(get(who, "app"))
        if a then s = s .. " " .. a else s = s .. " no pm2 app" end
        local h = how_words(get(who, "how"))
        if h then s = s .. " (" .. h .. ")" end
        return s
    end
    if kind == "exit" then
        local s = "exit " .. who_label(who) .. " " .. status_words(get(ev, "status"))
        local lived = as_u64(get(ev, "lived_ns"))
        if lived then s = s .. " after " .. fmt_ns(lived) end
        local held = {}
        for _, h in ipairs(arr_items(get(ev, "held"))) do held[#held + 1] = json_text(h) end
        if #held > 0 then s = s .. ", held " .. table.concat(held, ", ") end
        if get(ev, "in_tree") == false and get(who, "daemon") ~= true then s = s .. " (outside pm2's tree)" end
        local w = timing_words(get(ev, "timing"))
        if w then s = s .. " [" .. w .. "]" end
        return s
    end
    if kind == "snapshot" then
        local procs = arr_items(get(ev, "processes"))
        local s = "snapshot (" .. reason_words(get(ev, "reason")) .. "): " .. d(#procs) .. " processes"
        local apps, master = {}, {}
        for _, h in ipairs(arr_items(get(ev, "sockets"))) do
            if get(h, "daemon") ~= true then
                apps[#apps + 1] = h
            elseif not pm2_own_socket(h) then
                -- In cluster mode the daemon is the cluster master: it holds the sockets.
                master[#master + 1] = h
            end
        end
        if #apps == 0 and #master == 0 then s = s .. ", no app holds a listening socket" end
        for _, h in ipairs(apps) do s = s .. "; " .. socket_summary(h) end
        for _, h in ipairs(master) do
            s = s .. "; " .. socket_summary(h) .. ", the cluster master, for its cluster-mode apps"
        end
        for _, sp in ipairs(arr_items(get(ev, "paths"))) do s = s .. "; " .. start_paths_summary(sp) end
        local host = arr_items(get(ev, "host"))
        if #host > 0 then s = s .. "; " .. d(#host) .. " listening sockets elsewhere on the host" end
        return s
    end
    if kind == "lost" then return "process events lost: " .. (as_str(get(ev, "why")) or "") end
    return "proc " .. (kind or "?")
end

---------------------------------------------------------------------------------------
-- pm2 meaning (src/pm2/meaning.rs): calls, replies, bus events.
---------------------------------------------------------------------------------------

-- Target::from_value: { id = n } or { name = s }.
local function target_of(v)
    if is_num(v) then
        local n = as_u64(v)
        if n then return { id = n } end
        return { name = v.raw }
    end
    if type(v) == "string" then
        local s = trim(v)
        if s:find("^%+?[0-9]+$") and #s <= 20 then return { id = tonumber(s) } end
        return { name = v }
    end
    if is_obj(v) then
        local id = get(v, "id")
        if id ~= nil then return target_of(id) end
    end
    return nil
end

local function target_text(t)
    if t.id then return d(t.id) end
    return t.name
end

local function call_of(first_arg_json, id)
    -- rpc::parse_call
    if not is_obj(first_arg_json) then return nil end
    if as_str(get(first_arg_json, "type")) ~= "call" then return nil end
    local method = as_str(get(first_arg_json, "method"))
    if not method then return nil end
    local args = get(first_arg_json, "args")
    return { method = method, args = is_arr(args) and arr_items(args) or {}, id = id }
end

local function env_vars_count(a)
    local env = get(a, "env")
    if not is_obj(env) then return 0 end
    local n = 0
    for _, k in ipairs(env.keys) do if not is_obj(env.map[k]) then n = n + 1 end end
    return n
end

-- Pm2Call::from_call, kept as a small table: { method, target, env_n, action, manually, names, args }
local function meaning_of(call)
    local a = call.args[1]
    if a == nil then a = NULL end
    local m = call.method
    if m == "restartProcessId" or m == "reloadProcessId" or m == "softReloadProcessId" then
        return { kind = "reload", method = m, target = target_of(a), env_n = env_vars_count(a) }
    end
    if m == "stopProcessId" or m == "startProcessId" or m == "deleteProcessId" then
        return { kind = "action", method = m, target = target_of(a) }
    end
    if m == "notifyByProcessId" then
        local id = get(a, "id")
        local an = get(a, "action_name")
        local man = get(a, "manually")
        return {
            kind = "notify", method = m, target = id ~= nil and target_of(id) or nil,
            action = an ~= nil and json_text(an) or "", manually = man ~= nil and man ~= NULL,
        }
    end
    if m == "getMonitorData" then return { kind = "monitor", method = m } end
    if m == "prepare" then
        local confs = is_arr(a) and arr_items(a) or { a }
        local names = {}
        for _, c in ipairs(confs) do
            local n = as_str(get(c, "name"))
            if n then names[#names + 1] = n end
        end
        return { kind = "prepare", method = m, names = names }
    end
    return { kind = "other", method = m, args = call.args }
end

local function target_id(mn)
    if mn.target and mn.target.id then return mn.target.id end
    return nil
end

-- MonitorProc::from_value (the fields the description uses).
local function monitor_proc(v)
    local env = get(v, "pm2_env")
    if env == nil then env = NULL end
    local function getk(k)
        local x = get(v, k)
        if x == nil then x = get(env, k) end
        return x
    end
    local pid = i64_of(get(v, "pid"))
    if pid == nil then pid = i64_of(get(get(v, "_handle"), "pid")) end
    if pid == nil then pid = i64_of(get(get(v, "process"), "pid")) end
    return {
        pm_id = u64_of(getk("pm_id")), name = as_str(getk("name")), pid = pid,
        status = as_str(get(env, "status")), exec_path = as_str(get(env, "pm_exec_path")),
    }
end

local function monitor_list(args)
    local out = {}
    local first = args[1]
    if is_arr(first) then
        for _, p in ipairs(arr_items(first)) do
            if is_obj(p) then out[#out + 1] = monitor_proc(p) end
        end
    end
    return out
end

local function monitor_one(args)
    local v = args[1]
    if v == nil then return nil end
    if is_arr(v) then
        v = v[1]
        if v == nil then return nil end
    end
    if not is_obj(v) or (get(v, "pm2_env") == nil and get(v, "pid") == nil) then return nil end
    return monitor_proc(v)
end

local function result_words(args)
    if #args ~= 1 then return nil end
    local v = args[1]
    if type(v) == "string" or is_num(v) or type(v) == "boolean" then return json_text(v) end
    local s = json_encode(v)
    if #s <= 80 then return s end
    return nil
end

local function monitor_words(procs)
    if #procs == 0 then return "no apps" end
    local shown = {}
    for k = 1, math.min(6, #procs) do
        local pr = procs[k]
        local who
        if pr.name and pr.pm_id then who = pr.name .. ":" .. d(pr.pm_id)
        elseif pr.name then who = pr.name
        elseif pr.pm_id then who = "#" .. d(pr.pm_id)
        else who = "?" end
        local st = pr.status or "?"
        if pr.pid and pr.pid > 0 then shown[k] = who .. " " .. st .. " pid " .. d(pr.pid)
        else shown[k] = who .. " " .. st end
    end
    local n = #procs
    local s = d(n) .. " app" .. (n == 1 and "" or "s") .. ": " .. table.concat(shown, ", ")
    if n > 6 then s = s .. ", " .. d(n - 6) .. " more" end
    return s
end

---------------------------------------------------------------------------------------
-- The interpreter (src/timeline/interp.rs): state kept across records, in file order.
---------------------------------------------------------------------------------------

local st -- reset by p.init

local function reset_state()
    st = {
        -- The recorder paired requests with replies and stored it (`asked` on a reply,
        -- `unanswered` on a close): read, not paired again. A capture recorded before it did
        -- (no `rpc_paired`) is paired here, as the interpreter pairs it.
        paired = false,
        conns = {},     -- conn -> { pending = { id -> {t, method, target} }, peer = pid }
        names = {},     -- pm_id -> name
        scripts = {},   -- exec path -> pm_id
        pids = {},      -- pid -> pm_id
        stopping = {},  -- pm_id -> true
        frames = {},    -- frame number -> result (for re-dissection in any order)
        frags = {},     -- interface -> pending fragments
    }
end
reset_state()

local function app_ref(pm_id)
    if pm_id == nil then return nil end
    return { pm_id = pm_id, name = st.names[pm_id] }
end

local function app_text(a)
    if a.name then return a.name .. ":" .. d(a.pm_id) end
    return "#" .. d(a.pm_id)
end

local function learn(pm_id, name)
    if pm_id ~= nil and name ~= nil then st.names[pm_id] = name end
end

-- Script -> the one pm_id running it; false when several do (a cluster app's instances).
local function learn_script(script, pm_id)
    local known = st.scripts[script]
    if known == nil then st.scripts[script] = pm_id
    elseif known ~= pm_id then st.scripts[script] = false end
end

local function learn_pid(pid, pm_id)
    if pid ~= nil and pid > 0 and pm_id ~= nil then st.pids[pid] = pm_id end
end

local function conn_state(conn)
    local c = st.conns[conn]
    if not c then c = { pending = {} }; st.conns[conn] = c end
    return c
end

local function app_words(app, target)
    if app then return app_text(app) end
    if target then return target_text(target) end
    return "?"
end

local function describe_call(app, mn)
    if mn.kind == "reload" then
        local s = mn.method .. " " .. app_words(app, mn.target)
        if mn.env_n > 0 then s = s .. " with " .. d(mn.env_n) .. " env value" .. (mn.env_n == 1 and "" or "s") end
        -- What the daemon does with a reload (lib/God/Reload.js), in cluster mode.
        if mn.method == "softReloadProcessId" then
            s = s .. " (graceful: new worker first, the old one asked to shut down)"
        elseif mn.method == "reloadProcessId" then
            s = s .. " (new worker first, then the old one is stopped)"
        end
        return s
    end
    if mn.kind == "action" then return mn.method .. " " .. app_words(app, mn.target) end
    if mn.kind == "notify" then
        return "notifyByProcessId " .. app_words(app, mn.target) .. " " .. mn.action .. (mn.manually and " (manually)" or "")
    end
    if mn.kind == "monitor" then return "getMonitorData" end
    if mn.kind == "prepare" then return "prepare (start) " .. table.concat(mn.names, ", ") end
    local parts, all_empty = {}, true
    for k, v in ipairs(mn.args) do
        parts[k] = shorten(json_text(v), 60)
        if parts[k] ~= "{}" then all_empty = false end
    end
    if all_empty then return mn.method end
    return mn.method .. " " .. table.concat(parts, " ")
end

-- The AMP arguments of a stored message: { kind = "j"|"s"|"b64", v = ... }.
local function msg_args(msg)
    local out = {}
    for _, a in ipairs(arr_items(msg)) do
        if get(a, "j") ~= nil then out[#out + 1] = { kind = "j", v = get(a, "j") }
        elseif get(a, "s") ~= nil then out[#out + 1] = { kind = "s", v = get(a, "s") }
        elseif get(a, "b64") ~= nil then out[#out + 1] = { kind = "b64", v = get(a, "b64") }
        end
    end
    return out
end

local function b64_len(s)
    s = s:gsub("[^A-Za-z0-9+/]", "")
    return math.floor(#s * 3 / 4)
end

local function raw_words(args)
    local parts = {}
    for k, a in ipairs(args) do
        if a.kind == "j" then parts[k] = cap_line("j:" .. json_encode(a.v))
        elseif a.kind == "s" then parts[k] = cap_line("s:" .. a.v)
        else parts[k] = "<" .. d(b64_len(a.v)) .. " raw bytes>" end
    end
    return cap_line(table.concat(parts, " "))
end

local function id_of(a)
    if a == nil then return "" end
    if a.kind == "s" then return a.v end
    if a.kind == "j" then return json_encode(a.v) end
    return ""
end

-- Each function below returns a list of entries { app = AppRef?, text = "..." } and fills
-- `x` (the filterable facts of the record).

local function rpc_message(t, ev, x)
    local conn = as_u64(get(ev, "conn")) or 0
    local dir = as_str(get(ev, "dir"))
    local args = msg_args(get(ev, "msg"))
    local first = args[1]
    local function other()
        local dtext = dir == "to_daemon" and "to daemon" or "to client"
        return { { text = "message " .. dtext .. ", neither request nor reply: " .. shorten(raw_words(args), 120) } }
    end
    if dir == "to_daemon" then
        local call = first and first.kind == "j" and call_of(first.v, id_of(args[2]))
        if not call then return other() end
        local mn = meaning_of(call)
        local target = target_id(mn)
        if not st.paired then
            conn_state(conn).pending[call.id] = { t = t, method = call.method, target = target }
        end
        x.method = call.method
        local app = app_ref(target)
        return { { app = app, text = describe_call(app, mn) } }
    end
    -- to_client: rpc::parse_reply
    if not (first and first.kind == "j" and is_obj(first.v)) then return other() end
    local body = first.v
    local id = id_of(args[2])
    local err = get(body, "error")
    local rargs = get(body, "args")
    if err == nil and not is_arr(rargs) then return other() end
    local pending
    if st.paired then
        local asked = get(ev, "asked")
        if asked ~= nil then
            pending = { t = as_u64(get(asked, "t")) or t, method = as_str(get(asked, "method")), target = as_u64(get(asked, "pm_id")) }
        end
    else
        local c = conn_state(conn)
        pending = c.pending[id]
        c.pending[id] = nil
    end
    local method = pending and pending.method
    x.method = method
    local latency = pending and (t - pending.t) or nil
    if latency and latency < 0 then latency = 0 end
    local procs, result, outcome_err = {}, nil, nil
    if err ~= nil then
        outcome_err = type(err) == "string" and err or json_encode(err)
    else
        local list = arr_items(rargs)
        if method == "getMonitorData" then
            procs = monitor_list(list)
        else
            local one = monitor_one(list)
            if one then procs = { one } end
        end
        if #procs == 0 then result = result_words(list) end
    end
    for _, pr in ipairs(procs) do
        learn(pr.pm_id, pr.name)
        if pr.pm_id then
            if pr.pid then learn_pid(pr.pid, pr.pm_id) end
            if pr.exec_path then learn_script(pr.exec_path, pr.pm_id) end
        end
    end
    local starts_proc = method == "restartProcessId" or method == "startProcessId" or method == "reloadProcessId"
        or method == "softReloadProcessId" or method == "prepare"
    local new_pid = nil
    if starts_proc and procs[1] and procs[1].pid and procs[1].pid > 0 then new_pid = procs[1].pid end
    local pm_id = pending and pending.target
    if pm_id == nil and method ~= "getMonitorData" and procs[1] then pm_id = procs[1].pm_id end
    local app = app_ref(pm_id)
    local s = method or "reply to a request sent before the capture"
    if app then s = s .. " " .. app_text(app) end
    s = s .. " -> "
    if outcome_err then
        s = s .. 'error "' .. shorten(outcome_err, 120) .. '"'
    elseif method == "getMonitorData" then
        s = s .. monitor_words(procs)
    elseif new_pid then
        s = s .. "new pid " .. d(new_pid)
        x.pid = x.pid or {}
        x.pid[#x.pid + 1] = new_pid
    elseif procs[1] then
        s = s .. (procs[1].status or "done")
    elseif result then
        s = s .. result
    else
        s = s .. "ok"
    end
    if latency then s = s .. " after " .. ms_words(latency) end
    return { { app = app, text = s } }
end

local function describe_process_event(app, pe)
    local who = app and app_text(app) or "?"
    local manually = pe.manually and " (manually)" or ""
    local e = pe.event
    if e == "exit" then
        local s = who .. " exit event"
        if pe.old and pe.pm_id then s = who .. " outgoing worker _old_" .. d(pe.pm_id) .. " exit event" end
        local parts = {}
        if pe.exit_code then parts[#parts + 1] = "code " .. d(pe.exit_code) end
        if pe.signal then parts[#parts + 1] = "signal " .. pe.signal end
        if pe.status then parts[#parts + 1] = "status " .. pe.status end
        if pe.unstable and pe.unstable > 0 then
            parts[#parts + 1] = d(pe.unstable) .. " unstable restart" .. (pe.unstable == 1 and "" or "s")
        end
        if #parts > 0 then s = s .. " (" .. table.concat(parts, ", ") .. ")" end
        return s
    end
    if e == "online" then return who .. " online" .. manually end
    if e == "restart overlimit" then
        local n = pe.unstable and (" (" .. d(pe.unstable) .. ")") or ""
        return who .. " errored: restart overlimit, too many unstable restarts" .. n
    end
    local stx = pe.status and (", status " .. pe.status) or ""
    return who .. " " .. e .. manually .. stx
end

local function daemon_app(l)
    if l.line == "spawn_failed" then return app_ref(st.last_starting) end
    if l.line == "memory_restart" then return app_ref(l.rid) end
    if l.line == "watch_restart" then
        -- the lowest pm_id with that name
        local best = nil
        for id, n in pairs(st.names) do
            if n == l.wapp and (best == nil or id < best) then best = id end
        end
        if best == nil then return nil end
        return app_ref(best)
    end
    if l.line == "starting" then st.last_starting = l.id end
    local name, id = daemon_line_app(l)
    if name then
        learn(id, name)
        if l.line == "stopping" then st.stopping[id] = true end
        if l.line == "could_not_be_stopped" then st.stopping[id] = nil end
        local pid = daemon_line_pid(l)
        if pid and l.line ~= "stale_exit_ignored" then learn_pid(pid, id) end
        return app_ref(id)
    end
    if l.line == "too_many_unstable_restarts" then
        local sid = st.scripts[l.script]
        if sid ~= nil and sid ~= false then return app_ref(sid) end
        return nil
    end
    if l.line == "reload_became_restart" then return app_ref(l.rid) end
    local pid = daemon_line_pid(l)
    if not pid then return nil end
    local id = st.pids[pid]
    if id == nil then
        local only, n = nil, 0
        for k in pairs(st.stopping) do only = k; n = n + 1 end
        if n ~= 1 then return nil end
        id = only
        learn_pid(pid, id)
    end
    if l.line == "tree_killed" or l.line == "process_killed" or l.line == "could_not_be_killed" then
        st.stopping[id] = nil
    end
    return app_ref(id)
end

local MAX_LINES_PER_MESSAGE = 1000

local function bus_message(ev, x)
    local args = msg_args(get(ev, "msg"))
    local first = args[1]
    if not (first and first.kind == "s") then
        return { { text = "bus (not an event) " .. shorten(json_encode(raw_words(args)), 100) } }
    end
    local name = first.v
    x.event = name
    local payload = (args[2] and args[2].kind == "j") and args[2].v or NULL
    local pr = get(payload, "process")
    if pr == nil then pr = NULL end
    if name == "process:event" and get(payload, "event") ~= nil then
        local raw_id, old = get(pr, "pm_id"), false
        if type(raw_id) == "string" and starts(raw_id, "_old_") then
            raw_id, old = raw_id:sub(6), true
        end
        local pe = {
            event = json_text(get(payload, "event")),
            manually = get(payload, "manually") == true,
            old = old,
            pm_id = u64_of(raw_id),
            name = as_str(get(pr, "name")),
            status = as_str(get(pr, "status")),
            exit_code = i64_of(get(pr, "exit_code")),
            signal = as_str(get(pr, "signal")) or as_str(get(pr, "exit_signal")),
            unstable = u64_of(get(pr, "unstable_restarts")),
            exec_path = as_str(get(pr, "pm_exec_path")),
        }
        x.event2 = pe.event
        learn(pe.pm_id, pe.name)
        if pe.pm_id ~= nil and pe.exec_path then learn_script(pe.exec_path, pe.pm_id) end
        if pe.pm_id ~= nil then
            local n = 0
            for _, tp in ipairs(arr_items(get(pr, "_tree_pids"))) do
                n = n + 1
                if n > 4096 then break end
                local v = i64_of(tp)
                if v then learn_pid(v, pe.pm_id) end
            end
        end
        if pe.exit_code then x.exit_code = pe.exit_code end
        if pe.signal then x.signal = pe.signal end
        local app = app_ref(pe.pm_id)
        return { { app = app, text = describe_process_event(app, pe) } }
    end
    if name == "process:msg" then
        local pm_id, pname = u64_of(get(pr, "pm_id")), as_str(get(pr, "name"))
        learn(pm_id, pname)
        local app = app_ref(pm_id)
        local who = app and (app_text(app) .. " ") or ""
        local raw = as_str(get(payload, "raw"))
        if raw then raw = take_chars(raw, 200) end
        if raw == "ready" then return { { app = app, text = who .. "sent ready (process.send('ready'))" } } end
        if raw then return { { app = app, text = who .. "sent a message: " .. shorten(raw, 100) } } end
        return { { app = app, text = who .. "sent a message" } }
    end
    if name == "log:out" or name == "log:err" then
        local pm_id, pname = u64_of(get(pr, "pm_id")), as_str(get(pr, "name"))
        learn(pm_id, pname)
        local app = app_ref(pm_id)
        local data = get(payload, "data")
        data = data ~= nil and json_text(data) or ""
        local sname = name == "log:err" and "stderr" or "stdout"
        local who = app and app_text(app) or "?"
        local out = {}
        local all = lines_of(data)
        for k = 1, math.min(#all, MAX_LINES_PER_MESSAGE) do
            out[#out + 1] = { app = app, text = who .. " " .. sname .. ": " .. cap_line(all[k]) }
        end
        if #all > MAX_LINES_PER_MESSAGE then
            out[#out + 1] = { app = app, text = who .. " " .. sname .. ": [" .. d(#all - MAX_LINES_PER_MESSAGE) .. " more lines in this chunk not shown]" }
        end
        if #all == 0 then out[1] = { app = app, text = who .. " " .. sname .. ": " } end
        return out
    end
    if name == "log:PM2" then
        local data = get(payload, "data")
        data = data ~= nil and json_text(data) or ""
        local out = {}
        for _, line in ipairs(lines_of(data)) do
            if line ~= "" and #out < MAX_LINES_PER_MESSAGE then
                local l = parse_daemon_message(split_prefix(line))
                local app = daemon_app(l)
                if l.line == "other" then l.text = cap_line(l.text) end
                if l.line == "exited" then x.exit_code = l.code; x.signal = l.signal end
                local pid = daemon_line_pid(l)
                if pid then x.pid = x.pid or {}; x.pid[#x.pid + 1] = pid end
                local text = describe_daemon_line(l)
                if app and l.line ~= "other" then text = app_text(app) .. " " .. text end
                out[#out + 1] = { app = app, text = text }
            end
        end
        return out
    end
    if name == "process:event" then
        -- no event member: an unknown bus event
    end
    return { { text = "bus " .. name .. " " .. shorten(json_encode(payload), 100) } }
end

local function proc_event(ev, x)
    local kind = as_str(get(ev, "kind"))
    local who = get(ev, "who")
    local app = nil
    local pid, pm_id, name
    if is_obj(who) then
        pid = as_i64(get(who, "pid"))
        local a = get(who, "app")
        if is_obj(a) then pm_id = as_u64(get(a, "pm_id")); name = as_str(get(a, "name")) end
    end
    if kind == "snapshot" or kind == "mode" or kind == "lost" then
        -- ProcFacts::from_value on these shapes: no who, the reason's pid only for pid facts
        pid, pm_id, name = nil, nil, nil
    end
    if pm_id ~= nil and name ~= nil then learn(pm_id, name) end
    if pm_id ~= nil and pid ~= nil then learn_pid(pid, pm_id) end
    local id = pm_id
    if id == nil and pid ~= nil then id = st.pids[pid] end
    app = app_ref(id)
    if pid then x.pid = x.pid or {}; x.pid[#x.pid + 1] = pid end
    if kind == "fork" then
        local parent = as_i64(get(ev, "parent"))
        if parent then x.pid = x.pid or {}; x.pid[#x.pid + 1] = parent end
    end
    if kind == "exit" then
        local s = get(ev, "status")
        local sk = as_str(get(s, "kind"))
        if sk == "code" then x.exit_code = as_i64(get(s, "code")) end
        if sk == "signal" then x.signal = as_str(get(s, "name")) end
    end
    return { { app = app, text = proc_summary(ev) } }
end

-- The entries of one record and its filterable facts.
local function interpret(rec)
    local x = { entries = {} }
    local ty = as_str(get(rec, "type"))
    x.type = ty
    local t = as_u64(get(rec, "t")) or 0
    x.t = get(rec, "t")
    local conn = as_u64(get(rec, "conn"))
    x.conn = conn
    local es
    if ty == "note" then
        x.source = "recorder"
        es = { { text = as_str(get(rec, "text")) or "" } }
    elseif ty == "recording_stopped" then
        x.source = "recorder"
        es = { { text = "recording stopped: " .. (as_str(get(rec, "reason")) or "") .. "; later events are missing" } }
    elseif ty == "rpc_connect" then
        x.source = "rpc"
        local peer = get(rec, "peer")
        local c = conn_state(conn)
        if is_obj(peer) then
            local pid, uid = as_i64(get(peer, "pid")) or 0, as_i64(get(peer, "uid")) or 0
            c.peer = pid
            x.peer = pid
            x.pid = { pid }
            es = { { text = "client connected (conn " .. d(conn) .. ", pid " .. d(pid) .. " uid " .. d(uid) .. ")" } }
        else
            es = { { text = "client connected (conn " .. d(conn) .. ")" } }
        end
    elseif ty == "rpc_refused" then
        x.source = "rpc"
        local peer = get(rec, "peer")
        local pid = as_i64(get(peer, "pid")) or 0
        x.pid = { pid }
        es = { { text = "client pid " .. d(pid) .. " uid " .. d(as_i64(get(peer, "uid")) or 0) .. " refused: " .. (as_str(get(rec, "reason")) or "") } }
    elseif ty == "rpc_undecodable" then
        x.source = "rpc"
        local dtext = as_str(get(rec, "dir")) == "to_daemon" and "to daemon" or "to client"
        es = { { text = "conn " .. d(conn) .. " " .. dtext .. ": undecodable from byte " .. d(as_u64(get(rec, "offset")) or 0)
            .. " on (" .. (as_str(get(rec, "error")) or "") .. "); bytes still forwarded" } }
    elseif ty == "rpc_close" then
        x.source = "rpc"
        local c = st.conns[conn]
        st.conns[conn] = nil
        local un = {}
        if c then for _, pd in pairs(c.pending) do un[#un + 1] = pd end end
        table.sort(un, function(a, b)
            if a.t ~= b.t then return a.t < b.t end
            return a.method < b.method
        end)
        local names = {}
        if st.paired then
            for k, m in ipairs(arr_items(get(rec, "unanswered"))) do names[k] = as_str(m) or "?" end
        else
            for k, pd in ipairs(un) do names[k] = pd.method end
        end
        x.peer = c and c.peer
        if #names == 0 then
            es = { { text = "client disconnected (conn " .. d(conn) .. ")" } }
        else
            es = { { text = "client disconnected (conn " .. d(conn) .. ") without replies to " .. table.concat(names, ", ") } }
        end
    elseif ty == "rpc_message" then
        x.source = "rpc"
        x.dir = as_str(get(rec, "dir"))
        x.peer = st.conns[conn] and st.conns[conn].peer
        es = rpc_message(t, rec, x)
        x.peer = x.peer or (st.conns[conn] and st.conns[conn].peer)
    elseif ty == "bus_message" then
        x.source = "bus"
        es = bus_message(rec, x)
    elseif ty == "bus_link" then
        x.source = "bus"
        local detail = as_str(get(rec, "detail")) or ""
        if get(rec, "up") == true then es = { { text = "subscribed to the event bus (" .. detail .. ")" } }
        else es = { { text = "event bus lost: " .. detail } } end
    elseif ty == "proc" then
        x.source = "proc"
        es = proc_event(rec, x)
    else
        -- A type this version does not know: replay skips it too.
        x.source = nil
        es = {}
    end
    local finding = get(rec, "finding")
    if finding ~= nil then
        x.finding = as_str(get(finding, "kind")) or json_text(finding)
    end
    x.entries = es
    return x
end

---------------------------------------------------------------------------------------
-- AMP: the stored message as the axon frame it was, and raw buffers that are frames.
---------------------------------------------------------------------------------------

local function add_amp_frame(tree, tvb)
    -- header byte (version << 4 | argc), then per argument u32 length + bytes
    if tvb:len() < 1 then return false end
    local hdr = tvb(0, 1):uint()
    local version, argc = math.floor(hdr / 16), hdr % 16
    if version ~= 1 then return false end
    local off = 1
    for _ = 1, argc do
        if off + 4 > tvb:len() then return false end
        local len = tvb(off, 4):uint()
        if off + 4 + len > tvb:len() then return false end
        off = off + 4 + len
    end
    if off ~= tvb:len() then return false end
    local sub = tree:add(f.amp, tvb(0, tvb:len()))
    sub:set_text("AMP message, version " .. version .. ", " .. argc .. " argument(s)")
    sub:add(f.amp_version, tvb(0, 1), version)
    sub:add(f.amp_argc, tvb(0, 1), argc)
    off = 1
    for k = 1, argc do
        local len = tvb(off, 4):uint()
        local body = len > 0 and tvb(off + 4, len) or nil
        local prefix = len >= 2 and tvb(off + 4, 2):string() or ""
        local label
        if prefix == "j:" then label = "j: JSON" elseif prefix == "s:" then label = "s: string" else label = "raw buffer" end
        local item = sub:add(f.amp_arg, tvb(off, 4 + len), label)
        item:set_text("Argument " .. k .. ": " .. label .. " (" .. len .. " bytes)")
        item:add(f.amp_len, tvb(off, 4))
        if body then
            if prefix == "j:" or prefix == "s:" then
                item:add(f.amp_arg, tvb(off + 6, len - 2), tvb(off + 6, len - 2):string())
            else
                item:add(f.amp_raw, body)
            end
        end
        off = off + 4 + len
    end
    return true
end

-- Rebuild the AMP frame of a stored message (arguments in order) and dissect it.
local function add_amp(tree, msg)
    local args = msg_args(msg)
    if #args == 0 or #args > 15 then return end
    local ba = ByteArray.new()
    ba:append(ByteArray.new(string.format("%02x", 16 + #args)))
    local raws = {}
    for _, a in ipairs(args) do
        local body
        if a.kind == "j" then
            body = ByteArray.new("j:" .. json_encode(a.v), true)
        elseif a.kind == "s" then
            body = ByteArray.new("s:" .. a.v, true)
        else
            body = ByteArray.new(a.v, true):base64_decode()
            raws[#raws + 1] = body
        end
        ba:append(ByteArray.new(string.format("%08x", body:len())))
        ba:append(body)
    end
    local tvb = ba:tvb("AMP message (re-encoded)")
    add_amp_frame(tree, tvb)
    for k, raw in ipairs(raws) do
        if raw:len() > 0 then
            local rt = raw:tvb("raw AMP buffer " .. k)
            if not add_amp_frame(tree, rt) then tree:add(f.amp_raw, rt(0, rt:len())) end
        end
    end
end

---------------------------------------------------------------------------------------
-- Exported-PDU framing and fragments.
---------------------------------------------------------------------------------------

local frame_interface = Field.new("frame.interface_name")

-- The record body after the exported-PDU tags, and the dissector tag.
local function pdu_body(tvb)
    local off, dissector = 0, nil
    while off + 4 <= tvb:len() do
        local tag, len = tvb(off, 2):uint(), tvb(off + 2, 2):uint()
        if tag == 0 then return off + 4, dissector end
        if off + 4 + len > tvb:len() then return nil end
        if tag == 12 and len > 0 then dissector = tvb(off + 4, len):stringz() end
        off = off + 4 + len
    end
    return nil
end

local function iface_name()
    local v = frame_interface()
    if v then return tostring(v) end
    return "?"
end

-- One record's JSON text, or nil while fragments of it are still coming.
local function record_text(tvb, body_off, dissector)
    if dissector == "json" then return tvb(body_off, tvb:len() - body_off):raw() end
    if dissector ~= "data" or tvb:len() - body_off < 20 then return nil end
    if tvb(body_off, 8):string() ~= "PM2TFRAG" then return nil end
    local index, count = tvb(body_off + 8, 4):uint(), tvb(body_off + 12, 4):uint()
    local chunk = tvb:len() - body_off - 20 > 0 and tvb(body_off + 20, tvb:len() - body_off - 20):raw() or ""
    local key = iface_name()
    local pend = st.frags[key]
    if index == 0 then pend = { parts = {} }; st.frags[key] = pend end
    if not pend or #pend.parts ~= index then st.frags[key] = nil; return nil, index, count end
    pend.parts[#pend.parts + 1] = chunk
    if index + 1 == count then
        st.frags[key] = nil
        return table.concat(pend.parts), index, count
    end
    return nil, index, count
end

---------------------------------------------------------------------------------------
-- The post-dissector.
---------------------------------------------------------------------------------------

local function endpoints(x)
    local src = x.source
    if src == "rpc" then
        local client = "pm2 client"
        if x.peer then client = "pid " .. d(x.peer) end
        if x.conn then client = client .. " conn " .. d(x.conn) end
        if x.dir == "to_client" then return "pm2 daemon", client end
        if x.type == "rpc_message" or x.type == "rpc_undecodable" then return client, "pm2 daemon" end
        return client, "pm2-trace proxy"
    end
    local app = x.entries[1] and x.entries[1].app
    if src == "bus" then return "pm2 daemon", app and app_text(app) or "event bus" end
    if src == "proc" then
        local who = (x.pid and x.pid[1]) and ("pid " .. d(x.pid[1])) or "processes"
        if app then who = app_text(app) .. " " .. who end
        return who, "kernel"
    end
    return "pm2-trace", "capture"
end

local function compute(tvb)
    local body_off, dissector = pdu_body(tvb)
    if not body_off then return nil end
    local text, index, count = record_text(tvb, body_off, dissector)
    if not text then
        if index then
            return { fragment = true, info = "record part " .. d(index + 1) .. "/" .. d(count) .. " (the whole record is on its last part)" }
        end
        return nil
    end
    local rec = json_decode(text)
    if not is_obj(rec) then return { info = "pm2-trace: record is not JSON", bad = true } end
    local ci = get(rec, "capture_info")
    if ci ~= nil then
        local x = { source = "recorder", type = "capture_info", entries = {} }
        x.info = "capture of pm2 " .. (as_str(get(ci, "pm2_version")) or "unknown") .. " at " .. (as_str(get(ci, "pm2_home")) or "?")
            .. (as_i64(get(ci, "daemon_pid")) and (", daemon pid " .. d(as_i64(get(ci, "daemon_pid")))) or "")
            .. " on " .. (as_str(get(ci, "host")) or "?")
        st.paired = get(ci, "rpc_paired") == true
        local dp = as_i64(get(ci, "daemon_pid"))
        if dp then x.pid = { dp } end
        x.record = rec
        return x
    end
    local x = interpret(rec)
    local texts = {}
    for k, e in ipairs(x.entries) do texts[k] = e.text:gsub("[\n\r]", " ") end
    x.info = table.concat(texts, " | ")
    x.record = rec
    return x
end

function p.init()
    reset_state()
end

function p.dissector(tvb, pinfo, tree)
    -- Only pm2-trace captures: link type 252 packets on our interfaces.
    local name = iface_name()
    if name ~= "rpc" and name ~= "bus" and name ~= "proc" and name ~= "recorder" then return end
    local x
    if pinfo.visited then
        x = st.frames[pinfo.number]
    else
        x = compute(tvb)
        st.frames[pinfo.number] = x or false
    end
    if not x then return end
    pinfo.cols.protocol:set("pm2-trace")
    pinfo.cols.info:set(x.info or "")
    if x.fragment then return end
    local src, dst = endpoints(x)
    pinfo.cols.src:set(src)
    pinfo.cols.dst:set(dst)
    local sub = tree:add(p, tvb(), "pm2-trace: " .. (x.info or ""))
    if x.source then sub:add(f.source, x.source) end
    if x.type then sub:add(f.type, x.type) end
    if x.t and is_num(x.t) then sub:add(f.t, UInt64.fromhex(string.format("%x", x.t.__num))) end
    sub:add(f.info, x.info or "")
    if x.method then sub:add(f.method, x.method) end
    local seen = {}
    for _, e in ipairs(x.entries or {}) do
        if e.app and not seen[e.app.pm_id] then
            seen[e.app.pm_id] = true
            if e.app.name then sub:add(f.app_name, e.app.name) end
            sub:add(f.pm_id, e.app.pm_id)
        end
    end
    local pids = {}
    for _, pid in ipairs(x.pid or {}) do
        if not pids[pid] then pids[pid] = true; sub:add(f.pid, pid) end
    end
    if x.conn then sub:add(f.conn, x.conn) end
    if x.signal then sub:add(f.signal, x.signal) end
    if x.exit_code then sub:add(f.exit_code, x.exit_code) end
    if x.event then sub:add(f.event, x.event) end
    if x.event2 then sub:add(f.event, x.event2) end
    if x.finding then sub:add(f.finding, x.finding) end
    local msg = x.record and get(x.record, "msg")
    if msg then add_amp(sub, msg) end
end

register_postdissector(p)
