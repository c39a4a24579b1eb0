#!/usr/bin/env bash
# Vault benchmark: KV v2 reads/s and durable writes/s with p99 at 32 concurrent clients, on
# SQLite and on PostgreSQL, every request audited; transit encrypt/s.
#
#   bench/vault.sh                                        # defaults (~4 min after the build)
#   ONLY=sqlite ROUNDS=1 DURATION=5 bench/vault.sh        # quick look
#   WARDEN_BIN=target/release/warden bench/vault.sh       # use this binary, skip the build
#
# Every run starts a fresh `warden serve` (authority only; [authority.seal] mode = "shares")
# on a fresh store (a new SQLite file, or a new PostgreSQL schema through
# `?options=-csearch_path%3D<schema>`), initializes it over the API (PUT sys/init, one share,
# then PUT sys/unseal) and takes the root token sys/init returns. Then, over the API:
#   - a file audit device (PUT sys/audit/bench, type "file") if the vault has `sys/audit`;
#     if the endpoint refuses, the run goes on with the store's hash-chained audit log only
#     (which every request appends to anyway) and the report says so;
#   - KV v2 at secret/ (PUT sys/mounts/secret, type kv, options.version 2), and KEYS secrets
#     secret/data/bench/k<i> for the reads;
#   - for transit-encrypt: PUT sys/mounts/transit (type transit) and a key `bench`; if the
#     vault refuses the mount (no transit engine yet) the scenario is skipped with a note.
# and loads it with
#
#   wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency -s bench/vault/wrk.lua URL -- MODE ...
#
#   kv-read          GET secret/data/bench/k<i>, cycling over the KEYS secrets
#   kv-write         POST secret/data/bench/w<thread>-<n> {"data": {...}}: each a new secret,
#                    acknowledged only once committed (SQLite: WAL, synchronous=FULL);
#                    a read's audit event is committed before the answer, not fsynced
#   transit-encrypt  POST transit/encrypt/bench {"plaintext": ...}
#
# on each backend (ONLY: sqlite, postgres, or scenario names such as sqlite-kv-read). wrk.lua
# checks every response (a 200 with the expected body); a single other answer fails the run.
# Figures are medians over ROUNDS rounds, interleaved with the order rotated each round. The
# store's audit rows added by each measured run are logged (one per request: the reads'
# events are appended too). With PROFILE=1 (or auto: SQLite scenarios missing their target)
# `perf record -g` samples Warden under load; the report goes to
# $RESULTS_DIR/vault-latest.perf-<scenario>.txt.
#
# Environment:
#   ONLY (sqlite,postgres)  DURATION (10)  WARMUP (3)  ROUNDS (3)  CONNECTIONS (32)  THREADS (2)
#   KEYS          secrets read by kv-read (1000)
#   PG_URL        PostgreSQL server (postgres://postgres@127.0.0.1:5432/test), no password in it
#   LOAD_MAX      wait until the 1-min load average is below this (1.0), at most LOAD_WAIT s (600)
#   PROFILE       auto (default), 1 or 0;  PROFILE_SECONDS (8)
#   WARDEN_BIN    warden binary (default: cargo build --release -p warden)
#   RESULTS_DIR   where to write results (bench/results);  KEEP_TMP=1 keeps configs and logs
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
bench_init vault.sh

DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
KEYS="${KEYS:-1000}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
LOAD_MAX="${LOAD_MAX:-1.0}"
LOAD_WAIT="${LOAD_WAIT:-600}"
PROFILE="${PROFILE:-auto}"
PROFILE_SECONDS="${PROFILE_SECONDS:-8}"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
ONLY="${ONLY:-sqlite,postgres}"
HOST=127.0.0.1
PORT=18300
LISTENER_PORT=18380 # the config needs one gateway listener; nothing is sent to it
BASE="http://$HOST:$PORT"
LUA="$BENCH_DIR/vault/wrk.lua"
# Targets (issue 10, SQLite, this 2-core machine).
TARGET_READS=20000
TARGET_WRITES=2000

