#!/usr/bin/env bash
# Sidecar benchmark: a Warden sidecar pair vs an HAProxy pair doing the same mTLS vs a direct
# call, side by side in one run.
#
#   bench/sidecar.sh                                  # everything, defaults (~5 min)
#   ROUNDS=1 DURATION=5 WARMUP=1 bench/sidecar.sh     # a quick look (~1.5 min)
#   WARDEN_BIN=target/release/warden bench/sidecar.sh # use this binary, skip the build
#
# Everything on 127.0.0.1. One nginx upstream (1 worker, `200 ok\n`), and three paths to it:
#   direct   load generator → nginx
#   warden   load → sidecar A `outbound` (plain HTTP) → mTLS → sidecar B `inbound` → nginx.
#            A and B are `warden serve` processes with `[sidecar]`: each gets its X.509-SVID
#            at start from a `warden serve` authority (`[authority.ca]`, trust domain
#            example.org) with a one-time join token registered through the admin API. A
#            accepts only B's SPIFFE ID as the server; B accepts only A's as the client.
#   haproxy  load → HAProxy A (HTTP frontend; HTTPS backend with a client certificate,
#            `verify required`) → HAProxy B (`bind ssl ... verify required`) → nginx, with
#            SVIDs issued by the same authority for the same two SPIFFE IDs (CSRs made with
#            openssl). HAProxy verifies the chain only: it cannot check a SPIFFE ID.
# Each proxy runs one thread (Warden `[server] data_threads = 1`, HAProxy `nbthread 1`).
#
# Scenarios, ROUNDS rounds each, interleaved across the paths with the order rotated:
#   latency    RATE requests/s (default 2,000) at a constant rate, open loop, over CONNECTIONS
#              keep-alive connections (bench/tlsload's `rateload`, as wrk2): p50/p90/p99/p99.9
#              per path; added latency = pair − direct (same round); the CPU time of the two
#              proxies over the run ÷ requests (ms per 1,000 requests = millicores at 1,000
#              req/s); each proxy's VmRSS in the middle of the measured run and VmHWM at its
#              end; requests per A→B connection (Warden: A's metrics; HAProxy: A's stats).
#   baseline   (once) each proxy's VmRSS after start, before any load.
#   handshake  new mTLS connections into B (Warden sidecar B vs HAProxy B), one request each,
#              no resumption, client certificate = A's SVID (bench/tlsload --cert):
#              handshakes/s, p50/p99, and B's CPU per handshake.
# Results: a table on stdout, bench/results/sidecar-latest.{json,md}.
#
# Environment:
#   RATE (2000)  CONNECTIONS (10)  DURATION (15)  WARMUP (3)  ROUNDS (3)
#   HS_DURATION (10)  HS_CONNECTIONS (32)  SCENARIOS (latency handshake)
#   WARDEN_BIN   warden binary (default: build target/release/warden)
#   RESULTS_DIR  where to write results (bench/results);  KEEP_TMP=1 keeps configs and logs
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
bench_init sidecar.sh

RATE="${RATE:-2000}"
CONNECTIONS="${CONNECTIONS:-10}"
DURATION="${DURATION:-15}"
WARMUP="${WARMUP:-3}"
ROUNDS="${ROUNDS:-3}"
HS_DURATION="${HS_DURATION:-10}"
HS_CONNECTIONS="${HS_CONNECTIONS:-32}"
SCENARIOS_SEL="${SCENARIOS:-latency handshake}"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
HOST=127.0.0.1
UPSTREAM_PORT=18000
AUTH_PORT=18200    # the authority (CA and admin API)
AUTH_GW_PORT=18201 # the authority process's own gateway listener (unused)
WA_PORT=18101      # Warden sidecar A, outbound (plain HTTP)
WB_PORT=18102      # Warden sidecar B, inbound (mTLS)
WA_ADMIN=18103     # sidecar A's admin listener (/metrics)
WB_ADMIN=18104
HA_PORT=18111      # HAProxy A, HTTP frontend
HB_PORT=18112      # HAProxy B, TLS frontend
HA_STATS=18113     # HAProxy A's stats page
TD=example.org
ID_A="spiffe://$TD/a"
ID_B="spiffe://$TD/b"

