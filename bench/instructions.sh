#!/usr/bin/env bash
# Instructions per forwarded request, counted by callgrind: a figure that does not move with
# the machine's load (CPU time per request moves ±20 % when other work shares the cores).
#
#   bench/instructions.sh                               # build, measure, top functions
#   WARDEN_BIN=target/release/warden bench/instructions.sh
#
# Warden (the release build, one data thread, the `plain` route of bench/proxy.sh: HTTP/1.1
# keep-alive to one nginx upstream) runs under `valgrind --tool=callgrind` twice: once
# answering N1 requests, once N2 (`h2load --h1 -c10 -t1 -n N`), and the figure is
# (total(N2) - total(N1)) / (N2 - N1), which cancels start-up and shut-down. The N2 run's
# profile is summarised with callgrind_annotate (inclusive and self, top functions) into
# $RESULTS_DIR/instructions-latest.txt.
#
# Environment: N1 (1000), N2 (6000), WARDEN_BIN, RESULTS_DIR (bench/results), KEEP_TMP=1.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
bench_init instructions.sh

N1="${N1:-1000}"
N2="${N2:-6000}"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
HOST=127.0.0.1
PORT=18580
UPSTREAM_PORT=18500
for v in N1 N2; do [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number"; done
((N2 > N1 && N1 >= 100)) || die "need N2 > N1 >= 100"

need_tools valgrind:valgrind callgrind_annotate:valgrind h2load:nghttp2-client nginx:nginx-light curl:curl
if [[ -z ${WARDEN_BIN:-} ]]; then
    log "building warden (release)"
    (cd "$ROOT" && cargo build --release -p warden --locked) >&2
    WARDEN_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/warden"
fi
[[ -x $WARDEN_BIN ]] || die "no warden binary at $WARDEN_BIN"
for p in $PORT $UPSTREAM_PORT; do port_busy "$p" && die "$HOST:$p is in use"; done

mkdir -p "$TMP/upstream"
cat >"$TMP/upstream/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/upstream/nginx.pid;
error_log $TMP/upstream/error.log warn;
events { worker_connections 4096; }
http {
$(nginx_temp_paths "$TMP/upstream")
    access_log off;
    keepalive_requests 1000000;
    server {
        listen $HOST:$UPSTREAM_PORT;
        location / { return 200 "ok\n"; }
    }
}
EOF
start upstream nginx -e "$TMP/upstream/error.log" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf"
wait_http upstream "http://$HOST:$UPSTREAM_PORT/bench" 15

cat >"$TMP/warden.toml" <<EOF
[server]
data_threads = 1

[admin]
enabled = false

[access_log]
enabled = false

[reload]
watch = false

[[listeners]]
name = "bench"
address = "$HOST:$PORT"

[[clusters]]
name = "upstream"
endpoints = ["http://$HOST:$UPSTREAM_PORT"]

[[routes]]
name = "all"
auth = "none"
cluster = "upstream"
path_prefix = "/"
EOF

measure() { # measure N: sets TOTAL to the instructions of a Warden run answering N requests
    # (not run in $(...): the PIDS it records must reach the exit trap)
    local n=$1 out="$TMP/callgrind.$1.out"
    start warden valgrind --tool=callgrind --callgrind-out-file="$out" "$WARDEN_BIN" serve --allow-root --config "$TMP/warden.toml"
    wait_http warden "http://$HOST:$PORT/bench" 120
    # A warm-up outside the measured difference: the same in both runs.
    h2load --h1 -c10 -t1 -n 200 "http://$HOST:$PORT/bench" >/dev/null
    h2load --h1 -c10 -t1 -n "$n" "http://$HOST:$PORT/bench" >"$TMP/h2load.$n.out"
    grep -q " 0 failed, 0 errored" "$TMP/h2load.$n.out" || die "h2load: $(grep requests: "$TMP/h2load.$n.out")"
    stop warden
    TOTAL=$(awk '/^summary:/ { print $2 }' "$out")
    [[ $TOTAL =~ ^[0-9]+$ ]] || die "no callgrind summary in $out"
}

log "callgrind run answering $N1 requests"
measure "$N1"
t1=$TOTAL
log "callgrind run answering $N2 requests"
measure "$N2"
t2=$TOTAL
per=$(awk -v a="$t1" -v b="$t2" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }')

mkdir -p "$RESULTS_DIR"
report="$RESULTS_DIR/instructions-latest.txt"
{
    echo "# Instructions per forwarded request (plain HTTP/1.1 keep-alive, 1 data thread)"
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), $("$WARDEN_BIN" --version 2>/dev/null || echo warden) (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "# totals: $t1 for $N1 requests, $t2 for $N2: ($t2 - $t1) / $((N2 - N1)) = $per per request"
    echo
    echo "## Inclusive, top 60 (the $N2-request run, start-up included)"
    callgrind_annotate --inclusive=yes "$TMP/callgrind.$N2.out" 2>/dev/null | sed -n '1,80p' | cut -c1-200
    echo
    echo "## Self, top 60"
    callgrind_annotate "$TMP/callgrind.$N2.out" 2>/dev/null | sed -n '1,80p' | cut -c1-200
} >"$report"
echo "instructions per request: $per  (report: $report)"
