#!/usr/bin/env bash
# Smoke test of `warden dev` as a new user would try it:
#   1. build the release binary (skipped when WARDEN_BIN points at one),
#   2. start `warden dev` in a fresh data dir and wait for 127.0.0.1:8080,
#   3. HTTP and HTTPS requests reach the built-in echo service; the JWT-protected /api/ route
#      takes the printed token (from credentials.json) and refuses requests without it; the
#      API-key route takes the printed key; /mesh/ crosses two sidecars with SPIFFE identities
#      verified at each hop; the authority issues, introspects and revokes
#      tokens for real Python clients (scripts/interop.sh: authlib, PyJWT; hvac against the dev
#      vault), and the gateway
#      refuses a revoked token within 5 s,
#   4. the admin /metrics output passes `promtool check metrics`, the alerting rules in
#      deploy/prometheus pass `promtool check rules` and their unit tests (`promtool test
#      rules`), and the authority publishes a signed audit head,
#      (the Debian package `prometheus` is installed when promtool is missing),
#   5. SIGTERM stops warden with exit status 0.
# Any failed check prints why and exits 1. The background warden is stopped on every exit.
#
# `warden dev` uses the fixed ports 8080, 8443, 9901, 8200 and the mesh's 15001, 15002 and
# 15101: they must be free.
#
# Usage: scripts/dev-smoke.sh            (WARDEN_BIN=/path/to/warden to skip the build)

set -euo pipefail

cd "$(dirname "$0")/.."

fail() {
    echo "dev-smoke: FAIL: $*" >&2
    if [[ -n "${LOG:-}" && -s "$LOG" ]]; then
        echo "dev-smoke: last lines of warden's output ($LOG):" >&2
        tail -n 20 "$LOG" >&2
    fi
    exit 1
}
step() { echo "dev-smoke: $*"; }

PID=""
DATA=""
LOG=""
cleanup() {
    local status=$?
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    if [[ -n "$DATA" && -d "$DATA" ]]; then
        rm -rf "$DATA"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

command -v curl >/dev/null || fail "curl is needed"

# --- 1. binary --------------------------------------------------------------------------------
if [[ -z "${WARDEN_BIN:-}" ]]; then
    step "building: cargo build --release -p warden"
    cargo build --release -p warden || fail "cargo build failed"
    WARDEN_BIN="$PWD/target/release/warden"
fi
[[ -x "$WARDEN_BIN" ]] || fail "WARDEN_BIN=$WARDEN_BIN is not an executable file"

# --- promtool ---------------------------------------------------------------------------------
if ! command -v promtool >/dev/null; then
    step "promtool not found: installing the Debian package prometheus"
    SUDO=""
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || fail "promtool is missing and installing it needs root (apt-get install prometheus)"
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Only refresh the package lists when the install fails without it.
    if ! $SUDO apt-get install -y --no-install-recommends prometheus; then
        $SUDO apt-get update || fail "apt-get update failed"
        $SUDO apt-get install -y --no-install-recommends prometheus || fail "cannot install prometheus (for promtool)"
    fi
    command -v promtool >/dev/null || fail "the prometheus package did not provide promtool"
fi

# --- 2. start warden dev ----------------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 8080 8443 9901; do
    if port_open "$port"; then
        fail "port $port is already in use; warden dev needs 8080, 8443 and 9901"
    fi
done

DATA="$(mktemp -d)"
LOG="$DATA/warden-dev.log"
step "starting: $WARDEN_BIN dev --data-dir $DATA"
"$WARDEN_BIN" dev --data-dir "$DATA" >"$LOG" 2>&1 &
PID=$!

for _ in $(seq 1 300); do
    kill -0 "$PID" 2>/dev/null || fail "warden dev exited during startup"
    port_open 8080 && break
    sleep 0.1
done
port_open 8080 || fail "warden dev is not listening on 127.0.0.1:8080 after 30 s"
for port in 8443 9901; do
    port_open "$port" || fail "warden dev is not listening on 127.0.0.1:$port"
done
step "listening on 8080, 8443 and 9901"

# --- 3. requests through the gateway ----------------------------------------------------------
# $1: description, $2: expected status, $3: text the body must contain, rest: curl arguments.
expect() {
    local what=$1 want_status=$2 want_text=$3
    shift 3
    local body status
    body="$(mktemp)"
    status="$(curl -sS -o "$body" -w '%{http_code}' --max-time 10 "$@")" || {
        rm -f "$body"
        fail "$what: curl $* failed"
    }
    if [[ "$status" != "$want_status" ]]; then
        echo "--- body:" >&2
        cat "$body" >&2
        rm -f "$body"
        fail "$what: status $status, expected $want_status"
    fi
    if ! grep -qF -- "$want_text" "$body"; then
        echo "--- body:" >&2
        cat "$body" >&2
        rm -f "$body"
        fail "$what: the answer does not contain $want_text"
    fi
    rm -f "$body"
    step "ok: $what"
}

expect "HTTP to the echo service" 200 '"service": "echo"' \
    http://localhost:8080/public/hello
[[ -s "$DATA/ca.pem" ]] || fail "warden dev did not write $DATA/ca.pem"
expect "HTTPS to the echo service (dev CA)" 200 '"service": "echo"' \
    --cacert "$DATA/ca.pem" https://localhost:8443/public/hello
expect "admin /healthz" 200 'ok' http://localhost:9901/healthz

CREDS="$DATA/credentials.json"
[[ -s "$CREDS" ]] || fail "warden dev did not write $CREDS"
TOKEN="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$CREDS")"
API_KEY="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$CREDS")"
# The dev issuer's keys are fetched in the background: wait for /readyz.
for _ in $(seq 1 100); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' http://localhost:9901/readyz)" == 200 ]] && break
    sleep 0.1
