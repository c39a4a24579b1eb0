"""Anyone can check Warden's audit trail without Warden: from `warden audit export` lines and
a head published at `GET /audit/v1/head`, with PyJWT and the standard library only.

Reads EXPORT (a JSON-lines file, from the first record on) and HEAD (the endpoint's JSON).
For every line recomputes
    hash = SHA-256(prev_hash || '{"event":' + canonical(event) + ',"seq":N,"time":MS}')
where canonical() is JSON with keys sorted and no spaces, and checks that each line's
prev_hash is the previous line's hash (the first one's is 64 zeros). Then verifies the
head's JWS with PyJWT and the JWK the endpoint published (EdDSA), and checks that the
record it names is in the export with the hash it names.
Prints a JSON summary; exits non-zero on any failed check, naming the first bad record.
"""

import hashlib
import json
import os
import sys

import jwt

GENESIS = "0" * 64


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fail(why):
    print(json.dumps({"ok": False, "error": why}))
    sys.exit(1)


records = []
with open(os.environ["EXPORT"], encoding="utf-8") as f:
    for line in f:
        records.append(json.loads(line))

prev = GENESIS
for r in records:
    event = {k: r[k] for k in ("component", "action", "actor", "subject", "outcome", "detail", "source")}
    body = '{"event":%s,"seq":%d,"time":%d}' % (canonical(event), r["seq"], r["time_ms"])
    digest = hashlib.sha256((prev + body).encode("utf-8")).hexdigest()
    if r["prev_hash"] != prev:
        fail("record %d: prev_hash does not link to the record before" % r["seq"])
    if digest != r["hash"]:
        fail("record %d: its hash does not match its content" % r["seq"])
    prev = r["hash"]

with open(os.environ["HEAD"], encoding="utf-8") as f:
    published = json.load(f)
key = jwt.PyJWK(published["key"])
try:
    claims = jwt.decode(published["head"], key=key.key, algorithms=["EdDSA"])
except jwt.InvalidTokenError as e:
    fail("the head does not verify: %s" % e)
header = jwt.get_unverified_header(published["head"])
if header.get("typ") != "warden-audit-head+jwt":
    fail("the head's typ is %r" % header.get("typ"))
named = [r for r in records if r["seq"] == claims["seq"]]
if not named:
    fail("the head names record %d, which the export does not hold" % claims["seq"])
if named[0]["hash"] != claims["hash"]:
    fail("record %d's hash differs from the head's" % claims["seq"])

print(json.dumps({"ok": True, "records": len(records), "head_seq": claims["seq"], "kid": header.get("kid")}))
