#!/usr/bin/env bash
# Runs Warden's cargo-fuzz targets (fuzz/fuzz_targets/) briefly, one after the other:
#   jwt_parse     JWT parsing, claim checks and verification; JWK / JWK-set JSON; PEM public keys
#   policy_parse  Cedar policy text through Policies::parse (nesting guard, parser, validator)
#                 and evaluation, on a 2 MiB stack, compared with the same on a big stack
#   route_rules   a route's auth rules (TOML -> AuthRules -> RoutePolicy::check), rules::glob
#   config_parse  the whole config loader and validator (warden_config::parse), and the API
#                 key file format (parse_key_file / write_key_file)
#
# Installs cargo-fuzz when it is missing, builds every target once, then fuzzes each for
# FUZZ_SECONDS starting from its seeds (fuzz/seeds/<target>/, kept in git) and the scratch
# corpus fuzz/corpus/<target>/ (ignored by git; libFuzzer adds what it finds there, so later
# runs start where earlier ones stopped). Exits 1 when any target crashed, timed out or ran
# out of memory, after printing the reproducer file (fuzz/artifacts/<target>/...) and the
# panic message; exits 2 on a usage error and with cargo's status when the build fails.
# Logs: fuzz/artifacts/<target>.log. See also fuzz/README.md.
#
# Usage:
#   scripts/fuzz.sh                          every target, FUZZ_SECONDS (default 30) each
#   scripts/fuzz.sh policy_parse route_rules only these
#   scripts/fuzz.sh jwt_parse -- -jobs=2     extra libFuzzer flags after `--`
#
# One target for longer (an hour; FUZZ_SECONDS=0 runs until a crash or Ctrl-C):
#   FUZZ_SECONDS=3600 scripts/fuzz.sh policy_parse
# or directly, without this script:
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -s address policy_parse \
#       fuzz/corpus/policy_parse fuzz/seeds/policy_parse -- -dict=fuzz/dicts/policy_parse.dict
#
# Environment:
#   FUZZ_SECONDS    seconds per target (default 30; 0: no limit)
#   FUZZ_SANITIZER  address (default), none (faster; misses memory errors in C code such as
#                   ring's; built in fuzz/target/sanitizer-none/), leak, memory, thread
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang (default 10)
#   FUZZ_POLICY_STACK, FUZZ_POLICY_ORACLE   see fuzz/fuzz_targets/policy_parse.rs
#
# Toolchain: cargo-fuzz needs nightly rustc flags (-Z...). This works on stable by setting
# RUSTC_BOOTSTRAP=1 for the build, which is only for these fuzz builds: the fuzz crate is
# its own workspace (fuzz/Cargo.toml) with its own target dir (fuzz/target/), so the main
# build never sees the flag. Stable rustc ships the ASan runtime, so -s address works.
#
# A crash reproduces by running the built target on the saved input:
#   fuzz/target/x86_64-unknown-linux-gnu/release/<target> fuzz/artifacts/<target>/crash-...
# and shrinks with
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin --fuzz-dir fuzz -s address <target> <crash-file>
# Keep the minimised input under fuzz/regressions/<target>/ once it is understood; replay all
# of them with  fuzz/target/x86_64-unknown-linux-gnu/release/<target> fuzz/regressions/<target>/*

set -euo pipefail

cd "$(dirname "$0")/.."

ALL_TARGETS=(jwt_parse policy_parse route_rules config_parse)
SECONDS_PER_TARGET="${FUZZ_SECONDS:-30}"
SANITIZER="${FUZZ_SANITIZER:-address}"
TIMEOUT="${FUZZ_TIMEOUT:-10}"
export RUSTC_BOOTSTRAP=1

targets=()
extra=()
while [[ $# -gt 0 ]]; do
    if [[ "$1" == "--" ]]; then
        shift
        extra=("$@")
        break
    fi
    targets+=("$1")
    shift
done
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=("${ALL_TARGETS[@]}")
fi
for t in "${targets[@]}"; do
    if [[ ! -f "fuzz/fuzz_targets/$t.rs" ]]; then
        echo "fuzz: no target \`$t\` (have: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done
if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]]; then
    echo "fuzz: FUZZ_SECONDS must be a whole number of seconds, not \`$SECONDS_PER_TARGET\`" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# ASan builds go to cargo-fuzz's usual fuzz/target/; other sanitizers to a directory of their
# own, so switching does not rebuild everything.
target_dir=(--target-dir fuzz/target)
if [[ "$SANITIZER" != address ]]; then
    target_dir=(--target-dir "fuzz/target/sanitizer-$SANITIZER")
fi

started=$SECONDS
echo "fuzz: building ${targets[*]} (sanitizer: $SANITIZER; the first build takes minutes)"
build_started=$SECONDS
if [[ ${#targets[@]} -eq ${#ALL_TARGETS[@]} ]]; then
    cargo fuzz build --fuzz-dir fuzz -s "$SANITIZER" "${target_dir[@]}"
else
    for t in "${targets[@]}"; do
        cargo fuzz build --fuzz-dir fuzz -s "$SANITIZER" "${target_dir[@]}" "$t"
    done
fi
echo "fuzz: build took $((SECONDS - build_started))s"

# The binaries are run directly, not through `cargo fuzz run`, which would rebuild first: in
# a tree others are editing, that could fail (or test other code) halfway through.
host=$(rustc -vV | sed -n 's/^host: //p')
bindir="${target_dir[1]}/$host/release"
if [[ "$SANITIZER" == address ]]; then
    # What `cargo fuzz run` sets too.
    export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"
fi

failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="fuzz/artifacts/$t.log"
    args=(
        "-artifact_prefix=fuzz/artifacts/$t/"
        "-max_total_time=$SECONDS_PER_TARGET"
        "-timeout=$TIMEOUT"
        -print_final_stats=1
    )
    if [[ -f "fuzz/dicts/$t.dict" ]]; then
        args+=("-dict=fuzz/dicts/$t.dict")
    fi
    echo "fuzz: $t for ${SECONDS_PER_TARGET}s (log: $log)"
    status=0
    # The first corpus dir is where libFuzzer writes new inputs; the seeds are only read.
    "$bindir/$t" "${args[@]}" "${extra[@]}" "fuzz/corpus/$t" "fuzz/seeds/$t" \
        >"$log" 2>&1 || status=$?
    execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -n 1)
    rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log" | tail -n 1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 || true)
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    line="$t: ${execs:-?} execs, ${rate:-?} exec/s, ${cov:-cov: ?}, corpus $corpus"
    if [[ $status -ne 0 ]]; then
        failed+=("$t")
        line="$line, FAILED (exit $status)"
        echo "fuzz: $t FAILED (exit $status); last lines of $log:" >&2
        # The panic (or sanitizer report) and where libFuzzer saved the input.
        # A Rust panic's message is on the line after `panicked at`.
        grep -E -A1 "panicked at" "$log" >&2 || true
        grep -E "has overflowed its stack|ERROR: (AddressSanitizer|libFuzzer)|SUMMARY:|Test unit written to|^Base64:" "$log" >&2 || tail -n 30 "$log" >&2
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        if [[ -n "$artifact" ]]; then
            echo "fuzz: crash input: $artifact" >&2
            echo "fuzz: reproduce: $bindir/$t $artifact" >&2
        fi
    fi
    summary+=("$line")
done

echo "fuzz: summary (sanitizer $SANITIZER, ${SECONDS_PER_TARGET}s per target, $((SECONDS - started))s in all)"
for line in "${summary[@]}"; do
    echo "  $line"
done
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: FAIL: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: no crashes"