done
expect "admin /readyz (the authority's keys loaded)" 200 'ready' http://localhost:9901/readyz
expect "/api/ with the printed token" 200 '"x-warden-subject": "demo-client"' \
    -H "Authorization: Bearer $TOKEN" http://localhost:8080/api/orders
expect "/api/ without a token gets 401" 401 '"error":"unauthorized"' \
    http://localhost:8080/api/orders
expect "/api/ with a spoofed identity header and no token gets 401" 401 'unauthorized' \
    -H "x-warden-subject: admin" http://localhost:8080/api/orders
CODES=""
for _ in $(seq 1 15); do
    CODES+="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
        -H "Authorization: Bearer $TOKEN" http://localhost:8080/api/orders) "
done
[[ "$CODES" == *429* ]] || fail "15 quick /api/ calls with one token never got 429 (per-subject limit 5/s, burst 10): $CODES"
step "ok: per-subject rate limit on /api/ ($CODES)"
expect "/keyed/ with the printed API key" 200 '"x-warden-subject": "dev-service"' \
    -H "x-api-key: $API_KEY" http://localhost:8080/keyed/report
# Change the key's last character to a different one (a fixed replacement would be a no-op
# whenever the key already ends with it).
case "$API_KEY" in *x) WRONG_KEY="${API_KEY%?}y" ;; *) WRONG_KEY="${API_KEY%?}x" ;; esac
expect "/keyed/ with a wrong key gets 401" 401 'invalid_token' \
    -H "x-api-key: $WRONG_KEY" http://localhost:8080/keyed/report

expect "/mesh/: gateway → sidecar A → service A → sidecar B → service B, SPIFFE IDs verified" \
    200 '"caller_verified_by_my_sidecar": "spiffe://warden.dev/service-a"' http://localhost:8080/mesh/
expect "/mesh/: sidecar A verified the gateway" \
    200 '"caller_verified_by_my_sidecar": "spiffe://warden.dev/gateway"' http://localhost:8080/mesh/

step "interop: authlib and PyJWT against the authority and the gateway"
# hvac too, against the dev vault with the root token warden dev wrote.
DEV_ROOT_TOKEN="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_token"])' "$CREDS")"
WARDEN_DEV_DATA="$DATA" VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN="$DEV_ROOT_TOKEN" scripts/interop.sh \
    || fail "interoperability tests (scripts/interop.sh) failed"

# --- 4. metrics -------------------------------------------------------------------------------
METRICS="$DATA/metrics.txt"
curl -sS --max-time 10 -o "$METRICS" http://localhost:9901/metrics || fail "GET /metrics failed"
grep -q '^warden_requests_total{route="public",status="200"} ' "$METRICS" \
    || fail "/metrics does not count the requests just made (warden_requests_total{route=\"public\",status=\"200\"})"
step "promtool: $(promtool --version 2>&1 | head -n 1)"
if PROMTOOL_OUT="$(promtool check metrics <"$METRICS" 2>&1)"; then prc=0; else prc=$?; fi
if [[ "$prc" != 0 ]]; then
    echo "--- promtool check metrics said:" >&2
    echo "$PROMTOOL_OUT" >&2
    fail "promtool check metrics rejected warden's /metrics output (exit status $prc)"
fi
[[ -n "$PROMTOOL_OUT" ]] && echo "$PROMTOOL_OUT"
step "ok: promtool check metrics"

