#!/usr/bin/env bash
# Reverse-proxy benchmark: Warden vs HAProxy vs nginx, on this machine.
#
#   bench/proxy.sh                       # all three, defaults
#   ONLY=haproxy,nginx DURATION=5 IDLE_CONNS=2000 bench/proxy.sh
#
# One nginx upstream on 127.0.0.1:18000 answers `200 ok\n` to every path. Each
# proxy in turn listens on 127.0.0.1:18080 in front of it, with equivalent
# settings (2 workers/threads, upstream keep-alive, no logging, long timeouts).
# For each proxy:
#   1. throughput/latency, ROUNDS times (interleaved with the other proxies):
#      a fresh proxy, WARMUP s of discarded load, then
#      `wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency` -> req/s, p50, p99
#      (medians over the rounds are reported);
#   2. memory: a freshly started proxy's RSS (baseline), then its RSS while
#      bench/idle_conns.py holds IDLE_CONNS idle keep-alive HTTP/1.1 connections.
# Results: a table on stdout, bench/results/proxy-latest.{json,md}.
#
# Environment:
#   ONLY         comma/space separated subset of: warden haproxy nginx (default: all)
#   DURATION     wrk seconds per proxy (15)        CONNECTIONS  wrk connections (50)
#   THREADS      wrk threads (2)                   WARMUP       warm-up seconds (3)
#   ROUNDS       wrk runs per proxy, interleaved across proxies; figures are medians (3)
#   IDLE_CONNS   idle connections for memory (10000)
#   WARDEN_BIN   warden binary to use (default: build target/release/warden)
#   RESULTS_DIR  where to write results (bench/results)
#   KEEP_TMP=1   keep the temp dir (configs, logs) after the run
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
export LC_ALL=C

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"

DURATION="${DURATION:-15}"
CONNECTIONS="${CONNECTIONS:-50}"
THREADS="${THREADS:-2}"
WARMUP="${WARMUP:-3}"
ROUNDS="${ROUNDS:-3}"
IDLE_CONNS="${IDLE_CONNS:-10000}"
ONLY="${ONLY:-warden,haproxy,nginx}"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
UPSTREAM_PORT=18000
PROXY_PORT=18080
HOST=127.0.0.1
URL="http://$HOST:$PROXY_PORT/bench"
WANT_NOFILE=65536

log() { printf '[proxy.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# Shared helpers: stop_pid, stop, run_fg, port_busy, load_below, uses, nginx_temp_paths.
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------- selection
PROXIES=()
for p in ${ONLY//,/ }; do
    case "$p" in
        warden | haproxy | nginx) PROXIES+=("$p") ;;
        *) die "unknown proxy '$p' in ONLY (use warden, haproxy, nginx)" ;;
    esac
