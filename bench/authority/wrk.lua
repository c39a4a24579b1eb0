-- wrk script for bench/authority.sh: POSTs to the token service and checks every response.
--
--   wrk ... http://127.0.0.1:18200/oauth2/token      -- token      AUTH_FILE
--   wrk ... http://127.0.0.1:18200/oauth2/introspect -- introspect AUTH_FILE TOKEN_FILE
--   wrk ... http://127.0.0.1:18200/oauth2/token      -- capture    AUTH_FILE PREFIX PER_THREAD
--   wrk ... http://127.0.0.1:18200/oauth2/introspect -- introspect-fresh AUTH_FILE FILE FIRST COUNT THREADS
--
-- AUTH_FILE holds the value of the Authorization header (`Basic <base64(id:secret)>`,
-- client_secret_basic); TOKEN_FILE an access token that stays active for the whole run.
--
--   token:      body `grant_type=client_credentials`; a response counts as good when it is a
--               200 whose body holds "access_token"
--   introspect: body `token=<TOKEN>`; good when it is a 200 whose body holds "active":true
--               (an inactive answer is also a 200, and would flatter the figure)
--   capture:    the token request; each access_token of a good response is written, one a
--               line, to PREFIX.<thread> (thread 1..N), until that thread has PER_THREAD of
--               them; then the thread closes its file, creates PREFIX.<thread>.done and
--               stops. (wrk itself runs until -d; authority.sh interrupts it with SIGINT once
--               every thread's .done file exists.) Tokens beyond the quota are not written.
--   introspect-fresh: introspections that walk through lines FIRST..FIRST+COUNT-1 of FILE;
--               each wrk thread takes its own slice of COUNT/THREADS lines, so no token is
--               sent twice unless a thread runs past the end of its slice (counted as
--               "wrapped": authority.sh fails a measured run that wraps). Good as in
--               introspect.
--
-- done() prints one line that authority.sh parses:
--   AUTHBENCH responses=N bad=N non200=N first_bad_status=S captured=N sent=N min_slice=N wrapped=N
-- and any bad response fails the run.

local threads = {}
local counter = 0

function setup(thread)
    counter = counter + 1
    thread:set("id", counter)
    table.insert(threads, thread)
end

-- Per-thread globals (read back in done() with thread:get).
responses = 0
bad = 0
non200 = 0
first_bad = 0
captured = 0 -- capture: tokens written
sent = 0     -- introspect-fresh: requests sent
slice = 0    -- introspect-fresh: tokens in this thread's slice

local req
local want
-- capture
local out, quota, prefix
-- introspect-fresh
local reqs = {}
local n = 0
local i = 0

-- introspect-fresh: init() puts this in request()'s place (the other modes keep the one
-- prebuilt request below).
local function fresh_request()
    i = i + 1
    if i > n then i = 1 end
    sent = sent + 1
    return reqs[i]
end

local function read_line(path)
    local f = assert(io.open(path, "r"))
    local s = f:read("*l")
    f:close()
    assert(s and #s > 0, "empty file " .. path)
    return s
end

function init(args)
    local mode = args[1]
    local headers = {
        ["Host"] = wrk.headers["Host"],
        ["Authorization"] = read_line(assert(args[2], "AUTH_FILE missing")),
        ["Content-Type"] = "application/x-www-form-urlencoded",
        ["Accept"] = "application/json",
    }
    local body
    if mode == "token" then
        body = "grant_type=client_credentials"
        want = '"access_token"'
    elseif mode == "introspect" then
        -- A JWT is base64url and dots: nothing in it needs form-encoding.
        body = "token=" .. read_line(assert(args[3], "TOKEN_FILE missing"))
        want = '"active":true'
    elseif mode == "capture" then
        body = "grant_type=client_credentials"
        want = '"access_token"'
        -- `id` (1..threads) was set in this thread's Lua state by setup() before init ran.
        prefix = assert(args[3], "PREFIX missing")
        quota = assert(tonumber(args[4]), "PER_THREAD missing")
        out = assert(io.open(prefix .. "." .. id, "w"))
        out:setvbuf("full", 65536)
    elseif mode == "introspect-fresh" then
        want = '"active":true'
        local first = assert(tonumber(args[4]), "FIRST missing")
        local count = assert(tonumber(args[5]), "COUNT missing")
        local nthr = tonumber(args[6]) or 1
        local per = math.floor(count / nthr)
        local lo = first + (id - 1) * per
        local hi = lo + per - 1
        local lineno = 0
        local file = args[3]
        assert(file, "FILE missing")
        for line in io.lines(file) do
            lineno = lineno + 1
            if lineno > hi then break end
            if lineno >= lo and #line > 0 then
                n = n + 1
                reqs[n] = wrk.format("POST", wrk.path, headers, "token=" .. line)
            end
        end
        assert(n > 0, "no tokens in slice " .. lo .. "-" .. hi .. " of " .. file)
        slice = n
        request = fresh_request
        return
    else
        error("unknown mode " .. tostring(mode))
    end
    req = wrk.format("POST", wrk.path, headers, body)
end

function request()
    return req
end

function response(status, headers, body)
    responses = responses + 1
    if status ~= 200 then
        non200 = non200 + 1
        bad = bad + 1
        if first_bad == 0 then first_bad = status end
    elseif not string.find(body, want, 1, true) then
        bad = bad + 1
        if first_bad == 0 then first_bad = 1 end -- 1: a 200 without the expected field
    elseif out then
        local tok = string.match(body, '"access_token"%s*:%s*"([^"]+)"')
        if not tok then
            bad = bad + 1
            if first_bad == 0 then first_bad = 1 end
        else
            captured = captured + 1
            out:write(tok, "\n")
            if captured >= quota then
                out:close()
                out = nil
                local d = assert(io.open(prefix .. "." .. id .. ".done", "w"))
                d:close()
                wrk.thread:stop()
            end
        end
    end
end

function done(summary, latency, requests)
    local r, b, nb, fb, c, s, minslice, wrapped = 0, 0, 0, 0, 0, 0, nil, 0
    for _, t in ipairs(threads) do
        r = r + t:get("responses")
        b = b + t:get("bad")
        nb = nb + t:get("non200")
        if fb == 0 then fb = t:get("first_bad") end
        c = c + t:get("captured")
        local ts, sl = t:get("sent"), t:get("slice")
        s = s + ts
        if sl > 0 then
            if minslice == nil or sl < minslice then minslice = sl end
            if ts > sl then wrapped = wrapped + (ts - sl) end
        end
    end
    io.write(string.format("AUTHBENCH responses=%d bad=%d non200=%d first_bad_status=%d captured=%d sent=%d min_slice=%d wrapped=%d\n",
        r, b, nb, fb, c, s, minslice or 0, wrapped))
end
