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
