"""/readyz on PostgreSQL answers within its 3 seconds (README: "when the inbox accepts a
write transaction (PostgreSQL: within 3 seconds), and 503 when it does not"), also when the
database stops answering on a connection the pool already holds (a network partition, a
stalled server)."""

from __future__ import annotations

import asyncio
import time

import httpx

from service.app import READINESS_FRESH_SECONDS, ServiceState, create_health_app
from service.inbox import open_inbox
from service.metrics import Metrics


class FreezingProxy:
    """A TCP relay to PostgreSQL that can stop relaying without closing anything, as a
    network that drops every packet does."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.frozen = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers += [writer, upstream_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                if self.frozen.is_set():
                    await asyncio.Event().wait()  # dropped, and nothing more is read
                sink.write(data)
                await sink.drain()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer),
                             return_exceptions=True)

    def close(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()


def test_readyz_answers_within_its_seconds_when_postgresql_stops_answering(postgres):
    url = postgres.new_database()

    async def main() -> tuple[int, float]:
        proxy = FreezingProxy(postgres.port)
        port = await proxy.start()
        inbox = await open_inbox(url.replace(f":{postgres.port}/", f":{port}/"))
        app = create_health_app(inbox, ServiceState(), Metrics())
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://health") as client:
                assert (await client.get("/readyz")).status_code == 200
                proxy.frozen.set()
                await asyncio.sleep(READINESS_FRESH_SECONDS)  # the last answer is a second old
                started = time.monotonic()
                try:
                    answer = await asyncio.wait_for(client.get("/readyz"), 20)
                except TimeoutError:
                    return 0, time.monotonic() - started
                return answer.status_code, time.monotonic() - started
        finally:
            proxy.close()
            await asyncio.wait_for(inbox.close(), 30)

    status, took = asyncio.run(main())
    assert status == 503 and took < 10, (
        f"/readyz gave {status or 'no answer'} after {took:.1f} s while PostgreSQL did not "
        "answer")