ALL_SCENARIOS="sqlite-kv-read sqlite-kv-write sqlite-transit-encrypt postgres-kv-read postgres-kv-write postgres-transit-encrypt"
select_scenarios "$ALL_SCENARIOS" "kv-read kv-write transit-encrypt"
for v in DURATION WARMUP ROUNDS CONNECTIONS THREADS KEYS LOAD_WAIT PROFILE_SECONDS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
((ROUNDS >= 1 && DURATION >= 1 && KEYS >= 1)) || die "ROUNDS, DURATION and KEYS must be at least 1"
((THREADS >= 1 && CONNECTIONS >= THREADS)) || die "need THREADS >= 1 and CONNECTIONS >= THREADS"
[[ $PROFILE == auto || $PROFILE == 0 || $PROFILE == 1 ]] || die "PROFILE must be auto, 0 or 1"
if uses postgres; then
    pg_userinfo="${PG_URL#*://}"
    pg_userinfo="${pg_userinfo%%@*}"
    [[ $PG_URL == *@* && $pg_userinfo == *:* ]] && die "PG_URL must not hold a password (set PGPASSWORD)"
    [[ $PG_URL == *\?* ]] && die "PG_URL must have no query string (the script adds ?options=-csearch_path...)"
fi

tools=(wrk:wrk curl:curl python3:python3)
uses postgres && tools+=(psql:postgresql-client)
[[ $PROFILE != 0 ]] && tools+=(perf:linux-perf)
need_tools "${tools[@]}"

if [[ -z ${WARDEN_BIN:-} ]]; then
    log "building warden (release)"
    (cd "$ROOT" && cargo build --release -p warden --locked) >&2
    WARDEN_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/warden"
fi
[[ -x $WARDEN_BIN ]] || die "no warden binary at $WARDEN_BIN"
port_busy "$PORT" && die "$HOST:$PORT is in use"

# ---------------------------------------------------------------- PostgreSQL schemas
SCHEMAS=()
SCHEMA_N=0
CUR_SCHEMA=""
psql_q() { psql "$PG_URL" -X -q -v ON_ERROR_STOP=1 -At "$@"; }
drop_schema() { psql_q -c "DROP SCHEMA IF EXISTS $1 CASCADE" >/dev/null 2>&1 || log "WARNING: could not drop schema $1"; }
vault_cleanup() {
    local s
    for s in "${SCHEMAS[@]}"; do drop_schema "$s"; done
    bench_cleanup
}
trap vault_cleanup EXIT