done
((${#PROXIES[@]})) || die "ONLY selects nothing"
selected() { local x; for x in "${PROXIES[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }

for v in DURATION CONNECTIONS THREADS WARMUP ROUNDS IDLE_CONNS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done

# ---------------------------------------------------------------- tools
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
if selected haproxy; then command -v haproxy >/dev/null 2>&1 || need+=(haproxy); fi
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

# ---------------------------------------------------------------- fd limit
hard="$(ulimit -Hn)"
if [[ $hard != unlimited && $hard -lt $WANT_NOFILE ]]; then
    ulimit -Hn "$WANT_NOFILE" 2>/dev/null || true
    hard="$(ulimit -Hn)"
fi
if [[ $hard == unlimited || $hard -ge $WANT_NOFILE ]]; then
    ulimit -n "$WANT_NOFILE"
else
    ulimit -n "$hard"
    log "note: hard RLIMIT_NOFILE is $hard (< $WANT_NOFILE) and cannot be raised here; using $hard"
fi
NOFILE="$(ulimit -n)"
[[ $NOFILE == unlimited ]] && NOFILE=$WANT_NOFILE
((ROUNDS >= 1)) || die "ROUNDS must be at least 1"
((NOFILE >= IDLE_CONNS + 1000)) || die "open-file limit $NOFILE is too low for IDLE_CONNS=$IDLE_CONNS"
WORKER_CONNS=$((NOFILE < 20000 ? NOFILE : 20000))

# ---------------------------------------------------------------- processes
TMP="$(mktemp -d /tmp/warden-bench.XXXXXX)"
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
        log "logs and configs kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # start NAME CMD...: run in the background, output to $TMP/NAME.out
    local name=$1
    shift
    : >"$TMP/$name.out" # truncate here, not in the (asynchronous) child
    "$@" >>"$TMP/$name.out" 2>&1 &
    PIDS[$name]=$!
}


wait_http() { # wait_http NAME URL TIMEOUT_S
    local name=$1 url=$2 deadline=$((SECONDS + $3))
    while ! curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; do
        if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
            tail -n 30 "$TMP/$name.out" >&2 || true
            die "$name exited before answering on $url"
        fi
        ((SECONDS < deadline)) || { tail -n 30 "$TMP/$name.out" >&2 || true; die "$name did not answer on $url within $3 s"; }
        sleep 0.2
    done
}

proc_tree() { # proc_tree PID: the PID and all its descendants
    local f k v
    for f in /proc/[0-9]*/status; do
        local pid="" ppid=""
        { while read -r k v _; do
            case $k in
                Pid:) pid=$v ;;
                PPid:) ppid=$v; break ;;
            esac
        done <"$f"; } 2>/dev/null || continue
        [[ -n $pid && -n $ppid ]] && echo "$pid $ppid"
    done | awk -v root="$1" '
        { parent[$1] = $2 }
        END {
            print root
            n = 1; found[root] = 1
            do {
                added = 0
                for (p in parent) if (!(p in found) && (parent[p] in found)) { found[p] = 1; print p; added = 1 }
            } while (added)
        }'
}

mem_kib() { # mem_kib PID FIELD: sum of FIELD (VmRSS from status, Pss from smaps_rollup) over the tree, KiB
    local pid total=0 v
    for pid in $(proc_tree "$1"); do
        if [[ $2 == Pss ]]; then
            v=$(awk '/^Pss:/ { print $2; exit }' "/proc/$pid/smaps_rollup" 2>/dev/null || true)
        else
            v=$(awk -v f="$2:" '$1 == f { print $2; exit }' "/proc/$pid/status" 2>/dev/null || true)
        fi
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

nprocs() { proc_tree "$1" | wc -l; }

kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---------------------------------------------------------------- configs

write_upstream_conf() {
    local d="$TMP/upstream"
    mkdir -p "$d"
    cat >"$d/nginx.conf" <<EOF
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
$(nginx_temp_paths "$d")
    server {
        listen $HOST:$UPSTREAM_PORT backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
EOF
}

write_nginx_conf() {
    local d="$TMP/nginx" user_line=""
    mkdir -p "$d"
    # Workers of an nginx started as root drop to 'nobody'; keep them root so they
    # can use the temp dirs under $TMP (mode 0700).
    [[ $(id -u) -eq 0 ]] && user_line="user root;"
    cat >"$d/nginx.conf" <<EOF
$user_line
daemon off;
master_process on;
worker_processes 2;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $WORKER_CONNS; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
$(nginx_temp_paths "$d")
    upstream upstream {
        server $HOST:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen $HOST:$PROXY_PORT backlog=4096;
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
EOF
}

write_haproxy_conf() {
    local d="$TMP/haproxy"
    mkdir -p "$d"
    # No 'log' lines anywhere: HAProxy logs nothing.
    cat >"$d/haproxy.cfg" <<EOF
global
    nbthread 2
    maxconn 20000
    # The machine may not allow the ~2*maxconn fds HAProxy asks for; each idle
    # client connection needs one fd, so $NOFILE is enough here: warn, don't fail.
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
    default_backend upstream

backend upstream
    server u1 $HOST:$UPSTREAM_PORT
EOF
}

write_warden_conf() {
    local d="$TMP/warden"
    mkdir -p "$d"
    cat >"$d/warden.toml" <<EOF
[server]
idle_timeout = "300s"
max_connections = 20000

[admin]
enabled = false

[access_log]
enabled = false

[reload]
watch = false

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
EOF
}

start_proxy() { # start_proxy NAME
    case $1 in
        nginx) start nginx nginx -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" ;;
        haproxy) start haproxy haproxy -db -f "$TMP/haproxy/haproxy.cfg" ;;
        warden) start warden "$WARDEN_BIN" serve --config "$TMP/warden/warden.toml" ;;
    esac
    wait_http "$1" "$URL" 30
}

# ---------------------------------------------------------------- measurements
to_ms_awk='
function to_ms(v,   n) {
    n = v + 0
    if (v ~ /us$/) return n / 1000
    if (v ~ /ms$/) return n
    if (v ~ /[0-9]s$/) return n * 1000
    if (v ~ /[0-9]m$/) return n * 60000
    if (v ~ /[0-9]h$/) return n * 3600000
    return n
}'

run_wrk() { # run_wrk NAME -> sets RPS P50 P99 NON2XX SOCKERR
    local name=$1 out="$TMP/$1.wrk"
    log "$name: warm-up ${WARMUP}s"
    run_fg "$TMP/$name.warmup" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$URL" || die "wrk warm-up failed for $name"
    log "$name: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency $URL"
    run_fg "$out" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$URL" || { cat "$out" >&2; die "wrk failed for $name"; }
    sed 's/^/    /' "$out" >&2
    read -r RPS P50 P99 NON2XX SOCKERR < <(awk "$to_ms_awk"'
        /^[ \t]+50%/ { p50 = to_ms($2) }
        /^[ \t]+99%/ { p99 = to_ms($2) }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { gsub(/,/, ""); sockerr = $4 + $6 + $8 + $10 }
        END { printf "%s %.3f %.3f %d %d\n", (rps == "" ? "NA" : rps), p50, p99, non2xx, sockerr }' "$out")
    [[ $RPS != NA ]] || die "could not parse wrk output for $name"
    ((NON2XX == 0 && SOCKERR == 0)) || log "WARNING: $name: $NON2XX non-2xx responses, $SOCKERR socket errors"
}

measure_idle() { # measure_idle NAME -> sets BASE_KIB IDLE_KIB IDLE_PSS_KIB ALIVE HELD NPROCS
    local name=$1 pid out="$TMP/$1.idle" i
    start_proxy "$name"
    curl -fsS -o /dev/null "$URL"
    sleep 1
    pid=${PIDS[$name]}
    BASE_KIB=$(mem_kib "$pid" VmRSS)
    log "$name: baseline RSS $(kib_to_mib "$BASE_KIB") MiB; opening $IDLE_CONNS idle keep-alive connections"
    start idle python3 "$BENCH_DIR/idle_conns.py" --host "$HOST" --port "$PROXY_PORT" -n "$IDLE_CONNS" --hold 900
    for ((i = 0; i < 1800; i++)); do
        grep -q '^READY' "$TMP/idle.out" 2>/dev/null && break
        kill -0 "${PIDS[idle]}" 2>/dev/null || { cat "$TMP/idle.out" >&2; die "idle_conns.py exited early for $name"; }
        sleep 0.1
    done
    grep -q '^READY' "$TMP/idle.out" || die "idle_conns.py did not get ready within 180 s for $name"
    HELD=$(awk '/^READY/ { print $2 }' "$TMP/idle.out")
    log "$name: $(grep '^READY' "$TMP/idle.out")"
    sleep 2 # let the proxy settle
    IDLE_KIB=$(mem_kib "$pid" VmRSS)
    IDLE_PSS_KIB=$(mem_kib "$pid" Pss)
    NPROCS=$(nprocs "$pid")
    stop idle
    cp "$TMP/idle.out" "$out"
    ALIVE=$(awk '/^ALIVE/ { print $2 }' "$out")
    ALIVE=${ALIVE:-0}
    log "$name: RSS with $HELD idle connections $(kib_to_mib "$IDLE_KIB") MiB (PSS $(kib_to_mib "$IDLE_PSS_KIB") MiB, $NPROCS processes); $ALIVE still open at the end"
    ((HELD == IDLE_CONNS)) || log "WARNING: $name: only $HELD of $IDLE_CONNS connections were established"
    ((ALIVE == HELD)) || log "WARNING: $name: the proxy closed $((HELD - ALIVE)) idle connections during the measurement"
    stop "$name"
}

version_of() {
    case $1 in
        nginx) nginx -v 2>&1 | sed -n 1p ;;
        haproxy) haproxy -v 2>&1 | sed -n 1p ;;
        warden)
            local v
            v=$("$WARDEN_BIN" --version 2>/dev/null | sed -n 1p || true)
            [[ -n $v ]] || v="warden"
            local rev
            rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || true)
            echo "$v${rev:+ (git $rev)}"
            ;;
    esac
}

