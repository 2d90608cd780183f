"""The HTTP/1.1 core (service/listeners/h1.py) bytes in, actions out: no socket, no task,
no event loop. Each rule a connection keeps is held here where it is decided; the
driver's tests (tests/unit/test_http11.py) hold that the actions are carried out."""

from __future__ import annotations

from itertools import product

import h11
import pytest

from service.listeners.framing import HeadLimits, Refusal, RefusalAnswer, bodiless
from service.listeners.h1 import (
    ANSWER_MOVES,
    Action,
    AnswerThenClose,
    Close,
    ConnectionRules,
    Exchange,
    ExchangeEnded,
    Idle,
    Refused,
    RequestBody,
    ServerConnection,
    StartExchange,
    UnexpectedMessageError,
    WaitForAnswer,
    Write,
)

SERVER = [(b"server", b"omgate-test")]


def connection(**rules: object) -> ServerConnection:
    settings: dict = {"head_limits": HeadLimits(), "answer_refusal": bodiless,
                      "max_requests": 1000, "answer_headers": lambda: list(SERVER)}
    return ServerConnection(ConnectionRules(**{**settings, **rules}))


def post(body: bytes, *extra: bytes, version: bytes = b"1.1", method: bytes = b"POST") -> bytes:
    return (method + b" /salesforce/outbound HTTP/" + version + b"\r\nHost: omgate\r\n"
            + b"".join(extra) + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def kinds(actions: list[Action]) -> list[str]:
    return [type(action).__name__ for action in actions]


def written(actions: list[Action]) -> bytes:
    return b"".join(action.data for action in actions if isinstance(action, Write))


def started(actions: list[Action]) -> list[Exchange]:
    return [action.exchange for action in actions if isinstance(action, StartExchange)]


def body_of(actions: list[Action]) -> bytes:
    return b"".join(action.body for action in actions if isinstance(action, RequestBody))


def answer(conn: ServerConnection, exchange: Exchange, body: bytes = b"ack", *,
           status: int = 200, reuse: bool = True) -> list[Action]:
    conn.start_answer(exchange, status, [(b"content-length", b"%d" % len(body))])
    return conn.send_body(exchange, body, more_body=False, reuse=reuse)


def test_a_request_is_an_exchange_and_its_body_and_its_answer_leaves_in_one_write():
    conn = connection()
    actions = conn.receive(post(b"<soap/>"))
    assert kinds(actions) == ["StartExchange", "RequestBody", "RequestBody"]
    [exchange] = started(actions)
    assert exchange.request.target == b"/salesforce/outbound"
    assert body_of(actions) == b"<soap/>" and actions[-1] == RequestBody(b"", more_body=False)
    conn.start_answer(exchange, 200, [(b"content-length", b"3")])
    assert exchange.answer == "head_held"  # nothing is written until the body comes
    actions = conn.send_body(exchange, b"ack", more_body=False)
    assert kinds(actions) == ["Write", "ExchangeEnded", "Idle"]
    assert actions[0].data.startswith(b"HTTP/1.1 200 ") and actions[0].data.endswith(b"\r\n\r\nack")
    assert b"server: omgate-test" in actions[0].data
    assert exchange.answer == "complete" and conn.exchange is None and not conn.closed


def test_a_kept_alive_connection_takes_the_next_request_after_the_answer():
    conn = connection()
    [first] = started(conn.receive(post(b"one")))
    answer(conn, first)
    [second] = started(conn.receive(post(b"two")))
    assert second.number == 2 and conn.exchange is second


def test_a_pipelined_request_waits_for_the_answer_before_it():
    conn = connection()
    actions = conn.receive(post(b"one") + post(b"two"))
    assert kinds(actions)[-1] == "WaitForAnswer" and len(started(actions)) == 1
    assert conn.resume() == [] or conn.paused  # nothing moves before the answer
    [first] = started(actions)
    assert kinds(answer(conn, first)) == ["Write", "ExchangeEnded", "Idle"]
    resumed = conn.resume()
    assert [exchange.number for exchange in started(resumed)] == [2]
    assert body_of(resumed) == b"two"


@pytest.mark.parametrize("framing", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"content-length: 5\r\ntransfer-encoding: CHUNKED\r\n",
])
def test_a_request_framed_two_ways_is_refused_and_nothing_after_it_is_read(framing):
    smuggled = b"POST /smuggled HTTP/1.1\r\nHost: omgate\r\nContent-Length: 0\r\n\r\n"
    conn = connection()
    actions = conn.receive(b"POST /salesforce/outbound HTTP/1.1\r\nHost: omgate\r\n" + framing
                           + b"\r\n0\r\n\r\n" + smuggled)
    assert kinds(actions) == ["Refused", "Write", "Close"]
    assert actions[0].refusal.reason == "content_length_with_transfer_encoding"
    assert actions[1].data.startswith(b"HTTP/1.1 400 ") and b"connection: close" in actions[1].data
    assert conn.closed and conn.receive(smuggled) == []