AUTH_METRICS="$DATA/authority-metrics.txt"
curl -sS --max-time 10 -o "$AUTH_METRICS" http://127.0.0.1:8200/metrics || fail "GET :8200/metrics failed"
grep -q '^warden_authority_sealed 0$' "$AUTH_METRICS" \
    || fail "the authority's /metrics does not report warden_authority_sealed 0"
if PROMTOOL_OUT="$(promtool check metrics <"$AUTH_METRICS" 2>&1)"; then prc=0; else prc=$?; fi
if [[ "$prc" != 0 ]]; then
    echo "--- promtool check metrics said:" >&2
    echo "$PROMTOOL_OUT" >&2
    fail "promtool check metrics rejected the authority's /metrics output (exit status $prc)"
fi
step "ok: promtool check metrics (authority)"
grep -q '^warden_tls_certificate_expiry_timestamp_seconds{listener="' "$METRICS" \
    || fail "/metrics has no expiry for the HTTPS listener's certificate"

# The alerting rules in deploy/ are valid and fire as their unit tests say (the metrics they
# query are checked against the registries by crates/warden/tests/deploy_monitoring.rs).
if PROMTOOL_OUT="$(promtool check rules deploy/prometheus/warden-alerts.yml 2>&1)"; then prc=0; else prc=$?; fi
[[ "$prc" == 0 ]] || { echo "$PROMTOOL_OUT" >&2; fail "promtool check rules rejected deploy/prometheus/warden-alerts.yml"; }
if PROMTOOL_OUT="$(promtool test rules deploy/prometheus/warden-alerts.test.yml 2>&1)"; then prc=0; else prc=$?; fi
[[ "$prc" == 0 ]] || { echo "$PROMTOOL_OUT" >&2; fail "promtool test rules failed on deploy/prometheus/warden-alerts.test.yml"; }
step "ok: promtool check rules and test rules (deploy/prometheus)"

# The audit chain's signed head is published.
head_json="$(curl -sS --max-time 10 http://127.0.0.1:8200/audit/v1/head)" || fail "GET :8200/audit/v1/head failed"
python3 -c 'import json,sys; h=json.loads(sys.argv[1]); assert h["seq"] > 0 and h["head"].count(".") == 2 and h["key"]["crv"] == "Ed25519", h' "$head_json" \
    || fail "GET /audit/v1/head answered: $head_json"
step "ok: signed audit head published"

# --- 4b. the vault ----------------------------------------------------------------------------
ROOT_TOKEN="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_token"])' "$CREDS")"
[[ -n "$ROOT_TOKEN" ]] || fail "credentials.json has no root_token"
code="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H "X-Vault-Token: $ROOT_TOKEN" \
    -d '{"data":{"password":"smoke-s3cret"}}' http://127.0.0.1:8200/v1/secret/data/smoke)"
[[ "$code" == 200 ]] || fail "writing a secret to the vault answered $code, expected 200"
got="$(curl -sS --max-time 10 -H "X-Vault-Token: $ROOT_TOKEN" http://127.0.0.1:8200/v1/secret/data/smoke)"
[[ "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["data"]["data"]["password"])' "$got")" == smoke-s3cret ]] \
    || fail "reading the secret back gave: $got"
code="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' http://127.0.0.1:8200/v1/secret/data/smoke)"
[[ "$code" == 403 ]] || fail "reading a secret without a token answered $code, expected 403"
step "ok: vault write and read (KV v2 at secret/)"
ct="$(curl -sS --max-time 10 -H "X-Vault-Token: $ROOT_TOKEN" -d '{"plaintext":"c21va2U="}' \
    http://127.0.0.1:8200/v1/transit/encrypt/smoke \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["ciphertext"])')" \
    || fail "transit encrypt failed"
got="$(curl -sS --max-time 10 -H "X-Vault-Token: $ROOT_TOKEN" -d "{\"ciphertext\":\"$ct\"}" \
    http://127.0.0.1:8200/v1/transit/decrypt/smoke)"
[[ "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["data"]["plaintext"])' "$got")" == c21va2U= ]] \
    || fail "transit decrypt gave: $got"
step "ok: transit encrypt and decrypt (transit/)"

# --- 5. SIGTERM -------------------------------------------------------------------------------
step "sending SIGTERM"
kill -TERM "$PID"
for _ in $(seq 1 400); do
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$PID" 2>/dev/null && fail "warden dev still running 40 s after SIGTERM"
if wait "$PID"; then rc=0; else rc=$?; fi
PID=""
[[ "$rc" == 0 ]] || fail "warden dev exited with status $rc after SIGTERM, expected 0"
step "ok: exit status 0 after SIGTERM"
step "PASS"
