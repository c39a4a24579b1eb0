"""WebSockets through Warden's gateway with the `websockets` library, unmodified, on both ends.

Driven by crates/warden-proxy/tests/websocket_interop.rs over stdin/stdout, one line each way:

  script  -> test   "upstream <port>"       the echo server (a websockets server) is up
  test    -> script "gateway <ws-url> <token>"
  script  -> test   "open"                  a socket is open and has echoed through the gateway
  test    -> script "reloaded"              the gateway's config was reloaded meanwhile
  script  -> test   "still-open"            the same socket still echoes
  test    -> script "revoked"               the socket's token was revoked
  script  -> test   "done <json>"           every check's result

Checks: an upgrade without a token is refused with 401 before any upstream sees it; text,
binary and a 512 KiB message round-trip (permessage-deflate negotiated end to end); a reload
leaves the open socket working; a revocation closes it with 1008 on both sides; the route's
idle timeout closes an idle socket with 1001.
"""

import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

upstream_closes = []  # (path, close code the upstream received)


async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass
    upstream_closes.append((ws.request.path, ws.close_code))


async def line(reader):
    data = await reader.readline()
    if not data:
        raise SystemExit("the test went away")
    return data.decode().strip()


def say(text):
    print(text, flush=True)


async def roundtrip(ws, message):
    await ws.send(message)
    got = await asyncio.wait_for(ws.recv(), 10)
    assert got == message, f"echo mismatch: {type(got)} {len(got)}"


async def main():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    results = {}
    async with serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        say(f"upstream {port}")
        _, url, token = (await line(reader)).split()
        auth = {"Authorization": f"Bearer {token}"}
        common = dict(proxy=None, open_timeout=10, close_timeout=5)

        # No token: the gateway refuses the upgrade itself.
        try:
            async with connect(f"{url}/ws/chat", **common):
                results["unauthenticated"] = "connected"
        except InvalidStatus as e:
            results["unauthenticated"] = e.response.status_code

        # Authenticated: messages of every kind, both ways.
        async with connect(f"{url}/ws/chat", additional_headers=auth, **common) as ws:
            await roundtrip(ws, "hello through warden")
            await roundtrip(ws, bytes(range(256)) * 4)
            await roundtrip(ws, os.urandom(512 * 1024))
            results["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
            results["echo"] = "ok"

        # A reload while a socket is open, then a revocation of its token.
        ws = await connect(f"{url}/ws/feed", additional_headers=auth, **common)
        await roundtrip(ws, "before reload")
        say("open")
        assert await line(reader) == "reloaded"
        await roundtrip(ws, "after reload")
        say("still-open")
        assert await line(reader) == "revoked"
        try:
            await asyncio.wait_for(ws.recv(), 10)
            results["revoked"] = "still open"
        except ConnectionClosed as e:
            results["revoked"] = e.rcvd.code if e.rcvd else None
            results["revoked_reason"] = e.rcvd.reason if e.rcvd else None

        # The idle route closes a quiet socket (1 s) with "going away".
        async with connect(f"{url}/idle/x", **common) as idle:
            await roundtrip(idle, "ping")
            started = loop.time()
            try:
                await asyncio.wait_for(idle.recv(), 10)
                results["idle"] = "still open"
            except ConnectionClosed as e:
                results["idle"] = e.rcvd.code if e.rcvd else None
                results["idle_after_s"] = round(loop.time() - started, 2)

        # Let the upstream's handlers see their closes.
        for _ in range(50):
            if len(upstream_closes) >= 3:
                break
            await asyncio.sleep(0.1)
        results["upstream_closes"] = sorted(upstream_closes)
    say("done " + json.dumps(results))


asyncio.run(main())