# ---------------------------------------------------------------- the vault
# api METHOD PATH [JSON]: a call with the root token; prints the body, fails on non-2xx.
api() {
    local m=$1 p=$2 body=${3:-}
    curl -fsS -X "$m" -H "X-Vault-Token: ${ROOT_TOKEN:-}" -H 'Content-Type: application/json' \
        ${body:+-d "$body"} "$BASE/v1/$p"
}
api_code() { # api_code METHOD PATH [JSON]: the status only
    local m=$1 p=$2 body=${3:-}
    curl -sS -o "$RUN_DIR/last.out" -w '%{http_code}' -X "$m" -H "X-Vault-Token: ${ROOT_TOKEN:-}" \
        -H 'Content-Type: application/json' ${body:+-d "$body"} "$BASE/v1/$p"
}
json_field() { python3 -c 'import json, sys; v = json.load(sys.stdin)
for k in sys.argv[1].split("."): v = v[int(k)] if isinstance(v, list) else v[k]
print(v)' "$1"; }

declare -A NOTES=()
AUDIT_DEVICE="unknown"

start_vault() { # start_vault BACKEND TAG: fresh store and process, initialized and unsealed
    local backend=$1 tag=$2 storage resp key code
    RUN_DIR="$TMP/$tag"
    mkdir -p "$RUN_DIR"
    if [[ $backend == postgres ]]; then
        SCHEMA_N=$((SCHEMA_N + 1))
        CUR_SCHEMA="warden_vbench_$$_$SCHEMA_N"
        psql_q -c "CREATE SCHEMA $CUR_SCHEMA" >/dev/null || die "cannot create schema $CUR_SCHEMA on $PG_URL"
        SCHEMAS+=("$CUR_SCHEMA")
        storage="$PG_URL?options=-csearch_path%3D$CUR_SCHEMA"
    else
        CUR_SCHEMA=""
        storage="$RUN_DIR/authority.db"
    fi
    cat >"$RUN_DIR/warden.toml" <<EOF
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
listen = "$HOST:$PORT"
data_dir = "$RUN_DIR"
storage = "$storage"
issuer = "$BASE"
[authority.seal]
mode = "shares"
EOF
    "$WARDEN_BIN" check --config "$RUN_DIR/warden.toml" >"$RUN_DIR/check.out" 2>&1 ||
        { cat "$RUN_DIR/check.out" >&2; die "warden check refuses the generated config"; }
    start warden "$WARDEN_BIN" serve --allow-root --config "$RUN_DIR/warden.toml"
    wait_http warden "$BASE/v1/sys/seal-status" 60
    ROOT_TOKEN=""
    resp=$(api PUT sys/init '{"secret_shares":1,"secret_threshold":1}') || die "sys/init failed"
    ROOT_TOKEN=$(json_field root_token <<<"$resp")
    key=$(json_field keys.0 <<<"$resp")
    resp=$(api PUT sys/unseal "{\"key\":\"$key\"}") || die "sys/unseal failed"
    [[ $(json_field sealed <<<"$resp") == False ]] || die "still sealed after sys/unseal: $resp"
    printf '%s\n' "$ROOT_TOKEN" >"$RUN_DIR/token.txt"
    chmod 600 "$RUN_DIR/token.txt"

    code=$(api_code PUT sys/audit/bench "{\"type\":\"file\",\"options\":{\"file_path\":\"$RUN_DIR/audit.log\"}}")
    if [[ $code == 2* ]]; then
        AUDIT_DEVICE="file audit device on ($RUN_DIR/audit.log) and the store's audit chain"
    else
        AUDIT_DEVICE="store's hash-chained audit log only: PUT sys/audit/bench answered $code ($(head -c 200 "$RUN_DIR/last.out"))"
    fi
    api PUT sys/mounts/secret '{"type":"kv","options":{"version":"2"}}' >/dev/null || die "cannot mount KV v2 at secret/"
    python3 - "$BASE" "$ROOT_TOKEN" "$KEYS" <<'PY' || die "writing the read set failed"
import http.client, json, sys
base, token, keys = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = base.split("//")[1].split(":")
c = http.client.HTTPConnection(host, int(port))
for i in range(keys):
    body = json.dumps({"data": {"value": "value-%d" % i, "owner": "bench"}})
    c.request("POST", "/v1/secret/data/bench/k%d" % i, body, {"X-Vault-Token": token, "Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit("write k%d: %d" % (i, r.status))
PY
    # One read by hand, checked.
    resp=$(api GET secret/data/bench/k7) || die "reading secret/data/bench/k7 failed"
    [[ $(json_field data.data.value <<<"$resp") == value-7 ]] || die "k7 reads back wrong: $resp"
    # A wrong token is refused (so the figures are not of a vault that lets anyone in).
    code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'X-Vault-Token: hvs.wrong' "$BASE/v1/secret/data/bench/k7")
    [[ $code == 403 ]] || die "a wrong token got $code, expected 403"
    TRANSIT_OK=0
    code=$(api_code PUT sys/mounts/transit '{"type":"transit"}')
    if [[ $code == 2* ]] && api POST transit/keys/bench '{}' >/dev/null 2>&1; then
        TRANSIT_OK=1
    else
        NOTES[transit-encrypt]="skipped: PUT sys/mounts/transit answered $code ($(head -c 200 "$RUN_DIR/last.out"))"
    fi
}

stop_vault() {
    stop warden
    if [[ -n $CUR_SCHEMA ]]; then
        drop_schema "$CUR_SCHEMA"
        local keep=() x
        for x in "${SCHEMAS[@]}"; do [[ $x == "$CUR_SCHEMA" ]] || keep+=("$x"); done
        SCHEMAS=("${keep[@]+"${keep[@]}"}")
        CUR_SCHEMA=""
    fi
    [[ ${KEEP_TMP:-0} == 1 ]] || rm -f "$RUN_DIR"/authority.db* "$RUN_DIR"/audit.log
}

audit_rows() { # the store's audit rows so far (PostgreSQL: its schema; SQLite: the file)
    if [[ -n $CUR_SCHEMA ]]; then
        psql_q -c "SELECT seq FROM $CUR_SCHEMA.audit_head WHERE id = 1" 2>/dev/null || echo 0
    else
        python3 -c 'import sqlite3, sys; c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
print(c.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()[0])' "$RUN_DIR/authority.db" 2>/dev/null || echo 0
    fi
}

# ---------------------------------------------------------------- one run
wrk_args() { # wrk_args SCENARIO
    case $1 in
        *-kv-read) echo "read $RUN_DIR/token.txt $KEYS" ;;
        *-kv-write) echo "write $RUN_DIR/token.txt" ;;
        *-transit-encrypt) echo "encrypt $RUN_DIR/token.txt" ;;
    esac
}

