#!/usr/bin/env bash
# Reverse-proxy benchmark: Warden vs HAProxy vs nginx, side by side in one run.
#
#   bench/proxy.sh                                    # everything, defaults
#   ONLY=warden,haproxy SCENARIOS=plain,https PROXY_THREADS=1 DURATION=5 bench/proxy.sh
#
# One nginx upstream on 127.0.0.1:18000 (1 worker) answers `200 ok\n` on /bench and a
# 1 MiB file on /1m. Each proxy in turn listens on 127.0.0.1:18080 (HTTP) and 127.0.0.1:18443
# (TLS 1.2/1.3, ALPN h2 and http/1.1, one ECDSA P-256 certificate shared by all three) with
# equivalent settings: the same number of worker threads/processes, upstream keep-alive, no
# logging, long timeouts. For every thread count in PROXY_THREADS, in ROUNDS rounds
# interleaved (and rotated) across the proxies, a fresh proxy runs each scenario (WARMUP s
# discarded, then DURATION s measured):
#   plain      wrk -t2 -c$CONNECTIONS --latency, HTTP/1.1 keep-alive: req/s, p50, p99, and the
#              proxy's own CPU time per request (user + system, all its threads)
#   https      the same over TLS (keep-alive)
#   handshake  new TLS 1.3 connections per second, one request each, no resumption, with
#              bench/tlsload (wrk with Connection: close is itself the limit, ~3,500/s here)
#   h2-10      h2load over TLS, 1 thread, 10 connections, 10 streams each: req/s
#   h2-100     the same with 100 streams per connection
#   body-1m    wrk -c8, a 1 MiB response body: MiB/s and the proxy's peak RSS (VmHWM)
# Then, once per proxy at the last thread count:
#   idle       RSS of a fresh proxy, then while bench/idle_conns.py holds IDLE_CONNS idle
#              keep-alive connections: KiB per idle connection
# Figures are medians over the rounds; ratios compare Warden with each proxy at the same
# thread count (bench/report.py). Results: a table on stdout, bench/results/proxy-latest.{json,md}.
#
# Environment:
#   ONLY           subset of: warden haproxy nginx (default: all)
#   SCENARIOS      subset of: plain https handshake h2-10 h2-100 body-1m idle (default: all)
#   PROXY_THREADS  thread counts to compare at ("1 2")
#   DURATION (10)  WARMUP (2)  ROUNDS (3)  CONNECTIONS (50, wrk)  HS_CONNECTIONS (32, tlsload)
#   IDLE_CONNS     idle connections for memory (10000)
#   WARDEN_BIN     warden binary (default: build target/release/warden)
#   RESULTS_DIR    where to write results (bench/results);  KEEP_TMP=1 keeps configs and logs
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
bench_init proxy.sh

DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-50}"
HS_CONNECTIONS="${HS_CONNECTIONS:-32}"
IDLE_CONNS="${IDLE_CONNS:-10000}"
PROXY_THREADS="${PROXY_THREADS:-1 2}"
ONLY="${ONLY:-warden,haproxy,nginx}"
ALL_SCENARIOS=(plain https handshake h2-10 h2-100 body-1m idle)
SCENARIOS_SEL="${SCENARIOS:-${ALL_SCENARIOS[*]}}"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
HOST=127.0.0.1
UPSTREAM_PORT=18000
HTTP_PORT=18080
TLS_PORT=18443
URL="http://$HOST:$HTTP_PORT/bench"
TLS_URL="https://localhost:$TLS_PORT/bench"
WRK_THREADS=2

for v in DURATION WARMUP ROUNDS CONNECTIONS HS_CONNECTIONS IDLE_CONNS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
((ROUNDS >= 1)) || die "ROUNDS must be at least 1"
PROXIES=()
for p in ${ONLY//,/ }; do
    case "$p" in warden | haproxy | nginx) PROXIES+=("$p") ;; *) die "unknown proxy '$p' in ONLY" ;; esac
