"""Interoperability of Warden's authority and gateway with real, unmodified Python clients.

Runs against a running `warden dev` (authority on 127.0.0.1:8200, gateway on 127.0.0.1:8080)
whose data dir is given in WARDEN_DEV_DATA. Uses only the libraries' public APIs:

- authlib's OAuth2Session: client credentials with client_secret_basic, with
  client_secret_post and with private_key_jwt (RFC 7523), token introspection (RFC 7662) by a
  client granted it and by one that is not, revocation (RFC 7009), error descriptions;
- authlib's AuthorizationServerMetadata: the RFC 8414 discovery document validates;
- PyJWT's PyJWKClient: issued tokens verify with keys from the JWKS URL.

Each check prints `ok: ...`; any failure raises and the script exits non-zero.
"""

import json
import os
import sys
import time
import uuid

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

AUTHORITY = os.environ.get("WARDEN_AUTHORITY", "http://127.0.0.1:8200")
GATEWAY = os.environ.get("WARDEN_GATEWAY", "http://127.0.0.1:8080")
DATA = os.environ["WARDEN_DEV_DATA"]
AUDIENCE = "warden-dev-api"

creds = json.load(open(os.path.join(DATA, "credentials.json")))
admin_token = open(os.path.join(DATA, "authority-admin.token")).read().strip()


