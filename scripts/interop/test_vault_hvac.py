"""Interoperability of Warden's vault with the real, unmodified `hvac` client.

Runs against a vault at VAULT_ADDR (e.g. http://127.0.0.1:8200) with a root token in
VAULT_TOKEN. Uses only hvac's public API: tokens (create, orphans, roles, lookups, renewals,
revocations, accessors), ACL policies (and the legacy endpoint), secrets engines (enable,
list, tune, disable), KV version 2 (every operation, check-and-set conflicts, version
history, metadata, config), KV version 1, AppRole (role, role-id, secret-id, login),
response wrapping (a wrapped secret-id unwrapped once and used to log in), audit devices
(enable, list, the file's hashed lines, calculate_hash, disable) and isolation between two
applications, transit (keys, encrypt, decrypt, rotate, rewrap,
data keys, sign, verify, HMAC, key configuration, deletion);
and, when WARDEN_TEST_DATABASE_URL names a PostgreSQL server, the database secrets engine
(connection, role, credentials) and leases (read, list, renew, revoke).

Each check prints `ok: ...`; any failure raises and the script exits non-zero.
"""

import base64
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid

import hvac
from hvac import exceptions

ADDR = os.environ["VAULT_ADDR"]
ROOT = os.environ["VAULT_TOKEN"]
RUN = uuid.uuid4().hex[:8]


def ok(what):
    print(f"ok: {what}", flush=True)


