#!/usr/bin/env bash
# TLS configuration scan of Warden's HTTPS listener with testssl.sh.
#
#   bench/tls-scan.sh
#
# Starts `warden dev --data-dir <tmp>` (HTTPS on 127.0.0.1:8443), runs
#   testssl.sh --quiet --color 0 --warnings off --protocols --std --fs \
#              --server-defaults --each-cipher --jsonfile ... https://127.0.0.1:8443
# and saves the report as bench/results/tls-scan-latest.{txt,json} and the
# pass/fail verdict as bench/results/tls-scan-latest.verdict.txt.
#
# Exit status: 0 when the scan passes; 1 when it shows any of
#   - SSLv2, SSLv3, TLS 1.0 or TLS 1.1 offered;
#   - a NULL, anonymous (aNULL), export, LOW (DES, RC2, RC4, 64-bit) or
#     3DES/IDEA cipher category offered;
#   - a CBC cipher without forward secrecy offered (from the per-cipher list);
# 2 when the scan could not be run or its output is incomplete.
# Static-RSA (non-FS) AEAD ciphers are reported as a warning, not a failure.
#
# Environment:
#   WARDEN_BIN   warden binary (default: build target/release/warden)
#   TARGET       scan this host:port instead of starting Warden (e.g. another
#                local TLS server while testing this script); loopback only
#   RESULTS_DIR  where to write results (bench/results)
#   KEEP_TMP=1   keep the temp dir (warden data dir and log)
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
export LC_ALL=C

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
RESULTS_DIR="${RESULTS_DIR:-$BENCH_DIR/results}"
WARDEN_ADDR="127.0.0.1:8443"

