#!/usr/bin/env python3
"""Open N idle HTTP/1.1 keep-alive connections to a proxy and hold them.

Each connection sends one complete request (`GET /bench HTTP/1.1`, `Host: bench`)
and reads the whole response, so the proxy sees an established keep-alive HTTP
connection that has served a request and is now idle. When all N are open the
script prints `READY <n>` on stdout (flushed) and holds them until it receives
SIGTERM/SIGINT or --hold seconds pass. On the way out it counts how many of the
connections the proxy still kept open, prints `ALIVE <n>`, and closes them
abortively (RST, SO_LINGER 0) so no client-side TIME_WAIT is left behind to
starve the ephemeral port range for the next run.

Standard library only. Only talks to loopback (127.0.0.0/8) addresses.

Usage: idle_conns.py [--host 127.0.0.1] [--port 18080] [-n 10000]
                     [--batch 200] [--hold 600] [--sources 1]
"""

import argparse
import ipaddress
import resource
import select
import signal
import socket
import struct
import sys
import time

REQUEST_TEMPLATE = "GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n"


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want
    if hard != resource.RLIM_INFINITY and hard < want:
        # Try to raise the hard limit too (works as root); fall back to it.
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            target = hard
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class ResponseError(Exception):
    pass


def read_response(sock, deadline):
    """Read one HTTP/1.x response; return (status, keep_alive)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += recv_some(sock, deadline)
        if len(buf) > 65536:
            raise ResponseError("response head too large")
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ResponseError("bad status line: %r" % lines[0])
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    conn_tokens = ",".join(headers.get("connection", [])).lower()
    keep_alive = "close" not in conn_tokens and parts[0] != "HTTP/1.0"
    te = ",".join(headers.get("transfer-encoding", [])).lower()
    if "chunked" in te:
        body = rest
        # Good enough for small bodies: wait for the terminating chunk.
        while not (body.endswith(b"0\r\n\r\n")):
            body += recv_some(sock, deadline)
    elif "content-length" in headers:
        length = int(headers["content-length"][0])
        body = rest
        while len(body) < length:
            body += recv_some(sock, deadline)
    else:
        # No framing: body runs to close, so it cannot be a keep-alive connection.
        keep_alive = False
    return status, keep_alive


def recv_some(sock, deadline):
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ResponseError("timed out waiting for response")
    sock.settimeout(remaining)
    data = sock.recv(65536)
    if not data:
        raise ResponseError("connection closed by peer")
    return data


def still_open(sock):
    """True if the peer has not closed the connection (no EOF/RST pending)."""
    try:
        poller = select.poll()  # select() cannot watch fds >= 1024
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        if not poller.poll(0):
            return True
        sock.setblocking(False)
        return bool(sock.recv(1, socket.MSG_PEEK))
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False


def abort_close(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--path", default="/bench")
    ap.add_argument("-n", "--connections", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=200,
                    help="connections opened before their responses are read (stay below the listen backlog)")
    ap.add_argument("--hold", type=float, default=600,
                    help="seconds to hold the connections at most before exiting by itself")
    ap.add_argument("--sources", type=int, default=1,
                    help="spread connections over this many source addresses 127.0.0.1, .2, ... (1 = kernel default)")
    ap.add_argument("--timeout", type=float, default=15, help="per-batch response timeout, seconds")
    args = ap.parse_args()

    if not ipaddress.ip_address(args.host).is_loopback:
        sys.exit("refusing to connect to non-loopback address %s" % args.host)

    limit = raise_nofile(65536)
    if limit < args.connections + 64:
        sys.exit("RLIMIT_NOFILE is %d, too low for %d connections" % (limit, args.connections))

    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    request = REQUEST_TEMPLATE.format(path=args.path).encode()
    conns = []
    failures = 0
    started = time.monotonic()
    i = 0
    while len(conns) < args.connections and not stop["flag"]:
        batch = []
        for _ in range(min(args.batch, args.connections - len(conns))):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if args.sources > 1:
                # IP_BIND_ADDRESS_NO_PORT (24): pick the port at connect() time,
                # so every source address gets the full ephemeral range.
                s.setsockopt(socket.IPPROTO_IP, 24, 1)
                s.bind(("127.0.0.%d" % (1 + i % args.sources), 0))
            i += 1
            s.settimeout(args.timeout)
            try:
                s.connect((args.host, args.port))
                s.sendall(request)
                batch.append(s)
            except OSError as e:
                failures += 1
                print("connect/send failed: %s" % e, file=sys.stderr)
                abort_close(s)
        deadline = time.monotonic() + args.timeout
        for s in batch:
            try:
                status, keep_alive = read_response(s, deadline)
                if status != 200 or not keep_alive:
                    raise ResponseError("status %d keep_alive=%s" % (status, keep_alive))
                conns.append(s)
            except (OSError, ResponseError, ValueError) as e:
                failures += 1
                print("response failed: %s" % e, file=sys.stderr)
                abort_close(s)
        if failures > max(10, args.connections // 100):
            print("too many failures (%d), giving up" % failures, file=sys.stderr)
            break

    elapsed = time.monotonic() - started
    print("READY %d failures=%d seconds=%.1f" % (len(conns), failures, elapsed), flush=True)

    end = time.monotonic() + args.hold
    while not stop["flag"] and time.monotonic() < end:
        time.sleep(0.2)

    alive = sum(1 for s in conns if still_open(s))
    print("ALIVE %d" % alive, flush=True)
    for s in conns:
        abort_close(s)
    return 0 if len(conns) == args.connections else 2


if __name__ == "__main__":
    sys.exit(main())