for v in RATE CONNECTIONS DURATION WARMUP ROUNDS HS_DURATION HS_CONNECTIONS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
((ROUNDS >= 1 && DURATION >= 2 && RATE >= 1)) || die "ROUNDS ≥ 1, DURATION ≥ 2, RATE ≥ 1"
SCENARIOS=()
for s in ${SCENARIOS_SEL//,/ }; do
    case $s in latency | handshake) SCENARIOS+=("$s") ;; *) die "unknown scenario '$s' (use: latency handshake)" ;; esac
done
scenario_on() { local x; for x in "${SCENARIOS[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }

need_tools nginx:nginx-light haproxy:haproxy curl:curl python3:python3 openssl:openssl ss:iproute2
raise_nofile 65536

# ---------------------------------------------------------------- binaries
if [[ -z ${WARDEN_BIN:-} ]]; then
    log "building warden (cargo build --release --locked -p warden)"
    (cd "$ROOT" && cargo build --release --locked -p warden)
    WARDEN_BIN="$ROOT/target/release/warden"
fi
[[ -x $WARDEN_BIN ]] || die "warden binary not found: $WARDEN_BIN"
log "building bench/tlsload (rateload: constant-rate HTTP; tlsload: handshakes)"
(cd "$BENCH_DIR/tlsload" && CARGO_TARGET_DIR="$BENCH_DIR/tlsload/target" cargo build --release --quiet)
RATELOAD="$BENCH_DIR/tlsload/target/release/rateload"
TLSLOAD="$BENCH_DIR/tlsload/target/release/tlsload"

# ---------------------------------------------------------------- helpers
PKI="$TMP/pki"
ADMIN_TOKEN="bench-admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

wait_port() { # wait_port NAME PORT TIMEOUT_S: until PORT accepts connections
    local deadline=$((SECONDS + $3))
    until port_busy "$2"; do
        kill -0 "${PIDS[$1]}" 2>/dev/null || { tail -n 30 "$TMP/$1.out" >&2 || true; die "$1 exited before listening on $2"; }
        ((SECONDS < deadline)) || { tail -n 30 "$TMP/$1.out" >&2 || true; die "$1 did not listen on $2 within $3 s"; }
        sleep 0.1
    done
}

json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

admin_post() { # admin_post PATH JSON: the authority's admin API
    curl -fsS -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' \
        -d "$2" "http://$HOST:$AUTH_PORT$1"
}

register() { admin_post /admin/workloads "{\"spiffe_id\": \"$1\"}" | json_field id; }
join_token() { admin_post "/admin/workloads/$1/join-token" '{}' | json_field token; }

# issue_svid NAME ENTRY: a P-256 key and CSR made with openssl, an SVID for them from the CA
# with a fresh join token. Writes $PKI/NAME.key, NAME.chain.pem (leaf, intermediate),
# NAME.pem (chain then key, for HAProxy) and $PKI/bundle.pem (the trust bundle's roots).
issue_svid() {
    local name=$1 entry=$2 token
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
    openssl req -new -key "$PKI/$name.key" -subj "/O=bench-$name" -out "$PKI/$name.csr" 2>/dev/null
    token=$(join_token "$entry")
    python3 - "$token" "$PKI/$name.csr" >"$PKI/$name.req.json" <<'PY'
import json, sys
print(json.dumps({"join_token": sys.argv[1], "csr": open(sys.argv[2]).read()}))
PY
    curl -fsS -H 'content-type: application/json' --data-binary "@$PKI/$name.req.json" \
        "http://$HOST:$AUTH_PORT/ca/v1/svid" >"$PKI/$name.svid.json" || die "the CA refused the CSR for $name"
    python3 - "$PKI" "$name" <<'PY'
import base64, json, sys, textwrap
pki, name = sys.argv[1:3]
doc = json.load(open(f"{pki}/{name}.svid.json"))
open(f"{pki}/{name}.chain.pem", "w").write(doc["svid"])
open(f"{pki}/{name}.pem", "w").write(doc["svid"].rstrip("\n") + "\n" + open(f"{pki}/{name}.key").read())
roots = [k["x5c"][0] for k in doc["bundle"]["keys"] if k.get("use") == "x509-svid"]
assert roots, "no X.509 authority in the bundle"
with open(f"{pki}/bundle.pem", "w") as f:
    for r in roots:
        f.write("-----BEGIN CERTIFICATE-----\n" + "\n".join(textwrap.wrap(r, 64)) + "\n-----END CERTIFICATE-----\n")
print(doc["spiffe_id"])
PY
}

per1k() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.1f", n ? t * 1e6 / hz / n : 0 }'; } # CPU ms per 1,000
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# kv FILE KEY: the value of KEY=… in a `key=value key=value` line.
kv() { tr ' ' '\n' <"$1" | sed -n "s/^$2=//p" | head -n 1; }

# warden_metric PORT NAME: the sum of a Warden counter over its labels.
warden_metric() {
    curl -fsS "http://$HOST:$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%d\n", s }'
}

