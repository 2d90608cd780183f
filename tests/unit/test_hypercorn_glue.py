"""How the hypercorn internals that service/listeners/ stands in for behave.

tests/unit/test_tripwires.py names every internal omgate uses and checks that each is there
with its shape; this reads hypercorn's source for what omgate relies on them doing (what
TCPServer calls on its reader and writer, its read loop, its idle task), so a change in
hypercorn fails here with a message naming it, before any end-to-end test fails for an
obscure reason.
"""

from __future__ import annotations

import inspect

from hypercorn.asyncio.tcp_server import TCPServer


def test_tcp_server_uses_only_what_its_reader_and_writer_have():
    # DeadlineStream and TlsStream offer these and nothing else
    source = inspect.getsource(TCPServer)
    for used in ('get_extra_info("socket")', 'get_extra_info("ssl_object")',
                 "selected_alpn_protocol()", "self.reader.read(", "self.reader.at_eof()",
                 "self.writer.write(", "self.writer.drain()", "self.writer.close()",
                 "self.writer.wait_closed()", "self.writer.write_eof()"):
        assert used in source, f"TCPServer no longer uses {used}"


def test_the_response_headers_the_dated_config_extends():
    from hypercorn.config import Config

    from service.listeners.hypercorn_glue import hypercorn_config

    source = inspect.getsource(Config.response_headers)
    assert "if self.include_date_header:" in source and "format_date_time(time())" in source
    headers = hypercorn_config(read_timeout=5, graceful_timeout=5).response_headers("h11")
    assert [name for name, _value in headers] == [b"date", b"server"]


def test_releasing_tcp_server_runs_the_connection_as_hypercorn_does_with_http11():
    # ReleasingTcpServer.run is TCPServer.run with Http11 built where hypercorn builds its
    # ProtocolWrapper, with the arguments hypercorn gives its protocols; the events Http11
    # sends must be the ones TCPServer handles.
    from hypercorn.protocol import ProtocolWrapper
    from hypercorn.protocol.h11 import H11Protocol

    from service.listeners.http11 import Http11

    run = inspect.getsource(TCPServer.run)
    for step in ("parse_socket_addr(socket.family, socket.getpeername())",
                 "parse_socket_addr(socket.family, socket.getsockname())",
                 'self.writer.get_extra_info("ssl_object")',
                 "async with TaskGroup(self.loop) as task_group:",
                 "self._task_group = task_group", "self.protocol = ProtocolWrapper(",
                 "ConnectionState(self.state)", "self.protocol_send",
                 "await self.protocol.initiate()",
                 "await self.idle_task.restart(task_group, self._idle_timeout)",
                 "await self._read_data()", "except OSError:", "await self._close()"):
        assert step in run, f"TCPServer.run no longer does {step}"
    assert "self.protocol = H11Protocol(" in inspect.getsource(ProtocolWrapper.__init__)
    assert (list(inspect.signature(Http11.__init__).parameters)
            == list(inspect.signature(H11Protocol.__init__).parameters))
    sent = inspect.getsource(TCPServer.protocol_send)
    for handled in ("isinstance(event, RawData)", "isinstance(event, Closed)",
                    "isinstance(event, Updated)"):
        assert handled in sent, f"TCPServer.protocol_send no longer handles {handled}"


def test_the_read_loop_and_close_that_releasing_tcp_server_relies_on():
    # ReleasingTcpServer closes as soon as _read_data returns; _close must stop the idle
    # timer, or the connection's task group waits for it.
    assert "await self._read_data()" in inspect.getsource(TCPServer.run)
    close = inspect.getsource(TCPServer._close)
    assert "self.writer.close()" in close and "self.idle_task.stop()" in close
    # ReleasingTcpServer's own read loop is hypercorn's, with a timer for the read timeout
    read = inspect.getsource(TCPServer._read_data)
    for used in ("self.reader.read(MAX_RECV)", "self.config.read_timeout",
                 "await self.protocol.handle(RawData(data))",
                 "await self.protocol.handle(Closed())"):
        assert used in read, f"TCPServer._read_data no longer uses {used}"


def test_the_idle_task_that_idle_timer_stands_for():
    # IdleTimer replaces TCPServer.idle_task: hypercorn restarts and stops it, and what its
    # _idle_timeout does after waiting is what IdleTimer's expiry does.
    source = inspect.getsource(TCPServer)
    assert "self.idle_task = AsyncioSingleTask()" in source
    assert "self.idle_task.restart(self._task_group, self._idle_timeout)" in source
    idle = inspect.getsource(TCPServer._idle_timeout)
    assert "self.context.terminated.wait()" in idle
    assert "self.config.keep_alive_timeout" in idle
    assert "self._initiate_server_close()" in idle
