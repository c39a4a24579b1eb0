"""A real OTLP receiver for the tracing tests: decodes what arrives with the
opentelemetry-proto package (the OpenTelemetry project's own generated messages) and writes
each span and log record as a JSON line, so a test can check what Warden exported.

    otlp_receiver.py --port P --out FILE [--grpc]

HTTP/protobuf (POST /v1/traces, /v1/logs) by default, gRPC with --grpc (TraceService and
LogsService Export). A body that does not decode is a 400 (HTTP) or INVALID_ARGUMENT (gRPC),
and is recorded as {"kind": "garbage"}: Warden must only send well-formed requests.
"""

import argparse
import json
import signal
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

LOCK = threading.Lock()


def value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def attrs(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


def write(out, records):
    with LOCK, open(out, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def spans_of(req):
    for rs in req.resource_spans:
        resource = attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield {
                    "kind": "span",
                    "resource": resource,
                    "scope": ss.scope.name,
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex(),
                    "name": s.name,
                    "span_kind": s.kind,
                    "start": s.start_time_unix_nano,
                    "end": s.end_time_unix_nano,
                    "attributes": attrs(s.attributes),
                    "status": s.status.code,
                    "status_message": s.status.message,
                    "flags": s.flags,
                }


def logs_of(req):
    for rl in req.resource_logs:
        resource = attrs(rl.resource.attributes)
        for sl in rl.scope_logs:
            for r in sl.log_records:
                yield {
                    "kind": "log",
                    "resource": resource,
                    "trace_id": r.trace_id.hex(),
                    "span_id": r.span_id.hex(),
                    "event_name": r.event_name,
                    "severity": r.severity_number,
                    "severity_text": r.severity_text,
                    "body": value(r.body),
                    "attributes": attrs(r.attributes),
                    "time": r.time_unix_nano,
                }


def decode(cls, body):
    msg = cls()
    msg.ParseFromString(body)
    return msg


def serve_http(port, out):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n)
            try:
                # OTLP/HTTP binary is application/x-protobuf: anything else is refused
                # before it is decoded, and nothing of it is recorded as spans or logs.
                if self.headers.get("content-type") != "application/x-protobuf":
                    raise DecodeError("content-type " + str(self.headers.get("content-type")))
                if self.path == "/v1/traces":
                    write(out, spans_of(decode(trace_service_pb2.ExportTraceServiceRequest, body)))
                    reply = trace_service_pb2.ExportTraceServiceResponse()
                elif self.path == "/v1/logs":
                    write(out, logs_of(decode(logs_service_pb2.ExportLogsServiceRequest, body)))
                    reply = logs_service_pb2.ExportLogsServiceResponse()
                else:
                    self.send_error(404)
                    return
            except DecodeError as e:
                write(out, [{"kind": "garbage", "path": self.path, "error": str(e)}])
                self.send_error(400)
                return
            data = reply.SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.serve_forever()


def serve_grpc(port, out):
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            write(out, spans_of(request))
            return trace_service_pb2.ExportTraceServiceResponse()

    class Logs(logs_service_pb2_grpc.LogsServiceServicer):
        def Export(self, request, context):
            write(out, logs_of(request))
            return logs_service_pb2.ExportLogsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--grpc", action="store_true")
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    (serve_grpc if a.grpc else serve_http)(a.port, a.out)


if __name__ == "__main__":
    main()
