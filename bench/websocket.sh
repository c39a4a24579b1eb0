#!/usr/bin/env bash
# WebSocket benchmark: Warden vs HAProxy vs nginx, side by side in one run.
#
#   bench/websocket.sh
#   ONLY=warden,haproxy ROUNDS=1 DURATION=5 IDLE_WS=2000 bench/websocket.sh
#
# One WebSocket echo upstream (bench/tlsload's `wsecho`, one thread) on 127.0.0.1:18100. Each
# proxy in turn listens on 127.0.0.1:18080 and passes `GET /ws` upgrades to it, with the same
# number of threads (nginx worker processes, HAProxy nbthread, Warden data_threads), no
# logging and long timeouts. Scenarios:
#   echo   bench/tlsload's `wsload`: CONNECTIONS sockets, each sending a 64-byte text message
#          and waiting for its echo (closed loop), WARMUP s discarded, DURATION s measured;
#          messages/s, p50/p99, and the proxy's CPU per message. ROUNDS rounds, interleaved
#          and rotated across the proxies.
#   idle   RSS of a fresh proxy, then while `wsload --mode idle` holds IDLE_WS open sockets
#          (each has echoed one message): KiB per idle WebSocket.
# Figures are medians over the rounds; ratios compare Warden with each proxy at the same
# thread count (bench/report.py). Results: a table on stdout, bench/results/websocket-latest.{json,md}.
#
# Environment: DURATION (10), WARMUP (2), ROUNDS (3), CONNECTIONS (100), IDLE_WS (5000),
# PROXY_THREADS (1), ONLY (warden,haproxy,nginx), SCENARIOS (echo,idle), WARDEN_BIN (built with
# cargo build --release when unset), RESULTS_DIR (bench/results).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
bench_init websocket.sh

DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-100}"
IDLE_WS="${IDLE_WS:-5000}"
PROXY_THREADS="${PROXY_THREADS:-1}"
ONLY="${ONLY:-warden,haproxy,nginx}"
SCENARIOS_SEL="${SCENARIOS:-echo,idle}"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
HOST=127.0.0.1
UPSTREAM_PORT=18100
HTTP_PORT=18080

for v in DURATION WARMUP ROUNDS CONNECTIONS IDLE_WS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
PROXIES=()
for p in ${ONLY//,/ }; do
    case "$p" in warden | haproxy | nginx) PROXIES+=("$p") ;; *) die "unknown proxy '$p' in ONLY" ;; esac
done
SCENARIOS=()
for s in ${SCENARIOS_SEL//,/ }; do
    case "$s" in echo | idle) SCENARIOS+=("$s") ;; *) die "unknown scenario '$s' (use: echo idle)" ;; esac
done
selected() { local x; for x in "${PROXIES[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }

need_tools nginx:nginx-light curl:curl python3:python3
selected haproxy && need_tools haproxy:haproxy
raise_nofile 65536
((NOFILE >= 2 * IDLE_WS + 1000)) || die "open-file limit $NOFILE is too low for IDLE_WS=$IDLE_WS"
WORKER_CONNS=$((NOFILE < 30000 ? NOFILE : 30000))

if selected warden && [[ -z ${WARDEN_BIN:-} ]]; then
    log "building warden (cargo build --release -p warden)"
    (cd "$ROOT" && cargo build --release -p warden)
    WARDEN_BIN="$ROOT/target/release/warden"
fi
log "building bench/tlsload (wsload, wsecho)"
(cd "$BENCH_DIR/tlsload" && CARGO_TARGET_DIR="$BENCH_DIR/tlsload/target" cargo build --release --quiet)
WSLOAD="$BENCH_DIR/tlsload/target/release/wsload"
WSECHO="$BENCH_DIR/tlsload/target/release/wsecho"

write_nginx() {
    local d="$TMP/nginx-$1" user_line=""
    mkdir -p "$d"
    [[ $(id -u) -eq 0 ]] && user_line="user root;"
    cat >"$d/nginx.conf" <<EOT
$user_line
daemon off;
master_process on;
worker_processes $1;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $WORKER_CONNS; }
http {
    access_log off;
$(nginx_temp_paths "$d")
    server {
        listen $HOST:$HTTP_PORT backlog=4096;
        location /ws {
            proxy_pass http://$HOST:$UPSTREAM_PORT;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 600s;
            proxy_send_timeout 600s;
        }
        location /healthz { return 200 "ok\n"; }
    }
}
EOT
}

