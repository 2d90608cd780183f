"""The TLS front door in-process: what reaches the ASGI app, with real clients."""

from __future__ import annotations

import contextlib
import socket
import ssl
from pathlib import Path

import httpx
import pytest
from corpus import with_loose_length
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from inprocess import InProcessListener
from OpenSSL import SSL
from tls_listener_cases import REQUEST, bulky_certificate, pems

from service.clientauth.presented import load_chain
from service.identity import connection_facts
from service.listeners.layers import LayerError, Received
from service.tls import openssl_glue
from service.tls.capture import same_leaf
from service.tls.context import TlsSettings, build_context
from service.tls.layer import TlsLayer


def test_python_client_chain_and_tls_facts(listener_config, tmp_path, dev_pki, client_pki):
    case = client_pki.cases["valid"]
    context = ssl.create_default_context(cafile=str(dev_pki / "ca.pem"))
    context.load_cert_chain(case.chain, case.key)
    with InProcessListener(tmp_path, listener_config) as listener:
        response = httpx.get(f"https://localhost:{listener.port}/echo", verify=context)
        assert response.status_code == 200
        scope = listener.app.scopes[-1]
    assert scope["extensions"]["tls"]["client_cert_chain"] == pems(case.chain)
    assert scope["extensions"]["tls"]["client_cert_error"] is None
    identity = connection_facts(scope["extensions"]).client
    assert identity.handshake.sni == "localhost"
    assert identity.handshake.tls_version == "TLSv1.3"
    assert [r.error for r in identity.handshake.verify_results] == [0, 0, 0]
    assert scope["scheme"] == "https"


def test_untrusted_chain_reaches_the_app_with_openssls_error(listener_config, tmp_path,
                                                             dev_pki, client_pki):
    case = client_pki.cases["untrusted"]
    context = ssl.create_default_context(cafile=str(dev_pki / "ca.pem"))
    context.load_cert_chain(case.chain, case.key)
    with InProcessListener(tmp_path, listener_config) as listener:
        assert httpx.get(f"https://localhost:{listener.port}/x", verify=context).status_code == 200
        tls = listener.app.scopes[-1]["extensions"]["tls"]
    assert tls["client_cert_chain"] == pems(case.chain)
    assert tls["client_cert_error"] == "unable to get local issuer certificate"


