# Shell helpers shared by the benchmark scripts (proxy.sh, jwt.sh, ratelimit.sh, authority.sh).
# Sourced, not run. The callers define `log`, `die`, `HOST` and the associative array `PIDS`
# (name -> pid of what they started, which their exit trap stops) before calling these.

stop_pid() { # stop_pid PID: TERM, wait up to 10 s, then KILL; reaps it
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop() { # stop NAME
    local pid="${PIDS[$1]:-}"
    [[ -n $pid ]] || return 0
    stop_pid "$pid"
    unset "PIDS[$1]"
}

run_fg() { # run_fg OUTFILE CMD...: run in the background and wait, so traps fire at once
    local out=$1 rc=0
    shift
    : >"$out"
    "$@" >>"$out" 2>&1 &
    PIDS[fg]=$!
    wait "${PIDS[fg]}" || rc=$?
    unset "PIDS[fg]"
    return "$rc"
}

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

loadavg1() { awk '{ print $1 }' /proc/loadavg; }
load_below() { awk -v l="$(loadavg1)" -v m="$1" 'BEGIN { exit !(l < m) }'; }

# Whether a scenario starting with $1 is selected (callers set the SCENARIOS array).
uses() { local x; for x in "${SCENARIOS[@]}"; do [[ $x == "$1"* ]] && return 0; done; return 1; }

nginx_temp_paths() { # nginx_temp_paths DIR
    local d=$1
    mkdir -p "$d/tmp"
    cat <<EOT
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
EOT
}

# ------------------------------------------------------------------------------------------
# The shared skeleton: set-up, processes, waiting, CPU and memory readings, wrk parsing,
# results as JSON lines and the report (bench/report.py: medians of interleaved rounds,
# ratios at the same thread count). A script built on it (proxy.sh) declares its configs
# and scenarios and calls these; older scripts use the process helpers only.

# bench_init NAME: log/die with the script's name, a temp dir, the PIDS table, exit traps
# that stop everything started (upstream last) and keep the temp dir on failure.
write_nginx() { # write_nginx NAME PORT LOCATION: a one-worker nginx on $HOST:PORT serving LOCATION, in $TMP/NAME
    local d="$TMP/$1"
    mkdir -p "$d"
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
    client_max_body_size 64m;
$(nginx_temp_paths "$d")
    server {
        listen $HOST:$2 backlog=4096;
        $3
    }
}
EOT
}

write_ok_upstream() { # write_ok_upstream: nginx on $HOST:$UPSTREAM_PORT answering 200 "ok", in $TMP/upstream
    write_nginx upstream "$UPSTREAM_PORT" 'location / { return 200 "ok\n"; }'
}