log() { printf '[tls-scan.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

# ---------------------------------------------------------------- tools
find_testssl() { command -v testssl.sh 2>/dev/null || command -v testssl 2>/dev/null || true; }
TESTSSL="$(find_testssl)"
need=()
[[ -n $TESTSSL ]] || need+=(testssl.sh)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v timeout >/dev/null 2>&1 || need+=(coreutils)
if ((${#need[@]})); then
    log "installing: ${need[*]}"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
    TESTSSL="$(find_testssl)" # Debian installs it as /usr/bin/testssl
    [[ -n $TESTSSL ]] || die "testssl.sh is not installed"
fi

# ---------------------------------------------------------------- target
TMP="$(mktemp -d /tmp/warden-tls-scan.XXXXXX)"
WARDEN_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $WARDEN_PID ]]; then
        kill -TERM "$WARDEN_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$WARDEN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$WARDEN_PID" 2>/dev/null || true
        wait "$WARDEN_PID" 2>/dev/null || true
    fi
    if [[ ${KEEP_TMP:-0} == 1 || $rc -ge 2 ]]; then
        log "temp files kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if [[ -n ${TARGET:-} ]]; then
    ADDR="$TARGET"
    HOST="${ADDR%:*}"
    PORT="${ADDR##*:}"
    [[ $HOST =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ || $HOST == localhost ]] || die "TARGET must be a loopback address, got $HOST"
    port_open "$HOST" "$PORT" || die "nothing listens on $ADDR"
    log "scanning existing server at $ADDR"
else
    ADDR="$WARDEN_ADDR"
    HOST="${ADDR%:*}"
    PORT="${ADDR##*:}"
    if [[ -z ${WARDEN_BIN:-} ]]; then
        log "building warden (cargo build --release -p warden)"
        (cd "$ROOT" && cargo build --release -p warden)
        WARDEN_BIN="$ROOT/target/release/warden"
    fi
    [[ -x $WARDEN_BIN ]] || die "warden binary not found or not executable: $WARDEN_BIN"
    port_open "$HOST" "$PORT" && die "something already listens on $ADDR; stop it first"
    mkdir -p "$TMP/data"
    log "starting $WARDEN_BIN dev --data-dir $TMP/data"
    "$WARDEN_BIN" dev --data-dir "$TMP/data" >"$TMP/warden.log" 2>&1 &
    WARDEN_PID=$!
    deadline=$((SECONDS + 60))
    until port_open "$HOST" "$PORT"; do
        if ! kill -0 "$WARDEN_PID" 2>/dev/null; then
            tail -n 30 "$TMP/warden.log" >&2 || true
            die "warden dev exited before listening on $ADDR"
        fi
        ((SECONDS < deadline)) || { tail -n 30 "$TMP/warden.log" >&2 || true; die "warden dev did not listen on $ADDR within 60 s"; }
        sleep 0.2
    done
    log "warden dev listening on $ADDR"
fi

# ---------------------------------------------------------------- scan
mkdir -p "$RESULTS_DIR"
TXT="$TMP/tls-scan.txt"
JSON="$TMP/tls-scan.json"
VERSION="$("$TESTSSL" --version 2>/dev/null </dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -Eo 'testssl(\.sh)? +[0-9][^ ]*' | sed -n 1p | tr -s ' ' || true)"
log "running ${VERSION:-testssl.sh} against https://$ADDR (about a minute)"
rc=0
timeout 900 "$TESTSSL" --quiet --color 0 --warnings off \
    --connect-timeout 10 --openssl-timeout 10 \
    --protocols --std --fs --server-defaults --each-cipher \
    --jsonfile "$JSON" "https://$ADDR" </dev/null >"$TXT" 2>&1 || rc=$?
cp "$TXT" "$RESULTS_DIR/tls-scan-latest.txt"
[[ -f $JSON ]] && cp "$JSON" "$RESULTS_DIR/tls-scan-latest.json"
cat "$TXT"
((rc == 0)) || log "note: testssl exited with status $rc"
[[ -s $JSON ]] || die "testssl wrote no JSON results (exit status $rc); see $RESULTS_DIR/tls-scan-latest.txt"

# ---------------------------------------------------------------- verdict
VERDICT="$RESULTS_DIR/tls-scan-latest.verdict.txt"
{
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) ${VERSION:-testssl.sh} https://$ADDR"
    python3 - "$JSON" <<'PY'
import json, re, sys

entries = json.load(open(sys.argv[1]))
by_id = {}
for e in entries:
    by_id.setdefault(e.get("id", ""), []).append(e.get("finding", "").strip())

failures, warnings, errors = [], [], []

def must_be_absent(ids, what):
    for jid, label in ids:
        found = by_id.get(jid)
        if not found:
            errors.append("%s: no result for %s (%s) in the scan" % (what, label, jid))
            continue
        f = found[0]
        if f.lower().startswith("not offered"):
            print("ok    %-40s %s" % (label, f))
        else:
            failures.append("%s %s: %s" % (what, label, f))
            print("FAIL  %-40s %s" % (label, f))

must_be_absent([("SSLv2", "SSLv2"), ("SSLv3", "SSLv3"), ("TLS1", "TLS 1.0"), ("TLS1_1", "TLS 1.1")],
               "protocol")
must_be_absent([("cipherlist_NULL", "NULL ciphers"),
                ("cipherlist_aNULL", "anonymous (aNULL) ciphers"),
                ("cipherlist_EXPORT", "export ciphers"),
                ("cipherlist_LOW", "LOW ciphers (DES, RC2, RC4, 64-bit)"),
                ("cipherlist_3DES_IDEA", "3DES / IDEA ciphers")],
               "cipher category")

# Per-cipher list (--each-cipher): "x2f  AES128-SHA  RSA  AES  128  TLS_RSA_WITH_AES_128_CBC_SHA"
ciphers = []
for jid, findings in by_id.items():
    if not jid.startswith("cipher_x"):
        continue
    for f in findings:
        toks = f.split()
        if len(toks) < 3:
            continue
        iana = toks[-1] if re.match(r"^(TLS|SSL)_", toks[-1]) else ""
        ciphers.append((toks[1], iana, f))

def is_fs(name, iana):
    if iana:
        if "_WITH_" not in iana:  # TLS 1.3 suites: key exchange is always (EC)DHE
            return True
        return bool(re.match(r"^TLS_(ECDHE|DHE|ECCPWD)_", iana))
    return bool(re.match(r"^(ECDHE|DHE|EDH)-", name)) or name.startswith("TLS_")

def is_cbc(name, iana, finding):
    if iana:
        return "_CBC_" in iana
    return not re.search(r"GCM|CCM|CHACHA|POLY1305|NULL|RC4", name, re.I)

def is_broken(name, iana):
    text = iana or name
    return re.search(r"NULL|anon|EXPORT|_RC4_|RC4|_DES_|DES-CBC|3DES|DES_EDE|IDEA|RC2", text, re.I)

avg = (by_id.get("cipherlist_AVERAGE") or [""])[0]
print("info  %-40s %s" % ("obsolete CBC ciphers (any key exchange)", avg or "no result"))
if not ciphers:
    errors.append("no per-cipher results (--each-cipher) in the scan")
for name, iana, f in sorted(ciphers):
    label = iana or name
    if is_broken(name, iana):
        failures.append("cipher offered: %s" % label)
        print("FAIL  broken cipher offered: %s" % label)
    elif is_cbc(name, iana, f) and not is_fs(name, iana):
        failures.append("CBC cipher without forward secrecy offered: %s" % label)
        print("FAIL  CBC without forward secrecy: %s" % label)
    elif not is_fs(name, iana):
        warnings.append("cipher without forward secrecy offered: %s" % label)
    elif is_cbc(name, iana, f):
        warnings.append("CBC cipher (with forward secrecy) offered: %s" % label)
print("info  %d cipher suites offered: %s" % (len(ciphers), " ".join(sorted(i or n for n, i, _ in ciphers))))

for w in warnings:
    print("WARN  " + w)
for e in errors:
    print("ERROR " + e)
if failures:
    print("\nTLS scan FAILED: %d problem(s)" % len(failures))
    sys.exit(1)
if errors:
    print("\nTLS scan INCOMPLETE")
    sys.exit(2)
print("\nTLS scan passed: no SSLv2/SSLv3/TLS 1.0/TLS 1.1, no NULL/aNULL/export/LOW/RC4/3DES ciphers, no CBC without forward secrecy")
PY
} | tee "$VERDICT"
