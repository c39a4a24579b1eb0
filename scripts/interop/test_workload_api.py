"""The sidecar's SPIFFE Workload API driven by grpcio with py-spiffe's own protobuf stubs
(`spiffe._proto`) and parsers (`X509Svid.parse_raw`, `X509Bundle.parse_raw`,
`JwtBundle.parse`), all unmodified.

py-spiffe's `WorkloadApiClient` itself cannot be used yet: since grpc 1.57 a `unix:` target
sends the percent-encoded socket path as `:authority` (grpc/grpc#38142), which the Rust h2
server refuses as a malformed authority (hyperium/h2#487). The channel below sets
`grpc.default_authority = localhost`, as grpc-go and Kubernetes do for Unix sockets; see
docs/identity.md.

Reads the socket from SPIFFE_ENDPOINT_SOCKET (unix:///path). Prints `first <serial>` once it
has the first X.509-SVID from the stream, then waits (up to 30 s) for the sidecar to push a
renewed one and prints `rotated <serial>` and `ok`. The Rust test renews the SVID when it
reads the first line. Exits non-zero on any failed check.
"""

import os
import sys

import grpc
from spiffe import TrustDomain
from spiffe._proto import workload_pb2, workload_pb2_grpc
from spiffe.bundle.jwt_bundle.jwt_bundle import JwtBundle
from spiffe.bundle.x509_bundle.x509_bundle import X509Bundle
from spiffe.svid.x509_svid import X509Svid

socket = os.environ["SPIFFE_ENDPOINT_SOCKET"]
expected_id = os.environ["EXPECTED_SPIFFE_ID"]
td = TrustDomain("example.org")
HEADER = [("workload.spiffe.io", "true")]

channel = grpc.insecure_channel(socket, options=[("grpc.default_authority", "localhost")])
stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)

# X.509-SVID: chain and key as py-spiffe parses them.
stream = stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=HEADER, timeout=60)
first = next(stream)
assert len(first.svids) == 1, first
raw = first.svids[0]
assert raw.spiffe_id == expected_id, raw.spiffe_id
svid = X509Svid.parse_raw(raw.x509_svid, raw.x509_svid_key)
assert str(svid.spiffe_id) == expected_id, svid.spiffe_id
assert len(svid.cert_chain) == 2, len(svid.cert_chain)
bundle = X509Bundle.parse_raw(td, raw.bundle)
assert len(bundle.x509_authorities) >= 1
print(f"first {svid.leaf.serial_number:x}", flush=True)

# Bundles.
b = next(stub.FetchX509Bundles(workload_pb2.X509BundlesRequest(), metadata=HEADER, timeout=10))
assert "spiffe://example.org" in b.bundles, list(b.bundles)
assert len(X509Bundle.parse_raw(td, b.bundles["spiffe://example.org"]).x509_authorities) >= 1
j = next(stub.FetchJWTBundles(workload_pb2.JWTBundlesRequest(), metadata=HEADER, timeout=10))
JwtBundle.parse(td, j.bundles["spiffe://example.org"])

# The standard's security header is required; JWT-SVIDs are not issued yet.
try:
    next(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=10))
    sys.exit("a call without the workload.spiffe.io header was answered")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
try:
    stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["x"]), metadata=HEADER, timeout=10)
    sys.exit("FetchJWTSVID answered")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e.code()

# The renewal arrives on the open stream, without asking again.
second = next(stream)
renewed = X509Svid.parse_raw(second.svids[0].x509_svid, second.svids[0].x509_svid_key)
assert renewed.leaf.serial_number != svid.leaf.serial_number
assert str(renewed.spiffe_id) == expected_id
print(f"rotated {renewed.leaf.serial_number:x}", flush=True)
stream.cancel()
channel.close()
print("ok", flush=True)
