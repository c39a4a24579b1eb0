-- wrk script for bench/vault.sh: Vault HTTP API requests with the token header, every
-- response checked.
--
--   wrk ... http://127.0.0.1:18300 -- read    TOKEN_FILE KEYS
--   wrk ... http://127.0.0.1:18300 -- write   TOKEN_FILE
--   wrk ... http://127.0.0.1:18300 -- encrypt TOKEN_FILE
--
-- TOKEN_FILE holds the vault token (sent as X-Vault-Token).
--   read:    GET /v1/secret/data/bench/k<i> for i cycling over 0..KEYS-1 (written beforehand
--            by vault.sh); good when it is a 200 holding "value-<i>" is not checked per key,
--            only that the body holds "\"data\"" and the status is 200
--   write:   POST /v1/secret/data/bench/w<thread>-<n> {"data":{"value":"..."}} with n
--            counting up, so every write creates a new secret (version 1; no CAS
--            contention); good when it is a 200
--   encrypt: POST /v1/transit/encrypt/bench {"plaintext":"<base64>"}; good when it is a 200
--            holding "vault:v1:"
--
-- done() prints one line that vault.sh parses:
--   VAULTBENCH responses=N bad=N first_bad_status=S

local threads = {}
local counter = 0

function setup(thread)
    counter = counter + 1
    thread:set("id", counter)
    table.insert(threads, thread)
end

responses = 0
bad = 0
first_bad = 0

local mode, token, keys
local n = 0
local want

local function read_file(path)
    local f = assert(io.open(path, "r"), "cannot open " .. path)
    local s = f:read("*l")
    f:close()
    return s
end

function init(args)
    mode = args[1]
    token = read_file(args[2])
    wrk.headers["X-Vault-Token"] = token
    wrk.headers["Content-Type"] = "application/json"
    if mode == "read" then
        keys = tonumber(args[3])
        want = '"data"'
    elseif mode == "write" then
        want = '"version"'
    elseif mode == "encrypt" then
        want = "vault:v1:"
    else
        error("unknown mode " .. tostring(mode))
    end
end

function request()
    n = n + 1
    if mode == "read" then
        return wrk.format("GET", "/v1/secret/data/bench/k" .. (n % keys))
    elseif mode == "write" then
        local body = '{"data":{"value":"secret-' .. id .. '-' .. n .. '","note":"written by bench/vault.sh"}}'
        return wrk.format("POST", "/v1/secret/data/bench/w" .. id .. "-" .. n, nil, body)
    else
        return wrk.format("POST", "/v1/transit/encrypt/bench", nil,
            '{"plaintext":"aGVsbG8gd29ybGQsIHRoaXMgaXMgYSBiZW5jaG1hcmsgcGxhaW50ZXh0"}')
    end
end

function response(status, headers, body)
    responses = responses + 1
    if status ~= 200 or not string.find(body, want, 1, true) then
        bad = bad + 1
        if first_bad == 0 then first_bad = status end
    end
end

function done(summary, latency, requests)
    local r, b, fb = 0, 0, 0
    for _, t in ipairs(threads) do
        r = r + t:get("responses")
        b = b + t:get("bad")
        if fb == 0 then fb = t:get("first_bad") end
    end
    io.write(string.format("VAULTBENCH responses=%d bad=%d first_bad_status=%d\n", r, b, fb))
end
