#!/usr/bin/env bash
# Rate-limiting benchmark: what a limit on every request costs in Warden (local and Redis,
# with and without leasing), side by side with HAProxy's stick-table rate limit.
#
#   bench/ratelimit.sh                                  # every scenario, defaults (~6 min)
#   ONLY=warden,warden-local DURATION=5 bench/ratelimit.sh
#
# One nginx upstream on 127.0.0.1:18100 answers `200 ok\n`; each scenario's proxy listens on
# 127.0.0.1:18180 in front of it, with the settings of bench/proxy.sh (2 threads, upstream
# keep-alive, no logging). The ports are this script's own, so a proxy.sh or jwt.sh run
# cannot collide with it. A private redis-server (no persistence) on 127.0.0.1:18379 serves
# the Redis scenarios. Scenarios:
#   warden              plain proxying (the reference)
#   warden-local        + a local limit on every request (key client_ip), high enough never
#                       to refuse: measures the cost only (target >= 95% of warden)
#   warden-redis        + the same limit kept in Redis, one round trip per request
#   warden-redis-lease  + the same limit in Redis with lease = 100 (one round trip per ~100)
#   haproxy             plain proxying
#   haproxy-stick       + a stick-table rate limit: track-sc0 src, http_req_rate(10s), deny
#                       over 100,000,000 (never refuses)
#   warden-redis-stall  accuracy, not speed: three gateways share a Redis limit of 200 (burst
#                       200, 200 per hour, so nothing refills in a run) with the default
#                       on_store_failure ("local") and store timeout (10 ms), under load for
#                       DURATION s while the redis-server is frozen (SIGSTOP) for STALL_MS
#                       every second; reports admitted vs the limit and the overshoot (one run)
#   warden-redis-stall-unlimited  the same with on_store_failure = "unlimited" (what failing
#                       open meant before the local fallback)
# Every scenario gets ROUNDS runs, interleaved (order rotated each round); medians reported.
# Before measuring, the script waits (up to LOAD_WAIT s) for the 1-minute load average to
# drop below LOAD_MAX, since other work may share the machine; the load is recorded.
# Results: a table on stdout, bench/results/ratelimit-latest.{json,md}.
#
# Environment:
#   ONLY         comma/space separated subset of the scenarios above (default: all)
#   DURATION     wrk seconds per run (10)          CONNECTIONS  wrk connections (50)
#   THREADS      wrk threads (2)                   WARMUP       warm-up seconds (3)
#   ROUNDS       runs per scenario, interleaved; figures are medians (3)
#   LOAD_MAX     1-minute load average to wait for (0.7)
#   LOAD_WAIT    most seconds to wait for it (900); then the run goes ahead, flagged
#   WARDEN_BIN   warden binary to use (default: build target/release/warden)
#   RESULTS_DIR  where to write results (bench/results)
#   KEEP_TMP=1   keep the temp dir (configs, logs) after the run
#   STALL_MS     milliseconds Redis is frozen each second in the stall scenarios (50)
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
LOAD_MAX="${LOAD_MAX:-0.7}"
LOAD_WAIT="${LOAD_WAIT:-900}"
ALL="warden,warden-local,warden-redis,warden-redis-lease,haproxy,haproxy-stick,warden-redis-stall,warden-redis-stall-unlimited"
STALL_MS="${STALL_MS:-50}"
STALL_LIMIT=200
# The three gateways of the stall scenarios: proxy ports and admin ports.
STALL_PORTS=(18180 18182 18183)
STALL_ADMINS=(18181 18184 18185)
ONLY="${ONLY:-$ALL}"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
UPSTREAM_PORT=18100
PROXY_PORT=18180
ADMIN_PORT=18181
REDIS_PORT=18379
HOST=127.0.0.1
URL="http://$HOST:$PROXY_PORT/bench"
# Never refuses at these rates: the figures are the cost of deciding, not of refusing.
# (Redis-backed limits resolve time in microseconds: at most 1,000,000/s per key.)
LOCAL_LIMIT="requests = 100000000
per = \"1s\""
REDIS_LIMIT="requests = 1000000
per = \"1s\""

