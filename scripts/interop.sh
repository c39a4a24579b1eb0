#!/usr/bin/env bash
# Interoperability tests: real, unmodified Python clients against a running Warden.
# - scripts/interop/test_interop.py: OAuth/JWT clients (authlib, PyJWT) against `warden dev`
#   (WARDEN_DEV_DATA: its data dir).
# - scripts/interop/test_vault_hvac.py: the `hvac` Vault client against the vault at
#   VAULT_ADDR with the root token VAULT_TOKEN (run when both are set; the vault's Rust test
#   `hvac_interop` also runs it against a vault on a test socket).
# The virtualenv (target/interop-venv, from scripts/interop/requirements.txt) is made once by
# scripts/interop/venv.sh.
#
# Usage: WARDEN_DEV_DATA=<warden dev's data dir> [VAULT_ADDR=… VAULT_TOKEN=…] scripts/interop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${WARDEN_DEV_DATA:?set WARDEN_DEV_DATA to the data dir of a running warden dev}"
mkdir -p target
PY="$(scripts/interop/venv.sh)"
# Loopback HTTP in dev: authlib otherwise insists on https.
export AUTHLIB_INSECURE_TRANSPORT=1
"$PY" scripts/interop/test_interop.py
if [[ -n "${VAULT_ADDR:-}" && -n "${VAULT_TOKEN:-}" ]]; then
    "$PY" scripts/interop/test_vault_hvac.py
else
    echo "interop: VAULT_ADDR/VAULT_TOKEN not set: hvac vault checks not run here"
fi
