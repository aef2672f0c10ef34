"""A local webhook receiver for tests: verifies each post as every Driftline receiver does,
records what it accepted (and why it refused the rest) and answers a chosen status."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import SecretStr

from services.processes import free_port
from shared.errors import WebhookRefusedError
from shared.settings import INSECURE_DEV_KEY
from shared.signing import KeyRing
from shared.webhooks import verify_request


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """An aiohttp server on 127.0.0.1. A post signed by `keys` within `tolerance_s` is recorded
    in `received` and answered `status` for its path (default 200); any other is answered 401
    and its reason recorded in `refused`. A verified post to a path of `hold` is recorded in
    `held` (not in `received`) and left unanswered until `release`: a receiver that hangs."""

    status: dict[str, int] = field(default_factory=dict)
    hold: set[str] = field(default_factory=set)
    held: list[Received] = field(default_factory=list)
    keys: KeyRing = field(default_factory=lambda: KeyRing(SecretStr(INSECURE_DEV_KEY)))
    tolerance_s: float = 300.0
    received: list[Received] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/hook") -> str:
        """The URL of `path` on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_request(request.headers, body, self.keys, self.tolerance_s, time.time())
        except WebhookRefusedError as exc:
            self.refused.append(exc.reason)
            return web.Response(status=401, text=str(exc))
        if request.path in self.hold and not self._released.is_set():
            self.held.append(Received(request.path, dict(request.headers), body))
            self._arrived.set()
            await self._released.wait()
            return web.Response(status=self.status.get(request.path, 200))
        self.received.append(Received(request.path, dict(request.headers), body))
        self._arrived.set()
        return web.Response(status=self.status.get(request.path, 200))

    def release(self) -> None:
        """Answer the held posts, and every later one at once."""
        self._released.set()

    async def wait_held(self, n: int, timeout: float = 60.0) -> list[Received]:
        """Wait until `n` posts are held; fail after `timeout`."""
        async with asyncio.timeout(timeout):
            while len(self.held) < n:
                self._arrived.clear()
                await self._arrived.wait()
        return self.held

    def on(self, path: str) -> list[Received]:
        """The accepted requests that reached `path`, in order."""
        return [r for r in self.received if r.path == path]

    async def wait_for(self, path: str, n: int, timeout: float = 60.0) -> list[Received]:
        """Wait until `path` accepted `n` requests; fail after `timeout`."""
        async with asyncio.timeout(timeout):
            while len(self.on(path)) < n:
                self._arrived.clear()
                await self._arrived.wait()
        return self.on(path)
