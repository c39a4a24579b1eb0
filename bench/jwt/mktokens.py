#!/usr/bin/env python3
"""ES256 tokens for bench/jwt.sh.

    mktokens.py --key priv.pem --other-key other.pem --out DIR --fresh N [--jobs 2]

Reads a PKCS#8 PEM P-256 private key (made by openssl in jwt.sh) and writes to DIR:

  repeated.txt   one valid token (the "repeated" scenario: every request sends it)
  fresh.txt      N valid tokens, one per line, each with its own jti and sub
                 (the "fresh" scenario: no token is sent twice, so no cache can help)
  neg-*.txt      one token each that both proxies must refuse (sanity checks, not measured):
                 badsig (signed by --other-key), expired, noexp, noscope, wrongaud, wrongiss

Valid claims: iss=https://issuer.bench, aud=api, sub, scope="read write", iat=now,
exp=now+LIFETIME, jti. Header: {"alg":"ES256","typ":"JWT"} (no kid: one key per issuer).
Needs the `cryptography` package (jwt.sh makes a venv under bench/.venv when the system
python lacks it).
"""

import argparse
import base64
import json
import multiprocessing
import os
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISS = "https://issuer.bench"
AUD = "api"
SCOPE = "read write"
HEADER = {"alg": "ES256", "typ": "JWT"}

_key = None  # per worker process


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def js(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def load_key(path):
    with open(path, "rb") as f:
        k = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(k, ec.EllipticCurvePrivateKey) or k.curve.name != "secp256r1":
        sys.exit("%s: not a P-256 private key" % path)
    return k


def sign(key, header, claims):
    signing_input = b64url(js(header)) + "." + b64url(js(claims))
    der = key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)  # JWS wants raw r || s, 32 bytes each
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def claims(i, now, lifetime, prefix, **override):
    c = {"iss": ISS, "aud": AUD, "sub": "user-%d" % (i % 10000), "scope": SCOPE,
         "iat": now, "exp": now + lifetime, "jti": "%s-%d" % (prefix, i)}
    for k, v in override.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def _init_worker(path):
    global _key
    _key = load_key(path)


def _chunk(args):
    lo, hi, now, lifetime, prefix = args
    return "".join(sign(_key, HEADER, claims(i, now, lifetime, prefix)) + "\n" for i in range(lo, hi))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--key", required=True)
    ap.add_argument("--other-key", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--fresh", type=int, default=200000)
    ap.add_argument("--lifetime", type=int, default=3600)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()

    key, other = load_key(a.key), load_key(a.other_key)
    now = int(time.time())
    prefix = "r%d-%s" % (now, os.urandom(4).hex())  # jti prefix unique per run and round
    os.makedirs(a.out, exist_ok=True)

    def write(name, token):
        with open(os.path.join(a.out, name), "w") as f:
            f.write(token + "\n")

    write("repeated.txt", sign(key, HEADER, claims(0, now, a.lifetime, prefix + "-rep")))
    write("neg-badsig.txt", sign(other, HEADER, claims(1, now, a.lifetime, prefix + "-neg")))
    write("neg-expired.txt", sign(key, HEADER, claims(2, now - 7200, a.lifetime, prefix + "-neg")))
    write("neg-noexp.txt", sign(key, HEADER, claims(3, now, a.lifetime, prefix + "-neg", exp=None)))
    write("neg-noscope.txt", sign(key, HEADER, claims(4, now, a.lifetime, prefix + "-neg", scope="write")))
    write("neg-wrongaud.txt", sign(key, HEADER, claims(5, now, a.lifetime, prefix + "-neg", aud="other")))
    write("neg-wrongiss.txt", sign(key, HEADER, claims(6, now, a.lifetime, prefix + "-neg", iss="https://evil.bench")))

    step = 5000
    chunks = [(lo, min(lo + step, a.fresh), now, a.lifetime, prefix) for lo in range(0, a.fresh, step)]
    tmp = os.path.join(a.out, "fresh.txt.tmp")
    with open(tmp, "w") as f:
        if a.jobs > 1:
            with multiprocessing.Pool(a.jobs, _init_worker, (a.key,)) as pool:
                for text in pool.imap(_chunk, chunks):
                    f.write(text)
        else:
            _init_worker(a.key)
            for c in chunks:
                f.write(_chunk(c))
    os.replace(tmp, os.path.join(a.out, "fresh.txt"))


if __name__ == "__main__":
    main()
