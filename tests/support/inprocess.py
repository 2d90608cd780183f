"""omgate's TLS front door in this process, in front of a test ASGI app that records scopes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from harness import free_port, merge, to_toml

from service.config import load_config
from service.gate import ClientAuthGate
from service.listeners.hypercorn_glue import hypercorn_config
from service.listeners.serving import HttpServing
from service.policy_loader import PolicyLoader
from service.server import build_server_tls, build_tls_handler
from service.tracker import ConnectionTracker


class RecordingApp:
    """Answers 200 with the request path, and keeps every HTTP scope it saw."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.scopes.append(scope)
        while (await receive()).get("more_body"):
            pass
        body = f"seen {scope['path']} over {scope['http_version']}\n".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class InProcessListener:
    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        self.port = free_port()
        path = folder / "inprocess.toml"
        path.write_text(to_toml(merge(config, {"server": {"bind": [f"127.0.0.1:{self.port}"]}})))
        self.config = load_config(path, {})
        self.app = RecordingApp()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tracker = ConnectionTracker()

    def __enter__(self) -> InProcessListener:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    async def _start(self) -> None:
        policies = PolicyLoader(self.config)
        gate = ClientAuthGate(policies.listener_policy())
        server_tls = build_server_tls(self.config, policies)
        serving = HttpServing(self.app, hypercorn_config(read_timeout=10, graceful_timeout=2))
        self.serving = serving
        handler = build_tls_handler(self.config, server_tls, gate, serving)
        address = self.config.server.bind[0]
        self._server = await asyncio.start_server(self._tracker.wrap(handler), address.host,
                                                  address.port)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self.serving.terminate()
        await self._tracker.drain(5)

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