def test_alpn_selects_http_1_1_even_when_h2_is_offered_first(listener_config, tmp_path,
                                                              dev_pki):
    """HTTP/2 would let PINGs keep a stalled request past server.request_timeout."""
    context = ssl.create_default_context(cafile=str(dev_pki / "ca.pem"))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with InProcessListener(tmp_path, listener_config) as listener:
        with socket.create_connection(("localhost", listener.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "http/1.1"
        only_h2 = ssl.create_default_context(cafile=str(dev_pki / "ca.pem"))
        only_h2.set_alpn_protocols(["h2"])
        with socket.create_connection(("localhost", listener.port), timeout=10) as raw, \
                only_h2.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() is None


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

H2C_UPGRADE = (b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")


@pytest.mark.parametrize("opening", [H2_PREFACE, H2C_UPGRADE], ids=["prior-knowledge", "h2c"])
def test_http2_without_alpn_is_answered_in_http_1_1(listener_config, tmp_path, dev_pki,
                                                     opening):
    context = ssl.create_default_context(cafile=str(dev_pki / "ca.pem"))
    with InProcessListener(tmp_path, listener_config) as listener, \
            socket.create_connection(("localhost", listener.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(opening)
        answer = tls.recv(65536)
    assert answer.startswith(b"HTTP/1.1 ")
    assert not answer.startswith(b"HTTP/1.1 101")


def test_resumed_session_still_knows_the_original_chain(listener_config, tmp_path, dev_pki,
                                                        client_pki):
    case = client_pki.cases["valid"]
    context = ssl.create_default_context(cafile=str(dev_pki / "ca.pem"))
    context.load_cert_chain(case.chain, case.key)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # session IDs: resumption is certain
    import socket

    with InProcessListener(tmp_path, listener_config) as listener:
        session = None
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", listener.port)) as raw, \
                    context.wrap_socket(raw, server_hostname="localhost",
                                        session=session) as tls:
                tls.sendall(REQUEST)
                while tls.recv(4096):
                    pass
                resumed = tls.session_reused
                session = tls.session
        assert resumed
        first, second = listener.app.scopes[-2:]
    identity = connection_facts(second["extensions"]).client
    assert identity.handshake.resumed is True
    assert second["extensions"]["tls"]["client_cert_chain"] == pems(case.chain)
    assert first["extensions"]["tls"]["client_cert_chain"] == pems(case.chain)


def test_a_leaf_sent_in_loose_der_is_judged_as_sent(client_pki):
    """OpenSSL re-encodes such a leaf as its peer certificate; the bytes as sent (which
    the policy cannot read) are still the ones judged, not OpenSSL's tidied copy."""
    strict = x509.load_pem_x509_certificate(client_pki.cases["valid"].leaf.read_bytes())
    strict_der = strict.public_bytes(Encoding.DER)
    loose = with_loose_length(strict_der)
    assert same_leaf([loose], [strict_der])
    assert not same_leaf([strict_der], [with_loose_length(strict_der)[:-1] + b"\x00"])
    presented = load_chain([loose, strict_der])
    assert [item.index for item in presented.unreadable] == [0]
    assert presented.certificates == (strict,)


def _resident_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_chains_too_large_to_keep_are_not_kept_after_their_connection():
    """Any client may present a chain before anything is decided: the chains read once and
    kept for senders that reconnect must not let 300 distinct 60 KiB chains pin memory."""
    small = [bulky_certificate(0, 10)]
    assert load_chain(small) is load_chain(small)  # a sender reconnecting: read once
    bulky_certificate(0, 60_000)  # first use of everything below
    before = _resident_kib()
    for index in range(300):
        chain = load_chain([bulky_certificate(index, 60_000)])
        assert chain.sha256 and chain.identity("tls", None).chain_sha256 == chain.sha256
        del chain
    grown_mib = (_resident_kib() - before) / 1024
    assert grown_mib < 8, f"{grown_mib:.0f} MiB kept for 300 chains that are gone"


def _memory_pair(dev_pki: Path) -> tuple[SSL.Connection, ssl.SSLObject, ssl.MemoryBIO,
                                          ssl.MemoryBIO]:
    trusted = tuple(x509.load_pem_x509_certificates((dev_pki / "client-ca.pem").read_bytes()))
    context, _names = build_context(TlsSettings(
        certfile=dev_pki / "server.pem", keyfile=dev_pki / "server.key",
        client_auth_mode="require", trusted=trusted, partial_chain=False, verify_depth=4,
        advertised_ca=trusted, refuse_in_handshake=False, public_names=()))
    server = SSL.Connection(context, None)
    server.set_accept_state()
    client_context = ssl.create_default_context(cafile=str(dev_pki / "ca.pem"))
    client_context.load_cert_chain(dev_pki / "client-chain.pem", dev_pki / "client.key")
    to_client, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, from_client, server_hostname="localhost")
    return server, client, to_client, from_client


def _handshake(server: SSL.Connection, client: ssl.SSLObject, to_client: ssl.MemoryBIO,
               from_client: ssl.MemoryBIO, *, first_request: bytes = b"") -> None:
    """Until the server has read the client's Finished; ``first_request`` goes with it."""
    for _ in range(10):
        with contextlib.suppress(ssl.SSLWantReadError):
            client.do_handshake()
            if first_request:
                client.write(first_request)
                first_request = b""
        server.bio_write(from_client.read())
        try:
            server.do_handshake()
        except SSL.WantReadError:
            pass
        else:
            return
        finally:
            with contextlib.suppress(SSL.WantReadError):
                to_client.write(server.bio_read(65536))
    raise AssertionError("the handshake did not finish")


def test_an_idle_connection_gives_back_its_handshake_buffers_and_still_carries_data(dev_pki):
    server, client, to_client, from_client = _memory_pair(dev_pki)
    _handshake(server, client, to_client, from_client)
    held = (server._into_ssl, server._from_ssl)
    assert openssl_glue.release_handshake_buffers(server)
    assert (server._into_ssl, server._from_ssl) != held
    with contextlib.suppress(ssl.SSLWantReadError):
        client.read()  # the server's tickets
    client.write(REQUEST)
    server.bio_write(from_client.read())
    assert server.recv(65536) == REQUEST
    server.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    to_client.write(server.bio_read(65536))
    assert client.read() == b"HTTP/1.1 204 No Content\r\n\r\n"


def test_a_request_sent_with_the_finished_keeps_its_buffers_and_is_read(dev_pki):
    server, client, to_client, from_client = _memory_pair(dev_pki)
    _handshake(server, client, to_client, from_client, first_request=REQUEST)
    assert not openssl_glue.release_handshake_buffers(server)
    assert server.recv(65536) == REQUEST


# -- the connection's records as the driver reads and writes them (service/tls/layer.py) --

def test_every_record_one_read_brought_comes_out_in_one_piece_and_answers_go_back(dev_pki):
    server, client, to_client, from_client = _memory_pair(dev_pki)
    _handshake(server, client, to_client, from_client)
    layer = TlsLayer(server)
    with contextlib.suppress(ssl.SSLWantReadError):
        client.read()  # the server's tickets
    for part in (b"first ", b"second ", b"third"):  # three records, one read of the socket
        client.write(part)
    received = layer.receive(from_client.read())
    assert received == Received(b"first second third")
    to_client.write(layer.send(b"answer"))
    assert client.read() == b"answer"
    assert layer.receive(b"") == Received(b"")  # nothing held: nothing to give


def test_records_cut_anywhere_between_reads_come_out_whole_and_in_order(dev_pki):
    """A slow or fragmenting client: whatever a read stops in (a record's header, its
    body, between two records), the plaintext of every record it completes comes out, and
    nothing is left behind for a read that never comes."""
    sent = (b"first ", b"second ", b"x" * 20_000, b" last")  # the long one: two records
    for size in (1, 2, 3, 5, 7, 4096):
        server, client, to_client, from_client = _memory_pair(dev_pki)
        _handshake(server, client, to_client, from_client)
        layer = TlsLayer(server)
        for part in sent:
            client.write(part)
        wire = from_client.read()
        received = [layer.receive(wire[start:start + size])
                    for start in range(0, len(wire), size)]
        assert b"".join(part.data for part in received) == b"".join(sent), size
        assert not any(part.reply or part.closed for part in received)
        assert layer.receive(b"") == Received(b"")


def test_a_close_notify_ends_the_layer_and_a_forged_record_is_an_error(dev_pki):
    server, client, to_client, from_client = _memory_pair(dev_pki)
    _handshake(server, client, to_client, from_client)
    layer = TlsLayer(server)
    client.write(b"last words")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.unwrap()  # close_notify
    received = layer.receive(from_client.read())
    assert received.data == b"last words" and received.closed
    assert layer.close()  # its own close_notify, once
    assert layer.close() == b""

    server, client, to_client, from_client = _memory_pair(dev_pki)
    _handshake(server, client, to_client, from_client)
    # an application-data record whose contents were not encrypted by the client's keys
    with pytest.raises(LayerError):
        TlsLayer(server).receive(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)


_RENEWED_MID_HANDSHAKE = '''
import gc, sys
from pathlib import Path
from OpenSSL import SSL
from service.config import load_config
from service.policy_loader import PolicyLoader
from service.server import build_server_tls
from service.tools.pki import write_dev_pki
folder = Path(sys.argv[1])
write_dev_pki(folder)
(folder / "c.toml").write_text(
    f'[server]\\nbind = ["127.0.0.1:8443"]\\ncertfile = "{folder}/server.pem"\\n'
    f'keyfile = "{folder}/server.key"\\n[client_auth]\\nmode = "request"\\n'
    f'[inbox]\\nurl = "sqlite:///{folder}/x.db"\\n')
config = load_config(folder / "c.toml", {})
server_tls = build_server_tls(config, PolicyLoader(config))
server = SSL.Connection(server_tls.context, None)
server.set_accept_state()
# A client can fill the ticket memory; each fill renews. The first renewal's garbage is
# collected, and the renewals after it make new C callbacks, which may take its place.
server_tls.renew_ticket_keys()
gc.collect()
for _renewal in range(3):
    server_tls.renew_ticket_keys()
client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
client.set_connect_state()
client.set_tlsext_host_name(b"localhost")
try:
    client.do_handshake()
except SSL.WantReadError:
    pass
server.bio_write(client.bio_read(65536))
try:
    server.do_handshake()
except SSL.WantReadError:
    pass
print("served", server.get_servername().decode())
'''


def test_a_handshake_begun_before_the_context_was_renewed_still_checks_its_name(tmp_path):
    """A connection keeps calling its own context's server-name callback after a renewal
    replaced the context; the callback was freed with the old context's check, and the
    ClientHello called freed memory (an attacker's review). In a child process: a freed
    callback may crash it."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _RENEWED_MID_HANDSHAKE, str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and "served localhost" in done.stdout, done.stderr[-800:]
