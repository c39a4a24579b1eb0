#!/usr/bin/env bash
# JWT-protected route benchmark: Warden vs HAProxy's jwt_verify, same run, same machine.
#
#   bench/jwt.sh                              # defaults (~6 min after the build)
#   ROUNDS=1 DURATION=5 bench/jwt.sh          # quick look
#   WARDEN_BIN=target/release/warden bench/jwt.sh
#
# Same setup as bench/proxy.sh: one nginx upstream on 127.0.0.1:18000 answering
# `200 ok\n`, each proxy in turn on 127.0.0.1:18080 in front of it (2 workers/threads,
# upstream keep-alive, no logging). Six scenarios, interleaved across ROUNDS rounds with the
# order rotated each round, each run on a fresh proxy process:
#
#   warden-plain          Warden, route `auth = "none"`
#   warden-jwt-repeated   Warden, route requires an ES256 JWT (iss, aud, exp, scope "read");
#                         every request carries the same token (its verified-token cache hits)
#   warden-jwt-fresh      same route; every request carries a token never sent before
#   haproxy-plain         HAProxy, no rules
#   haproxy-jwt-repeated  HAProxy, jwt_verify + claim rules; the same token every request
#   haproxy-jwt-fresh     same rules; a new token every request
#
# Every request, in every scenario, sends `Authorization: Bearer <token>` (plain ones too,
# so the plain baselines differ from the JWT runs only in the checking). Each round makes a
# new P-256 key (openssl) and signs a new set of tokens (bench/jwt/mktokens.py); before a
# JWT run the script checks that the proxy accepts a valid token and refuses a missing one,
# a bad signature, an expired token, a token without exp, without the "read" scope, with
# another aud and with another iss. wrk runs bench/jwt/wrk.lua, which checks the status of
# every response: a single non-200 fails the run.
#
# Before measuring, the script waits until the 1-minute load average is below LOAD_MAX
# (polling every 10 s, at most LOAD_WAIT s), and records the load average at the start and
# the end. As other work on a shared machine comes and goes, it also waits for idle CPUs
# before each run, and measures the CPU time other processes took during each measured run
# (all CPU time from /proc/stat minus that of the proxy, the upstream and wrk); a run
# disturbed by more than FOREIGN_MAX % is repeated. Results: a table on stdout,
# bench/results/jwt-latest.{json,md}.
#
# Environment:
#   ONLY          comma/space separated subset of the six scenarios (default: all)
#   DURATION      wrk seconds per run (10)            CONNECTIONS  wrk connections (50)
#   THREADS       wrk threads (2)                     WARMUP       warm-up seconds (3)
#   ROUNDS        runs per scenario, interleaved; figures are medians (3)
#   FRESH_TOKENS  distinct tokens for each measured "fresh" run, split between the wrk
#                 threads (400000)
#   FRESH_WARMUP_TOKENS  further distinct tokens for the fresh warm-up (50000)
#   LOAD_MAX      wait until the 1-min load average is below this (0.7)
#   LOAD_WAIT     give up waiting after this many seconds and run anyway, flagged (1200)
#   QUIET_BUSY    before each run, wait (at most RUN_WAIT s, default 300) until the CPUs are
#                 less than this % busy over 2 s, with nothing of the benchmark running (10)
#   FOREIGN_MAX   a run during which other processes used more than this % of all CPU time
#                 is repeated, at most RETRIES times (default 2); then kept and flagged (10)
#   PROFILE=1     afterwards, `perf record -g` Warden for DURATION s under each of its three
#                 scenarios; reports in bench/results/jwt-latest.perf-{plain,jwt-repeated,jwt-fresh}.txt
#   WARDEN_CACHE_ENTRIES  diagnostics only: Warden's auth.cache.max_entries (default: its
#                 default, 100000); a non-default value is flagged in the results
#   WARDEN_BIN    warden binary (default: cargo build --release -p warden)
#   RESULTS_DIR   where to write results (bench/results)
#   KEEP_TMP=1    keep the temp dir (configs, keys, tokens, logs, raw wrk output)
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
export LC_ALL=C

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"

DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-50}"
THREADS="${THREADS:-2}"
WARMUP="${WARMUP:-3}"
ROUNDS="${ROUNDS:-3}"
FRESH_TOKENS="${FRESH_TOKENS:-400000}"
FRESH_WARMUP_TOKENS="${FRESH_WARMUP_TOKENS:-50000}"
LOAD_MAX="${LOAD_MAX:-0.7}"
LOAD_WAIT="${LOAD_WAIT:-1200}"
PROFILE="${PROFILE:-0}"
QUIET_BUSY="${QUIET_BUSY:-10}"
RUN_WAIT="${RUN_WAIT:-300}"
FOREIGN_MAX="${FOREIGN_MAX:-10}"
RETRIES="${RETRIES:-2}"
ALL_SCENARIOS="warden-plain warden-jwt-repeated warden-jwt-fresh haproxy-plain haproxy-jwt-repeated haproxy-jwt-fresh"
ONLY="${ONLY:-$ALL_SCENARIOS}"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
UPSTREAM_PORT=18000
PROXY_PORT=18080
HOST=127.0.0.1
URL="http://$HOST:$PROXY_PORT/bench"
ISS="https://issuer.bench"
WANT_NOFILE=65536

log() { printf '[jwt.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# Shared helpers: stop_pid, stop, run_fg, port_busy, load_below, uses, nginx_temp_paths.
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------- selection
SCENARIOS=()
for s in ${ONLY//,/ }; do
    case " $ALL_SCENARIOS " in
        *" $s "*) SCENARIOS+=("$s") ;;
        *) die "unknown scenario '$s' in ONLY (use: $ALL_SCENARIOS)" ;;
    esac
