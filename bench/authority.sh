#!/usr/bin/env bash
# Token service benchmark: tokens issued per second and introspections per second, on
# SQLite and on PostgreSQL, at 32 concurrent clients.
#
#   bench/authority.sh                               # defaults (~9 min after the build, plus waiting for a quiet machine)
#   ONLY=sqlite ROUNDS=1 DURATION=5 bench/authority.sh   # quick look
#   WARDEN_BIN=target/release/warden bench/authority.sh  # use this binary, skip the build
#
# Six scenarios, interleaved across ROUNDS rounds with the order rotated each round; every
# run starts a fresh `warden serve` (authority only) on a fresh store (a new SQLite file, or a
# new PostgreSQL schema through `?options=-csearch_path%3D<schema>`), creates the client
# `bench` through the admin API (`POST /admin/clients`, scopes ["read"], audiences ["api"],
# client_secret_basic, introspect allowed) and checks one token and one introspection by hand,
# then loads it with
#
#   wrk -t2 -c32 -d10s --latency -s bench/authority/wrk.lua <URL> -- <mode> ...
#
#   sqlite-token          POST /oauth2/token grant_type=client_credentials, client_secret_basic,
#                         ES256 (the default signing key); SQLite store
#   sqlite-introspect     POST /oauth2/introspect token=<an active token>, client_secret_basic
#   sqlite-introspect-fresh  the same, but every request carries a token introspected for the
#                         first time (see "Fresh tokens" below)
#   postgres-token        the same on PostgreSQL (PG_URL)
#   postgres-introspect
#   postgres-introspect-fresh
#
# Fresh tokens. The authority caches introspected tokens (token_cache.rs) and "not revoked"
# answers for 1 s (revocation.rs), so `*-introspect`, one token over and over, is the caches'
# best case. `*-introspect-fresh` measures the miss path (signature check, revocation store
# read, cache insert): on the run's own authority, before the warm-up, a wrk "capture" run of
# the token endpoint (wrk.lua mode `capture`, -t$THREADS -c$CONNECTIONS) writes the access_token
# of each response to a per-thread file until FRESH_TOKENS + FRESH_WARMUP_TOKENS are collected
# (then wrk is stopped with SIGINT); the files are concatenated and checked (line count, all
# distinct). Lines 1..FRESH_TOKENS are for the measured run, the lines after them for the
# warm-up, so no measured token has been introspected before. In both, each wrk thread walks its
# own slice (COUNT / THREADS lines, wrk.lua mode `introspect-fresh`) and counts requests past
# the end of its slice ("wrapped", a token sent twice): a measured run that wraps fails (raise
# FRESH_TOKENS), a warm-up that wraps is only logged. Tokens live 5 minutes (the default
# token_lifetime); capture, warm-up and run take well under that, and every answer must say
# "active":true anyway. The capture issues the tokens, so the store also holds that many more
# issued tokens than in the repeated runs.
#
# wrk.lua checks every response: a token run counts only 200s carrying an access_token, an
# introspection run only 200s saying "active":true; a single other response (a 401, a 429 from
# the failed-authentication throttle, an inactive token) fails the run.
#
# Before measuring, the script waits until the 1-minute load average is below LOAD_MAX
# (polling every 10 s, at most LOAD_WAIT s; then it runs anyway and flags the results), and
# records the load average at the start and the end. Results: a table on stdout,
# bench/results/authority-latest.{json,md}. With PROFILE (see below) it also runs
# `perf record -g` on Warden under load and writes authority-latest.perf-<scenario>.txt.
#
# Environment:
#   ONLY          scenarios, or `sqlite` / `postgres` for the three of a backend (default: all six)
#   DURATION      wrk seconds per measured run (10)   CONNECTIONS  wrk connections (32)
#   THREADS       wrk threads (2)                     WARMUP       warm-up seconds (3)
#   ROUNDS        runs per scenario, interleaved; figures are medians (3)
#   FRESH_TOKENS  distinct tokens captured for each measured fresh run, split between the wrk
#                 threads (400000); FRESH_WARMUP_TOKENS further ones for its warm-up (60000)
#   CAPTURE_MAX   give up capturing after this many seconds (180)
#   PG_URL        PostgreSQL server (postgres://postgres@127.0.0.1:5432/test); no password in
#                 it (use PGPASSWORD). Each run gets a schema warden_bench_<pid>_<n>, dropped after.
#   LOAD_MAX      wait until the 1-min load average is below this (0.7)
#   LOAD_WAIT     give up waiting after this many seconds and run anyway, flagged (900)
#   PROFILE       auto: profile the SQLite scenarios that miss their target (default);
#                 1: profile all selected scenarios; 0: never
#   PROFILE_SECONDS  length of each perf record (10)
#   AUDIT_ISSUANCE  [authority.audit] issuance: every (the default), sampled or aggregated. Each
#                 run logs the audit rows and store bytes its measured run added ("audit growth"),
#                 and the results table gets them as columns.
#   WARDEN_BIN    warden binary (default: cargo build --release -p warden)
#   RESULTS_DIR   where to write results (bench/results)
#   KEEP_TMP=1    keep the temp dir (configs, stores, logs, raw wrk output)
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
export LC_ALL=C

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"

DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
WARMUP="${WARMUP:-3}"
ROUNDS="${ROUNDS:-3}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
LOAD_MAX="${LOAD_MAX:-0.7}"
LOAD_WAIT="${LOAD_WAIT:-900}"
PROFILE="${PROFILE:-auto}"
PROFILE_SECONDS="${PROFILE_SECONDS:-10}"
AUDIT_ISSUANCE="${AUDIT_ISSUANCE:-every}"
case $AUDIT_ISSUANCE in every | sampled | aggregated) ;; *) echo "AUDIT_ISSUANCE must be every, sampled or aggregated" >&2; exit 1 ;; esac
FRESH_TOKENS="${FRESH_TOKENS:-400000}"
FRESH_WARMUP_TOKENS="${FRESH_WARMUP_TOKENS:-60000}"
CAPTURE_MAX="${CAPTURE_MAX:-180}"
ALL_SCENARIOS="sqlite-token sqlite-introspect sqlite-introspect-fresh postgres-token postgres-introspect postgres-introspect-fresh"
ONLY="${ONLY:-$ALL_SCENARIOS}"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
# Targets (issue 5, SQLite, this 2-core machine) and published references.
TARGET_TOKENS=5000
TARGET_INTROSPECT=20000
HOST=127.0.0.1
AUTH_PORT=18200
LISTENER_PORT=18280 # the config needs one gateway listener; nothing is sent to it
BASE="http://$HOST:$AUTH_PORT"
LUA="$BENCH_DIR/authority/wrk.lua"