# haproxy_server_stat FIELD...: fields of HAProxy A's server `to_b/b` from its CSV stats.
haproxy_server_stat() {
    curl -fsS "http://$HOST:$HA_STATS/stats;csv" | python3 -c '
import csv, sys
rows = list(csv.reader(sys.stdin))
head = [h.lstrip("# ") for h in rows[0]]
for r in rows[1:]:
    d = dict(zip(head, r))
    if d.get("pxname") == "to_b" and d.get("svname") == "b":
        print(" ".join(d.get(f) or "0" for f in sys.argv[1:]))
        break
' "$@"
}

# ---------------------------------------------------------------- configs
write_upstream_conf() {
    write_ok_upstream
}

write_authority_conf() {
    head -c 32 /dev/urandom >"$TMP/kek"
    printf '%s' "$ADMIN_TOKEN" >"$TMP/admin-token"
    chmod 600 "$TMP/kek" "$TMP/admin-token"
    cat >"$TMP/authority.toml" <<EOT
[reload]
watch = false
[access_log]
enabled = false
[admin]
enabled = false

[[listeners]]
name = "main"
address = "$HOST:$AUTH_GW_PORT"

[authority]
enabled = true
listen = "$HOST:$AUTH_PORT"
storage = "$TMP/authority.db"
key_encryption_key = "file:$TMP/kek"
admin_token = "file:$TMP/admin-token"

[authority.ca]
trust_domain = "$TD"
EOT
}

# The settings both sidecars share: one data-plane thread, as proxy.sh's Warden; no access
# log; the admin listener on for /metrics (read before and after runs, never during one).
sidecar_head() { # sidecar_head ADMIN_PORT TOKEN_FILE
    cat <<EOT
[server]
idle_timeout = "300s"
max_connections = 20000
data_threads = 1

[admin]
enabled = true
address = "$HOST:$1"

[access_log]
enabled = false

[reload]
watch = false

[sidecar]
authority = "http://$HOST:$AUTH_PORT"
trust_domain = "$TD"
join_token = "file:$2"
EOT
}

write_sidecar_b_conf() {
    { sidecar_head "$WB_ADMIN" "$TMP/b.token"; cat <<EOT

[[listeners]]
name = "inbound"
address = "$HOST:$WB_PORT"
role = "inbound"

[[clusters]]
name = "local"
endpoints = ["http://$HOST:$UPSTREAM_PORT"]

[[routes]]
name = "service"
cluster = "local"
path_prefix = "/"
[routes.auth]
accept = ["client_cert"]
subjects = ["$ID_A"]
EOT
    } >"$TMP/sidecar-b.toml"
}

write_sidecar_a_conf() {
    { sidecar_head "$WA_ADMIN" "$TMP/a.token"; cat <<EOT

[[listeners]]
name = "outbound"
address = "$HOST:$WA_PORT"
role = "outbound"

[[clusters]]
name = "b"
endpoints = ["https://$HOST:$WB_PORT"]
spiffe_ids = ["$ID_B"]

[[routes]]
name = "to-b"
cluster = "b"
path_prefix = "/"
auth = "none"
EOT
    } >"$TMP/sidecar-a.toml"
}

