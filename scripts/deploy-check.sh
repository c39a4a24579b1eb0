#!/usr/bin/env bash
# Checks the deployment files with real tools, installed when missing:
#
#   kubernetes-validate --strict   deploy/kubernetes/*.yaml against the Kubernetes 1.30 schemas
#                                  (the oldest supported) and the newest the tool ships
#   checkov                        deploy/kubernetes (framework kubernetes) and
#                                  deploy/docker/Dockerfile (framework dockerfile): no failed
#                                  check, and every skipped one skipped with a reason
#   warden check                   each warden.toml in the manifests' ConfigMaps, with
#                                  stand-ins for the files the pod mounts (certificates, keys,
#                                  tokens), which must all lie under a mounted volume
#   systemd-analyze verify         deploy/systemd/warden.service (ExecStart pointed at $WARDEN_BIN)
#   systemd-analyze security       the same unit, offline: overall exposure at most 4.9 ("OK")
#
# Each tool first gets an input it must reject (a negative control): a tool that reads
# nothing would pass everything.
#
#   scripts/deploy-check.sh        WARDEN_BIN: the binary for `warden check` and the unit's
#                                  ExecStart (default target/debug/warden, else
#                                  target/release/warden; without one those two are skipped,
#                                  and say so)
#
# checkov and kubernetes-validate live in the virtualenv target/deploy-venv, made once from
# the pinned deploy/requirements.txt and again only when that file changes. systemd-analyze
# comes from Debian's `systemd` package, installed with apt-get when missing and run as
# root. Prints one verdict line per tool; exits 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

VENV="target/deploy-venv"
REQ="deploy/requirements.txt"
K8S_DIR="deploy/kubernetes"
DOCKERFILE="deploy/docker/Dockerfile"
UNIT="deploy/systemd/warden.service"
K8S_OLDEST="1.30.0"
# systemd-analyze counts exposure in tenths: 49 is 4.9, the highest rated "OK".
EXPOSURE_THRESHOLD=49

mkdir -p target
# One creator of the virtualenv at a time.
exec 9>"target/.deploy-venv.lock"
flock 9
if [[ ! -x "$VENV/bin/python" || ! -f "$VENV/.req" ]] || ! cmp -s "$REQ" "$VENV/.req"; then
    echo "deploy-check: creating $VENV (pip install -r $REQ)" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >&2
    cp "$REQ" "$VENV/.req"
fi
flock -u 9
py="$PWD/$VENV/bin/python"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

verdicts=()
failed=0
# verdict TOOL PASS|FAIL|SKIP DETAIL
verdict() {
    verdicts+=("$(printf 'deploy-check: %-26s %-4s  %s' "$1" "$2" "$3")")
    if [[ $2 == FAIL ]]; then failed=1; fi
}

warden_bin="${WARDEN_BIN:-}"
if [[ -z "$warden_bin" ]]; then
    for c in target/debug/warden target/release/warden; do
        if [[ -x "$c" ]]; then warden_bin="$c"; break; fi
    done
fi
if [[ -n "$warden_bin" && ! -x "$warden_bin" ]]; then
    echo "deploy-check: WARDEN_BIN=$warden_bin is not an executable file" >&2
    exit 1
fi
if [[ -n "$warden_bin" ]]; then warden_bin=$(realpath "$warden_bin"); fi