def expect(exc, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc:
        return
    raise AssertionError(f"{fn.__name__} did not raise {exc.__name__}")


def client(token=ROOT):
    return hvac.Client(url=ADDR, token=token)


root = client()
assert root.is_authenticated(), "the root token does not authenticate"
ok("root token authenticates")

# ---- secrets engines -------------------------------------------------------------------
kv2 = f"kv2-{RUN}"
kv1 = f"kv1-{RUN}"
root.sys.enable_secrets_engine(backend_type="kv", path=kv2, options={"version": "2"})
root.sys.enable_secrets_engine(backend_type="kv", path=kv1, options={"version": "1"})
mounts = root.sys.list_mounted_secrets_engines()["data"]
assert mounts[f"{kv2}/"]["options"]["version"] == "2", mounts
assert mounts[f"{kv1}/"]["type"] == "kv", mounts
root.sys.tune_mount_configuration(path=kv2, default_lease_ttl="1h", description="tuned")
conf = root.sys.read_mount_configuration(path=kv2)["data"]
assert conf["default_lease_ttl"] == 3600, conf
expect(exceptions.InvalidRequest, root.sys.enable_secrets_engine, backend_type="kv", path=kv2)
ok("secrets engines: enable kv v1 and v2, list, tune, conflict refused")

# ---- KV version 2 ----------------------------------------------------------------------
v2 = root.secrets.kv.v2
r = v2.create_or_update_secret(path="app/db", secret={"user": "u1"}, cas=0, mount_point=kv2)
assert r["data"]["version"] == 1, r
expect(
    exceptions.InvalidRequest,
    v2.create_or_update_secret,
    path="app/db",
    secret={"user": "x"},
    cas=0,
    mount_point=kv2,
)
ok("kv2: cas=0 creates once, then conflicts (400)")
r = v2.create_or_update_secret(path="app/db", secret={"user": "u2"}, cas=1, mount_point=kv2)
assert r["data"]["version"] == 2
expect(
    exceptions.InvalidRequest,
    v2.create_or_update_secret,
    path="app/db",
    secret={"user": "x"},
    cas=1,
    mount_point=kv2,
)
r = v2.read_secret_version(path="app/db", mount_point=kv2, raise_on_deleted_version=True)
assert r["data"]["data"] == {"user": "u2"} and r["data"]["metadata"]["version"] == 2, r
r = v2.read_secret_version(path="app/db", version=1, mount_point=kv2, raise_on_deleted_version=True)
assert r["data"]["data"] == {"user": "u1"}, r
ok("kv2: write with cas, read latest and version 1")
v2.patch(path="app/db", secret={"pass": "p3"}, mount_point=kv2)
r = v2.read_secret_version(path="app/db", mount_point=kv2, raise_on_deleted_version=True)
assert r["data"]["data"] == {"user": "u2", "pass": "p3"}, r
assert r["data"]["metadata"]["version"] == 3
ok("kv2: patch")
v2.update_metadata(
    path="app/db", max_versions=5, custom_metadata={"owner": "team-a"}, mount_point=kv2
)
m = v2.read_secret_metadata(path="app/db", mount_point=kv2)["data"]
assert m["max_versions"] == 5 and m["current_version"] == 3, m
assert m["custom_metadata"] == {"owner": "team-a"}, m
assert sorted(m["versions"]) == ["1", "2", "3"], m
ok("kv2: metadata read and update, version history")
v2.create_or_update_secret(path="app/other", secret={"a": "b"}, mount_point=kv2)
v2.create_or_update_secret(path="app/sub/deep", secret={"a": "b"}, mount_point=kv2)
keys = v2.list_secrets(path="app", mount_point=kv2)["data"]["keys"]
assert keys == ["db", "other", "sub/"], keys
ok("kv2: list")
v2.delete_latest_version_of_secret(path="app/db", mount_point=kv2)
expect(exceptions.InvalidPath, v2.read_secret_version, path="app/db", mount_point=kv2,
       raise_on_deleted_version=True)
v2.undelete_secret_versions(path="app/db", versions=[3], mount_point=kv2)
r = v2.read_secret_version(path="app/db", mount_point=kv2, raise_on_deleted_version=True)
assert r["data"]["metadata"]["version"] == 3
v2.delete_secret_versions(path="app/db", versions=[2], mount_point=kv2)
expect(exceptions.InvalidPath, v2.read_secret_version, path="app/db", version=2,
       mount_point=kv2, raise_on_deleted_version=True)
v2.destroy_secret_versions(path="app/db", versions=[1], mount_point=kv2)
m = v2.read_secret_metadata(path="app/db", mount_point=kv2)["data"]
assert m["versions"]["1"]["destroyed"] is True, m
assert m["versions"]["2"]["deletion_time"] != "", m
ok("kv2: delete latest, undelete, delete versions, destroy")
v2.configure(max_versions=7, cas_required=False, mount_point=kv2)
c = v2.read_configuration(mount_point=kv2)["data"]
assert c["max_versions"] == 7, c
ok("kv2: engine config")
v2.delete_metadata_and_all_versions(path="app/db", mount_point=kv2)
expect(exceptions.InvalidPath, v2.read_secret_metadata, path="app/db", mount_point=kv2)
ok("kv2: delete metadata and all versions")

# ---- KV version 1 ----------------------------------------------------------------------
v1 = root.secrets.kv.v1
v1.create_or_update_secret(path="app/db", secret={"password": "s"}, mount_point=kv1)
assert v1.read_secret(path="app/db", mount_point=kv1)["data"] == {"password": "s"}
v1.create_or_update_secret(path="app/db", secret={"password": "t"}, mount_point=kv1)
assert v1.read_secret(path="app/db", mount_point=kv1)["data"] == {"password": "t"}
v1.create_or_update_secret(path="app/x", secret={"a": "b"}, mount_point=kv1)
assert v1.list_secrets(path="app", mount_point=kv1)["data"]["keys"] == ["db", "x"]
v1.delete_secret(path="app/db", mount_point=kv1)
expect(exceptions.InvalidPath, v1.read_secret, path="app/db", mount_point=kv1)
ok("kv1: write, overwrite, read, list, delete")

# ---- policies ---------------------------------------------------------------------------
pol_a = f"app-a-{RUN}"
root.sys.create_or_update_acl_policy(
    name=pol_a,
    policy=f"""
path "{kv2}/data/app-a/*" {{ capabilities = ["create", "read", "update", "delete"] }}
path "{kv2}/metadata/app-a/*" {{ capabilities = ["list", "read"] }}
path "{kv2}/metadata/app-a" {{ capabilities = ["list"] }}
""",
)
assert pol_a in root.sys.list_acl_policies()["data"]["keys"]
assert "app-a" in root.sys.read_acl_policy(name=pol_a)["data"]["policy"]
root.sys.create_or_update_policy(name=f"legacy-{RUN}", policy='path "x/*" { capabilities = ["read"] }')
assert f"legacy-{RUN}" in root.sys.list_policies()["data"]["policies"]
expect(exceptions.InvalidRequest, root.sys.create_or_update_acl_policy, name="bad", policy="path {")
ok("policies: write, read, list, legacy endpoint, bad HCL refused")

# ---- tokens ------------------------------------------------------------------------------
t = root.auth.token.create(policies=[pol_a], ttl="1h", meta={"app": "a"}, display_name="app-a")
tok_a = t["auth"]["client_token"]
acc_a = t["auth"]["accessor"]
assert tok_a.startswith("hvs."), tok_a
assert sorted(t["auth"]["policies"]) == sorted([pol_a, "default"]), t
a = client(tok_a)
me = a.auth.token.lookup_self()["data"]
assert me["display_name"] == "token-app-a" and me["meta"] == {"app": "a"}, me
assert root.auth.token.lookup(tok_a)["data"]["accessor"] == acc_a
assert root.auth.token.lookup_accessor(acc_a)["data"]["policies"] == sorted([pol_a, "default"])
r = a.auth.token.renew_self(increment="30m")
assert r["auth"]["lease_duration"] <= 3600
r = root.auth.token.renew(tok_a, increment="2h")
assert r["auth"]["client_token"] == tok_a
ok("tokens: create, lookup-self, lookup, lookup-accessor, renew-self, renew")

# Tidy: Vault answers 202 with a warning; only a token with update on the path may run it.
r = root.auth.token.tidy()
# hvac hands back the raw response for a 202 (it decodes 200s only).
assert r.status_code == 202, r
assert "expired token(s) removed" in " ".join(r.json()["warnings"]), r.text
expect(exceptions.Forbidden, a.auth.token.tidy)
ok("tokens: tidy (root allowed, a default-policy token refused)")

# Isolation: app-a reads its secrets only; app-b's existence is not revealed.
a.secrets.kv.v2.create_or_update_secret(path="app-a/cfg", secret={"k": "a"}, mount_point=kv2)
root.secrets.kv.v2.create_or_update_secret(path="app-b/cfg", secret={"k": "b"}, mount_point=kv2)
assert a.secrets.kv.v2.read_secret_version(
    path="app-a/cfg", mount_point=kv2, raise_on_deleted_version=True
)["data"]["data"] == {"k": "a"}
for path in ["app-b/cfg", "app-b/missing"]:
    expect(exceptions.Forbidden, a.secrets.kv.v2.read_secret_version, path=path,
           mount_point=kv2, raise_on_deleted_version=True)
expect(exceptions.Forbidden, a.secrets.kv.v2.list_secrets, path="app-b", mount_point=kv2)
assert a.secrets.kv.v2.list_secrets(path="app-a", mount_point=kv2)["data"]["keys"] == ["cfg"]
expect(exceptions.Forbidden, a.auth.token.create, policies=["root"])
ok("isolation: app-a cannot read, list or probe app-b; cannot create tokens")

# Children die with their parent; orphans and revoke-orphan.
root.sys.create_or_update_acl_policy(
    name=f"creator-{RUN}", policy='path "auth/token/create" { capabilities = ["update"] }'
)
parent = root.auth.token.create(policies=[f"creator-{RUN}"], ttl="1h")["auth"]["client_token"]
child = client(parent).auth.token.create(ttl="30m")["auth"]["client_token"]
expect(exceptions.InvalidRequest, client(parent).auth.token.create, policies=[pol_a])
orphan = root.auth.token.create_orphan(policies=[pol_a])["auth"]
assert orphan["orphan"] is True
root.auth.token.revoke(parent)
expect(exceptions.Forbidden, client(child).auth.token.lookup_self)
assert client(orphan["client_token"]).is_authenticated()
p2 = root.auth.token.create(policies=[f"creator-{RUN}"])["auth"]["client_token"]
c2 = client(p2).auth.token.create()["auth"]["client_token"]
root.auth.token.revoke_and_orphan_children(p2)
assert client(c2).auth.token.lookup_self()["data"]["orphan"] is True
root.auth.token.revoke_accessor(orphan["accessor"])
assert not client(orphan["client_token"]).is_authenticated()
client(c2).auth.token.revoke_self()
assert not client(c2).is_authenticated()
ok("tokens: child subset rule, children revoked with parent, orphans, revoke-orphan, "
   "revoke-accessor, revoke-self")

# Use limits and roles.
limited = root.auth.token.create(num_uses=2)["auth"]["client_token"]
client(limited).auth.token.lookup_self()
client(limited).auth.token.lookup_self()
expect(exceptions.Forbidden, client(limited).auth.token.lookup_self)
root.auth.token.create_or_update_role(role_name=f"ci-{RUN}", allowed_policies=[pol_a], orphan=True)
assert f"ci-{RUN}" in root.auth.token.list_roles()["data"]["keys"]
r = root.auth.token.create(role_name=f"ci-{RUN}", policies=[pol_a])
assert r["auth"]["orphan"] is True
root.auth.token.delete_role(f"ci-{RUN}")
ok("tokens: num_uses exhausted is refused; roles")

# ---- AppRole ------------------------------------------------------------------------------
approle = f"approle-{RUN}"
root.sys.enable_auth_method(method_type="approle", path=approle)
root.auth.approle.create_or_update_approle(
    role_name="web", token_policies=[pol_a], token_ttl="20m", secret_id_num_uses=2,
    mount_point=approle,
)
role_id = root.auth.approle.read_role_id(role_name="web", mount_point=approle)["data"]["role_id"]
gen = root.auth.approle.generate_secret_id(
    role_name="web", metadata={"host": "web-1"}, mount_point=approle
)["data"]
looked = root.auth.approle.read_secret_id(
    role_name="web", secret_id=gen["secret_id"], mount_point=approle
)["data"]
assert looked["metadata"] == {"host": "web-1"}, looked
app = hvac.Client(url=ADDR)
login = app.auth.approle.login(role_id=role_id, secret_id=gen["secret_id"], mount_point=approle)
assert sorted(login["auth"]["policies"]) == sorted([pol_a, "default"]), login
assert app.secrets.kv.v2.read_secret_version(
    path="app-a/cfg", mount_point=kv2, raise_on_deleted_version=True
)["data"]["data"] == {"k": "a"}
root.auth.approle.destroy_secret_id(role_name="web", secret_id=gen["secret_id"], mount_point=approle)
expect(exceptions.InvalidRequest, hvac.Client(url=ADDR).auth.approle.login,
       role_id=role_id, secret_id=gen["secret_id"], mount_point=approle)
ok("approle: role, role-id, secret-id with metadata, lookup, login, destroy")

# ---- response wrapping: a secret-id reaches a new workload wrapped ---------------------------
wrapped = root.auth.approle.generate_secret_id(role_name="web", mount_point=approle, wrap_ttl="2m")
info = wrapped["wrap_info"]
assert wrapped["data"] is None, wrapped
assert info["ttl"] == 120, info
assert info["creation_path"] == f"auth/{approle}/role/web/secret-id", info
workload = hvac.Client(url=ADDR, token=info["token"])
secret_id = workload.sys.unwrap()["data"]["secret_id"]
expect(exceptions.InvalidRequest, workload.sys.unwrap)  # single use
login = hvac.Client(url=ADDR).auth.approle.login(
    role_id=role_id, secret_id=secret_id, mount_point=approle
)
assert sorted(login["auth"]["policies"]) == sorted([pol_a, "default"]), login
w = root.sys.wrap(payload={"k": "v"}, ttl=60)
assert w["wrap_info"]["creation_path"] == "sys/wrapping/wrap", w
assert root.sys.unwrap(token=w["wrap_info"]["token"])["data"] == {"k": "v"}
expect(exceptions.InvalidRequest, root.sys.unwrap, token=w["wrap_info"]["token"])
root.sys.disable_auth_method(path=approle)
ok("wrapping: wrapped secret-id unwrapped once and used to log in; sys.wrap/unwrap")

# ---- audit devices ----------------------------------------------------------------------------
audit_dir = tempfile.mkdtemp()
audit_log = os.path.join(audit_dir, "audit.log")
device = f"file-{RUN}"
root.sys.enable_audit_device(device_type="file", path=device, options={"file_path": audit_log})
assert f"{device}/" in root.sys.list_enabled_audit_devices()["data"]
audited = f"audited-value-{RUN}"
root.secrets.kv.v2.create_or_update_secret(path="audited", secret={"pw": audited}, mount_point=kv2)
assert root.secrets.kv.v2.read_secret_version(
    path="audited", mount_point=kv2, raise_on_deleted_version=True
)["data"]["data"] == {"pw": audited}
digest = root.sys.calculate_hash(path=device, input_to_hash=audited)["data"]["hash"]
assert digest.startswith("hmac-sha256:"), digest
with open(audit_log) as f:
    text = f.read()
assert audited not in text and ROOT not in text, "a secret in clear in the audit log"
assert digest in text, "the audit hash of the secret is not in the log"
kinds = {json.loads(line)["type"] for line in text.splitlines()}
assert kinds == {"request", "response"}, kinds
root.sys.disable_audit_device(path=device)
assert f"{device}/" not in root.sys.list_enabled_audit_devices()["data"]
shutil.rmtree(audit_dir)
ok("audit: file device enabled, listed, lines hashed, calculate_hash, disabled")

# A socket device, to a TCP collector in this process.
collector = socket.socket()
collector.bind(("127.0.0.1", 0))
collector.listen()
received = []
def collect():
    conn, _ = collector.accept()
    for line in conn.makefile():
        received.append(json.loads(line))
threading.Thread(target=collect, daemon=True).start()
net = f"net-{RUN}"
root.sys.enable_audit_device(
    device_type="socket", path=net,
    options={"address": f"127.0.0.1:{collector.getsockname()[1]}", "socket_type": "tcp"},
)
assert root.sys.list_enabled_audit_devices()["data"][f"{net}/"]["type"] == "socket"
root.secrets.kv.v2.read_secret_version(path="audited", mount_point=kv2, raise_on_deleted_version=True)
def read_lines():
    return [e for e in received if e["request"]["path"] == f"{kv2}/data/audited"]
deadline = time.time() + 5
while len(read_lines()) < 2 and time.time() < deadline:
    time.sleep(0.05)
lines = read_lines()
assert [e["type"] for e in lines] == ["request", "response"], received
net_digest = root.sys.calculate_hash(path=net, input_to_hash=audited)["data"]["hash"]
assert lines[1]["response"]["data"]["data"]["pw"] == net_digest, lines[1]
assert audited not in json.dumps(received), "a secret in clear on the socket"
root.sys.disable_audit_device(path=net)
collector.close()
ok("audit: socket device (tcp) sends hashed request and response lines")

# ---- database secrets engine and leases (needs WARDEN_TEST_DATABASE_URL) ---------------
PG_URL = os.environ.get("WARDEN_TEST_DATABASE_URL")
if PG_URL:
    db = f"db-{RUN}"
    root.sys.enable_secrets_engine(backend_type="database", path=db)
    dbe = root.secrets.database
    dbe.configure(
        name="pg", plugin_name="postgresql-database-plugin", allowed_roles=["ro"],
        connection_url=PG_URL, username="ignored-by-the-url", password="never-read-back",
        mount_point=db,
    )
    conn = dbe.read_connection(name="pg", mount_point=db)["data"]
    assert conn["plugin_name"] == "postgresql-database-plugin", conn
    assert "password" not in conn["connection_details"], conn
    assert "never-read-back" not in str(conn), conn
    assert dbe.list_connections(mount_point=db)["data"]["keys"] == ["pg"]
    expect(exceptions.InvalidRequest, dbe.configure, name="bad", plugin_name="mysql-database-plugin",
           connection_url=PG_URL, mount_point=db)
    dbe.create_role(
        name="ro", db_name="pg", default_ttl="1h", max_ttl="2h", mount_point=db,
        creation_statements=[
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
        ],
    )
    assert dbe.read_role(name="ro", mount_point=db)["data"]["default_ttl"] == 3600
    assert dbe.list_roles(mount_point=db)["data"]["keys"] == ["ro"]
    creds = dbe.generate_credentials(name="ro", mount_point=db)
    lease_id = creds["lease_id"]
    assert lease_id.startswith(f"{db}/creds/ro/"), creds
    assert creds["renewable"] is True and creds["lease_duration"] == 3600, creds
    user = creds["data"]["username"]
    assert user.startswith("v-root-ro-") and creds["data"]["password"], creds
    print(f"database login: {user}", flush=True)
    ok("database: configure, read (no password), list, bad plugin refused, role, creds")

    lease = root.sys.read_lease(lease_id=lease_id)["data"]
    assert lease["id"] == lease_id and lease["renewable"] is True, lease
    assert 3500 < lease["ttl"] <= 3600, lease
    assert root.sys.list_leases(prefix=f"{db}/creds/ro/")["data"]["keys"] == [lease_id.rsplit("/", 1)[1]]
    # The default policy lets any token holding the lease id look it up and renew it.
    plain = client(root.auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"])
    assert plain.sys.read_lease(lease_id=lease_id)["data"]["id"] == lease_id
    assert plain.sys.renew_lease(lease_id=lease_id, increment=3600)["lease_id"] == lease_id
    expect(exceptions.Forbidden, plain.sys.list_leases, prefix=f"{db}/creds/ro/")
    renewed = root.sys.renew_lease(lease_id=lease_id, increment=5400)
    assert renewed["lease_id"] == lease_id and renewed["lease_duration"] == 5400, renewed
    renewed = root.sys.renew_lease(lease_id=lease_id, increment=86400)
    assert 7100 < renewed["lease_duration"] <= 7200, renewed
    root.sys.revoke_lease(lease_id=lease_id)
    expect(exceptions.InvalidRequest, root.sys.read_lease, lease_id=lease_id)
    second = dbe.generate_credentials(name="ro", mount_point=db)
    root.sys.revoke_prefix(prefix=f"{db}/creds/ro")
    expect(exceptions.InvalidRequest, root.sys.read_lease, lease_id=second["lease_id"])
    print(f"database login: {second['data']['username']}", flush=True)
    dbe.delete_role(name="ro", mount_point=db)
    dbe.delete_connection(name="pg", mount_point=db)
    root.sys.disable_secrets_engine(path=db)
    ok("leases: read, list, renew (capped at max_ttl; default policy may renew), revoke, revoke-prefix")
else:
    print("skipped: database engine (WARDEN_TEST_DATABASE_URL is not set)", flush=True)

# ---- transit ------------------------------------------------------------------------------
tr = f"transit-{RUN}"
root.sys.enable_secrets_engine(backend_type="transit", path=tr)
t = root.secrets.transit


def b64(b):
    return base64.b64encode(b).decode()


t.create_key(name="orders", mount_point=tr)
t.create_key(name="signer", key_type="ed25519", mount_point=tr)
t.create_key(name="ec", key_type="ecdsa-p256", mount_point=tr)
key = t.read_key(name="orders", mount_point=tr)["data"]
assert key["type"] == "aes256-gcm96" and key["latest_version"] == 1, key
assert key["supports_encryption"] and not key["supports_signing"], key
assert sorted(t.list_keys(mount_point=tr)["data"]["keys"]) == ["ec", "orders", "signer"]
ct1 = t.encrypt_data(name="orders", plaintext=b64(b"card 4111"), mount_point=tr)["data"]["ciphertext"]
assert ct1.startswith("vault:v1:"), ct1
pt = t.decrypt_data(name="orders", ciphertext=ct1, mount_point=tr)["data"]["plaintext"]
assert base64.b64decode(pt) == b"card 4111"
t.rotate_key(name="orders", mount_point=tr)
assert t.read_key(name="orders", mount_point=tr)["data"]["latest_version"] == 2
rw = t.rewrap_data(name="orders", ciphertext=ct1, mount_point=tr)["data"]["ciphertext"]
assert rw.startswith("vault:v2:"), rw
assert base64.b64decode(
    t.decrypt_data(name="orders", ciphertext=rw, mount_point=tr)["data"]["plaintext"]
) == b"card 4111"
batch = t.encrypt_data(
    name="orders", batch_input=[{"plaintext": b64(b"a")}, {"plaintext": b64(b"b")}], mount_point=tr
)["data"]["batch_results"]
assert all(r["ciphertext"].startswith("vault:v2:") for r in batch), batch
ok("transit: create, read, list, encrypt, decrypt, rotate, rewrap, batch")

dk = t.generate_data_key(name="orders", key_type="plaintext", bits=512, mount_point=tr)["data"]
assert len(base64.b64decode(dk["plaintext"])) == 64
assert t.decrypt_data(
    name="orders", ciphertext=dk["ciphertext"], mount_point=tr
)["data"]["plaintext"] == dk["plaintext"]
wrapped = t.generate_data_key(name="orders", key_type="wrapped", mount_point=tr)["data"]
assert "plaintext" not in wrapped and wrapped["ciphertext"].startswith("vault:v2:"), wrapped
mac = t.generate_hmac(name="orders", hash_input=b64(b"msg"), algorithm="sha2-512", mount_point=tr)
mac = mac["data"]["hmac"]
assert mac.startswith("vault:v2:"), mac
assert t.verify_signed_data(
    name="orders", hash_input=b64(b"msg"), hmac=mac, hash_algorithm="sha2-512", mount_point=tr
)["data"]["valid"] is True
assert t.verify_signed_data(
    name="orders", hash_input=b64(b"other"), hmac=mac, hash_algorithm="sha2-512", mount_point=tr
)["data"]["valid"] is False
ok("transit: data keys (plaintext, wrapped), HMAC and its verification")

for name in ("signer", "ec"):
    for marshaling in ("asn1", "jws"):
        sig = t.sign_data(
            name=name, hash_input=b64(b"release 1.0"), marshaling_algorithm=marshaling,
            mount_point=tr,
        )["data"]["signature"]
        assert sig.startswith("vault:v1:"), sig
        good = t.verify_signed_data(
            name=name, hash_input=b64(b"release 1.0"), signature=sig,
            marshaling_algorithm=marshaling, mount_point=tr,
        )["data"]["valid"]
        bad = t.verify_signed_data(
            name=name, hash_input=b64(b"release 1.1"), signature=sig,
            marshaling_algorithm=marshaling, mount_point=tr,
        )["data"]["valid"]
        assert good is True and bad is False, (name, marshaling, good, bad)
pub = t.read_key(name="ec", mount_point=tr)["data"]["keys"]["1"]["public_key"]
assert pub.startswith("-----BEGIN PUBLIC KEY-----"), pub
ok("transit: sign and verify (ed25519, ecdsa-p256; asn1 and jws)")

t.update_key_configuration(name="orders", min_decryption_version=2, mount_point=tr)
expect(exceptions.InvalidRequest, t.decrypt_data, name="orders", ciphertext=ct1, mount_point=tr)
expect(exceptions.InvalidRequest, t.delete_key, name="orders", mount_point=tr)
t.update_key_configuration(name="orders", deletion_allowed=True, mount_point=tr)
cfg = t.read_key(name="orders", mount_point=tr)["data"]
assert cfg["min_decryption_version"] == 2 and cfg["deletion_allowed"] is True, cfg
t.delete_key(name="orders", mount_point=tr)
expect(exceptions.InvalidPath, t.read_key, name="orders", mount_point=tr)
rnd = t.generate_random_bytes(n_bytes=24, output_format="hex", mount_point=tr)["data"]
assert len(rnd["random_bytes"]) == 48, rnd
digest = t.hash_data(hash_input=b64(b"abc"), algorithm="sha2-256", mount_point=tr)["data"]["sum"]
assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", digest
root.sys.disable_secrets_engine(path=tr)
ok("transit: min_decryption_version, deletion_allowed, delete, random, hash")

# ---- clean-up ----------------------------------------------------------------------------
root.sys.delete_acl_policy(name=pol_a)
expect(exceptions.InvalidPath, root.sys.read_acl_policy, name=pol_a)
root.sys.disable_secrets_engine(path=kv1)
root.sys.disable_secrets_engine(path=kv2)
assert f"{kv2}/" not in root.sys.list_mounted_secrets_engines()["data"]
ok("clean-up: policy deleted, engines disabled")
print("hvac interop: all checks passed", flush=True)
