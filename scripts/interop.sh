#!/usr/bin/env bash
# Interoperability tests: real, unmodified Python OAuth/JWT clients (authlib, PyJWT) against
# a running `warden dev`. Creates (once) a virtualenv in target/interop-venv from
# scripts/interop/requirements.txt, then runs scripts/interop/test_interop.py.
#
# Usage: WARDEN_DEV_DATA=<warden dev's data dir> scripts/interop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${WARDEN_DEV_DATA:?set WARDEN_DEV_DATA to the data dir of a running warden dev}"
VENV="target/interop-venv"
REQ="scripts/interop/requirements.txt"
if [[ ! -x "$VENV/bin/python" || ! -f "$VENV/.req" ]] || ! cmp -s "$REQ" "$VENV/.req"; then
    echo "interop: creating $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
    cp "$REQ" "$VENV/.req"
fi
# Loopback HTTP in dev: authlib otherwise insists on https.
export AUTHLIB_INSECURE_TRANSPORT=1
exec "$VENV/bin/python" scripts/interop/test_interop.py