# ---------------------------------------------------------------- build warden
if selected warden; then
    if [[ -z ${WARDEN_BIN:-} ]]; then
        log "building warden (cargo build --release -p warden)"
        (cd "$ROOT" && cargo build --release -p warden)
        WARDEN_BIN="$ROOT/target/release/warden"
    fi
    [[ -x $WARDEN_BIN ]] || die "warden binary not found or not executable: $WARDEN_BIN"
fi

# ---------------------------------------------------------------- run
cpu_busy_pct() { # CPU time not idle over the next 2 s, in % of all CPUs
    local a b
    a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    sleep 2
    b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2];
        printf "%.0f", ((busy + idle) > 0 ? 100 * busy / (busy + idle) : 0) }'
}
CPU_BUSY_START="$(cpu_busy_pct)"
if ((CPU_BUSY_START > 10)); then
    log "WARNING: the CPUs are ${CPU_BUSY_START}% busy before the run; other work on the machine will skew the figures"
    ps -eo pcpu=,comm= --sort=-pcpu 2>/dev/null | sed -n 1,5p | sed 's/^/    /' >&2 || true
fi
for port in $UPSTREAM_PORT $PROXY_PORT; do
    port_busy "$port" && die "something already listens on $HOST:$port; stop it first"
done

mkdir -p "$RESULTS_DIR"
RESULTS_TSV="$TMP/results.tsv"
: >"$RESULTS_TSV"