haproxy_head() {
    # No 'log' lines: HAProxy logs nothing. Session resumption off on both sides, as on
    # Warden's mesh listeners and clusters.
    cat <<EOT
global
    nbthread 1
    maxconn 20000
    no strict-limits
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
    ssl-default-server-options ssl-min-ver TLSv1.2 no-tls-tickets

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
EOT
}

write_haproxy_confs() {
    { haproxy_head; cat <<EOT

frontend inbound
    bind $HOST:$HB_PORT ssl crt $PKI/hb.pem ca-file $PKI/bundle.pem verify required alpn http/1.1
    default_backend local

backend local
    server u1 $HOST:$UPSTREAM_PORT
EOT
    } >"$TMP/haproxy-b.cfg"
    { haproxy_head; cat <<EOT

frontend outbound
    bind $HOST:$HA_PORT
    default_backend to_b

backend to_b
    server b $HOST:$HB_PORT ssl crt $PKI/ha.pem ca-file $PKI/bundle.pem verify required no-ssl-reuse alpn http/1.1

listen stats
    bind $HOST:$HA_STATS
    stats enable
    stats uri /stats
EOT
    } >"$TMP/haproxy-a.cfg"
}

# ---------------------------------------------------------------- set-up
CPU_BUSY_START="$(cpu_busy_pct)"
((CPU_BUSY_START <= 10)) || log "WARNING: the CPUs are ${CPU_BUSY_START}% busy before the run; figures will be skewed"
for port in $UPSTREAM_PORT $AUTH_PORT $AUTH_GW_PORT $WA_PORT $WB_PORT $WA_ADMIN $WB_ADMIN $HA_PORT $HB_PORT $HA_STATS; do
    port_busy "$port" && die "something already listens on $HOST:$port; stop it first"
done
mkdir -p "$RESULTS_DIR" "$PKI"
chmod 700 "$PKI"

write_upstream_conf
start upstream nginx -e "$TMP/upstream/error.log" -p "$TMP/upstream" -c "$TMP/upstream/nginx.conf"
wait_http upstream "http://$HOST:$UPSTREAM_PORT/bench" 15

log "starting the authority (CA for $TD)"
write_authority_conf
start authority "$WARDEN_BIN" serve --allow-root --config "$TMP/authority.toml"
wait_http authority "http://$HOST:$AUTH_PORT/ca/v1/bundle" 60