done
((${#SCENARIOS[@]})) || die "ONLY selects nothing"

for v in DURATION CONNECTIONS THREADS WARMUP ROUNDS FRESH_TOKENS FRESH_WARMUP_TOKENS LOAD_WAIT QUIET_BUSY RUN_WAIT FOREIGN_MAX RETRIES; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
[[ -z ${WARDEN_CACHE_ENTRIES:-} || $WARDEN_CACHE_ENTRIES =~ ^[1-9][0-9]*$ ]] || die "WARDEN_CACHE_ENTRIES must be a positive whole number"
[[ $LOAD_MAX =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "LOAD_MAX must be a number, got '$LOAD_MAX'"
((ROUNDS >= 1)) || die "ROUNDS must be at least 1"
((THREADS >= 1 && CONNECTIONS >= THREADS)) || die "need THREADS >= 1 and CONNECTIONS >= THREADS"
((FRESH_TOKENS >= THREADS && FRESH_WARMUP_TOKENS >= THREADS)) || die "FRESH_TOKENS and FRESH_WARMUP_TOKENS must be at least THREADS"

# ---------------------------------------------------------------- tools
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
if uses haproxy; then command -v haproxy >/dev/null 2>&1 || need+=(haproxy); fi
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
if [[ $PROFILE == 1 ]]; then command -v perf >/dev/null 2>&1 || need+=(linux-perf); fi
if ((${#need[@]})); then
    log "installing: ${need[*]}"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi

# Token signing needs the `cryptography` package: the system's if it has one, else a venv
# under bench/.venv (ignored by git).
PY=python3
if ! python3 -c 'import cryptography' 2>/dev/null; then
    if [[ ! -x $BENCH_DIR/.venv/bin/python ]] || ! "$BENCH_DIR/.venv/bin/python" -c 'import cryptography' 2>/dev/null; then
        log "python3 lacks the cryptography package; installing it into $BENCH_DIR/.venv"
        python3 -m venv "$BENCH_DIR/.venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
        "$BENCH_DIR/.venv/bin/pip" install --quiet cryptography
    fi
    PY="$BENCH_DIR/.venv/bin/python"
fi

if uses haproxy; then
    hv="$(haproxy -v 2>&1 | sed -n 's/^HAProxy version \([0-9]*\.[0-9]*\).*/\1/p')"
    [[ -n $hv ]] || die "cannot read the HAProxy version"
    awk -v v="$hv" 'BEGIN { split(v, a, "."); exit !(a[1] > 2 || (a[1] == 2 && a[2] >= 5)) }' ||
        die "HAProxy $hv has no jwt_verify (2.5 or later needed)"
fi

# ---------------------------------------------------------------- fd limit
hard="$(ulimit -Hn)"
if [[ $hard != unlimited && $hard -lt $WANT_NOFILE ]]; then
    ulimit -Hn "$WANT_NOFILE" 2>/dev/null || true
    hard="$(ulimit -Hn)"
fi
if [[ $hard == unlimited || $hard -ge $WANT_NOFILE ]]; then ulimit -n "$WANT_NOFILE"; else ulimit -n "$hard"; fi
NOFILE="$(ulimit -n)"
[[ $NOFILE == unlimited ]] && NOFILE=$WANT_NOFILE

# ---------------------------------------------------------------- processes
TMP="$(mktemp -d /tmp/warden-jwt-bench.XXXXXX)"
declare -A PIDS=()

cleanup() {
    local rc=$? name
    trap - EXIT INT TERM
    for name in "${!PIDS[@]}"; do
        [[ $name == upstream ]] && continue
        stop "$name"
    done
    stop upstream
    if [[ ${KEEP_TMP:-0} == 1 || $rc -ne 0 ]]; then
        log "logs, configs, keys and tokens kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"


ticks_of() { # ticks_of PID [cum]: CPU clock ticks of a process (with its reaped children's: cum)
    local f
    f=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    if [[ ${2:-} == cum ]]; then awk '{ print $12 + $13 + $14 + $15 }' <<<"$f"; else awk '{ print $12 + $13 }' <<<"$f"; fi
}
cpu_snapshot() { # cpu_snapshot: "busy total ours proxy" in clock ticks; ours = proxy + upstream + wrk
    local ours proxy
    proxy=$(ticks_of "${PIDS[proxy]}")
    # wrk is a child of this shell: once reaped, its CPU time is in this shell's cutime/cstime.
    ours=$((proxy + $(ticks_of "${PIDS[upstream]}") + $(ticks_of $$ cum)))
    awk -v o="$ours" -v p="$proxy" '/^cpu / { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6, o, p; exit }' /proc/stat
}
foreign_pct() { # foreign_pct "SNAP_BEFORE" "SNAP_AFTER": % of all CPU time used by other processes
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[2] - x[2]; f = (y[1] - x[1]) - (y[3] - x[3]); if (f < 0) f = 0;
        printf "%.1f", (t > 0 ? 100 * f / t : 0) }'
}
wait_quiet() { # wait_quiet NAME: until the CPUs are < QUIET_BUSY % busy over 2 s (at most RUN_WAIT s)
    local busy waited=0
    busy=$(cpu_busy_pct)
    while ((busy >= QUIET_BUSY)); do
        if ((waited >= RUN_WAIT)); then
            log "WARNING: CPUs still ${busy}% busy after ${RUN_WAIT} s; running $1 anyway"
            QUIET_GAVE_UP=$((QUIET_GAVE_UP + 1))
            return 0
        fi
        ((waited % 30 == 0)) && log "  $1: CPUs ${busy}% busy (other work); waiting for < ${QUIET_BUSY}% (load $(cut -d' ' -f1-3 /proc/loadavg))"
        sleep 3
        waited=$((waited + 5))
        busy=$(cpu_busy_pct)
    done
    QUIET_WAITED=$((QUIET_WAITED + waited))
}

# ---------------------------------------------------------------- configs

write_upstream_conf() { # as in proxy.sh
    write_ok_upstream
}

write_haproxy_conf() { # write_haproxy_conf FILE [PUBKEY_PEM]: without a key, plain proxying
    local f=$1 pub=${2:-} rules=""
    if [[ -n $pub ]]; then
        # HAProxy's documented jwt_verify idiom (HAProxy blog "Verify OAuth JWT tokens with
        # HAProxy", configuration manual 2.6 jwt_verify); `deny` answers 403. The
        # `!{ var(txn.exp) -m found }` line is added: without it the doc's exp check lets a
        # token without exp through (the fetch fails and the ACL is false).
        rules=$(cat <<EOF
    http-request deny content-type 'text/plain' string 'Missing Authorization' if !{ req.hdr(authorization) -m found }
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.jwt_alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('\$.iss')
    http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('\$.aud')
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
    http-request set-var(txn.scope) var(txn.bearer),jwt_payload_query('\$.scope')
    http-request set-var(txn.now) date()
    http-request deny if !{ var(txn.jwt_alg) -m str ES256 }
    http-request deny if !{ var(txn.iss) -m str $ISS }
    http-request deny if !{ var(txn.aud) -m str api }
    http-request deny if !{ var(txn.exp) -m found }
    http-request deny if { var(txn.exp),sub(txn.now) -m int lt 0 }
    http-request deny if !{ var(txn.scope) -m sub read }
    http-request deny if !{ var(txn.bearer),jwt_verify(txn.jwt_alg,"$pub") -m int 1 }
EOF
)
    fi
    # Otherwise the same as proxy.sh's HAProxy config. No 'log' lines: HAProxy logs nothing.
    cat >"$f" <<EOF
global
    nbthread 2
    maxconn 20000
    no strict-limits

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 300s
    timeout http-keep-alive 300s
    timeout queue 30s

frontend bench
    bind $HOST:$PROXY_PORT
$rules
    default_backend upstream

backend upstream
    server u1 $HOST:$UPSTREAM_PORT
EOF
}

write_warden_conf() { # write_warden_conf FILE [PUBKEY_PEM]: without a key, auth = "none"
    local f=$1 pub=${2:-} auth_issuer="" route_auth='auth = "none"'
    if [[ -n $pub ]]; then
        auth_issuer=$(cat <<EOF
[[auth.jwt]]
name = "bench"
issuer = "$ISS"
audiences = ["api"]
algorithms = ["ES256"]
public_key_file = "$pub"
EOF
)
        if [[ -n ${WARDEN_CACHE_ENTRIES:-} ]]; then
            auth_issuer+=$'\n\n'"[auth.cache]"$'\n'"max_entries = $WARDEN_CACHE_ENTRIES"
        fi
        route_auth=""
    fi
    # Otherwise the same as proxy.sh's Warden config; the verified-token cache keeps its
    # default size (auth.cache.max_entries = 100000) unless WARDEN_CACHE_ENTRIES is set.
    cat >"$f" <<EOF
[server]
idle_timeout = "300s"
max_connections = 20000

[admin]
enabled = false

[access_log]
enabled = false

[reload]
watch = false

$auth_issuer

[[listeners]]
name = "bench"
address = "$HOST:$PROXY_PORT"

[[clusters]]
name = "upstream"
endpoints = ["http://$HOST:$UPSTREAM_PORT"]

[[routes]]
name = "all"
$route_auth
cluster = "upstream"
path_prefix = "/"
EOF
    if [[ -n $pub ]]; then
        cat >>"$f" <<EOF
[routes.auth]
accept = ["jwt"]
scopes_all = ["read"]
EOF
    fi
}

# ---------------------------------------------------------------- keys and tokens
make_round_material() { # make_round_material DIR: P-256 key pair (+ a second key), tokens
    local d=$1
    mkdir -p "$d"
    openssl ecparam -name prime256v1 -genkey -noout -out "$d/ec.pem" 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$d/ec.pem" -out "$d/priv.pem"
    openssl ec -in "$d/ec.pem" -pubout -out "$d/pub.pem" 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out "$d/other-ec.pem" 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$d/other-ec.pem" -out "$d/other-priv.pem"
    local t0=$SECONDS
    "$PY" "$BENCH_DIR/jwt/mktokens.py" --key "$d/priv.pem" --other-key "$d/other-priv.pem" \
        --out "$d" --fresh $((FRESH_TOKENS + FRESH_WARMUP_TOKENS)) --lifetime 3600 ||
        die "token generation failed"
    local n
    n=$(wc -l <"$d/fresh.txt")
    ((n == FRESH_TOKENS + FRESH_WARMUP_TOKENS)) || die "expected $((FRESH_TOKENS + FRESH_WARMUP_TOKENS)) fresh tokens, got $n"
    TOKEN_BYTES=$(($(head -c 4096 "$d/repeated.txt" | wc -c) - 1))
    log "keys and $n fresh tokens (+1 repeated, 6 negative) in $((SECONDS - t0)) s; token length $TOKEN_BYTES bytes"
    write_haproxy_conf "$d/haproxy-jwt.cfg" "$d/pub.pem"
    write_warden_conf "$d/warden-jwt.toml" "$d/pub.pem"
    haproxy -c -q -f "$d/haproxy-jwt.cfg" >"$d/haproxy-check.out" 2>&1 || { cat "$d/haproxy-check.out" >&2; die "HAProxy rejects its JWT config"; }
}

# ---------------------------------------------------------------- proxies
start_proxy() { # start_proxy SCENARIO ROUND_DIR
    local s=$1 d=$2 tok
    tok="$(cat "$d/repeated.txt")"
    case $s in
        haproxy-plain) start proxy haproxy -db -f "$TMP/haproxy-plain.cfg" ;;
        haproxy-jwt-*) start proxy haproxy -db -f "$d/haproxy-jwt.cfg" ;;
        warden-plain) start proxy "$WARDEN_BIN" serve --allow-root --config "$TMP/warden-plain.toml" ;;
        warden-jwt-*) start proxy "$WARDEN_BIN" serve --allow-root --config "$d/warden-jwt.toml" ;;
    esac
    wait_http proxy "$URL" 30 -H "Authorization: Bearer $tok"
}

check_proxy() { # check_proxy SCENARIO ROUND_DIR: valid token -> 200 ok; for JWT scenarios every bad one refused
    local s=$1 d=$2 body code neg
    body=$(curl -fsS -H "Authorization: Bearer $(cat "$d/repeated.txt")" "$URL") || die "$s: a valid token was refused"
    [[ $body == ok ]] || die "$s returned an unexpected body: $body"
    [[ $s == *-jwt-* ]] || return 0
    code=$(curl -sS -o /dev/null -w '%{http_code}' "$URL")
    [[ $code == 4* ]] || die "$s: a request without a token got $code"
    local seen="none:$code"
    for neg in badsig expired noexp noscope wrongaud wrongiss; do
        code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$d/neg-$neg.txt")" "$URL")
        [[ $code == 4* ]] || die "$s: the '$neg' token got $code, not refused"
        seen+=" $neg:$code"
    done
    log "$s: valid token 200 ok; refused: $seen"
    REFUSALS[$s]="$seen"
}

# ---------------------------------------------------------------- measurements

lua_args() { # lua_args SCENARIO ROUND_DIR PHASE(warmup|measure): the wrk.lua arguments
    local s=$1 d=$2 phase=$3
    case $s in
        *-fresh)
            # Measured runs walk lines 1..FRESH_TOKENS; warm-up uses the lines after them,
            # so no measured token has been seen before.
            if [[ $phase == warmup ]]; then
                echo "fresh $d/fresh.txt $((FRESH_TOKENS + 1)) $FRESH_WARMUP_TOKENS $THREADS"
            else
                echo "fresh $d/fresh.txt 1 $FRESH_TOKENS $THREADS"
            fi
            ;;
        *) echo "token $d/repeated.txt" ;;
    esac
}

check_lua() { # check_lua NAME OUTFILE: fail on any non-200; sets LUA_* from the JWTBENCH line
    local name=$1 out=$2 line
    line=$(grep '^JWTBENCH ' "$out" | tail -n 1) || die "$name: no JWTBENCH line in wrk output ($out)"
    LUA_RESPONSES=$(sed -n 's/.* responses=\([0-9]*\).*/\1/p' <<<"$line")
    LUA_NON200=$(sed -n 's/.* non200=\([0-9]*\).*/\1/p' <<<"$line")
    LUA_FIRST_BAD=$(sed -n 's/.* first_bad_status=\([0-9]*\).*/\1/p' <<<"$line")
    LUA_WRAPPED=$(sed -n 's/.* wrapped=\([0-9]*\).*/\1/p' <<<"$line")
    ((LUA_RESPONSES > 0)) || die "$name: wrk got no responses"
    ((LUA_NON200 == 0)) || { cat "$out" >&2; die "$name: $LUA_NON200 of $LUA_RESPONSES responses were not 200 (first: $LUA_FIRST_BAD); the figures would measure refusals"; }
}

run_wrk() { # run_wrk SCENARIO ROUND_DIR ROUND -> sets RPS P50 P99 REQS SOCKERR WRAPPED FOREIGN PROXY_US
    local s=$1 d=$2 out="$TMP/$1.r$3.wrk" args
    read -r -a args <<<"$(lua_args "$s" "$d" warmup)"
    log "$s: warm-up ${WARMUP}s"
    run_fg "$TMP/$s.r$3.warmup" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$BENCH_DIR/jwt/wrk.lua" "$URL" -- "${args[@]}" ||
        { cat "$TMP/$s.r$3.warmup" >&2; die "wrk warm-up failed for $s"; }
    check_lua "$s (warm-up)" "$TMP/$s.r$3.warmup"
    read -r -a args <<<"$(lua_args "$s" "$d" measure)"
    log "$s: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency -s bench/jwt/wrk.lua $URL -- ${args[0]} ..."
    local snap0 snap1
    snap0=$(cpu_snapshot)
    run_fg "$out" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$BENCH_DIR/jwt/wrk.lua" "$URL" -- "${args[@]}" ||
        { cat "$out" >&2; die "wrk failed for $s"; }
    snap1=$(cpu_snapshot)
    FOREIGN=$(foreign_pct "$snap0" "$snap1")
    PROXY_TICKS=$(awk -v a="$snap0" -v b="$snap1" 'BEGIN { split(a, x, " "); split(b, y, " "); print y[4] - x[4] }')
    sed 's/^/    /' "$out" >&2
    log "$s: other processes used ${FOREIGN}% of all CPU time during the run"
    local non2xx
    read -r RPS P50 P99 REQS non2xx SOCKERR < <(awk "$to_ms_awk"'
        /^[ \t]+50%/ { p50 = to_ms($2) }
        /^[ \t]+99%/ { p99 = to_ms($2) }
        /^Requests\/sec:/ { rps = $2 }
        / requests in / { reqs = $1 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { gsub(/,/, ""); sockerr = $4 + $6 + $8 + $10 }
        END { printf "%s %.3f %.3f %d %d %d\n", (rps == "" ? "NA" : rps), p50, p99, reqs, non2xx, sockerr }' "$out")
    [[ $RPS != NA ]] || die "could not parse wrk output for $s"
    # The proxy's own CPU time (all threads, user + system) per request: what a request costs
    # it, apart from how the 2 shared cores were split between wrk, upstream and proxy.
    PROXY_US=$(awk -v t="$PROXY_TICKS" -v hz="$CLK_TCK" -v n="$REQS" 'BEGIN { printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0) }')
    log "$s: proxy CPU ${PROXY_US} us per request"
    ((non2xx == 0)) || die "$s: wrk counted $non2xx non-2xx/3xx responses"
    check_lua "$s" "$out"
    WRAPPED=$LUA_WRAPPED
    ((SOCKERR == 0)) || log "WARNING: $s: $SOCKERR socket errors"
    # wrk's threads are not balanced (one may send 60 % of the requests), so each thread has
    # its own slice of FRESH_TOKENS / THREADS tokens. A reused token could hit Warden's
    # cache, and its fresh figure would no longer be "fresh": that fails the run. HAProxy
    # has no cache, so reuse changes nothing there; it is only reported.
    if ((WRAPPED > 0)); then
        [[ $s == warden-* ]] && die "$s: a wrk thread ran past its $((FRESH_TOKENS / THREADS)) fresh tokens ($WRAPPED requests reused a token); raise FRESH_TOKENS"
        log "WARNING: $s: a wrk thread ran past its $((FRESH_TOKENS / THREADS)) fresh tokens; $WRAPPED requests reused a token (HAProxy has no cache: no effect)"
    fi
}

version_of() {
    case $1 in
        haproxy) haproxy -v 2>&1 | sed -n 1p ;;
        warden)
            local v rev
            v=$("$WARDEN_BIN" --version 2>/dev/null | sed -n 1p || true)
            [[ -n $v ]] || v="warden"
            rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || true)
            # HEAD at the time of the run; the binary may be older (WARDEN_BIN): its mtime says.
            echo "$v${rev:+ (git HEAD $rev)}, binary $WARDEN_BIN built $(date -u -r "$WARDEN_BIN" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo '?')"
            ;;
    esac
}

