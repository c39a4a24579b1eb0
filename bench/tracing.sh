#!/usr/bin/env bash
# Tracing benchmark: what OpenTelemetry tracing costs Warden's plain HTTP/1.1 proxying
# (bench/proxy.sh's `plain` scenario), with spans exported over OTLP/HTTP to a collector
# stand-in, against the same Warden with tracing off, at the same data-plane thread count.
#
#   bench/tracing.sh                                   # defaults (~5 min)
#   PROXY_THREADS=2 DURATION=5 ROUNDS=2 bench/tracing.sh
#
# One nginx upstream on 127.0.0.1:18200 answers `200 ok\n`. Warden listens on 127.0.0.1:18280
# (upstream keep-alive, access log off, security events on, as in `warden serve`'s default).
# The collector stand-in is a second nginx on 127.0.0.1:18290 answering every OTLP POST with
# 200 and an empty body (an empty ExportTraceServiceResponse): it costs the machine little, so
# the figures are Warden's cost, span building and export included. Scenarios:
#   off         [tracing] enabled = false (the reference)
#   ratio-1     enabled, sampling_ratio = 0.01 (target: >= 97% of off)
#   ratio-100   enabled, sampling_ratio = 1.0: every request's server and client spans are
#               built and exported (target: >= 85% of off)
# Every request carries no traceparent, so the ratio decides. wrk -t2 -c$CONNECTIONS
# --latency for DURATION s after WARMUP s, ROUNDS rounds interleaved (order rotated);
# medians. Also the spans exported and dropped (from the admin /metrics).
# Results: a table on stdout, bench/results/tracing-latest.{json,md}.
#
# Environment: PROXY_THREADS ("1 2"), DURATION (10), WARMUP (2), ROUNDS (3),
# CONNECTIONS (50), WARDEN_BIN (default: build target/release/warden), RESULTS_DIR, KEEP_TMP=1.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
bench_init tracing.sh

DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
ROUNDS="${ROUNDS:-3}"
CONNECTIONS="${CONNECTIONS:-50}"
PROXY_THREADS="${PROXY_THREADS:-1 2}"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
HOST=127.0.0.1
UPSTREAM_PORT=18200
PROXY_PORT=18280
ADMIN_PORT=18281
SINK_PORT=18290
URL="http://$HOST:$PROXY_PORT/bench"
SCENARIOS=(off ratio-1 ratio-100)

for v in DURATION WARMUP ROUNDS CONNECTIONS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
((ROUNDS >= 1)) || die "ROUNDS must be at least 1"
for t in $PROXY_THREADS; do [[ $t =~ ^[1-9][0-9]*$ ]] || die "PROXY_THREADS: '$t' is not a thread count"; done

need_tools nginx:nginx-light wrk:wrk curl:curl python3:python3
raise_nofile 65536
if [[ -z ${WARDEN_BIN:-} ]]; then
    log "building warden (cargo build --release -p warden)"
    (cd "$ROOT" && cargo build --release -p warden)
    WARDEN_BIN="$ROOT/target/release/warden"
fi
[[ -x $WARDEN_BIN ]] || die "warden binary not found: $WARDEN_BIN"

warden_conf() { # warden_conf SCENARIO THREADS
    local d="$TMP/warden-$1-$2" tracing="enabled = false"
    mkdir -p "$d"
    case $1 in
        ratio-1) tracing="enabled = true
endpoint = \"http://$HOST:$SINK_PORT\"
sampling_ratio = 0.01" ;;
        ratio-100) tracing="enabled = true
endpoint = \"http://$HOST:$SINK_PORT\"
sampling_ratio = 1.0" ;;
    esac
    cat >"$d/warden.toml" <<EOF
[server]
idle_timeout = "300s"
max_connections = 20000
data_threads = $2

[admin]
address = "$HOST:$ADMIN_PORT"

[access_log]
enabled = false

[security_events]
enabled = true

[tracing]
$tracing

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

write_ok_upstream
write_nginx sink "$SINK_PORT" 'location /v1/ { default_type application/x-protobuf; return 200 ""; }'
start upstream nginx -e "$TMP/upstream/error.log" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf"
start sink nginx -e "$TMP/sink/error.log" -p "$TMP/sink" -c "$TMP/sink/nginx.conf"
wait_http upstream "http://$HOST:$UPSTREAM_PORT/" 10
[[ $(curl -sS -o /dev/null -w '%{http_code}' -X POST --data-binary x "http://$HOST:$SINK_PORT/v1/traces") == 200 ]] ||
    die "the collector stand-in does not answer"

