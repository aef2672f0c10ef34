"""A local webhook receiver for tests: records what was posted and answers a chosen status."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from services.processes import free_port


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """An aiohttp server on 127.0.0.1; each path answers `status` (default 200) and is recorded."""

    status: dict[str, int] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

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
        self.received.append(Received(request.path, dict(request.headers), await request.read()))
        self._arrived.set()
        return web.Response(status=self.status.get(request.path, 200))

    def on(self, path: str) -> list[Received]:
        """The requests that reached `path`, in order."""
        return [r for r in self.received if r.path == path]

    async def wait_for(self, path: str, n: int, timeout: float = 60.0) -> list[Received]:
        """Wait until `path` got `n` requests; fail after `timeout`."""
        async with asyncio.timeout(timeout):
            while len(self.on(path)) < n:
                self._arrived.clear()
                await self._arrived.wait()
        return self.on(path)
