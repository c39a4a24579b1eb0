"""The seal of Warden's authority driven by the real, unmodified `hvac` client.

Runs against a new authority configured with `seal.mode = "shares"` at VAULT_ADDR: hvac
initializes it (3 shares, 2 to unseal), finds it sealed, unseals it share by share (progress,
a reset), uses the root token it was given, reads health and leader, seals it again and
unseals it with the shares. Each check prints `ok: ...`; any failure raises.
"""

import os

import hvac
from hvac import exceptions

ADDR = os.environ["VAULT_ADDR"]


def ok(what):
    print(f"ok: {what}", flush=True)


client = hvac.Client(url=ADDR)
assert client.sys.is_initialized() is False
result = client.sys.initialize(secret_shares=3, secret_threshold=2)
keys, root = result["keys"], result["root_token"]
assert len(keys) == 3 and len(result["keys_base64"]) == 3, result
assert root.startswith("hvs."), root
assert client.sys.is_initialized() is True
try:
    client.sys.initialize(secret_shares=3, secret_threshold=2)
    raise AssertionError("a second initialize was accepted")
except exceptions.InvalidRequest:
    pass
ok("initialize: 3 shares, threshold 2, a root token; a second initialize refused")

# sys/init leaves it unsealed (as Vault does); seal to unseal with the shares.
client.token = root
assert client.sys.is_sealed() is False
client.sys.seal()
assert client.sys.is_sealed() is True
status = client.sys.read_seal_status()
assert (status["t"], status["n"], status["progress"]) == (2, 3, 0), status
try:
    client.secrets.kv.v2.read_secret_version(path="x")
    raise AssertionError("a sealed vault answered a read")
except exceptions.VaultDown:
    pass
ok("seal: sealed, seal-status t=2 n=3, reads refused with 503")

step = client.sys.submit_unseal_key(key=keys[0])
assert (step["sealed"], step["progress"]) == (True, 1), step
step = client.sys.submit_unseal_key(reset=True)
assert step["progress"] == 0, step
step = client.sys.submit_unseal_keys(keys=[keys[2], keys[1]])
assert step["sealed"] is False, step
assert client.sys.is_sealed() is False
ok("unseal: progress, reset, any two of three shares unseal")

health = client.sys.read_health_status(method="GET")
assert health["initialized"] is True and health["sealed"] is False, health
assert client.sys.read_leader_status()["ha_enabled"] is False
client.sys.enable_secrets_engine(backend_type="kv", path="kv", options={"version": "2"})
client.secrets.kv.v2.create_or_update_secret(path="after-unseal", secret={"k": "v"}, mount_point="kv")
assert client.secrets.kv.v2.read_secret_version(
    path="after-unseal", mount_point="kv", raise_on_deleted_version=True
)["data"]["data"] == {"k": "v"}
ok("unsealed: health, leader, a secret written and read with the root token")
print("hvac seal interop: all checks passed", flush=True)