write_haproxy() {
    local d="$TMP/haproxy-$1"
    mkdir -p "$d"
    cat >"$d/haproxy.cfg" <<EOT
global
    nbthread $1
    maxconn 30000
    no strict-limits

defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    timeout tunnel 600s
    timeout http-request 60s

frontend bench
    bind $HOST:$HTTP_PORT
    http-request return status 200 content-type text/plain string "ok" if { path /healthz }
    default_backend upstream

backend upstream
    server u1 $HOST:$UPSTREAM_PORT
EOT
}

write_warden() {
    local d="$TMP/warden-$1"
    mkdir -p "$d"
    cat >"$d/warden.toml" <<EOT
[server]
idle_timeout = "600s"
max_connections = 30000
data_threads = $1

[admin]
enabled = false

[access_log]
enabled = false

[reload]
watch = false

[[listeners]]
name = "bench"
address = "$HOST:$HTTP_PORT"

[[clusters]]
name = "ws"
endpoints = ["http://$HOST:$UPSTREAM_PORT"]

[[routes]]
name = "ws"
auth = "none"
cluster = "ws"
path_prefix = "/ws"
[routes.websocket]
idle_timeout = "600s"
max_connections = 30000

[[routes]]
name = "health"
auth = "none"
cluster = "ws"
path_exact = "/healthz"
EOT
}

start_proxy() { # start_proxy NAME THREADS
    case $1 in
        nginx) start nginx nginx -e "$TMP/nginx-$2/error.log" -p "$TMP/nginx-$2" -c "$TMP/nginx-$2/nginx.conf" ;;
        haproxy) start haproxy haproxy -db -f "$TMP/haproxy-$2/haproxy.cfg" ;;
        warden) start warden "$WARDEN_BIN" serve --allow-root --config "$TMP/warden-$2/warden.toml" ;;
    esac
    # The proxy answers once a WebSocket round trip through it works.
    local i
    for ((i = 0; i < 300; i++)); do
        "$WSLOAD" --addr "$HOST:$HTTP_PORT" --path /ws --mode idle -c 1 --hold 0 >/dev/null 2>&1 && return 0
        kill -0 "${PIDS[$1]}" 2>/dev/null || { cat "$TMP/$1.out" >&2; die "$1 exited"; }
        sleep 0.1
    done
    die "$1 did not carry a WebSocket within 30 s"
}

version_of() {
    case $1 in
        nginx) nginx -v 2>&1 | sed -n 1p ;;
        haproxy) haproxy -v 2>&1 | sed -n 1p ;;
        warden) echo "warden (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))" ;;
    esac
}