def test_transfer_encoding_on_http_1_0_is_refused():
    conn = connection()
    actions = conn.receive(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert kinds(actions) == ["Refused", "Write", "Close"]
    assert actions[0].refusal.reason == "transfer_encoding_in_http10"


def test_a_head_past_the_header_cap_is_refused_before_h11_parses_it():
    conn = connection(head_limits=HeadLimits(max_header_count=3))
    head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 3  # unfinished: 4 lines so far
    actions = conn.receive(head)
    assert kinds(actions) == ["Refused", "Write", "Close"]
    assert actions[0].refusal == Refusal("too_many_headers", 431, actions[0].refusal.message, 3)
    assert actions[1].data.startswith(b"HTTP/1.1 431 ")


def test_a_pipelined_head_past_the_cap_is_refused_once_the_answer_before_it_is_written():
    conn = connection(head_limits=HeadLimits(max_header_count=3))
    [first] = started(conn.receive(post(b"") + b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 5))
    actions = answer(conn, first)
    assert kinds(actions) == ["Write", "ExchangeEnded", "Refused", "Write", "Close"]
    assert actions[3].data.startswith(b"HTTP/1.1 431 ")


def test_a_refusal_carries_the_listeners_answer_and_its_correlation_id():
    def fault(refusal: Refusal) -> RefusalAnswer:
        return RefusalAnswer(((b"content-type", b"text/xml"),), b"<fault/>", "c-1")

    conn = connection(answer_refusal=fault)
    actions = conn.receive(b"NOT HTTP\r\n\r\n")
    assert actions[0] == Refused(actions[0].refusal, "c-1")
    assert actions[0].refusal.reason == "malformed_request"
    assert actions[1].data.endswith(b"\r\n\r\n<fault/>") and b"content-length: 8" in actions[1].data


def test_100_continue_is_written_once_before_the_body_is_read():
    conn = connection()
    request = post(b"late", b"Expect: 100-continue\r\n")
    head, _, body = request.partition(b"\r\n\r\n")
    actions = conn.receive(head + b"\r\n\r\n")
    assert kinds(actions) == ["StartExchange", "Write"]
    assert actions[1].data.startswith(b"HTTP/1.1 100 ")
    actions = conn.receive(body)
    assert b"100" not in written(actions) and body_of(actions) == b"late"


def test_a_half_close_after_a_whole_request_still_gets_its_answer_then_closes():
    conn = connection()
    [exchange] = started(conn.receive(post(b"message")))
    assert conn.receive(b"") == [AnswerThenClose(exchange)]
    actions = answer(conn, exchange)
    assert kinds(actions) == ["Write", "ExchangeEnded", "Close"]
    assert actions[0].data.endswith(b"ack")


def test_a_close_mid_body_is_a_malformed_request_and_its_app_hears_the_end():
    conn = connection()
    [exchange] = started(conn.receive(post(b"a body of 27 bytes in all..")[:-10]))
    actions = conn.receive(b"")  # not whole: nothing of it may be acknowledged
    assert kinds(actions) == ["Refused", "Write", "Close"]
    assert actions[0].refusal.reason == "malformed_request"
    assert not any(isinstance(action, AnswerThenClose) for action in actions)
    assert conn.connection_lost() == [ExchangeEnded(exchange)]
    assert conn.app_ended(exchange) == []


def test_an_app_that_ends_without_answering_gets_a_500_and_the_connection_closes():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    actions = conn.app_ended(exchange)
    assert kinds(actions) == ["Write", "ExchangeEnded", "Close"]
    assert actions[0].data.startswith(b"HTTP/1.1 500 ")
    assert b"connection: close" in actions[0].data


def test_an_app_that_ends_after_its_status_line_sends_it_and_the_connection_closes():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    conn.start_answer(exchange, 200, [(b"content-length", b"100")])
    actions = conn.app_ended(exchange)
    assert actions[0].data.startswith(b"HTTP/1.1 200 ") and actions[0].data.endswith(b"\r\n\r\n")
    assert kinds(actions)[1:] == ["ExchangeEnded", "Close"]


def test_an_app_that_ends_after_a_whole_answer_changes_nothing():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    answer(conn, exchange)
    assert conn.app_ended(exchange) == [] and not conn.closed


def test_a_header_h11_refuses_fails_the_app_before_anything_is_held():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    with pytest.raises(h11.LocalProtocolError):
        conn.start_answer(exchange, 200, [(b"x-injected", b"a\r\nset-cookie: b")])
    assert exchange.answer == "waiting"
    assert conn.app_ended(exchange)[0].data.startswith(b"HTTP/1.1 500 ")


def test_more_body_than_declared_leaves_the_answer_unfinished_and_the_connection_closes():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    conn.start_answer(exchange, 200, [(b"content-length", b"2")])
    with pytest.raises(h11.LocalProtocolError):
        conn.send_body(exchange, b"too long", more_body=False)
    assert exchange.answer == "head_held"
    actions = conn.app_ended(exchange)
    assert b"too long" not in written(actions) and kinds(actions)[-1] == "Close"


@pytest.mark.parametrize(("method", "status"), [(b"HEAD", 200), (b"POST", 204),
                                                (b"POST", 304)])
def test_an_answer_that_has_no_body_carries_none(method, status):
    conn = connection()
    [exchange] = started(conn.receive(post(b"", method=method)))
    conn.start_answer(exchange, status, [] if status != 200 else [(b"content-length", b"3")])
    data = written(conn.send_body(exchange, b"abc", more_body=False))
    assert data.startswith(b"HTTP/1.1 %d " % status) and data.endswith(b"\r\n\r\n")


def test_an_answer_in_parts_is_written_as_it_comes():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    conn.start_answer(exchange, 200, [(b"content-length", b"4")])
    first = conn.send_body(exchange, b"ab", more_body=True)
    assert kinds(first) == ["Write"] and first[0].data.endswith(b"\r\n\r\nab")
    assert exchange.answer == "streaming"
    assert written(conn.send_body(exchange, b"cd", more_body=False)) == b"cd"


@pytest.mark.parametrize(("state", "event"), [
    pair for pair in product(["waiting", "head_held", "streaming", "complete"],
                             ["start", "body", "last"]) if pair not in ANSWER_MOVES])
def test_every_message_the_answer_table_does_not_allow_is_an_error_of_the_app(state, event):
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    exchange.answer = state
    with pytest.raises(UnexpectedMessageError):
        if event == "start":
            conn.start_answer(exchange, 200, [])
        else:
            conn.send_body(exchange, b"", more_body=event == "body")
    assert exchange.answer == state


def test_a_message_after_the_answer_is_an_error_and_writes_nothing():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    answer(conn, exchange)
    with pytest.raises(UnexpectedMessageError, match="after the answer was complete"):
        conn.send_body(exchange, b"more", more_body=False)


def test_the_last_request_a_connection_may_take_is_answered_with_connection_close():
    conn = connection(max_requests=2)
    [first] = started(conn.receive(post(b"1")))
    assert b"connection: close" not in written(answer(conn, first))
    [second] = started(conn.receive(post(b"2")))
    actions = answer(conn, second)
    assert b"connection: close" in written(actions) and kinds(actions)[-1] == "Close"


def test_a_stopping_server_closes_after_the_answer_it_owes():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    actions = answer(conn, exchange, reuse=False)
    assert kinds(actions) == ["Write", "ExchangeEnded", "Close"] and conn.closed


def test_an_answer_to_a_connection_already_gone_is_dropped():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    assert conn.connection_lost() == [ExchangeEnded(exchange)]
    conn.start_answer(exchange, 200, [(b"content-length", b"3")])
    assert conn.send_body(exchange, b"ack", more_body=False) == []
    assert conn.app_ended(exchange) == [] and conn.receive(post(b"y")) == []


def test_a_request_trickled_a_byte_at_a_time_is_the_same_exchange():
    conn = connection()
    actions: list[Action] = []
    for byte in post(b"<soap/>"):
        actions += conn.receive(bytes([byte]))
    assert len(started(actions)) == 1 and body_of(actions) == b"<soap/>"
    assert actions[-1] == RequestBody(b"", more_body=False)


def test_between_requests_the_connection_is_idle_and_waits_for_nothing_else():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    actions = answer(conn, exchange)
    assert actions[-1] == Idle() and not any(isinstance(a, WaitForAnswer | Close)
                                             for a in actions)