ENTRY_A=$(register "$ID_A") || die "could not register $ID_A with the authority"
ENTRY_B=$(register "$ID_B") || die "could not register $ID_B with the authority"
join_token "$ENTRY_A" >"$TMP/a.token" || die "no join token for $ID_A"
join_token "$ENTRY_B" >"$TMP/b.token" || die "no join token for $ID_B"
chmod 600 "$TMP"/*.token
# The HAProxy pair's certificates, and the handshake client's: SVIDs for the same two IDs.
[[ $(issue_svid ha "$ENTRY_A") == "$ID_A" ]] || die "HAProxy A's SVID is not for $ID_A"
[[ $(issue_svid hb "$ENTRY_B") == "$ID_B" ]] || die "HAProxy B's SVID is not for $ID_B"
chmod 600 "$PKI"/*

log "starting sidecar B, sidecar A, HAProxy B, HAProxy A"
write_sidecar_b_conf
write_sidecar_a_conf
write_haproxy_confs
start warden-b "$WARDEN_BIN" serve --allow-root --config "$TMP/sidecar-b.toml"
wait_port warden-b "$WB_PORT" 60
start warden-a "$WARDEN_BIN" serve --allow-root --config "$TMP/sidecar-a.toml"
wait_http warden-a "http://$HOST:$WA_PORT/bench" 60
start haproxy-b haproxy -db -f "$TMP/haproxy-b.cfg"
wait_port haproxy-b "$HB_PORT" 15
start haproxy-a haproxy -db -f "$TMP/haproxy-a.cfg"
wait_http haproxy-a "http://$HOST:$HA_PORT/bench" 15

# What each pair does, checked before anything is measured.
CLIENT_A=(-k --cert "$PKI/ha.chain.pem" --key "$PKI/ha.key")
CLIENT_B=(-k --cert "$PKI/hb.chain.pem" --key "$PKI/hb.key")
for name in warden-a haproxy-a; do
    port=$([[ $name == warden-a ]] && echo "$WA_PORT" || echo "$HA_PORT")
    [[ $(curl -fsS "http://$HOST:$port/bench") == ok ]] || die "$name: no 'ok' through the pair"
done
for name in warden-b haproxy-b; do
    port=$([[ $name == warden-b ]] && echo "$WB_PORT" || echo "$HB_PORT")
    [[ $(curl -fsS "${CLIENT_A[@]}" "https://$HOST:$port/bench") == ok ]] || die "$name refused A's SVID"
    if curl -ksS -o /dev/null "https://$HOST:$port/bench" 2>/dev/null; then die "$name answered a client without a certificate"; fi
done
# A valid SVID of the trust domain that is not A: Warden's B refuses it (403: the route allows
# A only); HAProxy checks the chain, not the SPIFFE ID, and lets it through.
WB_OTHER=$(curl -sS -o /dev/null -w '%{http_code}' "${CLIENT_B[@]}" "https://$HOST:$WB_PORT/bench" || true)
HB_OTHER=$(curl -sS -o /dev/null -w '%{http_code}' "${CLIENT_B[@]}" "https://$HOST:$HB_PORT/bench" || true)
[[ $WB_OTHER == 403 ]] || die "Warden's sidecar B answered $WB_OTHER to a caller other than $ID_A (want 403)"
log "checked: both pairs answer; both Bs refuse a client without a certificate; B given $ID_B's SVID as the caller: Warden $WB_OTHER, HAProxy $HB_OTHER"

declare -A PAIR_PIDS=([warden]="${PIDS[warden-a]} ${PIDS[warden-b]}" [haproxy]="${PIDS[haproxy-a]} ${PIDS[haproxy-b]}")
# Memory before any load (after start and the few requests of the checks above).
sleep 1
for p in warden haproxy; do
    read -r a b <<<"${PAIR_PIDS[$p]}"
    # RssAnon (heap, stacks) and RssFile (the binary's and libraries' pages) go to the JSON only.
    record scenario=baseline proxy="$p" threads=1 round=1 rss_a_mib="$(mib "$(mem_kib "$a" VmRSS)")" rss_b_mib="$(mib "$(mem_kib "$b" VmRSS)")" \
        rss_anon_a_mib="$(mib "$(mem_kib "$a" RssAnon)")" rss_file_a_mib="$(mib "$(mem_kib "$a" RssFile)")" \
        rss_anon_b_mib="$(mib "$(mem_kib "$b" RssAnon)")" rss_file_b_mib="$(mib "$(mem_kib "$b" RssFile)")"
done
declare -A ENTRY_PORT=([direct]=$UPSTREAM_PORT [warden]=$WA_PORT [haproxy]=$HA_PORT)
declare -A B_PORT=([warden]=$WB_PORT [haproxy]=$HB_PORT)
declare -A SENT_TOTAL=([warden]=0 [haproxy]=0)

# ---------------------------------------------------------------- scenarios
run_latency() { # run_latency PATH ROUND
    local p=$1 r=$2 out="$TMP/latency.$1.r$2" a b t0a t0b ta tb rss_a=0 rss_b=0 hwm_a=0 hwm_b=0 c0 busy
    read -r a b <<<"${PAIR_PIDS[$p]:-0 0}"
    if [[ $p != direct ]]; then t0a=$(tree_ticks "$a"); t0b=$(tree_ticks "$b"); fi
    c0=$(cpu_sample)
    : >"$out"
    "$RATELOAD" --addr "$HOST:${ENTRY_PORT[$p]}" --path /bench --rate "$RATE" -c "$CONNECTIONS" \
        -d "$DURATION" --warmup "$WARMUP" >"$out" 2>&1 &
    PIDS[fg]=$!
    if [[ $p != direct ]]; then
        # Resident memory at the rate: in the middle of the measured run.
        sleep "$(awk -v w="$WARMUP" -v d="$DURATION" 'BEGIN { print w + d / 2 }')"
        rss_a=$(mem_kib "$a" VmRSS)
        rss_b=$(mem_kib "$b" VmRSS)
    fi
    wait "${PIDS[fg]}" || { cat "$out" >&2; unset "PIDS[fg]"; die "rateload failed ($p)"; }
    unset "PIDS[fg]"
    busy=$(busy_between "$c0" "$(cpu_sample)")
    local rps ok errs p50 p90 p99 p999 max sent behind
    rps=$(kv "$out" rps) ok=$(kv "$out" ok) errs=$(kv "$out" errors) p50=$(kv "$out" p50_ms)
    p90=$(kv "$out" p90_ms) p99=$(kv "$out" p99_ms) p999=$(kv "$out" p999_ms) max=$(kv "$out" max_ms)
    sent=$(kv "$out" sent) behind=$(kv "$out" behind)
    [[ -n $rps && -n $sent ]] || { cat "$out" >&2; die "could not parse rateload output ($p)"; }
    local threads=1
    [[ $p == direct ]] && threads=0
    local row=(scenario=latency proxy="$p" threads="$threads" round="$r"
        rps="$rps" p50_ms="$p50" p90_ms="$p90" p99_ms="$p99" p999_ms="$p999" max_ms="$max"
        machine_busy_pct="$busy" errors="$errs" behind="$behind")
    if [[ $p != direct ]]; then
        ta=$(($(tree_ticks "$a") - t0a))
        tb=$(($(tree_ticks "$b") - t0b))
        hwm_a=$(mem_kib "$a" VmHWM)
        hwm_b=$(mem_kib "$b" VmHWM)
        SENT_TOTAL[$p]=$((SENT_TOTAL[$p] + sent))
        # CPU ms per 1,000 requests (= millicores at 1,000 req/s), over warm-up and measured run.
        row+=(cpu_ms_per_1k_req="$(per1k $((ta + tb)) "$sent")"
            cpu_ms_per_1k_req_a="$(per1k "$ta" "$sent")" cpu_ms_per_1k_req_b="$(per1k "$tb" "$sent")"
            rss_a_mib="$(mib "$rss_a")" rss_b_mib="$(mib "$rss_b")"
            peak_rss_a_mib="$(mib "$hwm_a")" peak_rss_b_mib="$(mib "$hwm_b")")
    fi
    record "${row[@]}"
    log "latency   $p r$r: $rps req/s, p50 $p50 ms, p99 $p99 ms, $errs errors$([[ $p == direct ]] || echo ", RSS A/B $(mib "$rss_a")/$(mib "$rss_b") MiB, CPU ticks A/B $ta/$tb")"
}

run_handshake() { # run_handshake PROXY ROUND: new mTLS connections into B
    local p=$1 r=$2 out="$TMP/handshake.$1.r$2" b hs ok errs p50 p99
    read -r _ b <<<"${PAIR_PIDS[$p]}"
    measured "$b" "$out" "$TLSLOAD" --addr "$HOST:${B_PORT[$p]}" --host localhost --path /bench \
        -c "$HS_CONNECTIONS" -t 1 -d "$HS_DURATION" --warmup 0 --cert "$PKI/ha.chain.pem" --key "$PKI/ha.key" ||
        die "tlsload failed ($p)"
    read -r hs ok errs p50 p99 < <(sed -n 's/^handshakes_per_sec=\([0-9.]*\) ok=\([0-9]*\) errors=\([0-9]*\) p50_ms=\([0-9.]*\) p99_ms=\([0-9.]*\)$/\1 \2 \3 \4 \5/p' "$out")
    [[ -n ${hs:-} ]] || { cat "$out" >&2; die "could not parse tlsload output"; }
    # No warm-up (B is warm from the checks and the latency phase): B's CPU ÷ the handshakes.
    record scenario=handshake proxy="$p" threads=1 round="$r" handshakes_per_sec="$hs" p50_ms="$p50" p99_ms="$p99" \
        cpu_us_per_req="$(us_per "$CPU_TICKS" "$ok")" machine_busy_pct="$BUSY" errors="$errs"
    log "handshake $p r$r: $hs handshakes/s, p99 $p99 ms, $errs errors"
}

# ---------------------------------------------------------------- run
if scenario_on latency; then
    interleaved "$ROUNDS" run_latency direct warden haproxy
    # Requests per A→B connection over the whole latency phase (the sanity checks' few
    # requests included): Warden from sidecar A's counters, HAProxy from A's stats.
    read -r W_REQS W_CONNS < <(echo "$(warden_metric "$WA_ADMIN" warden_requests_total) $(warden_metric "$WA_ADMIN" warden_upstream_connections_opened_total)")
    read -r H_REQS H_CONNS H_REUSE < <(haproxy_server_stat stot connect reuse)
    record scenario=reuse proxy=warden threads=1 round=1 requests="$W_REQS" connections="$W_CONNS" \
        reuse_ratio="$(awk -v r="$W_REQS" -v c="$W_CONNS" 'BEGIN { printf "%.0f", c ? r / c : 0 }')"
    record scenario=reuse proxy=haproxy threads=1 round=1 requests="$H_REQS" connections="$H_CONNS" reused="${H_REUSE:-0}" \
        reuse_ratio="$(awk -v r="$H_REQS" -v c="$H_CONNS" 'BEGIN { printf "%.0f", c ? r / c : 0 }')"
    log "reuse     warden: $W_REQS requests over $W_CONNS A→B connections; haproxy: $H_REQS over $H_CONNS"
fi
if scenario_on handshake; then
    interleaved "$ROUNDS" run_handshake warden haproxy
fi

# ---------------------------------------------------------------- report
python3 - "$TMP/meta.json" <<PY
import json, sys, datetime
json.dump({
    "title": "Sidecar benchmark",
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "description": ("Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr); "
                    "load generator, upstream, authority and both proxies of a pair share these CPUs. "
                    "Paths: direct (load → nginx), warden (load → sidecar A outbound → mTLS → sidecar B inbound → nginx), "
                    "haproxy (load → HAProxy A → mTLS → HAProxy B → nginx); one thread per proxy "
                    "(threads 0 = no proxy). Each figure is the median of $ROUNDS rounds interleaved across the paths. "
                    "Command: \`bench/sidecar.sh\` (RATE=$RATE CONNECTIONS=$CONNECTIONS DURATION=$DURATION WARMUP=$WARMUP "
                    "ROUNDS=$ROUNDS HS_DURATION=$HS_DURATION HS_CONNECTIONS=$HS_CONNECTIONS)."),
    "scenarios": ["baseline", "latency", "reuse", "handshake"],
    "scenario_notes": {
        "baseline": "resident memory after start, before any load",
        "latency": "$RATE req/s constant rate (open loop), $CONNECTIONS keep-alive connections, ${WARMUP} s warm-up, ${DURATION} s measured (bench/tlsload's rateload)",
        "reuse": "requests ÷ A→B connections opened, over the whole latency phase",
        "handshake": "new mTLS connections into B with A's SVID as client certificate, one request each, no resumption (bench/tlsload -c$HS_CONNECTIONS --cert)",
    },
    "machine": {"cpus": $(nproc), "cpu_busy_pct_before_run": $CPU_BUSY_START, "nofile_limit": $NOFILE,
                "loadavg_at_end": "$(cut -d' ' -f1-3 /proc/loadavg)"},
    "checks": {"warden_b_other_spiffe_id_status": "$WB_OTHER", "haproxy_b_other_spiffe_id_status": "$HB_OTHER"},
    "rate": $RATE,
    "versions": {
        "warden": "$("$WARDEN_BIN" --version 2>/dev/null | sed -n 1p || echo warden) (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))",
        "haproxy": "$(haproxy -v 2>&1 | sed -n 1p)",
        "upstream": "$(nginx -v 2>&1 | sed -n 1p), 1 worker",
        "load generators": "bench/tlsload: rateload (constant rate, HTTP/1.1), tlsload (rustls, mTLS handshakes)",
    },
}, open(sys.argv[1], "w"), indent=2)
PY
python3 "$BENCH_DIR/report.py" "$RESULTS_JSONL" "$TMP/meta.json" "$RESULTS_DIR/sidecar-latest" >"$TMP/report.txt"
python3 "$BENCH_DIR/sidecar_summary.py" "$RESULTS_JSONL" "$RESULTS_DIR/sidecar-latest"
cat "$TMP/report.txt"