log() { printf '[ratelimit.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# Shared helpers: stop_pid, stop, run_fg, port_busy, load_below, uses, nginx_temp_paths.
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------- selection
SCENARIOS=()
for s in ${ONLY//,/ }; do
    case ",$ALL," in
        *",$s,"*) SCENARIOS+=("$s") ;;
        *) die "unknown scenario '$s' in ONLY (use: $ALL)" ;;
    esac
done
((${#SCENARIOS[@]})) || die "ONLY selects nothing"
selected_prefix() { local x; for x in "${SCENARIOS[@]}"; do [[ $x == "$1"* ]] && return 0; done; return 1; }

# The stall scenarios measure accuracy, once each, apart from the throughput rounds.
STALLS=()
THROUGHPUT=()
for s in "${SCENARIOS[@]}"; do
    if [[ $s == warden-redis-stall* ]]; then STALLS+=("$s"); else THROUGHPUT+=("$s"); fi
done

for v in DURATION CONNECTIONS THREADS WARMUP ROUNDS LOAD_WAIT STALL_MS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
((ROUNDS >= 1)) || die "ROUNDS must be at least 1"

# ---------------------------------------------------------------- tools
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
if selected_prefix haproxy; then command -v haproxy >/dev/null 2>&1 || need+=(haproxy); fi
if selected_prefix warden-redis; then command -v redis-server >/dev/null 2>&1 || need+=(redis-server); fi
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if ((${#need[@]})); then
    log "installing: ${need[*]}"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------- processes
TMP="$(mktemp -d /tmp/warden-ratelimit-bench.XXXXXX)"
declare -A PIDS=()

cleanup() {
    local rc=$? name
    trap - EXIT INT TERM
    for name in "${!PIDS[@]}"; do stop "$name"; done
    if [[ ${KEEP_TMP:-0} == 1 || $rc -ne 0 ]]; then
        log "logs and configs kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

load1() { awk '{ print $1 }' /proc/loadavg; }

wait_quiet() { # waits until the 1-minute load average < LOAD_MAX (at most LOAD_WAIT s)
    local deadline=$((SECONDS + LOAD_WAIT)) l
    while :; do
        l=$(load1)
        awk -v l="$l" -v m="$LOAD_MAX" 'BEGIN { exit !(l < m) }' && { log "load average $l < $LOAD_MAX"; return 0; }
        if ((SECONDS >= deadline)); then
            log "WARNING: load average still $l after ${LOAD_WAIT}s; measuring anyway"
            LOAD_NOT_QUIET=1
            return 0
        fi
        log "load average $l >= $LOAD_MAX; waiting (busiest: $(ps -eo pcpu=,comm= --sort=-pcpu | sed -n 1,3p | tr -s ' ' | paste -sd ';'))"
        sleep 15
    done
}

# ---------------------------------------------------------------- configs
write_upstream_conf() {
    local d="$TMP/upstream"
    mkdir -p "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    server {
        listen $HOST:$UPSTREAM_PORT backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
EOF
}

write_haproxy_conf() { # write_haproxy_conf NAME STICK(0|1)
    local d="$TMP/$1" stick=""
    mkdir -p "$d"
    if [[ $2 == 1 ]]; then
        stick="    stick-table type ip size 100k expire 30s store http_req_rate(10s)
    http-request track-sc0 src
    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100000000 }"
    fi
    cat >"$d/haproxy.cfg" <<EOF
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
$stick
    default_backend upstream

backend upstream
    server u1 $HOST:$UPSTREAM_PORT
EOF
}

write_warden_conf() { # write_warden_conf NAME LIMIT_TOML
    local d="$TMP/$1" admin="enabled = false" store=""
    mkdir -p "$d"
    if [[ $1 == warden-redis* ]]; then
        admin="address = \"$HOST:$ADMIN_PORT\""
        store="[rate_limit_store]
redis_url = \"redis://$HOST:$REDIS_PORT\"
key_prefix = \"bench:$1:\""
    fi
    cat >"$d/warden.toml" <<EOF
[server]
idle_timeout = "300s"
max_connections = 20000

[admin]
$admin

[access_log]
enabled = false

[reload]
watch = false

$store

[[listeners]]
name = "bench"
address = "$HOST:$PROXY_PORT"

[[clusters]]
name = "upstream"
endpoints = ["http://$HOST:$UPSTREAM_PORT"]

[[routes]]
name = "all"
auth = "none"
cluster = "upstream"
path_prefix = "/"
$2
EOF
}

write_conf() { # write_conf SCENARIO
    case $1 in
        warden) write_warden_conf "$1" "" ;;
        warden-local) write_warden_conf "$1" "[[routes.rate_limits]]
key = \"client_ip\"
$LOCAL_LIMIT" ;;
        warden-redis) write_warden_conf "$1" "[[routes.rate_limits]]
key = \"client_ip\"
store = \"redis\"
$REDIS_LIMIT" ;;
        warden-redis-lease) write_warden_conf "$1" "[[routes.rate_limits]]
key = \"client_ip\"
store = \"redis\"
lease = 100
$REDIS_LIMIT" ;;
        haproxy) write_haproxy_conf "$1" 0 ;;
        haproxy-stick) write_haproxy_conf "$1" 1 ;;
    esac
}

