#!/usr/bin/env bash
# Reproducible builds: builds the release binary twice, from two clean clones of HEAD in two
# different directories, and compares their SHA-256. Not part of CI (two release builds take
# ~25 minutes on 2 cores); its last result is written down in docs/deployment.md.
#
#   scripts/reproducible-build.sh           # HEAD; prints both hashes and the verdict
#   KEEP=1 scripts/reproducible-build.sh    # keep the two trees (in /tmp) to look at a difference
#
# The trees sit in different directories on purpose: a build that embeds its own path is not
# reproducible. `--remap-path-prefix` maps each tree to /warden and cargo's home to /cargo, as
# a release build should (panic messages and debug info then name /warden/crates/...).
# build.rs embeds the git revision, the profile, rustc's version and Cargo.lock's crate count,
# and no time. Exit 0 when the binaries are identical, 1 when they differ (with the number of
# differing bytes and the sections they fall in).
set -euo pipefail
cd "$(dirname "$0")/.."
rev=$(git rev-parse HEAD)
# mimalloc's C sources use __DATE__ and __TIME__; GCC takes them from SOURCE_DATE_EPOCH when it
# is set (here: the commit's time). Without it, one run measured 90,829 differing bytes: the
# time string, 9 bytes that .rodata's string merging placed elsewhere, shifting what followed.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct "$rev")}"
work=$(mktemp -d /tmp/warden-repro.XXXXXX)
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
for n in a b; do
    git clone -q . "$work/tree-$n"
    git -C "$work/tree-$n" checkout -q "$rev"
done
for n in a b; do
    echo "reproducible-build: building tree $n ($work/tree-$n)" >&2
    start=$(date +%s)
    (
        cd "$work/tree-$n"
        # rustc's remapping does not reach C and assembly built by `cc` (ring, mimalloc):
        # their debug info gets the same mapping through -ffile-prefix-map.
        map="-ffile-prefix-map=$work/tree-$n=/warden -ffile-prefix-map=$cargo_home=/cargo"
        RUSTFLAGS="--remap-path-prefix=$work/tree-$n=/warden --remap-path-prefix=$cargo_home=/cargo" \
            CFLAGS="$map" CXXFLAGS="$map" ASMFLAGS="$map" \
            CARGO_TARGET_DIR="$work/tree-$n/target" CARGO_INCREMENTAL=0 \
            cargo build --release --locked -p warden -q
    )
    echo "reproducible-build: tree $n built in $(($(date +%s) - start)) s" >&2
done
a="$work/tree-a/target/release/warden"
b="$work/tree-b/target/release/warden"
ha=$(sha256sum "$a" | cut -d' ' -f1)
hb=$(sha256sum "$b" | cut -d' ' -f1)
echo "git $rev, $(rustc --version)"
echo "tree a: $ha  ($(stat -c %s "$a") bytes)"
echo "tree b: $hb  ($(stat -c %s "$b") bytes)"
status=0
if [[ "$ha" == "$hb" ]]; then
    echo "reproducible: the two binaries are identical"
else
    status=1
    n=$(cmp -l "$a" "$b" | wc -l || true)
    echo "NOT reproducible: $n bytes differ"
    # How many differing bytes fall in each section (by file offset), and the first strings
    # that differ: a path that leaks shows there.
    if command -v readelf >/dev/null; then
        readelf -SW "$a" | awk '$0 ~ /^ *\[ *[0-9]+\]/ { gsub(/\[ */, "["); split($0, f, " ");
            print f[2], strtonum("0x" f[5]), strtonum("0x" f[6]) }' >"$work/sections"
        cmp -l "$a" "$b" | awk -v s="$work/sections" 'BEGIN { while ((getline l < s) > 0) {
                split(l, f, " "); n++; name[n]=f[1]; off[n]=f[2]; size[n]=f[3] } }
            { o = $1 - 1; hit = "(none)"; for (i = 1; i <= n; i++)
                if (o >= off[i] && o < off[i] + size[i]) { hit = name[i]; break }
              count[hit]++ }
            END { for (h in count) print "  " count[h] " bytes in " h }' | sort -rn -k1
    fi
    diff <(strings -n 12 "$a") <(strings -n 12 "$b") | head -6 | sed 's/^/  /' || true
    echo "trees kept in $work"
    KEEP=1
fi
[[ -n "${KEEP:-}" ]] || rm -rf "$work"
exit $status
