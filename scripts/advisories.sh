#!/usr/bin/env bash
# The RustSec advisory check, offline: `cargo deny check advisories` against a local copy of
# the RustSec advisory database, never fetched from the network.
#
#   scripts/advisories.sh [DB]      DB: a copy of github.com/RustSec/advisory-db (a git
#                                   checkout or a plain snapshot); default $WARDEN_ADVISORY_DB,
#                                   else ../shared/advisory-db next to the repository, else
#                                   /work/shared/advisory-db. Exits 0 with a message when none
#                                   is found (the check is skipped, and says so).
#
# cargo-deny reads its databases from `[advisories] db-path` (deny.toml), in a directory named
# after the database's URL, and asks git for the checkout's date. A plain snapshot is copied
# there as a one-commit git repository dated from its SNAPSHOT file, so cargo-deny's staleness
# rules see the snapshot's real age.
#
# A negative control runs first: a synthetic advisory against a crate in Cargo.lock, added to
# a second copy, must make the check fail. A database that is not read would pass everything.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

db="${1:-${WARDEN_ADVISORY_DB:-}}"
if [[ -z "$db" ]]; then
    for c in "$root/../shared/advisory-db" /work/shared/advisory-db; do
        [[ -d "$c/crates" ]] && { db="$c"; break; }
    done
fi
if [[ -z "$db" || ! -d "$db/crates" ]]; then
    echo "advisories: no offline copy of the RustSec advisory database found (set WARDEN_ADVISORY_DB); skipped"
    exit 0
fi
command -v cargo-deny >/dev/null || cargo install cargo-deny --locked

# The directory name cargo-deny 0.20 gives the default database URL.
NAME=advisory-db-3157b0e258782691
work="$root/target/advisory-dbs"

# $1: destination root. Copies the database there as a git checkout.
prepare() {
    local dest="$1/$NAME"
    rm -rf "$1"
    mkdir -p "$1"
    cp -r "$db" "$dest"
    chmod -R u+w "$dest"
    if [[ ! -d "$dest/.git" ]]; then
        local date="1970-01-01T00:00:00Z"
        if [[ -f "$dest/SNAPSHOT" ]]; then
            date=$(grep -oE '\(([0-9]{4}-[0-9]{2}-[0-9]{2})\)' "$dest/SNAPSHOT" | tr -d '()' | head -1)
            date="${date:-1970-01-01}T00:00:00Z"
        fi
        (
            cd "$dest"
            git init -q
            git add -A
            GIT_AUTHOR_DATE="$date" GIT_COMMITTER_DATE="$date" \
                git -c user.name=advisory-db -c user.email=advisory-db@localhost \
                commit -q -m "RustSec advisory database snapshot"
        )
    fi
}

check() {
    WARDEN_ADVISORY_DBS="$1" cargo deny --offline --log-level error check -s advisories
}

# Negative control: an advisory against every version of zeroize (in Cargo.lock) is reported.
prepare "$work-control"
mkdir -p "$work-control/$NAME/crates/zeroize"
cat > "$work-control/$NAME/crates/zeroize/RUSTSEC-2026-9999.md" <<'ADV'
```toml
[advisory]
id = "RUSTSEC-2026-9999"
package = "zeroize"
date = "2026-01-01"
url = "https://example.invalid/control"

[versions]
patched = []
```

# Synthetic advisory

The negative control of scripts/advisories.sh: never in a real copy of the database.
ADV
(cd "$work-control/$NAME" && git add -A && git -c user.name=c -c user.email=c@localhost commit -q -m control)
if out=$(check "$work-control" 2>&1); then
    echo "$out"
    echo "advisories: the negative control passed: the database is not being read" >&2
    exit 1
fi
grep -q "RUSTSEC-2026-9999" <<<"$out" || { echo "$out"; echo "advisories: the control failed for another reason" >&2; exit 1; }
rm -rf "$work-control"

prepare "$work"
echo "advisories: checking Cargo.lock against $(cat "$db/SNAPSHOT" 2>/dev/null || echo "$db")"
check "$work"