bench_init() {
    BENCH_NAME=$1
    export PATH="$PATH:/usr/sbin:/sbin" LC_ALL=C
    TMP="$(mktemp -d "/tmp/warden-bench-$1.XXXXXX")"
    declare -gA PIDS=()
    RESULTS_JSONL="$TMP/results.jsonl"
    : >"$RESULTS_JSONL"
    CLK_TCK=$(getconf CLK_TCK)
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
# (Scripts that define their own log/die before sourcing this file keep theirs.)
declare -F log >/dev/null || log() { printf '[%s] %s\n' "${BENCH_NAME:-bench}" "$*" >&2; }
declare -F die >/dev/null || die() { log "ERROR: $*"; exit 1; }

bench_cleanup() {
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

start() { # start NAME CMD...: run in the background, output to $TMP/NAME.out
    local name=$1
    shift
    : >"$TMP/$name.out" # truncate here, not in the (asynchronous) child
    "$@" >>"$TMP/$name.out" 2>&1 &
    PIDS[$name]=$!
}

# wait_http NAME URL TIMEOUT_S [CURL ARGS...]: until URL answers 2xx, from our process.
wait_http() {
    local name=$1 url=$2 timeout=$3 deadline=$((SECONDS + $3))
    shift 3
    while ! curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null; do
        if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
            tail -n 30 "$TMP/$name.out" >&2 || true
            die "$name exited before answering on $url"
        fi
        ((SECONDS < deadline)) || { tail -n 30 "$TMP/$name.out" >&2 || true; die "$name did not answer on $url within $timeout s"; }
        sleep 0.2
    done
    local port pids
    port=$(sed -n 's|^https\{0,1\}://[^:/]*:\([0-9]*\).*|\1|p' <<<"$url")
    if command -v ss >/dev/null 2>&1 && [[ -n $port ]]; then
        pids=" $(proc_tree "${PIDS[$name]}" | tr '\n' ' ')"
        ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | while read -r p; do
            [[ $pids == *" $p "* ]] && exit 0
        done || die "$HOST:$port is served by another process, not by our $name"
    fi
}

# need_tools CMD:PACKAGE...: installs Debian's packages for the commands that are missing.
need_tools() {
    local want=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || want+=("${pair#*:}")
    done
    ((${#want[@]})) || return 0
    log "installing: ${want[*]}"
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${want[@]}"
}

# raise_nofile N: raises the open-file limit towards N; sets NOFILE to what it got.
raise_nofile() {
    local want=$1 hard
    hard="$(ulimit -Hn)"
    if [[ $hard != unlimited && $hard -lt $want ]]; then
        ulimit -Hn "$want" 2>/dev/null || true
        hard="$(ulimit -Hn)"
    fi
    if [[ $hard == unlimited || $hard -ge $want ]]; then ulimit -n "$want"; else ulimit -n "$hard"; fi
    NOFILE="$(ulimit -n)"
    [[ $NOFILE == unlimited ]] && NOFILE=$want
    [[ $NOFILE -ge $want ]] || log "note: open-file limit is $NOFILE (< $want) and cannot be raised here"
}

# Whole-machine CPU: a sample, and the % busy between two samples.
cpu_sample() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }
busy_between() {
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2];
        printf "%.0f", ((busy + idle) > 0 ? 100 * busy / (busy + idle) : 0) }'
}
cpu_busy_pct() { local a; a=$(cpu_sample); sleep 2; busy_between "$a" "$(cpu_sample)"; }

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
        # `if`, not `&&`: a process read half-way as it exits must not end the loop with a
        # failure, which `set -e` and `pipefail` turned into a silent exit of the whole run.
        if [[ -n $pid && -n $ppid ]]; then echo "$pid $ppid"; fi
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

# mem_kib PID FIELD: FIELD (VmRSS or VmHWM from status, Pss from smaps_rollup) summed over
# the process tree, KiB.
mem_kib() {
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

# tree_ticks PID: user + system CPU clock ticks of the process tree (all threads).
tree_ticks() {
    local pid total=0 v
    for pid in $(proc_tree "$1"); do
        v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

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

# wrk_parse FILE: sets RPS P50 P99 REQS NON2XX SOCKERR from `wrk --latency` output.
wrk_parse() {
    read -r RPS P50 P99 REQS NON2XX SOCKERR < <(awk "$to_ms_awk"'
        /^[ \t]+50%/ { p50 = to_ms($2) }
        /^[ \t]+99%/ { p99 = to_ms($2) }
        /^Requests\/sec:/ { rps = $2 }
        / requests in / { reqs = $1 }
        /Non-2xx or 3xx responses:/ { non2xx = $NF }
        /Socket errors:/ { gsub(/,/, ""); sockerr = $4 + $6 + $8 + $10 }
        END { printf "%s %.3f %.3f %d %d %d\n", (rps == "" ? "NA" : rps), p50, p99, reqs, non2xx, sockerr }' "$1")
    [[ $RPS != NA ]] || { cat "$1" >&2; die "could not parse wrk output in $1"; }
}

# measured PID OUTFILE CMD...: runs CMD in the foreground (output to OUTFILE) and sets
# CPU_TICKS to the CPU time the process tree PID used meanwhile, and BUSY to how busy the
# whole machine was (%).
measured() {
    local pid=$1 out=$2 t0 c0
    shift 2
    t0=$(tree_ticks "$pid")
    c0=$(cpu_sample)
    run_fg "$out" "$@" || { cat "$out" >&2; return 1; }
    CPU_TICKS=$(($(tree_ticks "$pid") - t0))
    BUSY=$(busy_between "$c0" "$(cpu_sample)")
}
us_per() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0) }'; }

# record KEY=VALUE...: one result row (a JSON object) in $RESULTS_JSONL. Numbers stay
# numbers; everything else is a string.
record() {
    local kv k v sep="" line="{"
    for kv in "$@"; do
        k=${kv%%=*} v=${kv#*=}
        if [[ $v =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then
            line+="$sep\"$k\": $v"
        else
            v=${v//\\/\\\\}
            line+="$sep\"$k\": \"${v//\"/\\\"}\""
        fi
        sep=", "
    done
    echo "$line}" >>"$RESULTS_JSONL"
}

# interleaved ROUNDS FN ITEM...: calls `FN ITEM ROUND` for every item in every round, the
# order rotated each round, so drift in the machine's speed favours no one.
interleaved() {
    local rounds=$1 fn=$2 r k n
    shift 2
    local items=("$@")
    n=${#items[@]}
    for ((r = 0; r < rounds; r++)); do
        for ((k = 0; k < n; k++)); do
            "$fn" "${items[$(((k + r) % n))]}" "$((r + 1))"
        done
    done
}

# select_scenarios ALL SUFFIXES: fills SCENARIOS from ONLY (comma-separated), where `sqlite`
# and `postgres` stand for `<backend>-<suffix>` for every suffix in SUFFIXES, and a name in
# ALL stands for itself; anything else, or nothing selected, is an error.
select_scenarios() {
    local all=$1 suffixes=$2 s x
    SCENARIOS=()
    for s in ${ONLY//,/ }; do
        case $s in
            sqlite | postgres) for x in $suffixes; do SCENARIOS+=("$s-$x"); done ;;
            *)
                case " $all " in
                    *" $s "*) SCENARIOS+=("$s") ;;
                    *) die "unknown scenario '$s' in ONLY (use: $all, sqlite, postgres)" ;;
                esac
                ;;
        esac
    done
    ((${#SCENARIOS[@]})) || die "ONLY selects nothing"
}
