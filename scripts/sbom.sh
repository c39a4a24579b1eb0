#!/usr/bin/env bash
# The software bill of materials of the `warden` binary, in CycloneDX 1.5 JSON, made by
# cargo-cyclonedx (crates.io) and checked: well-formed against the CycloneDX 1.5 schema
# (cyclonedx-python-lib's strict validator, from PyPI), every crate the binary is built from
# (`cargo tree -e normal,build` over all targets) listed at its Cargo.lock version, and no
# component that Cargo.lock does not hold. The crates of Cargo.lock it leaves out are printed:
# they are test and benchmark dependencies, never linked into the binary.
#
#   scripts/sbom.sh [OUT_DIR]      default target/sbom; writes OUT_DIR/warden.cdx.json
#
# Run by .ci/run; ship OUT_DIR/warden.cdx.json next to every release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/sbom}"
mkdir -p "$out"

if ! cargo cyclonedx --version >/dev/null 2>&1; then
    echo "sbom: installing cargo-cyclonedx (cargo install)" >&2
    cargo install cargo-cyclonedx --locked --version 0.5.9
fi
cargo cyclonedx --manifest-path crates/warden/Cargo.toml --format json --spec-version 1.5 \
    --target all --override-filename warden.cdx -q
mv crates/warden/warden.cdx.json "$out/warden.cdx.json"
# cargo-cyclonedx writes one file next to every member of the workspace; only the binary's is
# kept.
rm -f crates/*/warden.cdx.json
cargo tree --locked -p warden -e normal,build --target all --prefix none -f '{p}' \
    | sed 's/ (\*)$//' | sort -u > "$out/built-from.txt"

python=$(scripts/interop/venv.sh)
"$python" scripts/sbom_check.py "$out/warden.cdx.json" Cargo.lock "$out/built-from.txt"