start_scenario() { # start_scenario NAME
    case $1 in
        warden*) start "$1" "$WARDEN_BIN" serve --allow-root --config "$TMP/$1/warden.toml" ;;
        haproxy*) start "$1" haproxy -db -f "$TMP/$1/haproxy.cfg" ;;
    esac
    wait_http "$1" "$URL" 30
}

redis_calls() { # EVAL/EVALSHA calls so far on the bench Redis
    redis-cli -p "$REDIS_PORT" INFO commandstats 2>/dev/null |
        awk -F'[:=,]' '/^cmdstat_(evalsha|eval):/ { n += $3 } END { print n + 0 }'
}

store_errors() { # store_errors: warden_rate_limit_store_errors_total, both results
    curl -fsS "http://$HOST:$ADMIN_PORT/metrics" 2>/dev/null |
        awk '/^warden_rate_limit_store_errors_total/ { n += $2 } END { print n + 0 }'
}

# ---------------------------------------------------------------- measurements

run_wrk() { # run_wrk NAME -> sets RPS P50 P99 NON2XX SOCKERR REQS
    local name=$1 out="$TMP/$1.wrk"
    run_fg "$TMP/$name.warmup" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$URL" || die "wrk warm-up failed for $name"
    # Redis calls and store errors are counted over the measured run only.
    CALLS0=0 ERRS0=0
    if [[ $name == warden-redis* ]]; then CALLS0=$(redis_calls) ERRS0=$(store_errors); fi
    run_fg "$out" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$URL" || { cat "$out" >&2; die "wrk failed for $name"; }
    read -r RPS P50 P99 NON2XX SOCKERR REQS < <(awk "$to_ms_awk"'
        /^[ \t]+50%/ { p50 = to_ms($2) }
        /^[ \t]+99%/ { p99 = to_ms($2) }
        /^Requests\/sec:/ { rps = $2 }
        /requests in/ { reqs = $1 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { gsub(/,/, ""); sockerr = $4 + $6 + $8 + $10 }
        END { printf "%s %.3f %.3f %d %d %d\n", (rps == "" ? "NA" : rps), p50, p99, non2xx, sockerr, reqs }' "$out")
    [[ $RPS != NA ]] || die "could not parse wrk output for $name"
    log "$name: $RPS req/s, p50 $P50 ms, p99 $P99 ms"
    ((NON2XX == 0 && SOCKERR == 0)) || log "WARNING: $name: $NON2XX non-2xx responses, $SOCKERR socket errors"
}

# ---------------------------------------------------------------- build warden
if selected_prefix warden; then
    if [[ -z ${WARDEN_BIN:-} ]]; then
        log "building warden (cargo build --release -p warden; waits on the cargo lock if another build runs)"
        (cd "$ROOT" && cargo build --release -p warden)
        WARDEN_BIN="$ROOT/target/release/warden"
    fi
    [[ -x $WARDEN_BIN ]] || die "warden binary not found or not executable: $WARDEN_BIN"
fi

# ---------------------------------------------------------------- run
# Wait for a quiet machine before starting anything, so that a long wait holds no port
# (the other bench scripts use the same ones).
LOAD_NOT_QUIET=0
LOAD_BEFORE_WAIT="$(load1)"
wait_quiet
LOAD_AT_START="$(cat /proc/loadavg)"

for port in $UPSTREAM_PORT $PROXY_PORT $ADMIN_PORT $REDIS_PORT ${STALL_PORTS[*]} ${STALL_ADMINS[*]}; do
    port_busy "$port" && die "something already listens on $HOST:$port (another benchmark?); stop it first"
done
mkdir -p "$RESULTS_DIR"
RESULTS_TSV="$TMP/results.tsv"
: >"$RESULTS_TSV"

write_upstream_conf
start upstream nginx -e "$TMP/upstream/error.log" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf"
wait_http upstream "http://$HOST:$UPSTREAM_PORT/bench" 15
sleep 0.5
if grep -q 'bind() .* failed' "$TMP/upstream.out" || ! kill -0 "${PIDS[upstream]}" 2>/dev/null; then
    die "the upstream nginx could not bind $HOST:$UPSTREAM_PORT"
fi
if selected_prefix warden-redis; then
    start redis redis-server --port "$REDIS_PORT" --bind "$HOST" --save '' --appendonly no --dir "$TMP"
    for ((i = 0; i < 100; i++)); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -p "$REDIS_PORT" ping >/dev/null || die "redis-server did not start"
fi

# ---------------------------------------------------------------- stall scenarios
write_stall_conf() { # write_stall_conf NAME INDEX EXTRA_LIMIT_LINE
    local d="$TMP/$1-$2"
    mkdir -p "$d"
    cat >"$d/warden.toml" <<EOF
[server]
idle_timeout = "300s"
max_connections = 20000

[admin]
address = "$HOST:${STALL_ADMINS[$2]}"

[access_log]
enabled = false

[reload]
watch = false

[rate_limit_store]
redis_url = "redis://$HOST:$REDIS_PORT"
key_prefix = "bench:$1:"

[[listeners]]
name = "bench"
address = "$HOST:${STALL_PORTS[$2]}"

[[clusters]]
name = "upstream"
endpoints = ["http://$HOST:$UPSTREAM_PORT"]

[[routes]]
name = "all"
auth = "none"
cluster = "upstream"
path_prefix = "/"
[[routes.rate_limits]]
key = "header:x-bench-run"
store = "redis"
requests = $STALL_LIMIT
per = "1h"
$3
EOF
}

stall_loop() { # stall_loop PID SECONDS OUT: SIGSTOP PID for STALL_MS every second, count in OUT
    local pid=$1 end=$((SECONDS + $2)) out=$3 n=0 pause run
    pause=$(awk -v m="$STALL_MS" 'BEGIN { printf "%.3f", m / 1000 }')
    run=$(awk -v m="$STALL_MS" 'BEGIN { printf "%.3f", (1000 - m) / 1000 }')
    trap 'kill -CONT "$pid" 2>/dev/null; exit 0' TERM
    while ((SECONDS < end)); do
        sleep "$run"
        kill -STOP "$pid" 2>/dev/null || break
        sleep "$pause"
        kill -CONT "$pid" 2>/dev/null
        n=$((n + 1))
        echo "$n" >"$out"
    done
}

run_stall() { # run_stall NAME: one line of results appended to $STALL_TSV
    local name=$1 extra="" i run errs=0 stalls per_gw
    [[ $name == *-unlimited ]] && extra='on_store_failure = "unlimited"'
    per_gw=$(((CONNECTIONS + 2) / 3))
    for i in 0 1 2; do
        write_stall_conf "$name" "$i" "$extra"
        start "$name-$i" "$WARDEN_BIN" serve --allow-root --config "$TMP/$name-$i/warden.toml"
    done
    for i in 0 1 2; do
        wait_http "$name-$i" "http://$HOST:${STALL_PORTS[$i]}/bench" 30
        # Connects each gateway's store (on a key of its own), as a running fleet would be.
        curl -fsS -o /dev/null -H "x-bench-run: warm-$i" "http://$HOST:${STALL_PORTS[$i]}/bench"
    done
    run="run-$name-$$-$RANDOM"
    echo 0 >"$TMP/$name.stalls"
    stall_loop "${PIDS[redis]}" "$DURATION" "$TMP/$name.stalls" &
    PIDS[stall]=$!
    for i in 0 1 2; do
        : >"$TMP/$name-$i.wrk"
        wrk -t1 -c"$per_gw" -d"${DURATION}s" -H "x-bench-run: $run" \
            "http://$HOST:${STALL_PORTS[$i]}/bench" >>"$TMP/$name-$i.wrk" 2>&1 &
        PIDS[wrk$i]=$!
    done
    for i in 0 1 2; do
        wait "${PIDS[wrk$i]}" || die "wrk failed for $name-$i"
        unset "PIDS[wrk$i]"
    done
    stop stall
    kill -CONT "${PIDS[redis]}" 2>/dev/null || true
    stalls=$(cat "$TMP/$name.stalls")
    for i in 0 1 2; do
        errs=$((errs + $(curl -fsS "http://$HOST:${STALL_ADMINS[$i]}/metrics" 2>/dev/null |
            awk '/^warden_rate_limit_store_errors_total/ { n += $2 } END { print n + 0 }')))
        stop "$name-$i"
    done
    # Admitted: every request answered with a 2xx (wrk counts 429s as non-2xx).
    cat "$TMP/$name-0.wrk" "$TMP/$name-1.wrk" "$TMP/$name-2.wrk" | awk -v name="$name" \
        -v limit="$STALL_LIMIT" -v stalls="$stalls" -v errs="$errs" '
        /requests in/ { reqs += $1 }
        /Non-2xx or 3xx responses:/ { non2xx += $NF }
        END {
            ok = reqs - non2xx
            printf "%s\t%d\t%d\t%d\t%.1f\t%d\t%d\n", name, reqs, ok, limit, (ok - limit) * 100 / limit, stalls, errs
        }' >>"$STALL_TSV"
    log "$name: $(tail -n 1 "$STALL_TSV" | awk -F'\t' '{ printf "%d admitted of %d requests against a limit of %d (%+.1f%%), %d stalls, %d decisions without Redis", $3, $2, $4, $5, $6, $7 }')"
}

STALL_TSV="$TMP/stall.tsv"
: >"$STALL_TSV"
for name in "${STALLS[@]}"; do
    log "=== $name: 3 gateways, limit $STALL_LIMIT, Redis frozen $STALL_MS ms every second for $DURATION s (load $(load1))"
    run_stall "$name"
    sleep 1
done
SCENARIOS=("${THROUGHPUT[@]}")

declare -A RPS_L=() P50_L=() P99_L=() NON2XX_T=() SOCKERR_T=() CALLS_T=() REQS_T=() ERR_T=() LOAD_L=()
for name in "${SCENARIOS[@]}"; do
    write_conf "$name"
    RPS_L[$name]="" P50_L[$name]="" P99_L[$name]="" LOAD_L[$name]=""
    NON2XX_T[$name]=0 SOCKERR_T[$name]=0 CALLS_T[$name]=0 REQS_T[$name]=0 ERR_T[$name]=0
done

n=${#SCENARIOS[@]}
for ((round = 0; round < ROUNDS; round++)); do
    for ((k = 0; k < n; k++)); do
        name=${SCENARIOS[$(((k + round) % n))]}
        log "=== round $((round + 1))/$ROUNDS: $name (load $(load1))"
        LOAD_L[$name]+="${LOAD_L[$name]:+,}$(load1)"
        start_scenario "$name"
        body=$(curl -fsS "$URL")
        [[ $body == ok ]] || die "$name returned an unexpected body: $body"
        run_wrk "$name"
        if [[ $name == warden-redis* ]]; then
            CALLS_T[$name]=$((CALLS_T[$name] + $(redis_calls) - CALLS0))
            ERR_T[$name]=$((ERR_T[$name] + $(store_errors) - ERRS0))
        fi
        REQS_T[$name]=$((REQS_T[$name] + REQS))
        stop "$name"
        RPS_L[$name]+="${RPS_L[$name]:+,}$RPS"
        P50_L[$name]+="${P50_L[$name]:+,}$P50"
        P99_L[$name]+="${P99_L[$name]:+,}$P99"
        NON2XX_T[$name]=$((NON2XX_T[$name] + NON2XX))
        SOCKERR_T[$name]=$((SOCKERR_T[$name] + SOCKERR))
        sleep 1
    done
done
for name in "${SCENARIOS[@]}"; do
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "${RPS_L[$name]}" "${P50_L[$name]}" \
        "${P99_L[$name]}" "${NON2XX_T[$name]}" "${SOCKERR_T[$name]}" "${REQS_T[$name]}" \
        "${CALLS_T[$name]}" "${ERR_T[$name]}" "${LOAD_L[$name]}" >>"$RESULTS_TSV"
done

# ---------------------------------------------------------------- report
if ((${#STALLS[@]})); then
    {
        printf '# Rate limits under a Redis stall, %s\n\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        printf 'Three gateways share one Redis limit of %d (burst %d, 200 per hour: nothing refills in a run), key `header:x-bench-run`, default store timeout (10 ms); `wrk -t1 -c%d -d%ds` on each gateway at once while the private redis-server is frozen (SIGSTOP) for %d ms every second. Warden %s. Load average at the start: %s.\n\n' \
            "$STALL_LIMIT" "$STALL_LIMIT" "$(((CONNECTIONS + 2) / 3))" "$DURATION" "$STALL_MS" \
            "git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" "$LOAD_AT_START"
        printf '| scenario | requests | admitted | limit | overshoot | stalls | decisions without Redis |\n|---|---:|---:|---:|---:|---:|---:|\n'
        awk -F'\t' '{ printf "| %s | %d | %d | %d | %+.1f %% | %d | %d |\n", $1, $2, $3, $4, $5, $6, $7 }' "$STALL_TSV"
    } >"$RESULTS_DIR/ratelimit-stall-latest.md"
    echo
    cat "$RESULTS_DIR/ratelimit-stall-latest.md"
    echo
    ((${#SCENARIOS[@]})) || exit 0
fi
export DURATION CONNECTIONS THREADS WARMUP ROUNDS LOAD_MAX LOAD_WAIT LOAD_NOT_QUIET LOAD_BEFORE_WAIT LOAD_AT_START
export LOAD_AT_END="$(cat /proc/loadavg)"
export CPU_MODEL="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
export KERNEL="$(uname -sr)" NPROC="$(nproc)"
export WRK_VERSION="$(wrk -v 2>&1 | sed -n 1p | sed "s/ *Copyright.*//" || true)"
export HAPROXY_VERSION="$(haproxy -v 2>/dev/null | sed -n 1p || true)"
export REDIS_VERSION="$(redis-server --version 2>/dev/null || true)"
WARDEN_VERSION=""
if [[ -n ${WARDEN_BIN:-} ]]; then
    WARDEN_VERSION="$("$WARDEN_BIN" --version 2>/dev/null | sed -n 1p || true) (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), working tree)"
fi
export WARDEN_VERSION
export LOCAL_LIMIT REDIS_LIMIT
python3 - "$RESULTS_TSV" "$RESULTS_DIR/ratelimit-latest.json" "$RESULTS_DIR/ratelimit-latest.md" <<'PY'
import datetime, json, os, statistics, sys

tsv, json_path, md_path = sys.argv[1:4]
env = os.environ
rows = []
for line in open(tsv):
    name, rps, p50, p99, non2xx, sockerr, reqs, calls, errs, loads = line.rstrip("\n").split("\t")
    rounds = [{"requests_per_sec": float(a), "p50_ms": float(b), "p99_ms": float(c), "load1_before": float(d)}
              for a, b, c, d in zip(rps.split(","), p50.split(","), p99.split(","), loads.split(","))]
    r = {"scenario": name,
         "requests_per_sec": round(statistics.median(x["requests_per_sec"] for x in rounds), 1),
         "p50_ms": round(statistics.median(x["p50_ms"] for x in rounds), 3),
         "p99_ms": round(statistics.median(x["p99_ms"] for x in rounds), 3),
         "rounds": rounds, "non_2xx": int(non2xx), "socket_errors": int(sockerr),
         "requests_measured": int(reqs)}
    if name.startswith("warden-redis"):
        r["redis_calls"] = int(calls)
        r["redis_calls_per_request"] = round(int(calls) / int(reqs), 4) if int(reqs) else None
        r["store_errors"] = int(errs)
    rows.append(r)
by = {r["scenario"]: r for r in rows}

def ratio(a, b):
    if a in by and b in by:
        x, y = by[a], by[b]
        return {"pair": "%s / %s" % (a, b),
                "requests_per_sec": round(x["requests_per_sec"] / y["requests_per_sec"], 3),
                "p99": round(x["p99_ms"] / y["p99_ms"], 3) if y["p99_ms"] else None}
ratios = [r for r in (ratio("warden-local", "warden"), ratio("warden-redis", "warden"),
                      ratio("warden-redis-lease", "warden"), ratio("haproxy-stick", "haproxy"),
                      ratio("warden", "haproxy"), ratio("warden-local", "haproxy-stick")) if r]

meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "machine": {"cpus": int(env["NPROC"]), "cpu_model": env.get("CPU_MODEL", ""), "kernel": env["KERNEL"]},
    "load": {"loadavg_before_waiting": float(env["LOAD_BEFORE_WAIT"]), "loadavg_at_start": env["LOAD_AT_START"],
             "loadavg_at_end": env["LOAD_AT_END"], "waited_for_below": float(env["LOAD_MAX"]),
             "quiet": env["LOAD_NOT_QUIET"] != "1"},
    "wrk": {"tool": env["WRK_VERSION"], "threads": int(env["THREADS"]), "connections": int(env["CONNECTIONS"]),
            "duration_s": int(env["DURATION"]), "warmup_s": int(env["WARMUP"]), "rounds": int(env["ROUNDS"]),
            "figures": "median over interleaved rounds"},
    "versions": {"warden": env.get("WARDEN_VERSION", ""), "haproxy": env.get("HAPROXY_VERSION", ""),
                 "redis": env.get("REDIS_VERSION", "")},
    "limits": {"warden-local": env["LOCAL_LIMIT"].replace("\n", ", "), "warden-redis": env["REDIS_LIMIT"].replace("\n", ", "),
               "warden-redis-lease": env["REDIS_LIMIT"].replace("\n", ", ") + ", lease = 100",
               "haproxy-stick": "stick-table type ip size 100k expire 30s store http_req_rate(10s); track-sc0 src; deny 429 if sc_http_req_rate(0) gt 100000000"},
}
with open(json_path, "w") as f:
    json.dump(dict(meta, results=rows, ratios=ratios), f, indent=2)
    f.write("\n")

head = ["scenario", "req/s", "p50 ms", "p99 ms", "Redis calls/req", "store errors", "non-2xx"]
table = [[r["scenario"], "%.0f" % r["requests_per_sec"], "%.3f" % r["p50_ms"], "%.3f" % r["p99_ms"],
          ("%.3f" % r["redis_calls_per_request"]) if r.get("redis_calls_per_request") is not None else "-",
          str(r.get("store_errors", "-")), str(r["non_2xx"])] for r in rows]
rhead = ["ratio", "req/s", "p99"]
rtable = [[x["pair"], "%.3f" % x["requests_per_sec"], "%.2f" % x["p99"] if x["p99"] else "n/a"] for x in ratios]

def text_table(h, rs):
    w = [max(len(str(c)) for c in col) for col in zip(h, *rs)]
    line = lambda cells: "  ".join(str(c).rjust(w[i]) if i else str(c).ljust(w[i]) for i, c in enumerate(cells))
    return "\n".join([line(h), line(["-" * x for x in w])] + [line(r) for r in rs])

def md_table(h, rs):
    return "\n".join(["| " + " | ".join(h) + " |", "|" + "|".join(["---"] + ["---:"] * (len(h) - 1)) + "|"]
                     + ["| " + " | ".join(r) + " |" for r in rs])

notes = []
if not meta["load"]["quiet"]:
    notes.append("the 1-minute load average never fell below %s (it was %s before waiting; %s at the start): "
                 "other work shared the CPUs, so the figures are skewed" % (env["LOAD_MAX"], env["LOAD_BEFORE_WAIT"], env["LOAD_AT_START"]))
for r in rows:
    if r["non_2xx"] or r["socket_errors"]:
        notes.append("%s: %d non-2xx responses, %d socket errors" % (r["scenario"], r["non_2xx"], r["socket_errors"]))
    if r.get("store_errors"):
        notes.append("%s: %d decisions Redis did not make in time (failed open)" % (r["scenario"], r["store_errors"]))

print()
print(text_table(head, table))
print()
print(text_table(rhead, rtable))
print()
print("load average: %s before waiting, at start %s, at end %s" % (env["LOAD_BEFORE_WAIT"], env["LOAD_AT_START"], env["LOAD_AT_END"]))
for n in notes:
    print("WARNING: " + n)

with open(md_path, "w") as f:
    f.write("# Rate-limiting benchmark, %s\n\n" % meta["date"])
    f.write("Machine: %d CPUs (%s), %s; wrk, nginx upstream, Redis and the proxy share them. "
            "Load average (1/5/15 min): %s at the start, %s at the end%s.\n\n" % (
                meta["machine"]["cpus"], meta["machine"]["cpu_model"], meta["machine"]["kernel"],
                env["LOAD_AT_START"], env["LOAD_AT_END"],
                "" if meta["load"]["quiet"] else " (**never below %s: figures skewed by other work**)" % env["LOAD_MAX"]))
    f.write("Load: `wrk -t%d -c%d -d%ds --latency` after a %d s warm-up, %d rounds interleaved across "
            "scenarios; medians. Every request is limited in the limit scenarios, by a limit that never "
            "refuses (one key: every connection comes from 127.0.0.1).\n\n" % (
                meta["wrk"]["threads"], meta["wrk"]["connections"], meta["wrk"]["duration_s"],
                meta["wrk"]["warmup_s"], meta["wrk"]["rounds"]))
    f.write(md_table(head, table) + "\n\n")
    f.write("Req/s per round (1-minute load average before it): " + "; ".join(
        "%s %s" % (r["scenario"], ", ".join("%.0f (%.2f)" % (x["requests_per_sec"], x["load1_before"]) for x in r["rounds"]))
        for r in rows) + ". The benchmark itself keeps both CPUs busy, so the load average climbs to ~3-4 "
        "during a run on its own; a round far below its neighbours points at other work.\n\n")
    f.write(md_table(rhead, rtable) + "\n\n")
    f.write("Limits:\n\n" + "".join("- %s: `%s`\n" % kv for kv in meta["limits"].items()) + "\n")
    f.write("Versions: %s; %s; %s; %s.\n" % (meta["versions"]["warden"], meta["versions"]["haproxy"],
                                             meta["versions"]["redis"], meta["wrk"]["tool"]))
    for n in notes:
        f.write("\n**Warning:** %s\n" % n)
print("\nwrote %s and %s" % (json_path, md_path))
PY
