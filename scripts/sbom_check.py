"""Checks the warden binary's CycloneDX SBOM (scripts/sbom.sh).

Usage: sbom_check.py SBOM.json Cargo.lock BUILT_FROM.txt

- the document is valid CycloneDX 1.5 JSON (cyclonedx-python-lib's strict schema validator);
- every crate in BUILT_FROM.txt (`cargo tree -e normal,build` lines, "name vX.Y.Z ...") is a
  component with that version, and its purl names it;
- every component is a package of Cargo.lock at the same version;
- the Cargo.lock packages left out are listed (test and benchmark dependencies).
Exits 1 with the reasons on any failure.
"""

import json
import re
import sys
import tomllib

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator


def main() -> int:
    sbom_path, lock_path, built_path = sys.argv[1:4]
    text = open(sbom_path, encoding="utf-8").read()
    problems = []

    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    if error is not None:
        problems.append(f"not valid CycloneDX 1.5: {error}")

    bom = json.loads(text)
    components = {}

    def walk(cs):
        for c in cs:
            components[(c["name"], c.get("version"))] = c
            walk(c.get("components", []))

    walk(bom.get("components", []))
    walk([bom["metadata"]["component"]])

    with open(lock_path, "rb") as f:
        lock = {(p["name"], p["version"]) for p in tomllib.load(f)["package"]}

    built = set()
    for line in open(built_path, encoding="utf-8"):
        m = re.match(r"^(\S+) v(\S+)", line.strip())
        if m:
            built.add((m.group(1), m.group(2)))
    if len(built) < 50:
        problems.append(f"only {len(built)} crates in {built_path}: cargo tree failed?")

    for name, version in sorted(built - set(components)):
        problems.append(f"{name} {version} is built into warden but not in the SBOM")
    for (name, version), c in sorted(components.items()):
        if (name, version) not in lock:
            problems.append(f"component {name} {version} is not in Cargo.lock")
        purl = c.get("purl", "")
        if not purl.startswith(f"pkg:cargo/{name}@{version}"):
            problems.append(f"component {name} {version} has purl {purl!r}")

    left_out = sorted(lock - set(components))
    leaked = [p for p in left_out if p in built]
    if leaked:
        problems.append(f"left out but built into warden: {leaked}")

    if problems:
        for p in problems:
            print(f"sbom: {p}", file=sys.stderr)
        return 1
    print(
        f"sbom: {sbom_path}: valid CycloneDX {bom['specVersion']}, {len(components)} components; "
        f"all {len(built)} crates warden is built from are listed; Cargo.lock's "
        f"{len(lock)} packages less {len(left_out)} not linked into warden: "
        + ", ".join(f"{n} {v}" for n, v in left_out)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