metric() { # metric NAME{LABELS}: its value on the admin /metrics, 0 when absent
    curl -fsS "http://$HOST:$ADMIN_PORT/metrics" | awk -v n="$1" '$1 == n { v = $2 } END { print v + 0 }'
}

run() { # run SCENARIO:THREADS ROUND
    local s=${1%%:*} t=${1##*:} r=$2 out
    out="$TMP/$s.t$t.r$r"
    start warden "$WARDEN_BIN" serve --allow-root --config "$TMP/warden-$s-$t/warden.toml"
    wait_http warden "$URL" 30
    run_fg "$out.warmup" wrk -t2 -c"$CONNECTIONS" -d"${WARMUP}s" "$URL" || die "wrk warm-up failed ($s)"
    measured "${PIDS[warden]}" "$out" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$URL" || die "wrk failed ($s)"
    wrk_parse "$out"
    sleep 1.5 # the last batch (scheduled_delay is 5 s by default: give the counts a moment)
    local exported dropped
    exported=$(metric 'warden_tracing_exported_total{signal="spans"}')
    dropped=$(($(metric 'warden_tracing_dropped_total{signal="spans",reason="queue_full"}') + $(metric 'warden_tracing_dropped_total{signal="spans",reason="export_failed"}')))
    stop warden
    ((NON2XX == 0 && SOCKERR == 0)) || die "$s: $NON2XX non-2xx answers, $SOCKERR socket errors"
    record scenario="$s" threads="$t" round="$r" rps="$RPS" p50_ms="$P50" p99_ms="$P99" \
        cpu_us_per_req="$(us_per "$CPU_TICKS" "$REQS")" requests="$REQS" spans_exported="$exported" spans_dropped="$dropped" machine_busy_pct="$BUSY"
    log "$s t$t r$r: $RPS req/s, p99 $P99 ms, $(us_per "$CPU_TICKS" "$REQS") µs CPU/req, spans exported $exported, dropped $dropped"
}

ITEMS=()
for t in $PROXY_THREADS; do
    for s in "${SCENARIOS[@]}"; do
        warden_conf "$s" "$t"
        ITEMS+=("$s:$t")
    done
done
interleaved "$ROUNDS" run "${ITEMS[@]}"

mkdir -p "$RESULTS_DIR"
python3 - "$RESULTS_JSONL" "$RESULTS_DIR" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" "$DURATION" "$ROUNDS" <<'EOF'
import json, statistics, sys, datetime
rows = [json.loads(l) for l in open(sys.argv[1])]
out, rev, duration, rounds = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
med = {}
for key in sorted({(r["scenario"], r["threads"]) for r in rows}):
    rs = [r for r in rows if (r["scenario"], r["threads"]) == key]
    med[key] = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "spans_exported", "spans_dropped", "requests")}
when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
lines = [f"# Tracing cost ({when}, git {rev}, {duration} s x {rounds} rounds, medians)", "",
         "| threads | scenario | req/s | ÷ off | p99 ms | CPU µs/req | spans exported / requests | dropped |",
         "|---:|---|---:|---:|---:|---:|---:|---:|"]
for (s, t), m in sorted(med.items(), key=lambda kv: (kv[0][1], ["off", "ratio-1", "ratio-100"].index(kv[0][0]))):
    off = med.get(("off", t), {}).get("rps") or 0
    ratio = f"{m['rps'] / off:.3f}" if off else "-"
    share = f"{m['spans_exported']:.0f} / {m['requests']:.0f}"
    lines.append(f"| {t} | {s} | {m['rps']:.0f} | {ratio} | {m['p99_ms']:.2f} | {m['cpu_us_per_req']:.1f} | {share} | {m['spans_dropped']:.0f} |")
lines += ["", "Targets (issue 13): ratio-1 ≥ 0.97 × off, ratio-100 ≥ 0.85 × off, at the same thread count.",
          "Spans: the counts are of the whole process life (warm-up included); at 100 % each request makes a server and a client span."]
text = "\n".join(lines) + "\n"
open(f"{out}/tracing-latest.md", "w").write(text)
json.dump({"rows": rows, "medians": {f"{s}:{t}": m for (s, t), m in med.items()}}, open(f"{out}/tracing-latest.json", "w"), indent=1)
print(text)
EOF