def ok(what):
    print(f"ok: {what}", flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# 1. Discovery metadata, read and validated by authlib.
meta_doc = requests.get(f"{AUTHORITY}/.well-known/oauth-authorization-server", timeout=5).json()
meta = AuthorizationServerMetadata(meta_doc)
meta.validate()
check(meta["issuer"] == AUTHORITY, f"issuer {meta['issuer']}")
token_endpoint = meta["token_endpoint"]
ok(f"RFC 8414 metadata validates with authlib (token endpoint {token_endpoint})")
oidc = requests.get(f"{AUTHORITY}/.well-known/openid-configuration", timeout=5).json()
check(oidc["jwks_uri"] == meta["jwks_uri"], "openid-configuration agrees")

# 2. client_credentials with client_secret_basic.
basic = OAuth2Session(
    creds["client_id"],
    creds["client_secret"],
    token_endpoint_auth_method="client_secret_basic",
    scope="api:read",
)
tok = basic.fetch_token(token_endpoint, grant_type="client_credentials")
access = tok["access_token"]
check(tok["token_type"].lower() == "bearer", f"token_type {tok['token_type']}")
check(int(tok["expires_in"]) > 0, "expires_in")
ok("client_credentials with client_secret_basic (authlib)")

# 2b. client_credentials with client_secret_post: the demo client is registered for both
#     secret methods, and discovery offers both.
check(
    "client_secret_post" in meta["token_endpoint_auth_methods_supported"],
    f"discovery offers {meta['token_endpoint_auth_methods_supported']}",
)
post = OAuth2Session(
    creds["client_id"],
    creds["client_secret"],
    token_endpoint_auth_method="client_secret_post",
    scope="api:read",
)
post_tok = post.fetch_token(token_endpoint, grant_type="client_credentials")
check(post_tok["token_type"].lower() == "bearer", f"token_type {post_tok['token_type']}")
post_claims = jwt.decode(
    post_tok["access_token"],
    jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(post_tok["access_token"]).key,
    algorithms=["ES256", "EdDSA"],
    audience=AUDIENCE,
)
check(post_claims["client_id"] == creds["client_id"], "client_secret_post client_id claim")
ok("client_credentials with client_secret_post (authlib)")

# 3. PyJWT verifies the token with keys from the JWKS URL.
jwks_client = jwt.PyJWKClient(meta["jwks_uri"])
key = jwks_client.get_signing_key_from_jwt(access)
claims = jwt.decode(
    access, key.key, algorithms=["ES256", "EdDSA"], audience=AUDIENCE, issuer=AUTHORITY
)
check(claims["client_id"] == creds["client_id"], "client_id claim")
check(claims["scope"] == "api:read", f"scope {claims['scope']}")
check(jwt.get_unverified_header(access)["typ"].lower() == "at+jwt", "typ at+jwt")
ok("PyJWKClient verifies the token from the JWKS URL (RFC 9068 claims present)")

# 4. The gateway accepts it.
r = requests.get(f"{GATEWAY}/api/orders", headers={"Authorization": f"Bearer {access}"}, timeout=5)
check(r.status_code == 200, f"gateway said {r.status_code}: {r.text}")
check(r.json()["headers"]["x-warden-subject"] == creds["client_id"], "x-warden-subject")
ok("the gateway accepts the authority's token")

# 5. Introspection (RFC 7662) through authlib.
intro = basic.introspect_token(meta["introspection_endpoint"], token=access).json()
check(intro["active"] is True, f"introspection {intro}")
check(intro.get("client_id") == creds["client_id"], "introspection client_id")
ok("introspection says active (authlib)")

# 5b. A client not granted introspection learns nothing about another client's token.
r = requests.post(
    f"{AUTHORITY}/admin/clients",
    headers={"Authorization": f"Bearer {admin_token}"},
    json={"client_id": f"nosy-{uuid.uuid4().hex[:8]}", "audiences": [AUDIENCE]},
    timeout=5,
)
check(r.status_code == 201, f"admin create said {r.status_code}: {r.text}")
nosy = OAuth2Session(
    r.json()["client_id"], r.json()["client_secret"], token_endpoint_auth_method="client_secret_basic"
)
intro = nosy.introspect_token(meta["introspection_endpoint"], token=access).json()
check(intro == {"active": False}, f"a client without introspect got {intro}")
ok("introspection by a client not granted it says inactive (authlib)")

# 6. private_key_jwt (RFC 7523): register a client with our public key via the admin API.
private = ec.generate_private_key(ec.SECP256R1())
pem = private.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
public_jwk.update({"kid": "interop-1", "alg": "ES256", "use": "sig"})
pk_client_id = f"interop-{uuid.uuid4().hex[:8]}"
r = requests.post(
    f"{AUTHORITY}/admin/clients",
    headers={"Authorization": f"Bearer {admin_token}"},
    json={
        "client_id": pk_client_id,
        "scopes": ["api:read"],
        "audiences": [AUDIENCE],
        "auth_method": "private_key_jwt",
        "jwks": {"keys": [public_jwk]},
    },
    timeout=5,
)
check(r.status_code == 201, f"admin create said {r.status_code}: {r.text}")
pkjwt = OAuth2Session(
    pk_client_id,
    # authlib reads a PEM string as an RSA key; EC keys are passed as key objects.
    ECKey.import_key(pem),
    token_endpoint_auth_method=PrivateKeyJWT(token_endpoint, alg="ES256", headers={"kid": "interop-1"}),
    scope="api:read",
)
pk_tok = pkjwt.fetch_token(token_endpoint, grant_type="client_credentials")
pk_claims = jwt.decode(
    pk_tok["access_token"],
    jwks_client.get_signing_key_from_jwt(pk_tok["access_token"]).key,
    algorithms=["ES256", "EdDSA"],
    audience=AUDIENCE,
)
check(pk_claims["sub"] == pk_client_id, "private_key_jwt subject")
ok("client_credentials with private_key_jwt (authlib PrivateKeyJWT, ES256)")

# 7. Revocation (RFC 7009) through authlib; introspection then says inactive, and the gateway
#    refuses the token within 5 seconds.
r = basic.revoke_token(meta["revocation_endpoint"], token=access)
check(r.status_code == 200, f"revoke said {r.status_code}")
intro = basic.introspect_token(meta["introspection_endpoint"], token=access).json()
check(intro["active"] is False, f"after revocation {intro}")
ok("revocation (authlib); introspection says inactive")
deadline = time.time() + 5
while True:
    r = requests.get(
        f"{GATEWAY}/api/orders", headers={"Authorization": f"Bearer {access}"}, timeout=5
    )
    if r.status_code == 401:
        break
    check(time.time() < deadline, f"the gateway still accepts a revoked token: {r.status_code}")
    time.sleep(0.1)
ok("the gateway refuses the revoked token within 5 s")

# 8. A wrong secret gets RFC 6749 invalid_client.
bad = OAuth2Session(creds["client_id"], "wrong", token_endpoint_auth_method="client_secret_basic")
try:
    bad.fetch_token(token_endpoint, grant_type="client_credentials")
    raise AssertionError("a wrong secret got a token")
except Exception as e:  # authlib raises OAuthError with the RFC error code
    check("invalid_client" in str(e), f"wrong secret: {e}")
    description = getattr(e, "description", None) or ""
    check("client authentication failed" in description, f"error_description: {description!r}")
ok("a wrong secret gets invalid_client with an error_description")

print("interop: PASS")
sys.exit(0)