check_wrk() { # check_wrk OUTFILE SCENARIO: every response good
    local line
    line=$(grep '^VAULTBENCH' "$1") || { cat "$1" >&2; die "$2: no VAULTBENCH line from wrk.lua"; }
    [[ $line == *" bad=0 "* ]] || { cat "$1" >&2; die "$2: bad responses: $line"; }
}

target_of() {
    case $1 in
        sqlite-kv-read) echo "$TARGET_READS" ;;
        sqlite-kv-write) echo "$TARGET_WRITES" ;;
        *) echo 0 ;;
    esac
}

declare -A PROFILED=()
run_one() { # run_one SCENARIO ROUND
    local s=$1 r=$2 backend=${1%%-*} out args a0 a1 t
    start_vault "$backend" "$s.r$r"
    if [[ $s == *-transit-encrypt && $TRANSIT_OK == 0 ]]; then
        log "$s r$r: ${NOTES[transit-encrypt]}"
        stop_vault
        return 0
    fi
    # shellcheck disable=SC2046
    read -r -a args <<<"$(wrk_args "$s")"
    out="$RUN_DIR/wrk"
    run_fg "$out.warmup" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$LUA" "$BASE" -- "${args[@]}" ||
        { cat "$out.warmup" >&2; die "$s: wrk warm-up failed"; }
    check_wrk "$out.warmup" "$s"
    a0=$(audit_rows)
    measured "${PIDS[warden]}" "$out" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$LUA" "$BASE" -- "${args[@]}" ||
        die "$s: wrk failed"
    a1=$(audit_rows)
    check_wrk "$out" "$s"
    wrk_parse "$out"
    record scenario="${s#*-}" proxy="warden-$backend" threads="$CONNECTIONS" round="$r" rps="$RPS" p50_ms="$P50" \
        p99_ms="$P99" cpu_us_per_req="$(us_per "$CPU_TICKS" "$REQS")" machine_busy_pct="$BUSY" \
        non_2xx="$NON2XX" socket_errors="$SOCKERR"
    log "$s r$r: $RPS req/s, p50 $P50 ms, p99 $P99 ms, $(us_per "$CPU_TICKS" "$REQS") µs server CPU/req, audit rows +$((a1 - a0)) for $REQS requests"
    t=$(target_of "$s")
    if [[ -z ${PROFILED[$s]:-} ]] && { [[ $PROFILE == 1 ]] || [[ $PROFILE == auto && $t -gt 0 ]] && awk -v a="$RPS" -v b="$t" 'BEGIN { exit !(a < b) }'; }; then
        PROFILED[$s]=1
        profile "$s" "${args[@]}"
    fi
    stop_vault
}

