"""The sidecar's SPIFFE Workload API driven by the real, unmodified `spiffe` package
(py-spiffe), as a workload uses it: `WorkloadApiClient` on the sidecar's Unix socket.

Reads the socket from SPIFFE_ENDPOINT_SOCKET (unix:///path). Fetches the X.509-SVID, the
X.509 context, the X.509 and JWT bundles, and a JWT-SVID it verifies against the JWT bundle
(printed as `jwt <token>` for the Rust test to present to a gateway); checks with py-spiffe's
own gRPC stubs that a call without the `workload.spiffe.io` header is refused, that an
empty audience is refused, and that ValidateJWTSVID returns the claims.
Then watches the X.509 context stream: prints `first <serial>`, waits (up to 30 s) for the
sidecar to push a renewed SVID, prints `rotated <serial>` and `ok`. The Rust test renews the
SVID when it reads the first line. Exits non-zero on any failed check.
"""

import os
import sys
import threading

import grpc
from spiffe import TrustDomain, WorkloadApiClient
from spiffe._proto import workload_pb2, workload_pb2_grpc
from spiffe.svid.jwt_svid import JwtSvid

socket = os.environ["SPIFFE_ENDPOINT_SOCKET"]
expected_id = os.environ["EXPECTED_SPIFFE_ID"]
td = TrustDomain("example.org")

client = WorkloadApiClient(socket_path=socket)

svid = client.fetch_x509_svid()
assert str(svid.spiffe_id) == expected_id, svid.spiffe_id
assert len(svid.cert_chain) == 2, len(svid.cert_chain)
assert svid.private_key is not None

bundles = client.fetch_x509_bundles()
bundle = bundles.get_bundle_for_trust_domain(td)
assert bundle is not None and len(bundle.x509_authorities) >= 1

context = client.fetch_x509_context()
assert str(context.default_svid.spiffe_id) == expected_id

jwt_bundle = client.fetch_jwt_bundles().get_bundle_for_trust_domain(td)
assert jwt_bundle is not None

# A JWT-SVID, signed by the authority's token service, verified with the JWT bundle.
token = client.fetch_jwt_svid(audience={"payments"})
assert str(token.spiffe_id) == expected_id, token.spiffe_id
assert token.audience == {"payments"}, token.audience
verified = JwtSvid.parse_and_validate(token.token, jwt_bundle, {"payments"})
assert str(verified.spiffe_id) == expected_id
try:
    JwtSvid.parse_and_validate(token.token, jwt_bundle, {"billing"})
    sys.exit("a JWT-SVID for another audience validated")
except Exception:
    pass
print(f"jwt {token.token}", flush=True)

# The sidecar validates it too (the Workload API's ValidateJWTSVID), and refuses it for
# another audience or once tampered with.
validated = client.validate_jwt_svid(token.token, "payments")
assert str(validated.spiffe_id) == expected_id
for bad_token, aud in ((token.token, "billing"), (token.token[:-4] + "AAAA", "payments")):
    try:
        client.validate_jwt_svid(bad_token, aud)
        sys.exit(f"ValidateJWTSVID accepted a bad token for {aud}")
    except Exception:
        pass

# The standard's security header is required.
channel = grpc.insecure_channel(socket)
stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
try:
    next(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=10))
    sys.exit("a call without the workload.spiffe.io header was answered")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
reply = stub.ValidateJWTSVID(
    workload_pb2.ValidateJWTSVIDRequest(audience="payments", svid=token.token),
    metadata=[("workload.spiffe.io", "true")],
    timeout=10,
)
assert reply.spiffe_id == expected_id, reply.spiffe_id
assert reply.claims["sub"] == expected_id, reply.claims
assert reply.claims["aud"] == "payments", reply.claims
try:
    stub.FetchJWTSVID(
        workload_pb2.JWTSVIDRequest(audience=[]),
        metadata=[("workload.spiffe.io", "true")],
        timeout=10,
    )
    sys.exit("FetchJWTSVID without an audience answered")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
channel.close()

# A renewal arrives on the stream the client keeps open.
seen = []
errors = []
rotated = threading.Event()


def on_success(ctx):
    serial = ctx.default_svid.leaf.serial_number
    seen.append(serial)
    if len(seen) == 1:
        print(f"first {serial:x}", flush=True)
    elif serial != seen[0]:
        print(f"rotated {serial:x}", flush=True)
        rotated.set()


handle = client.stream_x509_contexts(on_success, errors.append)
if not rotated.wait(30):
    sys.exit(f"no rotation seen on the stream: {seen} {errors}")
handle.cancel()
client.close()
print("ok", flush=True)
