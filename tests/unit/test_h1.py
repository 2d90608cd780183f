"""The HTTP/1.1 core (service/listeners/h1.py) bytes in, actions out: no socket, no task,
no event loop. Each rule a connection keeps is held here where it is decided; the
driver's tests (tests/unit/test_http11.py) hold that the actions are carried out."""

from __future__ import annotations

import ast
from itertools import product
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.listeners.framing import HeadLimits, HeadScanner, Refusal, RefusalAnswer, bodiless
from service.listeners.h1 import (
    ANSWER_MOVES,
    Action,
    AnswerThenClose,
    Close,
    ConnectionRules,
    Exchange,
    ExchangeEnded,
    Idle,
    InvalidAnswerError,
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


def test_a_head_past_the_header_cap_is_refused_before_it_is_parsed():
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


def test_a_header_that_is_not_http_fails_the_app_before_anything_is_held():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    with pytest.raises(InvalidAnswerError):
        conn.start_answer(exchange, 200, [(b"x-injected", b"a\r\nset-cookie: b")])
    assert exchange.answer == "waiting"
    assert conn.app_ended(exchange)[0].data.startswith(b"HTTP/1.1 500 ")


@pytest.mark.parametrize(("declared", "body"), [(b"2", b"too long"), (b"5", b"abc")],
                         ids=["more-than-declared", "less-than-declared"])
def test_a_body_unlike_its_declared_length_is_an_error_of_the_app_and_the_connection_closes(
        declared, body):
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    conn.start_answer(exchange, 200, [(b"content-length", declared)])
    with pytest.raises(InvalidAnswerError):
        conn.send_body(exchange, body, more_body=False)
    assert exchange.answer == "head_held"  # unfinished
    actions = conn.app_ended(exchange)
    assert body not in written(actions) and kinds(actions)[-1] == "Close"


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


def test_an_answer_begun_while_the_server_stops_says_connection_close():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    conn.start_answer(exchange, 200, [(b"content-length", b"3")], last=True)
    actions = conn.send_body(exchange, b"ack", more_body=False)
    assert b"\r\nconnection: close\r\n" in written(actions)
    assert kinds(actions)[-1] == "Close" and conn.closed


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


# -- an attacker's requests: bytes in, refusals out -------------------------------------------

# what a proxy that read the request otherwise would take for the next one
SMUGGLED = b"POST /smuggled HTTP/1.1\r\nHost: omgate\r\nContent-Length: 0\r\n\r\n"
START = b"POST /salesforce/outbound HTTP/1.1\r\nHost: omgate\r\n"
CHUNKED = START + b"Transfer-Encoding: chunked\r\n\r\n"


def refusal_of(conn: ServerConnection, actions: list[Action], status: int) -> Refusal:
    """The refusal ``actions`` end with, answered with ``status``; nothing after it is read."""
    assert kinds(actions)[-3:] == ["Refused", "Write", "Close"]
    assert actions[-2].data.startswith(b"HTTP/1.1 %d " % status)
    assert b"connection: close" in actions[-2].data.lower()
    assert conn.closed and conn.receive(SMUGGLED) == []
    return actions[-3].refusal


@pytest.mark.parametrize(("head", "status"), [
    pytest.param(START + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400,
                 id="two-content-lengths"),
    pytest.param(START + b"Content-Length: -1\r\n\r\n", 400, id="negative-length"),
    pytest.param(START + b"Content-Length: 1x\r\n\r\n", 400, id="garbage-length"),
    pytest.param(START + b"Content-Length: +5\r\n\r\n", 400, id="signed-length"),
    pytest.param(START + b"Content-Length: 1 2\r\n\r\n", 400, id="spaced-length"),
    pytest.param(START + b"Content-Length: 1" + b"0" * 21 + b"\r\n\r\n", 400,
                 id="overflowing-length"),
    pytest.param(START + b"Transfer-Encoding: gzip\r\n\r\n", 501, id="gzip"),
    pytest.param(START + b"Transfer-Encoding: identity\r\n\r\n", 501, id="identity"),
    pytest.param(START + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501,
                 id="gzip-then-chunked"),
    pytest.param(START + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 501,
                 id="chunked-twice"),
    pytest.param(START + b"Transfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", 501,
                 id="empty-coding-first"),
    pytest.param(START + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n", 501, id="two-encoding-headers"),
    pytest.param(START + b"X-A: b\rContent-Length: 0\r\n\r\n", 400, id="bare-cr"),
    pytest.param(START + b"X-A: b\x00c\r\n\r\n", 400, id="nul-in-value"),
    pytest.param(START + b"X A: b\r\n\r\n", 400, id="space-in-name"),
    pytest.param(START + b"X@A: b\r\n\r\n", 400, id="at-in-name"),
    pytest.param(START + b"Content-Length : 0\r\n\r\n", 400, id="space-before-colon"),
    pytest.param(START + b"Transfer-Encoding\t: chunked\r\n\r\n", 400, id="tab-before-colon"),
    pytest.param(START + b": b\r\n\r\n", 400, id="empty-name"),
    pytest.param(b"GET  / HTTP/1.1\r\nHost: omgate\r\n\r\n", 400, id="two-spaces"),
    pytest.param(b"GET /\r\nHost: omgate\r\n\r\n", 400, id="no-version"),
    pytest.param(b"GET /a b HTTP/1.1\r\nHost: omgate\r\n\r\n", 400, id="space-in-target"),
    pytest.param(b"GET /\ta HTTP/1.1\r\nHost: omgate\r\n\r\n", 400, id="tab-in-target"),
    pytest.param(b"GET /\x7f HTTP/1.1\r\nHost: omgate\r\n\r\n", 400, id="del-in-target"),
    pytest.param(b"GET /\xff HTTP/1.1\r\nHost: omgate\r\n\r\n", 400, id="byte-in-target"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="no-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="two-hosts"),
    pytest.param(b"\r\nGET / HTTP/1.1\r\nHost: omgate\r\n\r\n", 400, id="leading-empty-line"),
])
def test_a_head_h11_refused_is_refused_before_its_app_is_called(head, status):
    conn = connection()
    refusal = refusal_of(conn, conn.receive(head + SMUGGLED), status)
    assert refusal.reason == "malformed_request" and refusal.status == status


@pytest.mark.parametrize("head", [
    pytest.param(START + b"X-A: b\r\n c\r\nContent-Length: 0\r\n\r\n", id="obs-fold"),
    pytest.param(START + b" X-A: b\r\nContent-Length: 0\r\n\r\n", id="folded-first-line"),
    pytest.param(b"GET / HTTP/1.1\nHost: omgate\n\n", id="bare-lf"),
    pytest.param(START + b"X-A: b\x01c\r\nContent-Length: 0\r\n\r\n", id="control-in-value"),
    pytest.param(START + b"X-A: b\x7fc\r\nContent-Length: 0\r\n\r\n", id="del-in-value"),
    pytest.param(START + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
                 id="repeated-length"),
    pytest.param(START + b"Content-Length: 5, 5\r\n\r\nhello", id="listed-length"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", id="http2-preface"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: omgate\r\n\r\n", id="http-2.0"),
    pytest.param(b"GET / HTTP/1.2\r\nHost: omgate\r\n\r\n", id="http-1.2"),
    pytest.param(b"GET / HTTP/0.9\r\nHost: omgate\r\n\r\n", id="http-0.9"),
    pytest.param(b"get / HTTP/1.1\r\nHost: omgate\r\n\r\n", id="lower-case-method"),
    pytest.param(b"BREW / HTTP/1.1\r\nHost: omgate\r\n\r\n", id="unknown-method"),
])
def test_a_head_h11_took_and_llhttp_refuses_is_refused(head):
    conn = connection()
    refusal = refusal_of(conn, conn.receive(head + SMUGGLED), 400)
    assert refusal.reason == "malformed_request"


@pytest.mark.parametrize("body", [
    pytest.param(b"f" * 21 + b"\r\n", id="chunk-size-of-21-digits"),
    pytest.param(b"-5\r\nhello\r\n0\r\n\r\n", id="negative-chunk-size"),
    pytest.param(b"5\r\nhelloXX0\r\n\r\n", id="chunk-without-its-crlf"),
    # h11 took these three; llhttp refuses them
    pytest.param(b"f" * 17 + b"\r\n", id="chunk-size-past-64-bits"),
    pytest.param(b"5 \r\nhello\r\n0\r\n\r\n", id="space-after-chunk-size"),
    pytest.param(b"5\nhello\n0\n\n", id="bare-lf"),
])
def test_a_malformed_chunked_body_is_refused_and_nothing_after_it_is_read(body):
    conn = connection()
    actions = conn.receive(CHUNKED + body + SMUGGLED)
    assert kinds(actions)[0] == "StartExchange"
    assert refusal_of(conn, actions, 400).reason == "malformed_request"


def test_a_chunked_body_with_extensions_and_trailers_is_read_and_the_next_request_follows():
    conn = connection()
    body = b"3;name=value\r\nabc\r\n2\r\n\r\n\r\n0\r\nX-Trailer: t\r\n\r\n"
    actions = conn.receive(CHUNKED + body + post(b"next"))
    assert body_of(actions) == b"abc\r\n" and kinds(actions)[-1] == "WaitForAnswer"
    [first] = started(actions)
    answer(conn, first)
    resumed = conn.resume()
    assert [exchange.number for exchange in started(resumed)] == [2]
    assert body_of(resumed) == b"next"


@pytest.mark.parametrize("cut", range(1, 30))
def test_a_chunked_body_cut_anywhere_is_the_same_body(cut):
    conn = connection()
    data = CHUNKED + b"3\r\nabc\r\n0\r\n\r\n" + post(b"next")
    cut += len(CHUNKED) - 3
    actions = conn.receive(data[:cut]) + conn.receive(data[cut:])
    assert body_of(actions) == b"abc" and RequestBody(b"", more_body=False) in actions
    assert kinds(actions)[-1] == "WaitForAnswer" and len(started(actions)) == 1


def test_one_read_of_many_chunks_is_one_part_of_the_body():
    """Each part is a message to the app: one per chunk let 75 KB of two-byte chunks
    become 37,000 messages and 8.5 MB of queue (an attacker's review)."""
    conn = connection()
    one_read = b"2\r\nxy\r\n" * 5000
    actions = conn.receive(CHUNKED + one_read)
    parts = [action for action in actions if isinstance(action, RequestBody)]
    assert parts == [RequestBody(b"xy" * 5000, more_body=True)]


@pytest.mark.parametrize("framing", [
    pytest.param(b"1\r\nx\r\n" * 20000, id="one-byte-chunks"),
    pytest.param(b"1;" + b"x" * 70000, id="a-long-chunk-extension"),
    pytest.param(b"0\r\n" + (b"X-T: " + b"a" * 8000 + b"\r\n") * 9, id="long-trailers"),
    pytest.param(b"0\r\n" + b"X-T: t\r\n" * 10000, id="many-trailers"),
])
def test_a_chunked_body_whose_framing_outweighs_its_content_is_refused(framing):
    conn = connection()
    actions = conn.receive(CHUNKED)
    for start in range(0, len(framing), 16 * 1024):  # as reads would bring it
        actions += conn.receive(framing[start:start + 16 * 1024])
        if conn.closed:
            break
    refusal = refusal_of(conn, actions, 400)
    assert refusal.reason == "malformed_request" and "framing" in refusal.message


def test_a_body_in_small_chunks_is_read_whole():
    conn = connection()
    content = bytes(range(256)) * 256
    chunks = b"".join(b"%x\r\n%s\r\n" % (8, content[at:at + 8])
                      for at in range(0, len(content), 8))
    actions = conn.receive(CHUNKED + chunks + b"0\r\nX-Trailer: t\r\n\r\n")
    assert body_of(actions) == content and actions[-1] == RequestBody(b"", more_body=False)


@pytest.mark.parametrize("host", [b"a b", b"a, b", b"evil/path", b"user@evil", b"a:b:c",
                                  b"omgate:44x", b"[::1", b"a\\b", b"%zz"])
def test_an_invalid_host_is_refused(host):
    """RFC 9112 section 3.2: a Host that is not uri-host [":" port] is a 400."""
    conn = connection()
    actions = conn.receive(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n" + SMUGGLED)
    assert refusal_of(conn, actions, 400).reason == "malformed_request"


@pytest.mark.parametrize("host", [b"omgate", b"omgate.example.com:8443", b"127.0.0.1:443",
                                  b"[::1]:443", b"[v1.fe80::a+en1]", b"a,b", b"xn--ls8h.la",
                                  b"caf%C3%A9", b"omgate:", b""])
def test_a_valid_host_is_served(host):
    conn = connection()
    actions = conn.receive(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert kinds(actions)[0] == "StartExchange"


def test_bytes_after_a_request_that_closes_the_connection_are_refused():
    conn = connection()
    actions = conn.receive(b"GET / HTTP/1.1\r\nHost: omgate\r\nConnection: close\r\n\r\n"
                           + SMUGGLED)
    assert kinds(actions)[:2] == ["StartExchange", "RequestBody"]
    assert refusal_of(conn, actions, 400).reason == "malformed_request"


def test_a_close_mid_head_is_a_malformed_request():
    conn = connection()
    assert conn.receive(b"POST /salesforce/outbound HTTP/1.1\r\nHo") == []
    assert refusal_of(conn, conn.receive(b""), 400).reason == "malformed_request"


def test_a_close_between_requests_is_no_refusal():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    answer(conn, exchange)
    assert conn.receive(b"") == [] and not conn.closed


def test_an_upgrade_is_a_plain_request_with_its_body_and_the_next_request_follows():
    conn = connection()
    upgrade = post(b"hi", b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                   b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n")
    actions = conn.receive(upgrade + post(b"two"))
    assert kinds(actions) == ["StartExchange", "RequestBody", "RequestBody", "WaitForAnswer"]
    assert body_of(actions) == b"hi"
    [first] = started(actions)
    assert kinds(answer(conn, first)) == ["Write", "ExchangeEnded", "Idle"]
    assert body_of(conn.resume()) == b"two"


def test_connect_is_a_plain_request_its_app_refuses():
    conn = connection()
    actions = conn.receive(b"CONNECT omgate:443 HTTP/1.1\r\nHost: omgate:443\r\n\r\n")
    [exchange] = started(actions)
    assert exchange.request.method == b"CONNECT" and exchange.request.target == b"omgate:443"
    assert kinds(answer(conn, exchange, status=405)) == ["Write", "ExchangeEnded", "Idle"]
    assert len(started(conn.receive(post(b"next")))) == 1


def test_a_request_is_read_as_sent_with_its_header_values_trimmed():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x", b"X-Spaced: \t a b \t\r\n", version=b"1.0")))
    request = exchange.request
    assert (request.method, request.target, request.http_version) == (
        b"POST", b"/salesforce/outbound", b"1.0")
    assert (b"x-spaced", b"a b") in request.headers and (b"host", b"omgate") in request.headers


# -- answers as h11 wrote them -----------------------------------------------------------------

def test_an_answer_without_a_length_is_chunked_to_http_1_1():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    conn.start_answer(exchange, 200, [(b"content-type", b"text/plain")])
    data = written(conn.send_body(exchange, b"abc", more_body=True))
    assert b"transfer-encoding: chunked\r\n" in data.lower()
    assert data.endswith(b"\r\n\r\n3\r\nabc\r\n")
    actions = conn.send_body(exchange, b"", more_body=False)
    assert written(actions) == b"0\r\n\r\n" and kinds(actions)[-1] == "Idle"


def test_an_answer_without_a_length_to_http_1_0_ends_with_the_connection():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x", version=b"1.0")))
    conn.start_answer(exchange, 200, [(b"content-type", b"text/plain")])
    actions = conn.send_body(exchange, b"abc", more_body=False)
    data = written(actions).lower()
    assert b"transfer-encoding" not in data and b"connection: close\r\n" in data
    assert data.endswith(b"\r\n\r\nabc") and kinds(actions)[-1] == "Close"


def test_an_http_1_0_request_is_answered_then_the_connection_closes():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x", b"Connection: keep-alive\r\n",
                                           version=b"1.0")))
    actions = answer(conn, exchange)
    assert b"connection: close" in written(actions).lower() and kinds(actions)[-1] == "Close"


def test_a_client_that_says_connection_close_is_answered_then_the_connection_closes():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x", b"Connection: close\r\n")))
    actions = answer(conn, exchange)
    assert b"connection: close" in written(actions).lower() and kinds(actions)[-1] == "Close"


def test_an_app_that_says_connection_close_has_its_connection_closed_after_the_answer():
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    conn.start_answer(exchange, 200, [(b"content-length", b"0"), (b"connection", b"close")])
    assert kinds(conn.send_body(exchange, b"", more_body=False))[-1] == "Close"


@pytest.mark.parametrize(("status", "headers"), [
    pytest.param(99, [], id="status-99"),
    pytest.param(100, [], id="informational-status"),
    pytest.param(1000, [], id="status-1000"),
    pytest.param(200, [(b"x a", b"b")], id="space-in-name"),
    pytest.param(200, [(b"", b"b")], id="empty-name"),
    pytest.param(200, [(b"x-a", b"b\nc")], id="lf-in-value"),
    pytest.param(200, [(b"x-a", b"b\rc")], id="cr-in-value"),
    pytest.param(200, [(b"x-a", b"b\x00c")], id="nul-in-value"),
    pytest.param(200, [(b"x-a", b" b")], id="space-around-value"),
    pytest.param(200, [(b"content-length", b"3"), (b"content-length", b"4")],
                 id="conflicting-lengths"),
    pytest.param(200, [(b"content-length", b"-3")], id="negative-length"),
    pytest.param(200, [(b"transfer-encoding", b"gzip")], id="gzip"),
])
def test_an_answer_h11_refused_is_an_error_of_the_app(status, headers):
    conn = connection()
    [exchange] = started(conn.receive(post(b"x")))
    with pytest.raises(InvalidAnswerError):
        conn.start_answer(exchange, status, headers)
    assert exchange.answer == "waiting"


@pytest.mark.parametrize("module", ["h1.py", "framing.py"])
def test_the_core_no_longer_imports_h11(module):
    source = (Path(__file__).resolve().parents[2] / "service" / "listeners" / module)
    imported = {alias.name.partition(".")[0] for node in ast.walk(ast.parse(source.read_text()))
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").partition(".")[0] for node in
                 ast.walk(ast.parse(source.read_text())) if isinstance(node, ast.ImportFrom)}
    assert "h11" not in imported and "httptools" in imported


class LineByLine(HeadScanner):
    """The scanner without its measure of a whole head at once."""

    def _whole_head_within_limits(self, data: bytes) -> bool:
        return False


HEAD_PARTS = [b"\r\n", b"\n", b"\r", b"a", b"X-A: b", b":", b" ", b"\r\n\r\n", b"\n\r\n",
              b"GET / HTTP/1.1", b"x-forwarded-client-cert: "]


@given(st.lists(st.sampled_from(HEAD_PARTS), max_size=30).map(b"".join),
       st.integers(1, 6), st.integers(3, 40), st.integers(10, 200))
def test_a_whole_head_measured_at_once_is_read_as_line_by_line(data, count, line, head):
    limits = HeadLimits(count, line, head, frozenset({b"x-forwarded-client-cert"}))
    at_once, by_line = HeadScanner(limits), LineByLine(limits)
    assert at_once.feed(data) == by_line.feed(data)
    assert (at_once.complete, at_once.complete and at_once.end) == (
        by_line.complete, by_line.complete and by_line.end)


FRAGMENTS = st.sampled_from([
    b"POST / HTTP/1.1\r\n", b"GET / HTTP/1.0\r\n", b"Host: a\r\n", b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n", b"Expect: 100-continue\r\n",
    b"Upgrade: h2c\r\nConnection: upgrade\r\n", b"\r\n", b"\n", b"3\r\nabc\r\n", b"0\r\n\r\n",
    b"abc", b" ", b":"])


@given(st.lists(st.one_of(FRAGMENTS, st.binary(max_size=40)), max_size=40))
def test_any_bytes_in_any_cuts_give_actions_and_never_an_error(parts):
    conn = connection()
    for part in [*parts, b""]:
        actions = conn.receive(part)
        while True:
            for exchange in started(actions):
                if exchange is conn.exchange:
                    actions += answer(conn, exchange)
            if not any(isinstance(action, WaitForAnswer) for action in actions):
                break
            actions = conn.resume()
    assert conn.requests <= len(parts)