profile() { # profile SCENARIO WRK-ARGS...: perf record -g on Warden while wrk loads it
    local s=$1
    shift
    log "$s: profiling ($PROFILE_SECONDS s)"
    start prof-wrk wrk -t"$THREADS" -c"$CONNECTIONS" -d"$((PROFILE_SECONDS + 2))s" -s "$LUA" "$BASE" -- "$@"
    sleep 1
    if perf record -g -F 999 -p "${PIDS[warden]}" -o "$TMP/$s.perf.data" -- sleep "$PROFILE_SECONDS" >"$TMP/$s.perf.log" 2>&1; then
        {
            echo "# Inclusive (children) time, Warden's own functions and the kernel, top entries:"
            perf report -i "$TMP/$s.perf.data" --children --percent-limit 2 --stdio -g none 2>/dev/null |
                grep -E '^ +[0-9]' | cut -c1-180 | head -n 80 || true
            echo
            echo "# Self time with call chains:"
            perf report -i "$TMP/$s.perf.data" --no-children --percent-limit 1 --stdio 2>/dev/null |
                head -n 400 || true
        } >"$RESULTS_DIR/vault-latest.perf-$s.txt"
        log "$s: profile in $RESULTS_DIR/vault-latest.perf-$s.txt"
    else
        log "$s: perf record failed: $(tail -n 3 "$TMP/$s.perf.log")"
    fi
    [[ ${KEEP_TMP:-0} == 1 ]] || rm -f "$TMP/$s.perf.data"
    stop prof-wrk
}

# ---------------------------------------------------------------- run
mkdir -p "$RESULTS_DIR"
deadline=$((SECONDS + LOAD_WAIT))
while ! load_below "$LOAD_MAX" && ((SECONDS < deadline)); do
    log "waiting for the load average ($(loadavg1)) to drop below $LOAD_MAX"
    sleep 10
done
LOAD_START=$(loadavg1)
CPU_BUSY_START=$(cpu_busy_pct)
interleaved "$ROUNDS" run_one "${SCENARIOS[@]}"
LOAD_END=$(loadavg1)

NOTES_TEXT=""
for k in "${!NOTES[@]}"; do NOTES_TEXT+="$k	${NOTES[$k]}"$'\n'; done
export AUDIT_DEVICE NOTES_TEXT
python3 - "$TMP/meta.json" <<PY
import json, os, sys, datetime
notes = dict(l.split("\t", 1) for l in os.environ["NOTES_TEXT"].splitlines() if l)
json.dump({
    "title": "Vault benchmark",
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "description": ("Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr); "
                    "wrk and Warden (and PostgreSQL) share these CPUs. $CONNECTIONS concurrent clients (the threads "
                    "column), wrk -t$THREADS; each figure is the median of $ROUNDS rounds, interleaved "
                    "($WARMUP s warm-up, $DURATION s measured), each on a fresh store. Every request is audited: "
                    + os.environ["AUDIT_DEVICE"] + ". Writes are acknowledged only once committed (SQLite WAL, "
                    "synchronous=FULL; PostgreSQL synchronous_commit=on), each with its audit event; a read's event is "
                    "committed to the log before the answer but not fsynced (Store::audit_logged: survives kill -9, "
                    "like Vault's file device). Load average $LOAD_START at the start, $LOAD_END at the end. "
                    "Targets (SQLite): $TARGET_READS reads/s, $TARGET_WRITES writes/s. "
                    "Command: \`bench/vault.sh\` (ONLY=$ONLY ROUNDS=$ROUNDS DURATION=$DURATION)." + "".join(
                        " Note: %s: %s." % kv for kv in notes.items())),
    "scenarios": ["kv-read", "kv-write", "transit-encrypt"],
    "scenario_notes": {
        "kv-read": "GET secret/data/bench/k<i> over $KEYS secrets",
        "kv-write": "POST secret/data/bench/<new path>, durable",
        "transit-encrypt": notes.get("transit-encrypt", "POST transit/encrypt/bench"),
    },
    "machine": {"cpus": $(nproc), "cpu_busy_pct_before_run": $CPU_BUSY_START, "load_start": $LOAD_START, "load_end": $LOAD_END},
    "versions": {"warden": "$("$WARDEN_BIN" version 2>/dev/null | head -n1)", "wrk": "$(wrk -v 2>&1 | sed -n 1p | sed 's/ *Copyright.*//')",
                 "postgresql": "$(uses postgres && psql_q -c 'SHOW server_version' 2>/dev/null || echo n/a)"},
}, open(sys.argv[1], "w"), indent=2)
PY
python3 "$BENCH_DIR/report.py" "$RESULTS_JSONL" "$TMP/meta.json" "$RESULTS_DIR/vault-latest"
