"""A tiny HTTP/1.1 server for GET /metrics and GET /health (loopback only by default).

Deliberately minimal (no framework, no keep-alive, no request bodies): one short request per
connection from a local Prometheus/node-exporter-style scraper or ``curl``. Anything but GET or
HEAD is 405, an unknown path 404. Slow or oversized requests are cut off so a stuck client
cannot hold a connection open.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from agent.ops.alarms import ServiceUnavailable
from agent.ops.health import FAILING, HealthReport
from agent.ops.metrics import CONTENT_TYPE, make_registry, render
from agent.ops.observe import AgentView

log = logging.getLogger("cityedge.httpd")

Response = tuple[int, str, bytes]  # status, content type, body
Route = Callable[[], Response]
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip
_READ_TIMEOUT = 5.0
_MAX_HEADER_LINES = 64


class HttpEndpoint:
    """Serves ``routes`` (path -> handler) on host:port; ``port`` is the bound one (0 -> any)."""

    def __init__(self, host: str, port: int, routes: dict[str, Route]) -> None:
        self.host = host
        self.port = port
        self.routes = routes
        self.listening = asyncio.Event()
        self.requests = 0

    async def serve(self) -> None:
        try:
            server = await asyncio.start_server(self._handle, self.host, self.port, backlog=16)
        except OSError as exc:  # run supervised (agent/ops/alarms.py): an alarm, not a crash
            raise ServiceUnavailable(bind_problem(self.host, self.port, exc)) from None
        self.port = server.sockets[0].getsockname()[1]
        log.info("metrics/health endpoint on http://%s:%d/", self.host, self.port)
        self.listening.set()
        async with server:
            await server.serve_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, body, head = await asyncio.wait_for(self._answer(reader), _READ_TIMEOUT)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            writer.close()
            return
        self.requests += 1
        hdr = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        try:
            writer.write(hdr.encode("ascii") + (b"" if head else body))
            await asyncio.wait_for(writer.drain(), _READ_TIMEOUT)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes, bool]:
        line = (await reader.readuntil(b"\n")).decode("latin-1").strip()
        for _ in range(_MAX_HEADER_LINES):
            if (await reader.readuntil(b"\n")) in (b"\r\n", b"\n"):
                break
        else:
            return 400, "text/plain", b"too many headers\n", False
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, "text/plain", b"bad request line\n", False
        method, target = parts[0], parts[1].split("?", 1)[0]
        route = self.routes.get(target)
        if route is None:
            return 404, "text/plain", b"not found: try /metrics or /health\n", False
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET and HEAD\n", False
        try:
            status, ctype, body = route()
        except Exception:
            log.exception("GET %s failed", target)
            return 500, "text/plain", b"internal error (see the agent log)\n", False
        return status, ctype, body, method == "HEAD"


def bind_problem(host: str, port: int, exc: OSError) -> str:
    """Why the endpoint cannot listen, and what to do about it, in one line."""
    where = f"metrics/health endpoint cannot listen on {host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{where}: the port is in use by another process (see which: ss -ltnp "
            f"'sport = :{port}'; or choose another with [metrics] port)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}: {host} is not an address of this gateway (set [metrics] host)"
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need privileges)"
    return f"{where}: {exc.strerror or exc}"


def routes_for(agent: AgentView, health: HealthReport) -> dict[str, Route]:
    registry = make_registry(agent, health.timekeeper)

    def metrics() -> Response:
        return 200, CONTENT_TYPE, render(registry)

    def health_doc() -> Response:
        doc = health.document()
        body = (json.dumps(doc, indent=1, sort_keys=False) + "\n").encode()
        return (503 if doc["status"] == FAILING else 200), "application/json", body

    return {"/metrics": metrics, "/health": health_doc}


def http_service(
    agent: AgentView, host: str, port: int, health: HealthReport | None = None
) -> tuple[HttpEndpoint, Callable[[], Coroutine[Any, Any, None]]]:
    """The endpoint and its coroutine factory for ``Agent.services``."""
    ep = HttpEndpoint(host, port, routes_for(agent, health or HealthReport(agent)))
    return ep, ep.serve