done
SCENARIOS=()
for s in ${SCENARIOS_SEL//,/ }; do
    [[ " ${ALL_SCENARIOS[*]} " == *" $s "* ]] || die "unknown scenario '$s' (use: ${ALL_SCENARIOS[*]})"
    SCENARIOS+=("$s")
done
THREAD_COUNTS=()
for t in ${PROXY_THREADS//,/ }; do
    [[ $t =~ ^[1-9][0-9]*$ ]] || die "PROXY_THREADS: '$t' is not a thread count"
    THREAD_COUNTS+=("$t")
done
selected() { local x; for x in "${PROXIES[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }
scenario_on() { local x; for x in "${SCENARIOS[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }

need_tools nginx:nginx-light wrk:wrk curl:curl python3:python3 openssl:openssl h2load:nghttp2-client ss:iproute2
selected haproxy && need_tools haproxy:haproxy
raise_nofile 65536
((NOFILE >= IDLE_CONNS + 1000)) || die "open-file limit $NOFILE is too low for IDLE_CONNS=$IDLE_CONNS"
WORKER_CONNS=$((NOFILE < 20000 ? NOFILE : 20000))

# ---------------------------------------------------------------- binaries
if selected warden && [[ -z ${WARDEN_BIN:-} ]]; then
    log "building warden (cargo build --release -p warden)"
    (cd "$ROOT" && cargo build --release -p warden)
    WARDEN_BIN="$ROOT/target/release/warden"
fi
selected warden && { [[ -x $WARDEN_BIN ]] || die "warden binary not found: $WARDEN_BIN"; }
TLSLOAD="$BENCH_DIR/tlsload/target/release/tlsload"
if scenario_on handshake; then
    log "building bench/tlsload (the handshake load generator)"
    (cd "$BENCH_DIR/tlsload" && CARGO_TARGET_DIR="$BENCH_DIR/tlsload/target" cargo build --release --quiet)
fi

# ---------------------------------------------------------------- certificate, upstream
make_cert() { # one ECDSA P-256 certificate for localhost, for all three proxies
    local d="$TMP/pki"
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$d/key.pem" -out "$d/cert.pem" 2>/dev/null
    cat "$d/cert.pem" "$d/key.pem" >"$d/combined.pem"
    chmod 600 "$d"/*.pem
}

write_upstream_conf() {
    local d="$TMP/upstream"
    mkdir -p "$d/www"
    head -c 1048576 /dev/urandom >"$d/www/1m"
    cat >"$d/nginx.conf" <<EOT
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    sendfile on;
$(nginx_temp_paths "$d")
    server {
        listen $HOST:$UPSTREAM_PORT backlog=4096;
        location = /1m { root $d/www; default_type application/octet-stream; }
        location / { return 200 "ok\n"; }
    }
}
EOT
}

# ---------------------------------------------------------------- proxies (threads: $2)
write_nginx_conf() {
    local d="$TMP/nginx-$1" user_line=""
    mkdir -p "$d"
    [[ $(id -u) -eq 0 ]] && user_line="user root;" # workers keep access to $TMP (0700)
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
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    http2_max_concurrent_streams 128;
$(nginx_temp_paths "$d")
    upstream upstream {
        server $HOST:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen $HOST:$HTTP_PORT backlog=4096;
        listen $HOST:$TLS_PORT ssl http2 backlog=4096;
        ssl_certificate $TMP/pki/cert.pem;
        ssl_certificate_key $TMP/pki/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {
            proxy_pass http://upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 5s;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }
    }
}
EOT
}

write_haproxy_conf() {
    local d="$TMP/haproxy-$1"
    mkdir -p "$d"
    # No 'log' lines anywhere: HAProxy logs nothing.
    cat >"$d/haproxy.cfg" <<EOT
global
    nbthread $1
    maxconn 20000
    # The machine may not allow the ~2*maxconn fds HAProxy asks for; warn, don't fail.
    no strict-limits
    ssl-default-bind-options ssl-min-ver TLSv1.2

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
    bind $HOST:$HTTP_PORT
    bind $HOST:$TLS_PORT ssl crt $TMP/pki/combined.pem alpn h2,http/1.1
    default_backend upstream

backend upstream
    server u1 $HOST:$UPSTREAM_PORT
EOT
}

write_warden_conf() {
    local d="$TMP/warden-$1"
    mkdir -p "$d"
    cat >"$d/warden.toml" <<EOT
[server]
idle_timeout = "300s"
max_connections = 20000
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

[[listeners]]
name = "bench-tls"
address = "$HOST:$TLS_PORT"
[[listeners.tls.certificates]]
cert = "$TMP/pki/cert.pem"
key = "file:$TMP/pki/key.pem"

[[clusters]]
name = "upstream"
endpoints = ["http://$HOST:$UPSTREAM_PORT"]

[[routes]]
name = "all"
auth = "none"
cluster = "upstream"
path_prefix = "/"
EOT
}

start_proxy() { # start_proxy NAME THREADS
    case $1 in
        nginx) start nginx nginx -e "$TMP/nginx-$2/error.log" -p "$TMP/nginx-$2" -c "$TMP/nginx-$2/nginx.conf" ;;
        haproxy) start haproxy haproxy -db -f "$TMP/haproxy-$2/haproxy.cfg" ;;
        warden) start warden "$WARDEN_BIN" serve --allow-root --config "$TMP/warden-$2/warden.toml" ;;
    esac
    wait_http "$1" "$URL" 30
    wait_http "$1" "$TLS_URL" 10 --cacert "$TMP/pki/cert.pem"
    local body
    body=$(curl -fsS "$URL")
    [[ $body == ok ]] || die "$1 returned an unexpected body: $body"
    [[ $(curl -fsS --http2 -o /dev/null -w '%{http_version}' --cacert "$TMP/pki/cert.pem" "$TLS_URL") == 2 ]] ||
        die "$1 does not speak HTTP/2 on $TLS_URL"
}

version_of() {
    case $1 in
        nginx) nginx -v 2>&1 | sed -n 1p ;;
        haproxy) haproxy -v 2>&1 | sed -n 1p ;;
        warden) echo "$("$WARDEN_BIN" --version 2>/dev/null | sed -n 1p || echo warden) (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))" ;;
    esac
}

# ---------------------------------------------------------------- scenarios
# Each runs against the proxy started for this round and records one row.
# The common part: warm-up, measured run with the proxy's CPU time, wrk figures.
wrk_scenario() { # wrk_scenario PROXY THREADS ROUND SCENARIO CONNS URL [WRK ARGS...]
    local p=$1 t=$2 r=$3 s=$4 c=$5 url=$6
    shift 6
    local out="$TMP/$s.$p.t$t.r$r"
    run_fg "$out.warmup" wrk -t"$WRK_THREADS" -c"$c" -d"${WARMUP}s" "$@" "$url" || die "wrk warm-up failed ($s, $p)"
    measured "${PIDS[$p]}" "$out" wrk -t"$WRK_THREADS" -c"$c" -d"${DURATION}s" --latency "$@" "$url" || die "wrk failed ($s, $p)"
    wrk_parse "$out"
}

run_plain() { # PROXY THREADS ROUND
    wrk_scenario "$1" "$2" "$3" plain "$CONNECTIONS" "$URL"
    record scenario=plain proxy="$1" threads="$2" round="$3" rps="$RPS" p50_ms="$P50" p99_ms="$P99" \
        cpu_us_per_req="$(us_per "$CPU_TICKS" "$REQS")" machine_busy_pct="$BUSY" non_2xx="$NON2XX" socket_errors="$SOCKERR"
    log "plain     $1 t$2 r$3: $RPS req/s, p99 $P99 ms, $(us_per "$CPU_TICKS" "$REQS") µs CPU/req"
}

run_https() {
    wrk_scenario "$1" "$2" "$3" https "$CONNECTIONS" "https://$HOST:$TLS_PORT/bench"
    record scenario=https proxy="$1" threads="$2" round="$3" rps="$RPS" p50_ms="$P50" p99_ms="$P99" \
        cpu_us_per_req="$(us_per "$CPU_TICKS" "$REQS")" machine_busy_pct="$BUSY" non_2xx="$NON2XX" socket_errors="$SOCKERR"
    log "https     $1 t$2 r$3: $RPS req/s, p99 $P99 ms"
}

run_handshake() {
    local p=$1 t=$2 r=$3 out="$TMP/handshake.$1.t$2.r$3" hs ok errs p50 p99
    measured "${PIDS[$p]}" "$out" "$TLSLOAD" --addr "$HOST:$TLS_PORT" --host localhost --path /bench \
        -c "$HS_CONNECTIONS" -t 1 -d "$DURATION" --warmup "$WARMUP" || die "tlsload failed ($p)"
    read -r hs ok errs p50 p99 < <(sed -n 's/^handshakes_per_sec=\([0-9.]*\) ok=\([0-9]*\) errors=\([0-9]*\) p50_ms=\([0-9.]*\) p99_ms=\([0-9.]*\)$/\1 \2 \3 \4 \5/p' "$out")
    [[ -n ${hs:-} ]] || { cat "$out" >&2; die "could not parse tlsload output"; }
    record scenario=handshake proxy="$p" threads="$t" round="$r" handshakes_per_sec="$hs" p50_ms="$p50" p99_ms="$p99" \
        machine_busy_pct="$BUSY" errors="$errs"
    log "handshake $p t$t r$r: $hs handshakes/s, p99 $p99 ms, $errs errors"
}

run_h2() { # PROXY THREADS ROUND STREAMS
    local p=$1 t=$2 r=$3 m=$4 s="h2-$4" out="$TMP/h2-$4.$1.t$2.r$3" rps done_ failed
    measured "${PIDS[$p]}" "$out" h2load -t1 -c10 -m"$m" -D "$DURATION" --warm-up-time="${WARMUP}s" \
        "https://$HOST:$TLS_PORT/bench" || die "h2load failed ($s, $p)"
    rps=$(sed -n 's/^finished in [0-9.]*s, \([0-9.]*\) req\/s.*/\1/p' "$out")
    read -r done_ failed < <(sed -n 's/^requests: .* \([0-9]*\) done, [0-9]* succeeded, \([0-9]*\) failed.*/\1 \2/p' "$out")
    [[ -n $rps && -n ${done_:-} ]] || { cat "$out" >&2; die "could not parse h2load output"; }
    grep -q 'Application protocol: h2' "$out" || die "$p: h2load did not negotiate h2"
    record scenario="$s" proxy="$p" threads="$t" round="$r" rps="$rps" cpu_us_per_req="$(us_per "$CPU_TICKS" "$done_")" \
        machine_busy_pct="$BUSY" failed="$failed"
    log "$s    $p t$t r$r: $rps req/s, $failed failed"
}

run_body() {
    local p=$1
    wrk_scenario "$1" "$2" "$3" body-1m 8 "http://$HOST:$HTTP_PORT/1m"
    record scenario=body-1m proxy="$p" threads="$2" round="$3" mib_per_sec="$RPS" p99_ms="$P99" \
        peak_rss_mib="$(awk -v k="$(mem_kib "${PIDS[$p]}" VmHWM)" 'BEGIN { printf "%.1f", k / 1024 }')" \
        cpu_us_per_req="$(us_per "$CPU_TICKS" "$REQS")" non_2xx="$NON2XX" socket_errors="$SOCKERR"
    log "body-1m   $p t$2 r$3: $RPS MiB/s"
}

one_round() { # one_round PROXY@THREADS ROUND: a fresh proxy runs every selected scenario
    local p=${1%@*} t=${1#*@} r=$2
    log "=== round $r/$ROUNDS: $p, $t thread(s)"
    start_proxy "$p" "$t"
    scenario_on plain && run_plain "$p" "$t" "$r"
    scenario_on https && run_https "$p" "$t" "$r"
    scenario_on handshake && run_handshake "$p" "$t" "$r"
    scenario_on h2-10 && run_h2 "$p" "$t" "$r" 10
    scenario_on h2-100 && run_h2 "$p" "$t" "$r" 100
    scenario_on body-1m && run_body "$p" "$t" "$r"
    stop "$p"
    sleep 1
}

measure_idle() { # measure_idle PROXY THREADS
    local p=$1 t=$2 pid base idle pss held alive i
    start_proxy "$p" "$t"
    sleep 1
    pid=${PIDS[$p]}
    base=$(mem_kib "$pid" VmRSS)
    log "idle      $p: baseline RSS $((base / 1024)) MiB; opening $IDLE_CONNS idle keep-alive connections"
    start idle python3 "$BENCH_DIR/idle_conns.py" --host "$HOST" --port "$HTTP_PORT" -n "$IDLE_CONNS" --hold 900
    for ((i = 0; i < 1800; i++)); do
        grep -q '^READY' "$TMP/idle.out" 2>/dev/null && break
        kill -0 "${PIDS[idle]}" 2>/dev/null || { cat "$TMP/idle.out" >&2; die "idle_conns.py exited early for $p"; }
        sleep 0.1
    done
    grep -q '^READY' "$TMP/idle.out" || die "idle_conns.py did not get ready within 180 s for $p"
    held=$(awk '/^READY/ { print $2 }' "$TMP/idle.out")
    sleep 2 # let the proxy settle
    idle=$(mem_kib "$pid" VmRSS)
    pss=$(mem_kib "$pid" Pss)
    stop idle
    alive=$(awk '/^ALIVE/ { print $2 }' "$TMP/idle.out")
    record scenario=idle proxy="$p" threads="$t" round=1 baseline_rss_mib="$(awk -v k="$base" 'BEGIN { printf "%.1f", k / 1024 }')" \
        idle_rss_mib="$(awk -v k="$idle" 'BEGIN { printf "%.1f", k / 1024 }')" \
        idle_pss_mib="$(awk -v k="$pss" 'BEGIN { printf "%.1f", k / 1024 }')" \
        kib_per_idle_conn="$(awk -v a="$idle" -v b="$base" -v n="$held" 'BEGIN { printf "%.2f", n ? (a - b) / n : 0 }')" \
        idle_conns_held="$held" errors=$((IDLE_CONNS - ${alive:-0}))
    log "idle      $p: $held connections, RSS $((idle / 1024)) MiB, ${alive:-0} still open at the end"
    stop "$p"
}

# ---------------------------------------------------------------- run
CPU_BUSY_START="$(cpu_busy_pct)"
((CPU_BUSY_START <= 10)) || log "WARNING: the CPUs are ${CPU_BUSY_START}% busy before the run; figures will be skewed"
for port in $UPSTREAM_PORT $HTTP_PORT $TLS_PORT; do
    port_busy "$port" && die "something already listens on $HOST:$port; stop it first"
done
mkdir -p "$RESULTS_DIR"
make_cert
write_upstream_conf
start upstream nginx -e "$TMP/upstream/error.log" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf"
wait_http upstream "http://$HOST:$UPSTREAM_PORT/bench" 15

declare -A VERSIONS=()
ITEMS=()
for p in "${PROXIES[@]}"; do
    VERSIONS[$p]="$(version_of "$p")"
    for t in "${THREAD_COUNTS[@]}"; do
        "write_${p}_conf" "$t"
        ITEMS+=("$p@$t")
    done
done
RUN_SCENARIOS=()
for s in "${SCENARIOS[@]}"; do [[ $s == idle ]] || RUN_SCENARIOS+=("$s"); done
if ((${#RUN_SCENARIOS[@]})); then
    # Rounds interleave proxies within each thread count.
    for t in "${THREAD_COUNTS[@]}"; do
        ROUND_ITEMS=()
        for p in "${PROXIES[@]}"; do ROUND_ITEMS+=("$p@$t"); done
        interleaved "$ROUNDS" one_round "${ROUND_ITEMS[@]}"
    done
fi
if scenario_on idle; then
    for p in "${PROXIES[@]}"; do measure_idle "$p" "${THREAD_COUNTS[-1]}"; done
fi

# ---------------------------------------------------------------- report
python3 - "$TMP/meta.json" <<PY
import json, sys, datetime
versions = {$(for p in "${PROXIES[@]}"; do printf '"%s": "%s", ' "$p" "${VERSIONS[$p]//\"/}"; done)}
versions["load generators"] = "$(wrk -v 2>&1 | sed -n 1p | sed 's/ *Copyright.*//'); $(h2load --version 2>&1 | sed -n 1p); bench/tlsload (rustls)"
versions["upstream"] = "$(nginx -v 2>&1 | sed -n 1p), 1 worker"
json.dump({
    "title": "Proxy benchmark",
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "description": ("Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr); "
                    "load generator, upstream and proxy share these CPUs. Each figure is the median of $ROUNDS "
                    "rounds interleaved across the proxies ($WARMUP s warm-up, $DURATION s measured); proxies "
                    "run with the thread count shown (nginx worker processes, HAProxy nbthread, Warden data_threads). "
                    "Command: \`bench/proxy.sh\` (ONLY=${ONLY} SCENARIOS='${SCENARIOS[*]}' PROXY_THREADS='${THREAD_COUNTS[*]}')."),
    "scenarios": "${ALL_SCENARIOS[*]}".split(),
    "scenario_notes": {
        "plain": "HTTP/1.1 keep-alive, wrk -t$WRK_THREADS -c$CONNECTIONS",
        "https": "HTTPS keep-alive (TLS 1.3, ECDSA P-256), wrk -t$WRK_THREADS -c$CONNECTIONS",
        "handshake": "new TLS 1.3 connections, one request each, no resumption (bench/tlsload -c$HS_CONNECTIONS)",
        "h2-10": "HTTP/2 over TLS, h2load -t1 -c10 -m10",
        "h2-100": "HTTP/2 over TLS, h2load -t1 -c10 -m100",
        "body-1m": "1 MiB response bodies, wrk -c8 (MiB/s = responses/s)",
        "idle": "$IDLE_CONNS idle HTTP/1.1 keep-alive connections",
    },
    "machine": {"cpus": $(nproc), "cpu_busy_pct_before_run": $CPU_BUSY_START, "nofile_limit": $NOFILE},
    "versions": versions,
}, open(sys.argv[1], "w"), indent=2)
PY
python3 "$BENCH_DIR/report.py" "$RESULTS_JSONL" "$TMP/meta.json" "$RESULTS_DIR/proxy-latest"