mapfile -t yamls < <(find "$K8S_DIR" -maxdepth 1 -name '*.yaml' | sort)
if [[ ${#yamls[@]} -eq 0 ]]; then
    echo "deploy-check: no YAML files in $K8S_DIR" >&2
    exit 1
fi

# ---- negative controls' inputs ------------------------------------------------------------
mkdir -p "$tmp/neg/k8s" "$tmp/neg/docker" "$tmp/neg/unit"
cat > "$tmp/neg/k8s/pod.yaml" <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: negative-control
  namespace: negative-control
  labels: {negative-control: "true"}
spec:
  hostNetwork: true
  containers:
    - name: c
      image: example/negative-control:latest
      imagePullPolicyy: Always
      securityContext:
        privileged: true
EOF
printf 'FROM debian:latest\nUSER root\nEXPOSE 22\n' > "$tmp/neg/docker/Dockerfile"
printf '[Service]\nExecStart=/bin/true\nProtectSytem=strict\n' > "$tmp/neg/unit/warden.service"

# ---- kubernetes-validate --------------------------------------------------------------------
k8s_newest=$("$py" -c 'from kubernetes_validate.utils import latest_version; print(latest_version())')
kv() { "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn -k "$@"; }
if kv "$K8S_OLDEST" "$tmp/neg/k8s/pod.yaml" >/dev/null 2>&1; then
    verdict kubernetes-validate FAIL "negative control: a Pod with an unknown field passed"
else
    ok=1
    for v in "$K8S_OLDEST" "$k8s_newest"; do
        if ! kv "$v" "${yamls[@]}" > "$tmp/kv.out" 2>&1; then
            ok=0
            echo "== kubernetes-validate --strict -k $v" >&2
            cat "$tmp/kv.out" >&2
        fi
    done
    resources=$("$py" - "${yamls[@]}" <<'EOF'
import sys, yaml
print(sum(1 for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d))
EOF
)
    if [[ $ok == 1 ]]; then
        verdict kubernetes-validate PASS "${#yamls[@]} files, $resources resources valid (strict) against Kubernetes $K8S_OLDEST and $k8s_newest"
    else
        verdict kubernetes-validate FAIL "schema errors above"
    fi
fi

# ---- checkov --------------------------------------------------------------------------------
# One run for both frameworks and the negative controls; --skip-download: nothing is fetched
# from the vendor's platform (no API key is used, so findings carry no severity: every failed
# check counts).
# Files are given one by one (-f): checkov ignores -f next to -d. Graph checks (a NetworkPolicy
# for every pod) still see all of them together.
checkov_files=()
for f in "${yamls[@]}" "$DOCKERFILE" "$tmp/neg/k8s/pod.yaml" "$tmp/neg/docker/Dockerfile"; do
    checkov_files+=(-f "$f")
done
if ! "$VENV/bin/checkov" --compact --skip-download --soft-fail -o json \
    --framework kubernetes dockerfile "${checkov_files[@]}" \
    > "$tmp/checkov.json" 2> "$tmp/checkov.err"; then
    cat "$tmp/checkov.err" >&2
    verdict "checkov" FAIL "checkov did not run (above)"
elif ! "$py" - "$tmp/checkov.json" "$tmp/neg" > "$tmp/checkov.verdicts" <<'EOF'
import json, sys

reports = json.load(open(sys.argv[1]))
neg = sys.argv[2]
if isinstance(reports, dict):
    reports = [reports]
by_type = {r.get("check_type"): r for r in reports}

def rel(c):
    return c.get("file_abs_path") or c.get("file_path") or ""

for kind, label in (("kubernetes", "checkov kubernetes"), ("dockerfile", "checkov dockerfile")):
    r = by_type.get(kind)
    if r is None:
        print(f"{label}\tFAIL\tno {kind} report (nothing scanned?)")
        continue
    res = r["results"]
    real = {k: [c for c in res.get(k, []) if not rel(c).startswith(neg)] for k in ("passed_checks", "failed_checks", "skipped_checks")}
    neg_failed = [c for c in res.get("failed_checks", []) if rel(c).startswith(neg)]
    files = {rel(c) for k in real for c in real[k]}
    problems = [f"could not parse {p}" for p in res.get("parsing_errors", [])]
    if not neg_failed:
        problems.append("negative control: a privileged/root input passed every check")
    for c in real["failed_checks"]:
        problems.append(f"{c['check_id']} {c['check_name']} ({c['resource']}, {c['file_path']})")
    unexplained = []
    for c in real["skipped_checks"]:
        why = (c.get("check_result") or {}).get("suppress_comment") or ""
        if len(why.strip()) < 10 or why.strip() == "No comment provided":
            unexplained.append(f"{c['check_id']} ({c['resource']})")
    if unexplained:
        problems.append("skipped without a reason: " + ", ".join(unexplained))
    if not real["passed_checks"]:
        problems.append("no check passed: were the files read?")
    counts = (f"passed {len(real['passed_checks'])}, failed {len(real['failed_checks'])}, "
              f"skipped {len(real['skipped_checks'])} ({len(files)} file{'' if len(files) == 1 else 's'})")
    for p in problems:
        print(f"checkov: {kind}: {p}", file=sys.stderr)
    print(f"{label}\t{'FAIL' if problems else 'PASS'}\t{counts}")
    for c in real["skipped_checks"]:
        why = (c.get("check_result") or {}).get("suppress_comment") or ""
        print(f"  skipped {c['check_id']} on {c['resource']}: {why.strip()}", file=sys.stderr)
EOF
then
    verdict "checkov" FAIL "its report could not be read (above)"
else
    while IFS=$'\t' read -r tool status detail; do
        verdict "$tool" "$status" "$detail"
    done < "$tmp/checkov.verdicts"
fi

# ---- warden check on the ConfigMaps' configs -----------------------------------------------
if [[ -z "$warden_bin" ]]; then
    verdict "warden check" SKIP "no warden binary (build it, or set WARDEN_BIN)"
elif ! command -v openssl >/dev/null 2>&1; then
    verdict "warden check" SKIP "openssl is needed for stand-in certificates and is not installed"
else
    # For each container that mounts a ConfigMap holding a warden.toml: the config, with
    # every file it names under one of the container's other volumes replaced by a stand-in
    # in $tmp/cfg (a certificate, a key, or random bytes, by the file's name).
    extract_rc=0
    "$py" - "$tmp/cfg" "${yamls[@]}" > "$tmp/cfg.list" 2> "$tmp/cfg.err" <<'EOF' || extract_rc=$?
import os, re, secrets, subprocess, sys, base64, yaml

out = sys.argv[1]
docs = [d for f in sys.argv[2:] for d in yaml.safe_load_all(open(f)) if d]
os.makedirs(out, exist_ok=True)
configmaps = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs if d["kind"] == "ConfigMap"}

pki = os.path.join(out, "pki")
os.makedirs(pki)
def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)
openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{pki}/ca.key", "-out", f"{pki}/ca.crt", "-days", "2", "-subj", "/CN=stand-in CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{pki}/leaf.key", "-out", f"{pki}/leaf.csr", "-subj", "/CN=stand-in")
with open(f"{pki}/ext", "w") as f:
    f.write("subjectAltName=DNS:stand-in.example\nbasicConstraints=CA:FALSE\n")
openssl("x509", "-req", "-in", f"{pki}/leaf.csr", "-CA", f"{pki}/ca.crt", "-CAkey", f"{pki}/ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{pki}/ext", "-out", f"{pki}/leaf.crt")

def stand_in(name):
    base = os.path.basename(name)
    if base.endswith(".key"):
        return open(f"{pki}/leaf.key", "rb").read()
    if "ca" in base.split(".")[0].split("-") or base in ("ca.crt", "ca.pem"):
        return open(f"{pki}/ca.crt", "rb").read()
    if base.endswith((".crt", ".pem")):
        return open(f"{pki}/leaf.crt", "rb").read()
    # key-encryption keys, tokens, passwords: 32 random bytes in base64
    return base64.b64encode(secrets.token_bytes(32)) + b"\n"

problems = 0
n = 0
for d in docs:
    if d["kind"] not in ("Deployment", "StatefulSet", "DaemonSet", "Pod"):
        continue
    ns = d["metadata"].get("namespace")
    pod = d["spec"] if d["kind"] == "Pod" else d["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        mounts = c.get("volumeMounts", [])
        for m in mounts:
            v = volumes.get(m["name"], {})
            cm = v.get("configMap")
            if not cm:
                continue
            data = configmaps.get((ns, cm["name"]), {}).get("data", {})
            for key, text in data.items():
                if not key.endswith(".toml") or "[" not in text:
                    continue
                n += 1
                who = f"{d['kind']}/{d['metadata']['name']} container {c['name']}"
                cfg_path = f"{m['mountPath'].rstrip('/')}/{key}"
                args = c.get("args", []) + c.get("command", [])
                if "--config" in args and args[args.index("--config") + 1] != cfg_path:
                    print(f"{who}: --config {args[args.index('--config') + 1]} but the ConfigMap puts {key} at {cfg_path}", file=sys.stderr)
                    problems += 1
                others = sorted({mm["mountPath"].rstrip("/") for mm in mounts if mm is not m}, key=len, reverse=True)
                root = os.path.join(out, f"{d['metadata']['name']}-{c['name']}")
                def swap(match):
                    prefix, path = match.group(1), match.group(2)
                    # A file of the config's own ConfigMap (policies, key files...): its data.
                    own = m["mountPath"].rstrip("/") + "/"
                    if path.startswith(own) and path[len(own):] in data and path[len(own):] != key:
                        dest = root + path
                        os.makedirs(os.path.dirname(dest), exist_ok=True)
                        with open(dest, "w") as f:
                            f.write(data[path[len(own):]])
                        return f'"{prefix}{dest}"'
                    for mp in others:
                        if path.startswith(mp + "/"):
                            dest = root + path
                            os.makedirs(os.path.dirname(dest), exist_ok=True)
                            if not os.path.exists(dest):
                                with open(dest, "wb") as f:
                                    f.write(stand_in(path))
                            return f'"{prefix}{dest}"'
                    return match.group(0)
                text = re.sub(r'"((?:file:)?)(/[^"\s]+)"', swap, text)
                # Paths the config reads that no volume provides: a config key naming a file
                # (cert, key, ca, ...) outside every mount would fail in the pod.
                for key_name, path in re.findall(r'^\s*(\w+)\s*=\s*"(?:file:)?(/[^"]+)"', text, re.M):
                    if key_name in ("cert", "key", "ca", "jwks_ca", "authority_ca", "ca_file", "jwks_file",
                                    "public_key_file", "key_encryption_key", "admin_token", "join_token",
                                    "client_cert", "client_key", "endpoint_ca") and not path.startswith(out):
                        print(f"{who}: {key_name} = {path} is under no volume the container mounts", file=sys.stderr)
                        problems += 1
                os.makedirs(root, exist_ok=True)
                dest = os.path.join(root, key)
                with open(dest, "w") as f:
                    f.write(text)
                print(f"{who}\t{dest}")
if n == 0:
    print("no ConfigMap with a warden config is mounted by any workload", file=sys.stderr)
    problems += 1
sys.exit(1 if problems else 0)
EOF
    # Exit 1: some config names a file no volume provides, or none was found (said on
    # stderr); the configs it could write are still checked.
    [[ -s "$tmp/cfg.err" ]] && cat "$tmp/cfg.err" >&2
    ok=0; bad=0; names=()
    while IFS=$'\t' read -r who cfg; do
        if "$warden_bin" check --config "$cfg" > "$tmp/check.out" 2>&1; then
            ok=$((ok + 1)); names+=("${who%% container*}")
        else
            bad=$((bad + 1))
            echo "== warden check: $who" >&2
            cat "$tmp/check.out" >&2
        fi
    done < "$tmp/cfg.list"
    # Negative control: a config with a mistake must be refused.
    printf '[[listeners]]\nname = "x"\naddress = "0.0.0.0:8080"\n[[routes]]\nname = "r"\ncluster = "missing"\nauth = "none"\n' > "$tmp/neg/bad.toml"
    if "$warden_bin" check --config "$tmp/neg/bad.toml" >/dev/null 2>&1; then
        verdict "warden check" FAIL "negative control: a route to a missing cluster passed"
    elif [[ $extract_rc -ne 0 ]]; then
        verdict "warden check" FAIL "$bad of $((ok + bad)) configs refused; the manifests are inconsistent (above)"
    elif [[ $bad -eq 0 ]]; then
        joined=$(printf ', %s' "${names[@]}")
        verdict "warden check" PASS "$ok configs valid (${joined:2}), with stand-ins for mounted files"
    else
        verdict "warden check" FAIL "$bad of $((ok + bad)) configs refused (above)"
    fi
fi

# ---- systemd --------------------------------------------------------------------------------
if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "deploy-check: installing Debian's systemd package for systemd-analyze" >&2
        # apt-get's lists may be missing or stale: update once if the first try fails.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd >&2 \
            || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd >&2; } \
            || echo "deploy-check: could not install systemd" >&2
    fi
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
    verdict "systemd-analyze verify" SKIP "systemd-analyze missing and not installable here (needs root and apt-get)"
    verdict "systemd-analyze security" SKIP "systemd-analyze missing and not installable here (needs root and apt-get)"
else
    # verify: complaints about our unit are failures even when the exit code is 0 (an unknown
    # key is only a warning).
    verify() { # DIR: holds warden.service
        local out rc=0
        out=$(systemd-analyze verify "$1/warden.service" 2>&1) || rc=$?
        printf '%s\n' "$out" | grep -E 'warden\.service' || true
        return $(( rc != 0 || $(printf '%s\n' "$out" | grep -c 'warden\.service') != 0 ))
    }
    if [[ -z "$warden_bin" ]]; then
        verdict "systemd-analyze verify" SKIP "no warden binary for ExecStart to point at (build it, or set WARDEN_BIN)"
    elif verify "$tmp/neg/unit" >/dev/null 2>&1; then
        verdict "systemd-analyze verify" FAIL "negative control: a unit with an unknown key passed"
    else
        mkdir -p "$tmp/unit"
        sed "s#/usr/local/bin/warden#$warden_bin#g" "$UNIT" > "$tmp/unit/warden.service"
        if complaints=$(verify "$tmp/unit"); then
            verdict "systemd-analyze verify" PASS "$UNIT (ExecStart=$warden_bin)"
        else
            printf '%s\n' "$complaints" >&2
            verdict "systemd-analyze verify" FAIL "$UNIT: complaints above"
        fi
    fi
    exposure() { # UNIT FILE -> "N.N RATING", exit status of systemd-analyze
        local out rc=0
        out=$(systemd-analyze security --offline=true --threshold="$EXPOSURE_THRESHOLD" --no-pager "$1" 2>&1) || rc=$?
        printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) \([A-Z]*\).*/\1 \2/p'
        return $rc
    }
    if neg=$(exposure "$tmp/neg/unit/warden.service"); then
        verdict "systemd-analyze security" FAIL "negative control: a bare unit ($neg) passed the threshold"
    elif level=$(exposure "$UNIT") && [[ -n "$level" ]]; then
        verdict "systemd-analyze security" PASS "exposure ${level} (threshold $((EXPOSURE_THRESHOLD / 10)).$((EXPOSURE_THRESHOLD % 10)); a bare unit: ${neg:-?})"
    else
        systemd-analyze security --offline=true --no-pager "$UNIT" >&2 || true
        verdict "systemd-analyze security" FAIL "exposure ${level:-unknown} is above $((EXPOSURE_THRESHOLD / 10)).$((EXPOSURE_THRESHOLD % 10))"
    fi
fi

printf '%s\n' "${verdicts[@]}"
if [[ $failed -ne 0 ]]; then
    echo "deploy-check: FAILED ($((SECONDS - started))s)"
    exit 1
fi
echo "deploy-check: all passed ($((SECONDS - started))s)"