run_echo() { # run_echo PROXY@THREADS ROUND
    local p=${1%@*} t=${1#*@} r=$2 out
    out="$TMP/echo.$p.t$t.r$r"
    start_proxy "$p" "$t"
    measured "${PIDS[$p]}" "$out" "$WSLOAD" --addr "$HOST:$HTTP_PORT" --path /ws -c "$CONNECTIONS" \
        -t 2 -d "$DURATION" --warmup "$WARMUP" --size 64 || die "wsload failed ($p)"
    local line msgs p50 p99 errors sent
    line=$(grep '^msgs_per_s=' "$out") || die "wsload printed no result ($p): $(cat "$out")"
    msgs=$(sed -E 's/.*msgs_per_s=([0-9.]+).*/\1/' <<<"$line")
    p50=$(sed -E 's/.*p50_ms=([0-9.]+).*/\1/' <<<"$line")
    p99=$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$line")
    errors=$(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$line")
    sent=$(sed -E 's/.*sent=([0-9]+).*/\1/' <<<"$line")
    record scenario=echo proxy="$p" threads="$t" round="$r" msgs_per_s="$msgs" p50_ms="$p50" p99_ms="$p99" \
        cpu_us_per_msg="$(us_per "$CPU_TICKS" "$sent")" machine_busy_pct="$BUSY" errors="$errors"
    log "echo      $p t$t r$r: $msgs messages/s, p99 $p99 ms, $(us_per "$CPU_TICKS" "$sent") µs CPU/msg"
    stop "$p"
}

measure_idle() { # measure_idle PROXY THREADS
    local p=$1 t=$2 pid base idle i
    start_proxy "$p" "$t"
    sleep 1
    pid=${PIDS[$p]}
    base=$(mem_kib "$pid" VmRSS)
    start idle "$WSLOAD" --addr "$HOST:$HTTP_PORT" --path /ws --mode idle -c "$IDLE_WS" --hold 900
    for ((i = 0; i < 1800; i++)); do
        grep -q '^open' "$TMP/idle.out" 2>/dev/null && break
        kill -0 "${PIDS[idle]}" 2>/dev/null || { cat "$TMP/idle.out" >&2; die "wsload --mode idle exited early for $p"; }
        sleep 0.1
    done
    grep -q '^open' "$TMP/idle.out" || die "wsload did not open $IDLE_WS sockets within 180 s for $p"
    sleep 2
    idle=$(mem_kib "$pid" VmRSS)
    stop idle
    record scenario=idle proxy="$p" threads="$t" round=1 \
        baseline_rss_mib="$(awk -v k="$base" 'BEGIN { printf "%.1f", k / 1024 }')" \
        idle_rss_mib="$(awk -v k="$idle" 'BEGIN { printf "%.1f", k / 1024 }')" \
        kib_per_idle_ws="$(awk -v a="$idle" -v b="$base" -v n="$IDLE_WS" 'BEGIN { printf "%.2f", (a - b) / n }')"
    log "idle      $p: $IDLE_WS sockets, RSS $((base / 1024)) -> $((idle / 1024)) MiB"
    stop "$p"
}

CPU_BUSY_START="$(cpu_busy_pct)"
((CPU_BUSY_START <= 10)) || log "WARNING: the CPUs are ${CPU_BUSY_START}% busy before the run; figures will be skewed"
for port in $UPSTREAM_PORT $HTTP_PORT; do
    port_busy "$port" && die "something already listens on $HOST:$port; stop it first"
done
mkdir -p "$RESULTS_DIR"
start upstream "$WSECHO" --addr "$HOST:$UPSTREAM_PORT"
sleep 0.5

declare -A VERSIONS=()
for p in "${PROXIES[@]}"; do
    VERSIONS[$p]="$(version_of "$p")"
    for t in ${PROXY_THREADS//,/ }; do "write_$p" "$t"; done
done
for s in "${SCENARIOS[@]}"; do
    for t in ${PROXY_THREADS//,/ }; do
        case $s in
            echo)
                ITEMS=()
                for p in "${PROXIES[@]}"; do ITEMS+=("$p@$t"); done
                interleaved "$ROUNDS" run_echo "${ITEMS[@]}"
                ;;
            idle) for p in "${PROXIES[@]}"; do measure_idle "$p" "$t"; done ;;
        esac
    done
done

python3 - "$TMP/meta.json" <<PY
import json, sys, datetime
versions = {$(for p in "${PROXIES[@]}"; do printf '"%s": "%s", ' "$p" "${VERSIONS[$p]//\"/}"; done)}
versions["load generator and upstream"] = "bench/tlsload wsload and wsecho (tokio, one-thread upstream)"
json.dump({
    "title": "WebSocket benchmark",
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "description": ("Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr); "
                    "load generator, upstream and proxy share these CPUs. Echo figures are medians of $ROUNDS rounds "
                    "interleaved across the proxies ($WARMUP s warm-up, $DURATION s measured). "
                    "Command: \`bench/websocket.sh\` (ONLY=${ONLY} SCENARIOS='${SCENARIOS[*]}' PROXY_THREADS='${PROXY_THREADS}')."),
    "scenarios": ["echo", "idle"],
    "scenario_notes": {
        "echo": "$CONNECTIONS WebSockets, 64-byte text messages echoed, closed loop (wsload -t2)",
        "idle": "$IDLE_WS open WebSockets, each having echoed one message",
    },
    "machine": {"cpus": $(nproc), "cpu_busy_pct_before_run": $CPU_BUSY_START, "nofile_limit": $NOFILE},
    "versions": versions,
}, open(sys.argv[1], "w"), indent=2)
PY
python3 "$BENCH_DIR/report.py" "$RESULTS_JSONL" "$TMP/meta.json" "$RESULTS_DIR/websocket-latest"