# ---------------------------------------------------------------- build warden
if uses warden || [[ $PROFILE == 1 ]]; then
    if [[ -z ${WARDEN_BIN:-} ]]; then
        log "building warden (cargo build --release -p warden)"
        (cd "$ROOT" && cargo build --release -p warden)
        WARDEN_BIN="$ROOT/target/release/warden"
    fi
    [[ -x $WARDEN_BIN ]] || die "warden binary not found or not executable: $WARDEN_BIN"
fi

# ---------------------------------------------------------------- run
mkdir -p "$RESULTS_DIR"
RESULTS_TSV="$TMP/results.tsv"
: >"$RESULTS_TSV"

write_haproxy_conf "$TMP/haproxy-plain.cfg"
write_warden_conf "$TMP/warden-plain.toml"
declare -A VERSIONS=() REFUSALS=()
if uses warden; then VERSIONS[warden]="$(version_of warden)"; log "warden: ${VERSIONS[warden]}"; fi
if uses haproxy; then VERSIONS[haproxy]="$(version_of haproxy)"; log "haproxy: ${VERSIONS[haproxy]}"; fi

# Wait for a quiet machine: the load generator, the upstream and the proxy already share
# the 2 cores, and anything else running skews the figures.
LOAD_WAITED=0
LOAD_GAVE_UP=0
QUIET_WAITED=0
QUIET_GAVE_UP=0
if ! load_below "$LOAD_MAX"; then
    log "waiting for the 1-minute load average to drop below $LOAD_MAX (now $(loadavg1); polling every 10 s, at most ${LOAD_WAIT} s)"
    while ! load_below "$LOAD_MAX"; do
        if ((LOAD_WAITED >= LOAD_WAIT)); then
            LOAD_GAVE_UP=1
            log "WARNING: the load average is still $(loadavg1) after ${LOAD_WAIT} s; running anyway (flagged in the results)"
            ps -eo pcpu=,comm= --sort=-pcpu 2>/dev/null | sed -n 1,5p | sed 's/^/    /' >&2 || true
            break
        fi
        sleep 10
        LOAD_WAITED=$((LOAD_WAITED + 10))
        log "  load average $(cut -d' ' -f1-3 /proc/loadavg) after ${LOAD_WAITED} s (want 1-min < $LOAD_MAX); top: $(ps -eo pcpu=,comm= --sort=-pcpu 2>/dev/null | sed -n 1,3p | awk '{ printf "%s %s%%  ", $2, $1 }')"
    done
