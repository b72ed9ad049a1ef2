"""Request limits of the HTTP process: body size, per-key rate, request counts for /metrics."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict, deque

from starlette.types import ASGIApp, Receive, Scope, Send


class RateLimiter:
    """At most `limit` events per key in any 60 s window (sliding log, in memory of the HTTP process)."""

    def __init__(self, window_s: float = 60.0):
        self.window_s = window_s
        self._log: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def hit(self, key: str, limit: int) -> float:
        """Record one event; 0 when allowed, else the seconds until the next one would be."""
        now = time.monotonic()
        with self._lock:
            log = self._log[key]
            while log and log[0] <= now - self.window_s:
                log.popleft()
            if len(log) >= limit:
                return max(0.001, log[0] + self.window_s - now)
            log.append(now)
            return 0.0


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, by Content-Length or by counting as they stream.

    Multipart uploads get `upload_bytes` (plus room for the form fields); everything else `body_bytes`.
    """

    def __init__(self, app: ASGIApp, body_bytes: int, upload_bytes: int):
        self.app, self.body_bytes, self.upload_bytes = app, body_bytes, upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/")
        limit = self.upload_bytes + 64 * 1024 if multipart else self.body_bytes
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await _too_large(send, limit)
        seen, started = 0, False

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge()
            return message

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await _too_large(send, limit)


async def _too_large(send: Send, limit: int) -> None:
    body = b'{"detail":"the request body is over %d bytes; send a smaller one"}' % limit
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class RequestCounter:
    """ASGI middleware counting responses by status code, for /metrics."""

    def __init__(self, app: ASGIApp, counts: Counter):
        self.app, self.counts = app, counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counted(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.counts[message["status"]] += 1
            await send(message)

        await self.app(scope, receive, counted)
