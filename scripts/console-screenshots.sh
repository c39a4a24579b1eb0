#!/usr/bin/env bash
# Regenerates the console's screenshots in docs/console/ (shown by docs/console.md): runs the
# console's browser test (crates/warden/tests/console.rs) with its screenshots going there.
# Needs Debian's chromium (scripts/test installs it); the Python side uses the interop
# virtualenv (scripts/interop/venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export WARDEN_CONSOLE_SCREENSHOTS=docs/console
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p warden -E 'test(/^console::/)'
else
    cargo test -p warden --test main console::
fi
ls -l docs/console/*.png
