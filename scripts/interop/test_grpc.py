"""gRPC through Warden's gateway with grpcio, unmodified, as client and server.

Driven by crates/warden-proxy/tests/grpc_interop.rs over stdin/stdout:

  script -> test   "upstream <port>"               the grpcio server is up (h2c)
  test   -> script "gateway <host:port> <token> <token-without-scope>"
  script -> test   "done <json>"                   every check's result

The server has a generic (codegen-free) service `warden.test.Echo` with the four call shapes,
a `Slow` method for deadlines, a `Flaky` method that answers UNAVAILABLE every other call
(for retries), and the standard health service (grpcio-health-checking), which the script
flips to NOT_SERVING and back to watch the gateway's gRPC health check follow.
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE = "warden.test.Echo"
ident = lambda b: b  # noqa: E731  (messages are raw bytes: no generated code needed)
calls = {"flaky": 0}
seen_metadata = {}


def unary(request, context):
    seen_metadata["unary"] = dict(context.invocation_metadata())
    context.set_trailing_metadata((("x-trailer", "from-upstream"),))
    return b"echo:" + request


def server_stream(request, context):
    for i in range(5):
        yield request + b":" + str(i).encode()


def client_stream(request_iterator, context):
    return b"|".join(request_iterator)


def bidi(request_iterator, context):
    for m in request_iterator:
        yield b"re:" + m


def slow(request, context):
    time.sleep(3)
    return request


def flaky(request, context):
    calls["flaky"] += 1
    if calls["flaky"] % 2 == 1:
        context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
    return b"ok after " + str(calls["flaky"]).encode()


def handler():
    u = grpc.unary_unary_rpc_method_handler
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": u(unary, ident, ident),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, ident, ident),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, ident, ident),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident),
            "Slow": u(slow, ident, ident),
            "Flaky": u(flaky, ident, ident),
        },
    )


def code_of(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler(),))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"upstream {port}", flush=True)
    _, target, token, weak = sys.stdin.readline().split()
    results = {}
    channel = grpc.insecure_channel(target)
    auth = (("authorization", f"Bearer {token}"),)
    m = lambda name, kind=channel.unary_unary: kind(  # noqa: E731
        f"/{SERVICE}/{name}", request_serializer=ident, response_deserializer=ident
    )

    # The four call shapes, with metadata in and trailers out.
    reply, call = m("Unary").with_call(b"hi", metadata=auth + (("x-request-tag", "t1"),), timeout=10)
    results["unary"] = reply.decode()
    results["trailers"] = dict(call.trailing_metadata()).get("x-trailer")
    results["metadata_seen"] = seen_metadata["unary"].get("x-request-tag")
    results["server_stream"] = [
        r.decode() for r in m("ServerStream", channel.unary_stream)(b"s", metadata=auth, timeout=10)
    ]
    results["client_stream"] = m("ClientStream", channel.stream_unary)(
        iter([b"a", b"b", b"c"]), metadata=auth, timeout=10
    ).decode()
    # Bidirectional, interleaved: each answer is read before the next message is sent, so
    # nothing on the way may hold messages back.
    ready = threading.Event()

    def requests():
        for i in range(4):
            yield f"m{i}".encode()
            ready.wait(5)
            ready.clear()

    answers = []
    for r in m("Bidi", channel.stream_stream)(requests(), metadata=auth, timeout=10):
        answers.append(r.decode())
        ready.set()
    results["bidi"] = answers

    # Refusals made by the gateway, as gRPC statuses.
    results["no_token"] = code_of(lambda: m("Unary")(b"x", timeout=10))
    results["missing_scope"] = code_of(
        lambda: m("Unary")(b"x", metadata=(("authorization", f"Bearer {weak}"),), timeout=10)
    )
    limited = lambda: channel.unary_unary(  # noqa: E731
        "/warden.test.Limited/Unary", request_serializer=ident, response_deserializer=ident
    )(b"x", metadata=auth, timeout=10)
    results["rate_limited"] = [code_of(limited), code_of(limited)]
    results["no_upstream"] = code_of(
        lambda: channel.unary_unary(
            "/warden.test.Down/Unary", request_serializer=ident, response_deserializer=ident
        )(b"x", metadata=auth, timeout=10)
    )
    results["policy_denied"] = code_of(lambda: m("Forbidden")(b"x", metadata=auth, timeout=10))
    started = time.monotonic()
    results["deadline"] = code_of(lambda: m("Slow")(b"x", metadata=auth, timeout=0.5))
    results["deadline_after_s"] = round(time.monotonic() - started, 2)

    # UNAVAILABLE from the server is retried by the gateway: the client sees one success.
    results["flaky"] = m("Flaky")(b"x", metadata=auth, timeout=10).decode()

    # The gateway's gRPC health check follows the server's health.
    health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        code = code_of(lambda: m("Unary")(b"x", metadata=auth, timeout=5))
        if code == "UNAVAILABLE":
            break
        time.sleep(0.1)
    results["while_not_serving"] = code
    health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        code = code_of(lambda: m("Unary")(b"x", metadata=auth, timeout=5))
        if code == "OK":
            break
        time.sleep(0.1)
    results["serving_again"] = code

    channel.close()
    server.stop(0)
    print("done " + json.dumps(results), flush=True)


try:
    main()
except BaseException:
    import os
    import traceback

    traceback.print_exc()
    sys.stdout.flush()
    os._exit(1)