log() { printf '[authority.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# Shared helpers: stop_pid, stop, run_fg, port_busy, load_below, uses, nginx_temp_paths.
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------- selection
select_scenarios "$ALL_SCENARIOS" "token introspect introspect-fresh"

for v in DURATION CONNECTIONS THREADS WARMUP ROUNDS LOAD_WAIT PROFILE_SECONDS FRESH_TOKENS FRESH_WARMUP_TOKENS CAPTURE_MAX; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
[[ $LOAD_MAX =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "LOAD_MAX must be a number, got '$LOAD_MAX'"
[[ $PROFILE == auto || $PROFILE == 0 || $PROFILE == 1 ]] || die "PROFILE must be auto, 0 or 1"
((ROUNDS >= 1 && DURATION >= 1)) || die "ROUNDS and DURATION must be at least 1"
((THREADS >= 1 && CONNECTIONS >= THREADS)) || die "need THREADS >= 1 and CONNECTIONS >= THREADS"
((FRESH_TOKENS >= THREADS && FRESH_WARMUP_TOKENS >= THREADS)) || die "FRESH_TOKENS and FRESH_WARMUP_TOKENS must be at least THREADS"
((CAPTURE_MAX >= 1)) || die "CAPTURE_MAX must be at least 1"
if uses postgres; then
    pg_userinfo="${PG_URL#*://}"
    pg_userinfo="${pg_userinfo%%@*}"
    [[ $PG_URL == *@* && $pg_userinfo == *:* ]] && die "PG_URL must not hold a password (set PGPASSWORD)"
    [[ $PG_URL == *\?* ]] && die "PG_URL must have no query string (the script adds ?options=-csearch_path...)"
fi

# ---------------------------------------------------------------- tools
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v base64 >/dev/null 2>&1 || need+=(coreutils)
if uses postgres; then command -v psql >/dev/null 2>&1 || need+=(postgresql-client); fi
if [[ $PROFILE != 0 ]]; then command -v perf >/dev/null 2>&1 || need+=(linux-perf); fi
if ((${#need[@]})); then
    log "installing: ${need[*]}"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi

# ---------------------------------------------------------------- processes
TMP="$(mktemp -d /tmp/warden-authority-bench.XXXXXX)"
declare -A PIDS=()
SCHEMAS=()
SCHEMA_N=0

psql_q() { psql "$PG_URL" -X -q -v ON_ERROR_STOP=1 -At "$@"; }

drop_schema() { # drop_schema NAME
    psql_q -c "DROP SCHEMA IF EXISTS $1 CASCADE" >/dev/null 2>&1 || log "WARNING: could not drop schema $1"
}

cleanup() {
    local rc=$? name s
    trap - EXIT INT TERM
    for name in "${!PIDS[@]}"; do stop "$name"; done
    for s in "${SCHEMAS[@]}"; do drop_schema "$s"; done
    if [[ ${KEEP_TMP:-0} == 1 || $rc -ne 0 ]]; then
        log "logs, configs and stores kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

proc_ticks() { # utime + stime of PID, in clock ticks
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
CLK_TCK="$(getconf CLK_TCK)"

# ---------------------------------------------------------------- authority
ADMIN_TOKEN="bench-admin-$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')"

write_conf() { # write_conf DIR STORAGE: an authority-only config (plus the one required listener)
    local d=$1 storage=$2
    head -c 32 /dev/urandom >"$d/kek"
    printf '%s\n' "$ADMIN_TOKEN" >"$d/admin.secret"
    chmod 600 "$d/kek" "$d/admin.secret"
    cat >"$d/warden.toml" <<EOF
# Authority only. The config loader needs one gateway listener; it has no routes, and the
# benchmark sends nothing to it.
[admin]
enabled = false

[access_log]
enabled = false

[reload]
watch = false

[[listeners]]
name = "unused"
address = "$HOST:$LISTENER_PORT"

[authority]
enabled = true
listen = "$HOST:$AUTH_PORT"
data_dir = "$d"
storage = "$storage"
key_encryption_key = "file:$d/kek"
admin_token = "file:$d/admin.secret"
issuer = "$BASE"

[authority.audit]
issuance = "$AUDIT_ISSUANCE"
# Everything else at its defaults: ES256, 5-minute tokens, failed_auth 10/client and
# 30/address per minute (only failures count; the run fails on any 429 anyway).
EOF
}

start_authority() { # start_authority SCENARIO TAG: fresh store and process; sets RUN_DIR
    local s=$1 tag=$2 storage schema resp secret tok hdr body
    RUN_DIR="$TMP/$tag"
    mkdir -p "$RUN_DIR"
    if [[ $s == postgres-* ]]; then
        SCHEMA_N=$((SCHEMA_N + 1))
        schema="warden_bench_$$_$SCHEMA_N"
        psql_q -c "CREATE SCHEMA $schema" >/dev/null || die "cannot create schema $schema on $PG_URL"
        SCHEMAS+=("$schema")
        CUR_SCHEMA=$schema
        storage="$PG_URL?options=-csearch_path%3D$schema"
    else
        CUR_SCHEMA=""
        storage="$RUN_DIR/authority.db"
    fi
    write_conf "$RUN_DIR" "$storage"
    "$WARDEN_BIN" check --config "$RUN_DIR/warden.toml" >"$RUN_DIR/check.out" 2>&1 ||
        { cat "$RUN_DIR/check.out" >&2; die "warden check refuses the generated config"; }
    start warden "$WARDEN_BIN" serve --allow-root --config "$RUN_DIR/warden.toml"
    wait_http warden "$BASE/.well-known/oauth-authorization-server" 60

    resp=$(curl -fsS -X POST -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \
        -d '{"client_id":"bench","scopes":["read"],"audiences":["api"],"introspect":true}' "$BASE/admin/clients") ||
        die "$s: POST /admin/clients failed"
    secret=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["client_secret"])' <<<"$resp") ||
        die "$s: no client_secret in the admin API's answer"
    # client_secret_basic: base64(form-encoded id ":" form-encoded secret); the generated
    # secret is base64url, which needs no form-encoding.
    [[ $secret =~ ^[A-Za-z0-9_-]+$ ]] || die "$s: unexpected characters in the client secret"
    printf 'Basic %s\n' "$(printf 'bench:%s' "$secret" | base64 -w0)" >"$RUN_DIR/auth.txt"

    # One token by hand: 200, ES256, typ at+jwt.
    resp=$(curl -fsS -H "Authorization: $(cat "$RUN_DIR/auth.txt")" -d grant_type=client_credentials "$BASE/oauth2/token") ||
        die "$s: the token request by hand failed"
    tok=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])' <<<"$resp")
    hdr=$(python3 -c 'import base64, json, sys; h = sys.argv[1].split(".")[0]; h += "=" * (-len(h) % 4)
d = json.loads(base64.urlsafe_b64decode(h)); print(d.get("alg"), d.get("typ"))' "$tok")
    [[ $hdr == "ES256 at+jwt" ]] || die "$s: token header is '$hdr', expected ES256 at+jwt"
    printf '%s\n' "$tok" >"$RUN_DIR/token.txt"
    TOKEN_BYTES=${#tok}
    # One introspection by hand: active.
    body=$(curl -fsS -H "Authorization: $(cat "$RUN_DIR/auth.txt")" --data-urlencode "token=$tok" "$BASE/oauth2/introspect") ||
        die "$s: the introspection by hand failed"
    [[ $body == *'"active":true'* ]] || die "$s: the token is not active at introspection: $body"
    # A wrong secret must be refused (so the figures are not of an authority that lets anyone in).
    local code
    code=$(curl -sS -o /dev/null -w '%{http_code}' -u "bench:wrong-$secret" -d grant_type=client_credentials "$BASE/oauth2/token")
    [[ $code == 401 ]] || die "$s: a wrong secret got $code, expected 401"
}

stop_authority() {
    stop warden
    if [[ -n ${CUR_SCHEMA:-} ]]; then
        drop_schema "$CUR_SCHEMA"
        local keep=() x
        for x in "${SCHEMAS[@]}"; do [[ $x == "$CUR_SCHEMA" ]] || keep+=("$x"); done
        SCHEMAS=("${keep[@]+"${keep[@]}"}")
        CUR_SCHEMA=""
    fi
    [[ ${KEEP_TMP:-0} == 1 ]] || rm -f "$RUN_DIR"/authority.db*
}

# ---------------------------------------------------------------- measurements

wrk_target() { # wrk_target SCENARIO [warmup|measure] -> "URL -- ARGS"
    case $1 in
        *-token) echo "$BASE/oauth2/token -- token $RUN_DIR/auth.txt" ;;
        *-introspect) echo "$BASE/oauth2/introspect -- introspect $RUN_DIR/auth.txt $RUN_DIR/token.txt" ;;
        *-introspect-fresh)
            # Measured runs walk lines 1..FRESH_TOKENS of the captured tokens; the warm-up
            # the lines after them, so no measured token has been introspected before.
            if [[ ${2:-measure} == warmup ]]; then
                echo "$BASE/oauth2/introspect -- introspect-fresh $RUN_DIR/auth.txt $RUN_DIR/fresh.txt $((FRESH_TOKENS + 1)) $FRESH_WARMUP_TOKENS $THREADS"
            else
                echo "$BASE/oauth2/introspect -- introspect-fresh $RUN_DIR/auth.txt $RUN_DIR/fresh.txt 1 $FRESH_TOKENS $THREADS"
            fi
            ;;
    esac
}

capture_tokens() { # capture_tokens SCENARIO: FRESH_TOKENS + FRESH_WARMUP_TOKENS distinct active tokens in $RUN_DIR/fresh.txt
    local s=$1 total=$((FRESH_TOKENS + FRESH_WARMUP_TOKENS)) per prefix="$RUN_DIR/capture" i t0 all n u
    per=$(((total + THREADS - 1) / THREADS))
    rm -f "$prefix".* "$RUN_DIR/fresh.txt"
    log "$s: capturing $total tokens ($per per wrk thread) from $BASE/oauth2/token"
    t0=$(date +%s.%N)
    start capture wrk -t"$THREADS" -c"$CONNECTIONS" -d"${CAPTURE_MAX}s" -s "$LUA" "$BASE/oauth2/token" -- \
        capture "$RUN_DIR/auth.txt" "$prefix" "$per"
    while :; do
        all=1
        for ((i = 1; i <= THREADS; i++)); do [[ -e $prefix.$i.done ]] || { all=0; break; }; done
        ((all)) && break
        kill -0 "${PIDS[capture]}" 2>/dev/null || break
        sleep 0.2
    done
    # Every thread has its quota (or wrk ended at CAPTURE_MAX): wrk runs until -d, so interrupt
    # it; on SIGINT it stops and prints its summary, done() included.
    kill -INT "${PIDS[capture]}" 2>/dev/null || true
    wait "${PIDS[capture]}" 2>/dev/null || true
    unset "PIDS[capture]"
    CAPTURE_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    mv "$TMP/capture.out" "$RUN_DIR/capture.wrk"
    check_lua "$s (capture)" "$RUN_DIR/capture.wrk"
    for ((i = 1; i <= THREADS; i++)); do
        [[ -e $prefix.$i.done ]] || die "$s: wrk thread $i did not capture its $per tokens within CAPTURE_MAX=${CAPTURE_MAX} s ($(wc -l <"$prefix.$i" 2>/dev/null || echo 0) lines)"
        cat "$prefix.$i"
    done >"$RUN_DIR/fresh.txt"
    n=$(wc -l <"$RUN_DIR/fresh.txt")
    ((n >= total)) || die "$s: captured $n tokens, need $total"
    u=$(sort -u "$RUN_DIR/fresh.txt" | wc -l)
    ((u == n)) || die "$s: only $u of the $n captured tokens are distinct"
    grep -qvE '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' "$RUN_DIR/fresh.txt" && die "$s: a captured line is not a JWT"
    rm -f "$prefix".*
    CAPTURED=$n
    log "$s: $n distinct tokens in $CAPTURE_S s ($(awk -v n="$n" -v t="$CAPTURE_S" 'BEGIN { printf "%.0f", (t > 0 ? n / t : 0) }')/s, capture included)"
}

check_lua() { # check_lua NAME OUTFILE: fail on any bad response; sets LUA_WRAPPED LUA_SENT
    local name=$1 out=$2 line r b fb
    line=$(grep '^AUTHBENCH ' "$out" | tail -n 1) || die "$name: no AUTHBENCH line in wrk output ($out)"
    r=$(sed -n 's/.* responses=\([0-9]*\).*/\1/p' <<<"$line")
    b=$(sed -n 's/.* bad=\([0-9]*\).*/\1/p' <<<"$line")
    fb=$(sed -n 's/.* first_bad_status=\([0-9]*\).*/\1/p' <<<"$line")
    LUA_WRAPPED=$(sed -n 's/.* wrapped=\([0-9]*\).*/\1/p' <<<"$line")
    LUA_SENT=$(sed -n 's/.* sent=\([0-9]*\).*/\1/p' <<<"$line")
    ((r > 0)) || die "$name: wrk got no responses"
    if ((b != 0)); then
        cat "$out" >&2
        tail -n 20 "$TMP/warden.out" >&2 || true
        die "$name: $b of $r responses were bad (first: $fb; 1 = a 200 without access_token / active:true); the figure would be worthless"
    fi
}

audit_size() { # audit_size -> "ROWS BYTES": audit rows and store bytes (SQLite: files; PostgreSQL: the audit table)
    if [[ -n ${CUR_SCHEMA:-} ]]; then
        psql_q -F' ' -c "SELECT COUNT(*), pg_total_relation_size('$CUR_SCHEMA.audit_log') FROM $CUR_SCHEMA.audit_log"
    else
        python3 - "$RUN_DIR/authority.db" <<'PY'
import os, sqlite3, sys
db = sys.argv[1]
c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
rows = c.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
size = sum(os.path.getsize(db + s) for s in ("", "-wal") if os.path.exists(db + s))
print(rows, size)
PY
    fi
}

run_wrk() { # run_wrk SCENARIO ROUND -> RPS P50 P99 REQS SOCKERR CPU_US BUSY AUDIT_ROWS AUDIT_BYTES
    local s=$1 r=$2 out="$TMP/$1.r$2.wrk" tgt t0 t1 c0 c1
    [[ $s == *-fresh ]] && capture_tokens "$s"
    read -r -a tgt <<<"$(wrk_target "$s" warmup)"
    log "$s: warm-up ${WARMUP}s"
    run_fg "$TMP/$s.r$r.warmup" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$LUA" "${tgt[@]}" ||
        { cat "$TMP/$s.r$r.warmup" >&2; die "wrk warm-up failed for $s"; }
    check_lua "$s (warm-up)" "$TMP/$s.r$r.warmup"
    if [[ $s == *-fresh ]] && ((LUA_WRAPPED > 0)); then
        log "WARNING: $s: the warm-up ran past its $((FRESH_WARMUP_TOKENS / THREADS)) tokens per thread ($LUA_WRAPPED repeats; warm-up only, the measured tokens are others)"
    fi
    read -r -a tgt <<<"$(wrk_target "$s" measure)"
    log "$s: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency -s bench/authority/wrk.lua ${tgt[0]} ${tgt[*]:1}"
    local a0 a1
    a0=$(audit_size)
    t0=$(proc_ticks "${PIDS[warden]}")
    c0=$(cpu_sample)
    run_fg "$out" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$LUA" "${tgt[@]}" ||
        { cat "$out" >&2; die "wrk failed for $s"; }
    c1=$(cpu_sample)
    t1=$(proc_ticks "${PIDS[warden]}")
    a1=$(audit_size)
    AUDIT_ROWS=$((${a1% *} - ${a0% *}))
    AUDIT_BYTES=$((${a1#* } - ${a0#* }))
    sed 's/^/    /' "$out" >&2
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
    ((non2xx == 0)) || die "$s: wrk counted $non2xx non-2xx/3xx responses"
    check_lua "$s" "$out"
    ((SOCKERR == 0)) || log "WARNING: $s: $SOCKERR socket errors"
    # wrk's threads are not balanced, so each has its own slice of FRESH_TOKENS / THREADS
    # tokens; a thread that runs past its slice sends a token twice, which the cache would
    # answer: the figure would no longer be "fresh", so the run fails.
    if [[ $s == *-fresh ]]; then
        ((LUA_WRAPPED == 0)) || die "$s: a wrk thread ran past its $((FRESH_TOKENS / THREADS)) fresh tokens ($LUA_WRAPPED requests reused a token); raise FRESH_TOKENS"
        log "$s: $LUA_SENT requests, each with a token not introspected before (of $FRESH_TOKENS captured for the run)"
    fi
    # Warden's CPU time per request (user + system, all its threads), and how busy the whole
    # machine was (wrk, Warden, PostgreSQL and anything else).
    CPU_US=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" -v n="$REQS" 'BEGIN { printf "%.1f", n ? (b - a) / hz * 1e6 / n : 0 }')
    BUSY=$(busy_between "$c0" "$c1")
    log "$s: $RPS/s, p50 $P50 ms, p99 $P99 ms; Warden CPU ${CPU_US} us/request; machine ${BUSY}% busy"
    log "$s: audit growth during the measured run (issuance = $AUDIT_ISSUANCE): +$AUDIT_ROWS rows, store +$((AUDIT_BYTES / 1024)) KiB"
}

version_of_warden() {
    local v rev
    v=$("$WARDEN_BIN" --version 2>/dev/null | sed -n 1p || true)
    [[ -n $v ]] || v="warden"
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || true)
    echo "$v${rev:+ (git $rev)}"
}

# ---------------------------------------------------------------- build warden
if [[ -z ${WARDEN_BIN:-} ]]; then
    # Another build of the same target waits on cargo's lock ("Blocking waiting for file lock").
    log "building warden (cargo build --release -p warden)"
    (cd "$ROOT" && cargo build --release -p warden)
    WARDEN_BIN="$ROOT/target/release/warden"
fi
[[ -x $WARDEN_BIN ]] || die "warden binary not found or not executable: $WARDEN_BIN"

# ---------------------------------------------------------------- run
for port in $AUTH_PORT $LISTENER_PORT; do
    port_busy "$port" && die "something already listens on $HOST:$port; stop it first"
done
PG_VERSION=""
if uses postgres; then
    PG_VERSION=$(psql_q -c "SHOW server_version" 2>"$TMP/psql.err") ||
        { cat "$TMP/psql.err" >&2; die "cannot reach PostgreSQL at $PG_URL (set PG_URL, or ONLY=sqlite)"; }
    PG_SYNC=$(psql_q -c "SHOW synchronous_commit")
    PG_FSYNC=$(psql_q -c "SHOW fsync")
    log "postgres $PG_VERSION at $PG_URL (synchronous_commit=$PG_SYNC, fsync=$PG_FSYNC)"
fi
mkdir -p "$RESULTS_DIR"
RESULTS_TSV="$TMP/results.tsv"
: >"$RESULTS_TSV"
WARDEN_VERSION="$(version_of_warden)"
log "warden: $WARDEN_VERSION ($WARDEN_BIN)"

# Wait for a quiet machine: wrk, Warden (and PostgreSQL) already share the 2 cores.
LOAD_WAITED=0
LOAD_GAVE_UP=0
if ! load_below "$LOAD_MAX"; then
    log "waiting for the 1-minute load average to drop below $LOAD_MAX (now $(loadavg1); polling every 10 s, at most ${LOAD_WAIT} s)"
    while ! load_below "$LOAD_MAX"; do
        if ((LOAD_WAITED >= LOAD_WAIT)); then
            LOAD_GAVE_UP=1
            log "WARNING: the load average is still $(loadavg1) after ${LOAD_WAIT} s; running anyway (flagged in the results)"
            break
        fi
        sleep 10
        LOAD_WAITED=$((LOAD_WAITED + 10))
        log "  load average $(cut -d' ' -f1-3 /proc/loadavg) after ${LOAD_WAITED} s (want 1-min < $LOAD_MAX); top: $(ps -eo pcpu=,comm= --sort=-pcpu 2>/dev/null | sed -n 1,3p | awk '{ printf "%s %s%%  ", $2, $1 }')"
    done
fi
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
TOP_START="$(ps -eo pcpu=,comm= --sort=-pcpu 2>/dev/null | sed -n 1,5p | awk '{ printf "%s%s %s%%", (NR > 1 ? ", " : ""), $2, $1 }')"
CPU_BUSY_START="$(cpu_busy_pct)"
log "load average at start: $LOAD_START; CPUs ${CPU_BUSY_START}% busy over 2 s; top: $TOP_START"
((CPU_BUSY_START <= 10)) || log "WARNING: the CPUs are ${CPU_BUSY_START}% busy before the run"
STARTED_AT="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

n=${#SCENARIOS[@]}
for ((round = 0; round < ROUNDS; round++)); do
    for ((k = 0; k < n; k++)); do
        s=${SCENARIOS[$(((k + round) % n))]}
        log "=== round $((round + 1))/$ROUNDS: $s"
        start_authority "$s" "$s.r$((round + 1))"
        run_wrk "$s" $((round + 1))
        stop_authority
        printf '%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" $((round + 1)) "$RPS" "$P50" "$P99" "$REQS" "$SOCKERR" \
            "$CPU_US" "$BUSY" "$(loadavg1)" "$AUDIT_ROWS" "$AUDIT_BYTES" >>"$RESULTS_TSV"
        sleep 1
    done
done
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load average at end: $LOAD_END"

# ---------------------------------------------------------------- profile
median_of() { # median_of SCENARIO: median req/s over the rounds
    awk -F'\t' -v s="$1" '$1 == s { print $3 }' "$RESULTS_TSV" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
below() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

TO_PROFILE=()
for s in "${SCENARIOS[@]}"; do
    case $PROFILE:$s in
        1:*) TO_PROFILE+=("$s") ;;
        auto:sqlite-token) below "$(median_of "$s")" "$TARGET_TOKENS" && TO_PROFILE+=("$s") ;;
        auto:sqlite-introspect) below "$(median_of "$s")" "$TARGET_INTROSPECT" && TO_PROFILE+=("$s") ;;
    esac
done

perf_table() { # perf_table DATA ARGS...: perf report --stdio, without comments and padding
    perf report -i "$1" --stdio -g none "${@:2}" 2>/dev/null |
        grep -v -e '^#' -e '^$' | sed -e 's/[[:space:]]*-[[:space:]]*-[[:space:]]*$//' -e 's/[[:space:]]*$//'
}

PROFILED=()
for s in "${TO_PROFILE[@]+"${TO_PROFILE[@]}"}"; do
    log "=== profile: $s (perf record -g, ${PROFILE_SECONDS} s under wrk)"
    start_authority "$s" "$s.profile"
    [[ $s == *-fresh ]] && capture_tokens "$s"
    read -r -a tgt <<<"$(wrk_target "$s" warmup)"
    run_fg "$TMP/$s.profile-warmup" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$LUA" "${tgt[@]}"
    read -r -a tgt <<<"$(wrk_target "$s" measure)"
    start load wrk -t"$THREADS" -c"$CONNECTIONS" -d"$((PROFILE_SECONDS + 3))s" -s "$LUA" "${tgt[@]}"
    sleep 1
    run_fg "$TMP/$s.perf-record" perf record -g -o "$TMP/$s.perf.data" -p "${PIDS[warden]}" -- sleep "$PROFILE_SECONDS" ||
        log "WARNING: perf record failed for $s (see $TMP/$s.perf-record)"
    wait "${PIDS[load]}" 2>/dev/null || true
    unset "PIDS[load]"
    check_lua "$s (profile)" "$TMP/load.out"
    [[ $s == *-fresh ]] && ((LUA_WRAPPED > 0)) && log "WARNING: $s (profile): $LUA_WRAPPED requests reused a token"
    stop_authority
    f="$RESULTS_DIR/authority-latest.perf-$s.txt"
    {
        echo "# perf record -g -p <warden> for ${PROFILE_SECONDS} s during wrk -t$THREADS -c$CONNECTIONS ($s), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "# wrk (profiled run, perf overhead included): $(grep -E '^Requests/sec' "$TMP/load.out" | tr -s ' '); load average $(cut -d' ' -f1-3 /proc/loadavg)"
        echo
        echo "## self time by shared object (perf report --no-children --sort dso)"
        perf_table "$TMP/$s.perf.data" --no-children --sort dso --percent-limit 0.5 || true
        echo
        echo "## self time, top symbols (perf report --no-children --sort symbol)"
        perf_table "$TMP/$s.perf.data" --no-children --sort symbol --percent-limit 0.4 | head -n 70 || true
        echo
        echo "## inclusive time of store, SQLite, crypto, audit, JSON and HTTP symbols (perf report --children)"
        perf_table "$TMP/$s.perf.data" --children --sort symbol --percent-limit 0.3 |
            grep -E 'warden_store|warden_authority|sqlite3|rusqlite|tokio_postgres|spawn_blocking|blocking|ring_core|ring::|ecdsa|nistz256|aes|gcm|sha256|hmac|serde_json|hyper|axum|audit|throttle' | head -n 60 || true
        echo
        echo "## inclusive time, top symbols (perf report --children --sort symbol)"
        perf_table "$TMP/$s.perf.data" --children --sort symbol --percent-limit 2 | head -n 80 || true
        echo
        echo "## perf report --stdio | head -60"
        perf report -i "$TMP/$s.perf.data" --stdio 2>/dev/null | head -n 60 || true
    } >"$f"
    PROFILED+=("$s")
    log "wrote $f"
done

# ---------------------------------------------------------------- report
CPU_MODEL="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
export CPU_MODEL DURATION CONNECTIONS THREADS WARMUP ROUNDS CPU_BUSY_START LOAD_START LOAD_END LOAD_MAX
export LOAD_WAITED LOAD_GAVE_UP STARTED_AT TOP_START TARGET_TOKENS TARGET_INTROSPECT WARDEN_VERSION
export PG_VERSION PG_URL TOKEN_BYTES FRESH_TOKENS FRESH_WARMUP_TOKENS AUDIT_ISSUANCE
export PG_SYNC="${PG_SYNC:-}" PG_FSYNC="${PG_FSYNC:-}"
export PROFILED="${PROFILED[*]+"${PROFILED[*]}"}"
export WRK_VERSION="$(wrk -v 2>&1 | sed -n 1p | sed "s/ *Copyright.*//" || true)"
export KERNEL="$(uname -sr)" NPROC="$(nproc)"
python3 - "$RESULTS_TSV" "$RESULTS_DIR/authority-latest.json" "$RESULTS_DIR/authority-latest.md" <<'PY'
import json, os, statistics, sys, datetime

tsv, json_path, md_path = sys.argv[1:4]
env = os.environ
order = ["sqlite-token", "sqlite-introspect", "sqlite-introspect-fresh",
         "postgres-token", "postgres-introspect", "postgres-introspect-fresh"]
runs = {}
for line in open(tsv):
    s, rnd, rps, p50, p99, reqs, sockerr, cpu_us, busy, load1, arows, abytes = line.rstrip("\n").split("\t")
    runs.setdefault(s, []).append({"round": int(rnd), "per_sec": float(rps), "p50_ms": float(p50),
                                   "p99_ms": float(p99), "requests": int(reqs), "socket_errors": int(sockerr),
                                   "warden_cpu_us_per_request": float(cpu_us), "machine_busy_pct": int(busy),
                                   "loadavg1_after": float(load1), "audit_rows_added": int(arows),
                                   "store_bytes_added": int(abytes)})

targets = {"sqlite-token": int(env["TARGET_TOKENS"]), "sqlite-introspect": int(env["TARGET_INTROSPECT"])}
# Published figures, printed beside ours (other machines, other setups: context, not a race).
references = {
    "token": {"name": "Keycloak sizing guide: 120 client-credential grants/s per vCPU",
              "per_sec": 120 * int(env["NPROC"]), "basis": "%d vCPU x 120/s" % int(env["NPROC"])},
    "introspect": {"name": "Ory Hydra benchmark: ~21,000 introspections/s (in-memory store)",
                   "per_sec": 21000, "basis": "as published"},
}
rows = []
for s in order:
    if s not in runs:
        continue
    rs = sorted(runs[s], key=lambda x: x["round"])
    backend, what = s.split("-", 1)
    med = statistics.median(x["per_sec"] for x in rs)
    r = {
        "scenario": s, "backend": backend, "measure": what,
        "endpoint": "/oauth2/token" if what == "token" else "/oauth2/introspect",
        "tokens": {"token": "issued", "introspect": "one token, repeated (cache hits)",
                   "introspect-fresh": "a token never introspected before, every request (cache misses)"}[what],
        "per_sec": round(med, 1),
        "p50_ms": round(statistics.median(x["p50_ms"] for x in rs), 3),
        "p99_ms": round(statistics.median(x["p99_ms"] for x in rs), 3),
        "warden_cpu_us_per_request": round(statistics.median(x["warden_cpu_us_per_request"] for x in rs), 1),
        "machine_busy_pct": statistics.median(x["machine_busy_pct"] for x in rs),
        "bad_responses": 0,
        "socket_errors": sum(x["socket_errors"] for x in rs),
        "audit_issuance": env["AUDIT_ISSUANCE"],
        "audit_rows_added": statistics.median(x["audit_rows_added"] for x in rs),
        "store_bytes_added": statistics.median(x["store_bytes_added"] for x in rs),
        "rounds": rs,
    }
    t = targets.get(s)
    if t:
        r["target_per_sec"] = t
        r["ratio_to_target"] = round(med / t, 3)
        r["target_met"] = med >= t
    ref = references["token" if what == "token" else "introspect"]
    r["reference"] = ref["name"]
    r["reference_per_sec"] = ref["per_sec"]
    r["ratio_to_reference"] = round(med / ref["per_sec"], 3)
    rows.append(r)

# Fresh tokens beside the repeated one: same rounds, same backend. No target of their own;
# the introspection target is only put beside them for context.
by = {r["scenario"]: r for r in rows}
for r in rows:
    if r["measure"] != "introspect-fresh":
        continue
    rep = by.get(r["backend"] + "-introspect")
    if rep:
        r["repeated_per_sec"] = rep["per_sec"]
        r["fresh_over_repeated"] = round(r["per_sec"] / rep["per_sec"], 3)
        r["repeated_warden_cpu_us_per_request"] = rep["warden_cpu_us_per_request"]
        rr = {x["round"]: x["per_sec"] for x in rep["rounds"]}
        r["fresh_over_repeated_per_round"] = [round(x["per_sec"] / rr[x["round"]], 3)
                                              for x in r["rounds"] if rr.get(x["round"])]
    r["ratio_to_introspect_target_for_context"] = round(r["per_sec"] / int(env["TARGET_INTROSPECT"]), 3)

m = {
    "cpus": int(env["NPROC"]), "cpu_model": env.get("CPU_MODEL", ""), "kernel": env["KERNEL"],
    "loadavg_start": env["LOAD_START"], "loadavg_end": env["LOAD_END"],
    "waited_for_load_s": int(env["LOAD_WAITED"]), "load_max": float(env["LOAD_MAX"]),
    "load_wait_gave_up": env["LOAD_GAVE_UP"] == "1",
    "busiest_processes_at_start": env.get("TOP_START", ""),
    "cpu_busy_pct_before_run": int(env["CPU_BUSY_START"]),
    "note": "wrk (2 threads), Warden (tokio, one worker per CPU) and, for the postgres runs, PostgreSQL share all the CPUs",
}
meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "started": env["STARTED_AT"],
    "machine": m,
    "load": {"tool": env["WRK_VERSION"], "script": "bench/authority/wrk.lua",
             "threads": int(env["THREADS"]), "connections": int(env["CONNECTIONS"]),
             "duration_s": int(env["DURATION"]), "warmup_s": int(env["WARMUP"]), "rounds": int(env["ROUNDS"]),
             "fresh_tokens_per_run": int(env["FRESH_TOKENS"]), "fresh_warmup_tokens": int(env["FRESH_WARMUP_TOKENS"]),
             "figures": "median over rounds; scenarios interleaved, order rotated each round; fresh process and store per run"},
    "requests": {
        "token": "POST /oauth2/token, body grant_type=client_credentials, Authorization: Basic (client_secret_basic); "
                 "default ES256 key; counted good only if 200 with access_token",
        "introspect": "POST /oauth2/introspect, body token=<active ES256 token, %s bytes>, Authorization: Basic; "
                      "counted good only if 200 with \"active\":true" % env.get("TOKEN_BYTES", "?"),
        "introspect-fresh": "as introspect, but every request carries a different token, none introspected before: "
                            "%s tokens captured per run from the run's own token endpoint before the warm-up "
                            "(wrk.lua mode capture), each wrk thread walking its own slice; %s further ones for the "
                            "warm-up; a measured run that reuses a token fails"
                            % (env["FRESH_TOKENS"], env["FRESH_WARMUP_TOKENS"]),
        "client": {"client_id": "bench", "scopes": ["read"], "audiences": ["api"], "auth_method": "client_secret_basic"},
    },
    "stores": {"sqlite": "<tmp>/authority.db (WAL, synchronous=FULL), new file each run",
               "postgres": ("%s, new schema each run (?options=-csearch_path%%3D<schema>); server %s, "
                            "synchronous_commit=%s, fsync=%s" % (env.get("PG_URL", ""), env.get("PG_VERSION", ""),
                                                                 env.get("PG_SYNC", ""), env.get("PG_FSYNC", "")))
                           if env.get("PG_VERSION") else None},
    "versions": {"warden": env["WARDEN_VERSION"], "postgres": env.get("PG_VERSION", "")},
    "profiled": env.get("PROFILED", "").split(),
}
doc = dict(meta, results=rows, targets=targets, references=references)
with open(json_path, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")

def fmt(x, nd=1):
    return "n/a" if x is None else ("{:,.%df}" % nd).format(x)

head = ["store", "measure", "per second", "p50 ms", "p99 ms", "Warden CPU us/req", "target", "vs target",
        "fresh / repeated", "reference", "vs reference", "audit rows/s", "store KiB/s", "per round"]
labels = {"token": "tokens issued", "introspect": "introspections, one token repeated",
          "introspect-fresh": "introspections, fresh tokens"}
table = []
for r in rows:
    table.append([r["backend"], labels[r["measure"]],
                  fmt(r["per_sec"], 0), fmt(r["p50_ms"], 2), fmt(r["p99_ms"], 2), fmt(r["warden_cpu_us_per_request"], 0),
                  (">= " + fmt(r["target_per_sec"], 0)) if "target_per_sec" in r else "-",
                  ("%.2fx %s" % (r["ratio_to_target"], "met" if r["target_met"] else "MISSED")) if "target_per_sec" in r else "-",
                  ("%.2fx" % r["fresh_over_repeated"]) if "fresh_over_repeated" in r else "-",
                  fmt(r["reference_per_sec"], 0), "%.2fx" % r["ratio_to_reference"],
                  fmt(r["audit_rows_added"] / int(env["DURATION"]), 0),
                  fmt(r["store_bytes_added"] / 1024 / int(env["DURATION"]), 0),
                  " / ".join(fmt(x["per_sec"], 0) for x in r["rounds"])])

def text_table(h, rs):
    w = [max(len(str(c)) for c in col) for col in zip(h, *rs)]
    line = lambda cells: "  ".join(str(c).rjust(w[i]) if i > 1 else str(c).ljust(w[i]) for i, c in enumerate(cells))
    return "\n".join([line(h), line(["-" * x for x in w])] + [line(r) for r in rs])

def md_table(h, rs):
    out = ["| " + " | ".join(h) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(h) - 2)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rs]
    return "\n".join(out)

notes = []
if m["load_wait_gave_up"]:
    notes.append("the 1-minute load average did not drop below %g within %d s (start %s; busiest: %s): "
                 "figures taken on a busy machine" % (m["load_max"], m["waited_for_load_s"], m["loadavg_start"],
                                                      m["busiest_processes_at_start"]))
if m["cpu_busy_pct_before_run"] > 10:
    notes.append("the CPUs were %d%% busy just before the run (busiest processes: %s)"
                 % (m["cpu_busy_pct_before_run"], m["busiest_processes_at_start"]))
for r in rows:
    if r["socket_errors"]:
        notes.append("%s: %d socket errors" % (r["scenario"], r["socket_errors"]))

summary = ("load: %s, -t%d -c%d -d%ds (warm-up %ds), median of %d interleaved rounds, fresh process and store per run; "
           "every response checked. Load average (1/5/15) at start %s, at end %s; waited %d s for it." % (
               meta["load"]["tool"], meta["load"]["threads"], meta["load"]["connections"], meta["load"]["duration_s"],
               meta["load"]["warmup_s"], meta["load"]["rounds"], m["loadavg_start"], m["loadavg_end"], m["waited_for_load_s"]))
refs = ("references: %s -> %s/s on this machine's %d vCPUs; %s." % (
    references["token"]["name"], fmt(references["token"]["per_sec"], 0), m["cpus"], references["introspect"]["name"]))
print()
print(text_table(head, table))
print()
print(summary)
print(refs)
fresh_lines = []
for r in rows:
    if r["measure"] == "introspect-fresh":
        fresh_lines.append("%s fresh tokens: %s/s, %s us of Warden CPU each%s; %.2fx the %s/s introspection target "
                           "(context only: the target is for sqlite-introspect)" % (
            r["backend"], fmt(r["per_sec"], 0), fmt(r["warden_cpu_us_per_request"], 0),
            (" (one token repeated: %s/s, %s us; fresh/repeated %.2fx, per round %s)" % (
                fmt(r["repeated_per_sec"], 0), fmt(r["repeated_warden_cpu_us_per_request"], 0), r["fresh_over_repeated"],
                " / ".join("%.2f" % x for x in r["fresh_over_repeated_per_round"]))) if "repeated_per_sec" in r else "",
            r["ratio_to_introspect_target_for_context"], fmt(int(env["TARGET_INTROSPECT"]), 0)))
for l in fresh_lines:
    print(l)
print("machine: %d CPUs (%s), %s; wrk, Warden and PostgreSQL share them" % (m["cpus"], m["cpu_model"], m["kernel"]))
print("warden: %s" % meta["versions"]["warden"])
if meta["stores"]["postgres"]:
    print("postgres: %s" % meta["stores"]["postgres"])
for n in notes:
    print("WARNING: " + n)

with open(md_path, "w") as f:
    f.write("# Token service benchmark, %s\n\n" % meta["date"])
    f.write("Machine: %d CPUs (%s), %s. wrk, Warden and PostgreSQL share these CPUs. "
            "Load average (1/5/15 min) at start %s, at end %s.\n\n" % (m["cpus"], m["cpu_model"], m["kernel"],
                                                                       m["loadavg_start"], m["loadavg_end"]))
    f.write("Load: `wrk -t%d -c%d -d%ds --latency -s bench/authority/wrk.lua <endpoint> -- token|introspect|introspect-fresh ...` "
            "after a %d s warm-up; medians of %d rounds, scenarios interleaved with the order rotated each round, "
            "each run on a fresh `warden serve` with a fresh store. Tokens: `POST /oauth2/token` "
            "`grant_type=client_credentials`, client_secret_basic, ES256. Introspections: `POST /oauth2/introspect` "
            "with an active token, client_secret_basic. Every response checked (200 with `access_token` / "
            "`\"active\":true`).\n\n" % (meta["load"]["threads"], meta["load"]["connections"], meta["load"]["duration_s"],
                                          meta["load"]["warmup_s"], meta["load"]["rounds"]))
    f.write("\"One token repeated\" introspects the same token over and over: after the first request it is answered "
            "from the introspection cache (and the 1 s \"not revoked\" memory), the caches' best case. \"Fresh tokens\" "
            "sends a token never introspected before with every request (signature check, revocation store read, "
            "cache insert): %s tokens captured per run from the run's own token endpoint before its warm-up "
            "(`wrk.lua -- capture`), each wrk thread walking its own slice, the warm-up on %s others; a run that "
            "would send a token twice fails. No target for the fresh figures.\n\n" % (
                fmt(meta["load"]["fresh_tokens_per_run"], 0), fmt(meta["load"]["fresh_warmup_tokens"], 0)))
    f.write("Audit: `[authority.audit] issuance = \"%s\"`; \"audit rows/s\" and \"store KiB/s\" are what the "
            "measured run added to the audit log and the store (SQLite: database + WAL files; PostgreSQL: the "
            "audit_log table), per second of the run.\n\n" % env["AUDIT_ISSUANCE"])
    f.write(md_table(head, table) + "\n\n")
    for l in fresh_lines:
        f.write("- %s.\n" % l)
    if fresh_lines:
        f.write("\n")
    f.write("References (published, other machines; context only): %s; %s (%s).\n\n" % (
        references["introspect"]["name"], references["token"]["name"], references["token"]["basis"]))
    f.write("Versions: Warden %s" % meta["versions"]["warden"])
    if meta["versions"]["postgres"]:
        f.write("; PostgreSQL %s" % meta["versions"]["postgres"])
    f.write("; %s.\n" % meta["load"]["tool"])
    if meta["stores"]["postgres"]:
        f.write("\nPostgreSQL store: %s.\n" % meta["stores"]["postgres"])
    if meta["profiled"]:
        f.write("\nProfiles: %s.\n" % ", ".join("`authority-latest.perf-%s.txt`" % s for s in meta["profiled"]))
    for n in notes:
        f.write("\n**Warning:** %s\n" % n)
print("\nwrote %s and %s" % (json_path, md_path))
PY