write_upstream_conf
start upstream nginx -e "$TMP/upstream/error.log" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf"
wait_http upstream "http://$HOST:$UPSTREAM_PORT/bench" 15
log "upstream nginx ready on $HOST:$UPSTREAM_PORT"

declare -A VERSIONS=() RPS_L=() P50_L=() P99_L=() NON2XX_T=() SOCKERR_T=()
for name in "${PROXIES[@]}"; do
    "write_${name}_conf"
    VERSIONS[$name]="$(version_of "$name")"
    log "$name: ${VERSIONS[$name]}"
    RPS_L[$name]="" P50_L[$name]="" P99_L[$name]="" NON2XX_T[$name]=0 SOCKERR_T[$name]=0
done

# Throughput rounds, interleaved (and rotated) across proxies so that drift in
# the machine's speed over the run does not favour whichever proxy goes first.
n=${#PROXIES[@]}
for ((round = 0; round < ROUNDS; round++)); do
    for ((k = 0; k < n; k++)); do
        name=${PROXIES[$(((k + round) % n))]}
        log "=== round $((round + 1))/$ROUNDS: $name"
        start_proxy "$name"
        body=$(curl -fsS "$URL")
        [[ $body == ok ]] || die "$name returned an unexpected body: $body"
        run_wrk "$name"
        stop "$name"
        RPS_L[$name]+="${RPS_L[$name]:+,}$RPS"
        P50_L[$name]+="${P50_L[$name]:+,}$P50"
        P99_L[$name]+="${P99_L[$name]:+,}$P99"
        NON2XX_T[$name]=$((NON2XX_T[$name] + NON2XX))
        SOCKERR_T[$name]=$((SOCKERR_T[$name] + SOCKERR))
        sleep 1
    done
done

# Memory with idle connections, one fresh proxy process each.
for name in "${PROXIES[@]}"; do
    log "=== idle connections: $name"
    measure_idle "$name"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$name" "${VERSIONS[$name]}" "${RPS_L[$name]}" "${P50_L[$name]}" "${P99_L[$name]}" \
        "${NON2XX_T[$name]}" "${SOCKERR_T[$name]}" \
        "$BASE_KIB" "$IDLE_KIB" "$IDLE_PSS_KIB" "$HELD" "$ALIVE" "$NPROCS" >>"$RESULTS_TSV"
    sleep 1
done

# ---------------------------------------------------------------- report
CPU_MODEL="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
export CPU_MODEL DURATION CONNECTIONS THREADS WARMUP ROUNDS IDLE_CONNS NOFILE CPU_BUSY_START
export WRK_VERSION="$(wrk -v 2>&1 | sed -n 1p | sed "s/ *Copyright.*//" || true)"
export KERNEL="$(uname -sr)" NPROC="$(nproc)"
export UPSTREAM_VERSION="$(nginx -v 2>&1 | sed -n 1p)"
python3 - "$RESULTS_TSV" "$RESULTS_DIR/proxy-latest.json" "$RESULTS_DIR/proxy-latest.md" <<'PY'
import json, os, statistics, sys, datetime

tsv, json_path, md_path = sys.argv[1:4]
cols = ["proxy", "version", "rps", "p50_ms", "p99_ms", "non_2xx", "socket_errors",
        "baseline_rss_kib", "idle_rss_kib", "idle_pss_kib", "idle_conns_held",
        "idle_conns_alive_at_end", "processes"]
rows = []
for line in open(tsv):
    v = dict(zip(cols, line.rstrip("\n").split("\t")))
    r = {"proxy": v["proxy"], "version": v["version"]}
    rounds = [{"requests_per_sec": float(a), "p50_ms": float(b), "p99_ms": float(c)}
              for a, b, c in zip(v["rps"].split(","), v["p50_ms"].split(","), v["p99_ms"].split(","))]
    # Figures are medians over the rounds; every round is kept in "rounds".
    r["requests_per_sec"] = round(statistics.median(x["requests_per_sec"] for x in rounds), 2)
    r["p50_ms"] = round(statistics.median(x["p50_ms"] for x in rounds), 3)
    r["p99_ms"] = round(statistics.median(x["p99_ms"] for x in rounds), 3)
    r["rounds"] = rounds
    r["non_2xx"] = int(v["non_2xx"])
    r["socket_errors"] = int(v["socket_errors"])
    for k in ("baseline_rss_kib", "idle_rss_kib", "idle_pss_kib"):
        r[k.replace("_kib", "_mib")] = round(int(v[k]) / 1024, 1)
    held = int(v["idle_conns_held"])
    r["idle_conns_held"] = held
    r["idle_conns_alive_at_end"] = int(v["idle_conns_alive_at_end"])
    r["processes"] = int(v["processes"])
    r["kib_per_idle_conn"] = round((int(v["idle_rss_kib"]) - int(v["baseline_rss_kib"])) / held, 2) if held else None
    rows.append(r)

by = {r["proxy"]: r for r in rows}
ratios = {}
if "warden" in by:
    w = by["warden"]
    for other in ("haproxy", "nginx"):
        if other in by:
            o = by[other]
            div = lambda a, b: round(a / b, 3) if b else None
            ratios["warden/" + other] = {
                "requests_per_sec": div(w["requests_per_sec"], o["requests_per_sec"]),
                "p99": div(w["p99_ms"], o["p99_ms"]),
                "idle_rss": div(w["idle_rss_mib"], o["idle_rss_mib"]),
            }

env = os.environ
meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "machine": {"cpus": int(env["NPROC"]), "cpu_model": env.get("CPU_MODEL", ""), "kernel": env["KERNEL"],
                "nofile_limit": int(env["NOFILE"]),
                "cpu_busy_pct_before_run": int(env["CPU_BUSY_START"])},
    "load": {"tool": env["WRK_VERSION"], "threads": int(env["THREADS"]), "connections": int(env["CONNECTIONS"]),
             "duration_s": int(env["DURATION"]), "warmup_s": int(env["WARMUP"]),
             "rounds": int(env["ROUNDS"]), "figures": "median over rounds",
             "url": "http://127.0.0.1:18080/bench"},
    "upstream": env["UPSTREAM_VERSION"] + ", 1 worker, `return 200 \"ok\\n\"`, 127.0.0.1:18000",
    "idle_connections": int(env["IDLE_CONNS"]),
}
doc = dict(meta, results=rows, ratios=ratios)
with open(json_path, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")

def fmt(x, nd=1):
    return "n/a" if x is None else ("%.*f" % (nd, x))

head = ["proxy", "req/s", "p50 ms", "p99 ms", "baseline RSS MiB",
        "idle RSS MiB (%d conns)" % meta["idle_connections"], "KiB/conn"]
table = []
for r in rows:
    table.append([r["proxy"], fmt(r["requests_per_sec"], 0), fmt(r["p50_ms"], 3), fmt(r["p99_ms"], 3),
                  fmt(r["baseline_rss_mib"]), fmt(r["idle_rss_mib"]), fmt(r["kib_per_idle_conn"], 2)])
rtable = [[k, fmt(v["requests_per_sec"], 2), fmt(v["p99"], 2), fmt(v["idle_rss"], 2)] for k, v in ratios.items()]
rhead = ["ratio", "req/s", "p99", "idle RSS"]

def text_table(h, rs):
    w = [max(len(str(c)) for c in col) for col in zip(h, *rs)]
    line = lambda cells: "  ".join(str(c).rjust(w[i]) if i else str(c).ljust(w[i]) for i, c in enumerate(cells))
    return "\n".join([line(h), line(["-" * x for x in w])] + [line(r) for r in rs])

def md_table(h, rs):
    out = ["| " + " | ".join(h) + " |", "|" + "|".join(["---"] + ["---:"] * (len(h) - 1)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rs]
    return "\n".join(out)

notes = []
if meta["machine"]["cpu_busy_pct_before_run"] > 10:
    notes.append("the CPUs were %d%% busy just before the run: other work on the machine may have skewed the figures"
                 % meta["machine"]["cpu_busy_pct_before_run"])
for r in rows:
    if r["non_2xx"] or r["socket_errors"]:
        notes.append("%s: %d non-2xx responses, %d socket errors during wrk" % (r["proxy"], r["non_2xx"], r["socket_errors"]))
    if r["idle_conns_held"] != meta["idle_connections"]:
        notes.append("%s: only %d of %d idle connections established" % (r["proxy"], r["idle_conns_held"], meta["idle_connections"]))
    if r["idle_conns_alive_at_end"] != r["idle_conns_held"]:
        notes.append("%s: %d idle connections closed by the proxy before the end" % (r["proxy"], r["idle_conns_held"] - r["idle_conns_alive_at_end"]))

print()
print(text_table(head, table))
if rtable:
    print()
    print("Warden ratios (req/s: higher is better; p99 and idle RSS: lower is better)")
    print(text_table(rhead, rtable))
print()
for r in rows:
    print("%-8s %s" % (r["proxy"], r["version"]))
print("load: %s, -t%d -c%d -d%ds (warm-up %ds), median of %d interleaved rounds; upstream: %s" % (
    meta["load"]["tool"], meta["load"]["threads"], meta["load"]["connections"], meta["load"]["duration_s"],
    meta["load"]["warmup_s"], meta["load"]["rounds"], meta["upstream"]))
for r in rows:
    print("%-8s rounds req/s: %s" % (r["proxy"], ", ".join("%.0f" % x["requests_per_sec"] for x in r["rounds"])))
print("machine: %d CPUs (%s), %s" % (meta["machine"]["cpus"], meta["machine"]["cpu_model"], meta["machine"]["kernel"]))
for n in notes:
    print("WARNING: " + n)

with open(md_path, "w") as f:
    f.write("# Proxy benchmark, %s\n\n" % meta["date"])
    f.write("Machine: %d CPUs (%s), %s. Load generator, upstream and proxy share these CPUs.\n\n" % (
        meta["machine"]["cpus"], meta["machine"]["cpu_model"], meta["machine"]["kernel"]))
    f.write("Load: `wrk -t%d -c%d -d%ds --latency http://127.0.0.1:18080/bench` after a %d s warm-up; "
            "req/s, p50 and p99 are medians of %d rounds interleaved across the proxies. "
            "Upstream: %s. Memory: summed VmRSS of the proxy's processes, fresh (baseline) and holding "
            "%d idle keep-alive connections.\n\n" % (
        meta["load"]["threads"], meta["load"]["connections"], meta["load"]["duration_s"], meta["load"]["warmup_s"],
        meta["load"]["rounds"], meta["upstream"], meta["idle_connections"]))
    f.write(md_table(head, table) + "\n\n")
    f.write("Req/s per round: " + "; ".join("%s %s" % (r["proxy"], ", ".join("%.0f" % x["requests_per_sec"] for x in r["rounds"])) for r in rows) + ".\n\n")
    if rtable:
        f.write("Warden ratios (req/s: higher is better; p99 and idle RSS: lower is better):\n\n")
        f.write(md_table(rhead, rtable) + "\n\n")
    f.write("Versions:\n\n")
    for r in rows:
        f.write("- %s: %s\n" % (r["proxy"], r["version"]))
    f.write("- load generator: %s\n" % meta["load"]["tool"])
    for n in notes:
        f.write("\n**Warning:** %s\n" % n)
print("\nwrote %s and %s" % (json_path, md_path))
PY
