-- wrk script for bench/jwt.sh. Every scenario runs through this same script, so wrk's
-- per-request Lua cost (request() and response()) is the same for all of them.
--
--   wrk ... URL -- plain
--   wrk ... URL -- token FILE                 every request sends the first token of FILE
--   wrk ... URL -- fresh FILE FIRST COUNT THREADS   requests walk through lines FIRST..FIRST+COUNT-1
--                                             of FILE; each wrk thread takes its own slice of
--                                             that range, so no token is sent twice unless a
--                                             thread runs past the end of its slice (reported
--                                             as "wrapped")
--
-- Every response is checked: done() prints one line
--   JWTBENCH responses=N non200=N first_bad_status=S sent=N min_slice=N wrapped=N
-- which jwt.sh parses; any status other than 200 fails the run.

local threads = {}
local counter = 0

function setup(thread)
    counter = counter + 1
    thread:set("id", counter)
    table.insert(threads, thread)
end

-- Per-thread globals (read back in done() with thread:get).
responses = 0
non200 = 0
first_bad = 0
sent = 0
slice = 0

local reqs = {}
local n = 0
local i = 0

local function build(token)
    local headers = { ["Host"] = wrk.headers["Host"] }
    if token then
        headers["Authorization"] = "Bearer " .. token
    end
    return wrk.format("GET", wrk.path, headers)
end

function init(args)
    local mode = args[1] or "plain"
    if mode == "plain" then
        reqs[1] = build(nil)
    elseif mode == "token" then
        local f = assert(io.open(args[2], "r"))
        local tok = f:read("*l")
        f:close()
        assert(tok and #tok > 0, "empty token file " .. args[2])
        reqs[1] = build(tok)
    elseif mode == "fresh" then
        local first = tonumber(args[3])
        local count = tonumber(args[4])
        -- `id` (1..threads) was set in this thread's Lua state by setup() before init ran;
        -- the thread count comes as an argument (each thread has its own Lua state).
        local nthr = tonumber(args[5]) or 1
        local per = math.floor(count / nthr)
        local lo = first + (id - 1) * per
        local hi = lo + per - 1
        local lineno = 0
        for line in io.lines(args[2]) do
            lineno = lineno + 1
            if lineno > hi then break end
            if lineno >= lo and #line > 0 then
                n = n + 1
                reqs[n] = build(line)
            end
        end
        assert(n > 0, "no tokens in slice " .. lo .. "-" .. hi .. " of " .. args[2])
        slice = n
    else
        error("unknown mode " .. mode)
    end
    n = #reqs
end

function request()
    i = i + 1
    if i > n then i = 1 end
    sent = sent + 1
    return reqs[i]
end

function response(status, headers, body)
    responses = responses + 1
    if status ~= 200 then
        non200 = non200 + 1
        if first_bad == 0 then first_bad = status end
    end
end

function done(summary, latency, requests)
    local r, bad, fb, s, minslice, wrapped = 0, 0, 0, 0, nil, 0
    for _, t in ipairs(threads) do
        r = r + t:get("responses")
        bad = bad + t:get("non200")
        if fb == 0 then fb = t:get("first_bad") end
        local ts, sl = t:get("sent"), t:get("slice")
        s = s + ts
        if sl > 0 then
            if minslice == nil or sl < minslice then minslice = sl end
            if ts > sl then wrapped = wrapped + (ts - sl) end
        end
    end
    io.write(string.format("JWTBENCH responses=%d non200=%d first_bad_status=%d sent=%d min_slice=%d wrapped=%d\n",
        r, bad, fb, s, minslice or 0, wrapped))
end
