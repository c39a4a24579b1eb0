#!/usr/bin/env bash
# Creates (once, and again when requirements.txt changes) the interop virtualenv in
# target/interop-venv and prints the path of its python. Used by scripts/interop.sh and by
# the vault's `hvac_interop` Rust test. Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="target/interop-venv"
REQ="scripts/interop/requirements.txt"
mkdir -p target
# One creator at a time (the Rust test and the script may start together).
exec 9>"target/.interop-venv.lock"
flock 9
if [[ ! -x "$VENV/bin/python" || ! -f "$VENV/.req" ]] || ! cmp -s "$REQ" "$VENV/.req"; then
    echo "interop: creating $VENV" >&2
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" >&2
    cp "$REQ" "$VENV/.req"
fi
echo "$PWD/$VENV/bin/python"