fi
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
CPU_BUSY_START="$(cpu_busy_pct)"
log "load average at start: $LOAD_START; CPUs ${CPU_BUSY_START}% busy over 2 s"
((CPU_BUSY_START <= 10)) || log "WARNING: the CPUs are ${CPU_BUSY_START}% busy before the run"
STARTED_AT="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

for port in $UPSTREAM_PORT $PROXY_PORT; do
    for ((i = 0; i < 60; i++)); do
        port_busy "$port" || break
        ((i % 6 == 0)) && log "something listens on $HOST:$port (another benchmark?); waiting for it to go (at most 300 s)"
        sleep 5
    done
    port_busy "$port" && die "something still listens on $HOST:$port; stop it first"
done
write_upstream_conf
start upstream nginx -e "$TMP/upstream/error.log" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf"
wait_http upstream "http://$HOST:$UPSTREAM_PORT/bench" 15
log "upstream nginx ready on $HOST:$UPSTREAM_PORT"

n=${#SCENARIOS[@]}
for ((round = 0; round < ROUNDS; round++)); do
    RD="$TMP/round$((round + 1))"
    log "=== round $((round + 1))/$ROUNDS: new key pair and tokens"
    make_round_material "$RD"
    sleep 2
    for ((k = 0; k < n; k++)); do
        s=${SCENARIOS[$(((k + round) % n))]}
        for ((attempt = 1; ; attempt++)); do
            label=""
            ((attempt == 1)) || label=" (attempt $attempt)"
            log "=== round $((round + 1))/$ROUNDS: $s$label"
            wait_quiet "$s"
            start_proxy "$s" "$RD"
            check_proxy "$s" "$RD"
            run_wrk "$s" "$RD" "$((round + 1)).$attempt"
            stop proxy
            kept=1
            if awk -v f="$FOREIGN" -v m="$FOREIGN_MAX" 'BEGIN { exit !(f > m) }' && ((attempt <= RETRIES)); then
                kept=0
                log "WARNING: $s: other processes took ${FOREIGN}% of the CPUs (> ${FOREIGN_MAX}%); discarding this run and repeating it"
            fi
            printf '%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n' "$s" $((round + 1)) "$RPS" "$P50" "$P99" "$REQS" "$SOCKERR" \
                "$WRAPPED" "$FOREIGN" "$attempt" "$kept" "$PROXY_US" >>"$RESULTS_TSV"
            sleep 1
            ((kept)) && break
        done
    done
    [[ ${KEEP_TMP:-0} == 1 ]] || rm -f "$RD/fresh.txt" # ~140 MB a round
done
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load average at end: $LOAD_END"

# ---------------------------------------------------------------- optional profile
perf_table() { # perf_table DATA ARGS...: perf report --stdio, without comments and padding
    perf report -i "$1" --stdio --sort symbol -g none "${@:2}" 2>/dev/null |
        grep -v -e '^#' -e '^$' | sed -e 's/[[:space:]]*-[[:space:]]*-[[:space:]]*$//' -e 's/[[:space:]]*$//'
}

if [[ $PROFILE == 1 ]]; then
    RD="$TMP/profile"
    make_round_material "$RD"
    for s in warden-plain warden-jwt-repeated warden-jwt-fresh; do
        log "=== profile: $s (perf record -g, ${DURATION} s)"
        start_proxy "$s" "$RD"
        check_proxy "$s" "$RD"
        read -r -a args <<<"$(lua_args "$s" "$RD" warmup)"
        run_fg "$TMP/$s.profile-warmup" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$BENCH_DIR/jwt/wrk.lua" "$URL" -- "${args[@]}"
        read -r -a args <<<"$(lua_args "$s" "$RD" measure)"
        start load wrk -t"$THREADS" -c"$CONNECTIONS" -d"$((DURATION + 2))s" -s "$BENCH_DIR/jwt/wrk.lua" "$URL" -- "${args[@]}"
        sleep 1
        run_fg "$TMP/$s.perf-record" perf record -g -o "$TMP/$s.perf.data" -p "${PIDS[proxy]}" -- sleep "$DURATION" ||
            log "WARNING: perf record failed for $s"
        wait "${PIDS[load]}" 2>/dev/null || true
        unset "PIDS[load]"
        check_lua "$s (profile)" "$TMP/load.out"
        stop proxy
        f="$RESULTS_DIR/jwt-latest.perf-${s#warden-}.txt"
        {
            echo "# perf record -g -p <warden> for ${DURATION} s during wrk -t$THREADS -c$CONNECTIONS ($s), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
            echo "# wrk: $(grep -E '^Requests/sec' "$TMP/load.out" | tr -s ' '); load average $(cut -d' ' -f1-3 /proc/loadavg)"
            echo
            echo "## self time, top symbols (perf report --no-children --sort symbol)"
            perf_table "$TMP/$s.perf.data" --no-children --percent-limit 0.5 || true
            echo
            echo "## inclusive time of auth, crypto, JSON and cache symbols (perf report --children)"
            perf_table "$TMP/$s.perf.data" --children --percent-limit 0.3 |
                grep -E 'warden_auth|warden_crypto|ring_core|ring::|p256|ecdsa|sha256|serde_json|TokenCache|retain|base64|b64url' | head -n 40 || true
            echo
            echo "## inclusive time, top symbols (perf report --children)"
            perf_table "$TMP/$s.perf.data" --children --percent-limit 4 | head -n 40 || true
        } >"$f"
        log "wrote $f"
    done
fi

# ---------------------------------------------------------------- report
CPU_MODEL="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
export CPU_MODEL DURATION CONNECTIONS THREADS WARMUP ROUNDS CPU_BUSY_START LOAD_START LOAD_END LOAD_MAX
export WARDEN_CACHE_ENTRIES="${WARDEN_CACHE_ENTRIES:-}"
export RUN_WAIT LOAD_WAITED LOAD_GAVE_UP QUIET_WAITED QUIET_GAVE_UP QUIET_BUSY FOREIGN_MAX RETRIES STARTED_AT FRESH_TOKENS FRESH_WARMUP_TOKENS TOKEN_BYTES
export WRK_VERSION="$(wrk -v 2>&1 | sed -n 1p | sed "s/ *Copyright.*//" || true)"
export KERNEL="$(uname -sr)" NPROC="$(nproc)"
export UPSTREAM_VERSION="$(nginx -v 2>&1 | sed -n 1p)"
export WARDEN_VERSION="${VERSIONS[warden]:-}" HAPROXY_VERSION="${VERSIONS[haproxy]:-}"
export OPENSSL_VERSION="$(openssl version 2>/dev/null || true)"
export REFUSALS_WARDEN="${REFUSALS[warden-jwt-repeated]:-${REFUSALS[warden-jwt-fresh]:-}}"
export REFUSALS_HAPROXY="${REFUSALS[haproxy-jwt-repeated]:-${REFUSALS[haproxy-jwt-fresh]:-}}"
python3 - "$RESULTS_TSV" "$RESULTS_DIR/jwt-latest.json" "$RESULTS_DIR/jwt-latest.md" <<'PY'
import json, os, statistics, sys, datetime

tsv, json_path, md_path = sys.argv[1:4]
env = os.environ
order = ["warden-plain", "warden-jwt-repeated", "warden-jwt-fresh",
         "haproxy-plain", "haproxy-jwt-repeated", "haproxy-jwt-fresh"]
runs = {}
discarded = []
for line in open(tsv):
    s, rnd, rps, p50, p99, reqs, sockerr, wrapped, foreign, attempt, kept, proxy_us = line.rstrip("\n").split("\t")
    run = {"round": int(rnd), "requests_per_sec": float(rps), "p50_ms": float(p50),
           "p99_ms": float(p99), "requests": int(reqs), "proxy_cpu_us_per_request": float(proxy_us),
           "socket_errors": int(sockerr),
           "fresh_tokens_reused": int(wrapped), "other_processes_cpu_pct": float(foreign), "attempt": int(attempt)}
    if kept == "1":
        runs.setdefault(s, []).append(run)
    else:
        discarded.append(dict(run, scenario=s))
rows = []
for s in order:
    if s not in runs:
        continue
    rs = sorted(runs[s], key=lambda x: x["round"])
    rows.append({
        "scenario": s,
        "requests_per_sec": round(statistics.median(x["requests_per_sec"] for x in rs), 1),
        "p50_ms": round(statistics.median(x["p50_ms"] for x in rs), 3),
        "p99_ms": round(statistics.median(x["p99_ms"] for x in rs), 3),
        "proxy_cpu_us_per_request": round(statistics.median(x["proxy_cpu_us_per_request"] for x in rs), 1),
        "non_200": 0,
        "socket_errors": sum(x["socket_errors"] for x in rs),
        "rounds": rs,
    })
by = {r["scenario"]: r for r in rows}

def ratio(a, b, target, what):
    if a not in by or b not in by:
        return None
    va, vb = by[a]["requests_per_sec"], by[b]["requests_per_sec"]
    ra = {x["round"]: x["requests_per_sec"] for x in by[a]["rounds"]}
    rb = {x["round"]: x["requests_per_sec"] for x in by[b]["rounds"]}
    per_round = [round(ra[k] / rb[k], 3) for k in sorted(ra) if k in rb and rb[k]]
    v = round(va / vb, 3) if vb else None
    return {"ratio": "%s / %s" % (a, b), "what": what, "value": v, "target": target,
            "met": (v is not None and v >= target), "per_round": per_round,
            "p99_ratio": round(by[a]["p99_ms"] / by[b]["p99_ms"], 3) if by[b]["p99_ms"] else None,
            # b's CPU per request / a's: how many of a's requests fit in the CPU time of one of b's
            "cpu_per_request_ratio": (round(by[b]["proxy_cpu_us_per_request"] / by[a]["proxy_cpu_us_per_request"], 3)
                                      if by[a]["proxy_cpu_us_per_request"] else None)}

ratios = [r for r in [
    ratio("warden-jwt-repeated", "haproxy-jwt-repeated", 5.0, "repeated token: Warden vs HAProxy"),
    ratio("warden-jwt-repeated", "warden-plain", 0.85, "repeated token: cost of JWT auth in Warden"),
    ratio("warden-jwt-fresh", "haproxy-jwt-fresh", 1.0, "fresh tokens: Warden vs HAProxy"),
] if r]
info = [r for r in [
    ratio("haproxy-jwt-repeated", "haproxy-plain", 0, "cost of jwt_verify in HAProxy"),
    ratio("warden-jwt-fresh", "warden-plain", 0, "fresh tokens: cost of JWT auth in Warden"),
    ratio("warden-plain", "haproxy-plain", 0, "plain proxying: Warden vs HAProxy"),
] if r]
for r in info:
    r.pop("target"); r.pop("met")

load_start, load_end = env["LOAD_START"], env["LOAD_END"]
meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "started": env["STARTED_AT"],
    "machine": {"cpus": int(env["NPROC"]), "cpu_model": env.get("CPU_MODEL", ""), "kernel": env["KERNEL"],
                "loadavg_start": load_start, "loadavg_end": load_end,
                "waited_for_load_s": int(env["LOAD_WAITED"]), "load_max": float(env["LOAD_MAX"]),
                "load_wait_gave_up": env["LOAD_GAVE_UP"] == "1",
                "cpu_busy_pct_before_run": int(env["CPU_BUSY_START"]),
                "quiet_wait_before_runs_s": int(env["QUIET_WAITED"]), "runs_started_busy": int(env["QUIET_GAVE_UP"]),
                "run_rules": "wait for < %s%% CPU busy before each run; repeat a run (at most %s times) when other "
                             "processes took > %s%% of all CPU time during it" % (env["QUIET_BUSY"], env["RETRIES"], env["FOREIGN_MAX"]),
                "note": "wrk (2 threads), the upstream nginx (1 worker) and the proxy (2 threads) share all the CPUs"},
    "load": {"tool": env["WRK_VERSION"], "script": "bench/jwt/wrk.lua (request() and response() for every scenario)",
             "threads": int(env["THREADS"]), "connections": int(env["CONNECTIONS"]),
             "duration_s": int(env["DURATION"]), "warmup_s": int(env["WARMUP"]), "rounds": int(env["ROUNDS"]),
             "figures": "median over rounds", "url": "http://127.0.0.1:18080/bench",
             "fresh_tokens_per_run": int(env["FRESH_TOKENS"]), "fresh_warmup_tokens": int(env["FRESH_WARMUP_TOKENS"])},
    "warden_token_cache_max_entries": int(env["WARDEN_CACHE_ENTRIES"]) if env.get("WARDEN_CACHE_ENTRIES") else "default (100000)",
    "token": {"alg": "ES256 (P-256), new key each round", "bytes": int(env.get("TOKEN_BYTES") or 0),
              "claims": "iss=https://issuer.bench aud=api sub scope='read write' iat exp=now+3600 jti"},
    "versions": {"warden": env.get("WARDEN_VERSION", ""), "haproxy": env.get("HAPROXY_VERSION", ""),
                 "openssl": env.get("OPENSSL_VERSION", ""), "upstream": env["UPSTREAM_VERSION"]},
    "refusal_checks": {"warden": env.get("REFUSALS_WARDEN", ""), "haproxy": env.get("REFUSALS_HAPROXY", "")},
}
doc = dict(meta, results=rows, targets=ratios, other_ratios=info, discarded_runs=discarded)
with open(json_path, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")

def fmt(x, nd=1):
    return "n/a" if x is None else ("{:,.%df}" % nd).format(x)

head = ["scenario", "req/s", "p50 ms", "p99 ms", "proxy CPU us/req", "req/s per round", "other CPU % per round"]
table = [[r["scenario"], fmt(r["requests_per_sec"], 0), fmt(r["p50_ms"], 2), fmt(r["p99_ms"], 2),
          fmt(r["proxy_cpu_us_per_request"], 1),
          " / ".join(fmt(x["requests_per_sec"], 0) for x in r["rounds"]),
          " / ".join(fmt(x["other_processes_cpu_pct"], 1) for x in r["rounds"])] for r in rows]
rhead = ["ratio (req/s)", "value", "target", "met", "per round", "p99 ratio", "inverse CPU/req ratio"]
rtable = [[r["ratio"], fmt(r["value"], 2), ">= %g" % r["target"], "yes" if r["met"] else "NO",
           " / ".join(fmt(x, 2) for x in r["per_round"]), fmt(r["p99_ratio"], 2), fmt(r["cpu_per_request_ratio"], 2)]
          for r in ratios]
itable = [[r["ratio"], fmt(r["value"], 2), "", "", " / ".join(fmt(x, 2) for x in r["per_round"]),
           fmt(r["p99_ratio"], 2), fmt(r["cpu_per_request_ratio"], 2)] for r in info]

def text_table(h, rs):
    w = [max(len(str(c)) for c in col) for col in zip(h, *rs)]
    line = lambda cells: "  ".join(str(c).rjust(w[i]) if i else str(c).ljust(w[i]) for i, c in enumerate(cells))
    return "\n".join([line(h), line(["-" * x for x in w])] + [line(r) for r in rs])

def md_table(h, rs):
    out = ["| " + " | ".join(h) + " |", "|" + "|".join(["---"] + ["---:"] * (len(h) - 1)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rs]
    return "\n".join(out)

notes = []
m = meta["machine"]
if env.get("WARDEN_CACHE_ENTRIES"):
    notes.append("diagnostic run: Warden's auth.cache.max_entries set to %s (not the default 100000)" % env["WARDEN_CACHE_ENTRIES"])
if m["load_wait_gave_up"]:
    notes.append("the load average did not drop below %g within the wait; figures taken on a busy machine" % m["load_max"])
if m["cpu_busy_pct_before_run"] > 10:
    notes.append("the CPUs were %d%% busy just before the run" % m["cpu_busy_pct_before_run"])
if discarded:
    notes.append("%d run(s) discarded and repeated because other processes took more than %s%% of the CPUs: %s" % (
        len(discarded), env["FOREIGN_MAX"], ", ".join("%s round %d (%.0f%%)" % (d["scenario"], d["round"], d["other_processes_cpu_pct"]) for d in discarded)))
if m["runs_started_busy"]:
    notes.append("%d run(s) started with the CPUs still busy after waiting %s s" % (m["runs_started_busy"], env.get("RUN_WAIT", "?")))
for r in rows:
    busy = [x for x in r["rounds"] if x["other_processes_cpu_pct"] > float(env["FOREIGN_MAX"])]
    if busy:
        notes.append("%s: %d kept run(s) disturbed by other processes (%s%% of the CPUs) after all retries" % (
            r["scenario"], len(busy), ", ".join("%.0f" % x["other_processes_cpu_pct"] for x in busy)))
    if r["socket_errors"]:
        notes.append("%s: %d socket errors" % (r["scenario"], r["socket_errors"]))
    reused = sum(x["fresh_tokens_reused"] for x in r["rounds"])
    if reused:
        notes.append("%s: %d requests reused a fresh token (a wrk thread ran past its slice; HAProxy keeps no "
                     "verified-token cache, so this does not change its figures)" % (r["scenario"], reused))

summary = ("load: %s, -t%d -c%d -d%ds (warm-up %ds), median of %d interleaved rounds; every response checked (all 200). "
           "Load average at start %s, at end %s." % (meta["load"]["tool"], meta["load"]["threads"], meta["load"]["connections"],
           meta["load"]["duration_s"], meta["load"]["warmup_s"], meta["load"]["rounds"], load_start, load_end))
print()
print(text_table(head, table))
print()
print(text_table(rhead, rtable + itable))
print()
print(summary)
print("machine: %d CPUs (%s), %s; wrk, upstream and proxy share them" % (m["cpus"], m["cpu_model"], m["kernel"]))
for k, v in meta["versions"].items():
    if v:
        print("%-8s %s" % (k, v))
for k, v in meta["refusal_checks"].items():
    if v:
        print("%s refused (status per bad token): %s" % (k, v))
for n in notes:
    print("WARNING: " + n)

with open(md_path, "w") as f:
    f.write("# JWT benchmark: Warden vs HAProxy jwt_verify, %s\n\n" % meta["date"])
    f.write("Machine: %d CPUs (%s), %s. wrk, the upstream nginx and the proxy share these CPUs. "
            "Load average (1/5/15 min) at start %s, at end %s.\n\n" % (m["cpus"], m["cpu_model"], m["kernel"], load_start, load_end))
    f.write("Load: `wrk -t%d -c%d -d%ds --latency -s bench/jwt/wrk.lua http://127.0.0.1:18080/bench` after a %d s warm-up; "
            "medians of %d rounds, scenarios interleaved with the order rotated each round. Token: ES256, %d bytes, "
            "new key each round. Fresh runs: %d distinct tokens available per run.\n\n" % (
        meta["load"]["threads"], meta["load"]["connections"], meta["load"]["duration_s"], meta["load"]["warmup_s"],
        meta["load"]["rounds"], meta["token"]["bytes"], meta["load"]["fresh_tokens_per_run"]))
    f.write(md_table(head, table) + "\n\n")
    f.write(md_table(rhead, rtable + itable) + "\n\n")
    f.write("Versions:\n\n")
    for k, v in meta["versions"].items():
        if v:
            f.write("- %s: %s\n" % (k, v))
    f.write("- load generator: %s\n" % meta["load"]["tool"])
    for k, v in meta["refusal_checks"].items():
        if v:
            f.write("\n%s refused every bad token (status per case): %s\n" % (k, v))
    for n in notes:
        f.write("\n**Warning:** %s\n" % n)
print("\nwrote %s and %s" % (json_path, md_path))
PY
