-- wrk script for bench/authority.sh: POSTs to the token service and checks every response.
--
--   wrk ... http://127.0.0.1:18200/oauth2/token      -- token      AUTH_FILE
--   wrk ... http://127.0.0.1:18200/oauth2/introspect -- introspect AUTH_FILE TOKEN_FILE
--
-- AUTH_FILE holds the value of the Authorization header (`Basic <base64(id:secret)>`,
-- client_secret_basic); TOKEN_FILE an access token that stays active for the whole run.
--
--   token:      body `grant_type=client_credentials`; a response counts as good when it is a
--               200 whose body holds "access_token"
--   introspect: body `token=<TOKEN>`; good when it is a 200 whose body holds "active":true
--               (an inactive answer is also a 200, and would flatter the figure)
--
-- done() prints one line that authority.sh parses:
--   AUTHBENCH responses=N bad=N non200=N first_bad_status=S
-- and any bad response fails the run.

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

-- Per-thread globals (read back in done() with thread:get).
responses = 0
bad = 0
non200 = 0
first_bad = 0

local req
local want

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
    end
end

function done(summary, latency, requests)
    local r, b, n, fb = 0, 0, 0, 0
    for _, t in ipairs(threads) do
        r = r + t:get("responses")
        b = b + t:get("bad")
        n = n + t:get("non200")
        if fb == 0 then fb = t:get("first_bad") end
    end
    io.write(string.format("AUTHBENCH responses=%d bad=%d non200=%d first_bad_status=%d\n", r, b, n, fb))
end
