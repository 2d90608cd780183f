"""Renewing the ticket keys (a full ticket memory, which any client can bring about) is not
a certificate reload: it must keep serving the certificate loaded at start or at the last
reload, whose expiry the metrics and ``ServerTls.not_after`` report."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL

from service.config import load_config
from service.policy_loader import PolicyLoader
from service.server import build_server_tls
from service.tls.context import served_not_after
from service.tools.pki import issue, name


def _served_sha256(context: SSL.Context) -> bytes:
    certificate = SSL.Connection(context, None).get_certificate()
    assert certificate is not None
    return certificate.to_cryptography().fingerprint(hashes.SHA256())


def test_renewing_the_ticket_keys_does_not_put_changed_files_in_service(tmp_path: Path):
    now = dt.datetime.now(dt.UTC)
    first = issue(name("localhost"), dns_names=("localhost",),
                  not_after=now + dt.timedelta(days=30))
    staged = issue(name("localhost"), dns_names=("localhost",),
                   not_after=now + dt.timedelta(days=400))
    certfile, keyfile = tmp_path / "server.pem", tmp_path / "server.key"
    certfile.write_bytes(first.pem())
    keyfile.write_bytes(first.key_pem())
    (tmp_path / "omgate.toml").write_text(
        f'[server]\nbind = ["127.0.0.1:0"]\ncertfile = "{certfile}"\nkeyfile = "{keyfile}"\n'
        f'reload_check_seconds = 0\n[inbox]\nurl = "sqlite:///{tmp_path}/inbox.db"\n')
    config = load_config(tmp_path / "omgate.toml", {})
    server_tls = build_server_tls(config, PolicyLoader(config))
    in_service = _served_sha256(server_tls.context)

    # The operator stages the next certificate, to be put in service with SIGHUP later...
    certfile.write_bytes(staged.pem())
    keyfile.write_bytes(staged.key_pem())
    # ...and meanwhile a client fills the ticket memory: the listener renews the keys.
    server_tls.renew_ticket_keys()

    assert server_tls.not_after == served_not_after(server_tls.context), (
        "omgate reports one expiry (metrics, not_after) and serves another certificate")
    assert _served_sha256(server_tls.context) == in_service, (
        "a ticket-key renewal put the files on disk in service without a reload")


def test_renewing_the_ticket_keys_does_not_depend_on_the_files_on_disk(tmp_path: Path):
    """After a rotation that failed (tls.reload_failed: the old pair stays in service, by
    design), a client that fills the ticket memory must not leave it full: a renewal that
    rereads the files fails, and then every new connection rereads them, logs
    tls.ticket_keys_not_renewed, and no session resumes any more."""
    from service.tls.context import TlsSetupError
    from service.tls.resumption import MAX_TICKETS

    first, other = (issue(name("localhost"), dns_names=("localhost",)) for _ in range(2))
    certfile, keyfile = tmp_path / "server.pem", tmp_path / "server.key"
    certfile.write_bytes(first.pem())
    keyfile.write_bytes(first.key_pem())
    (tmp_path / "omgate.toml").write_text(
        f'[server]\nbind = ["127.0.0.1:0"]\ncertfile = "{certfile}"\nkeyfile = "{keyfile}"\n'
        f'[inbox]\nurl = "sqlite:///{tmp_path}/inbox.db"\n')
    config = load_config(tmp_path / "omgate.toml", {})
    server_tls = build_server_tls(config, PolicyLoader(config))
    keyfile.write_bytes(other.key_pem())  # a rotation gone wrong: the key of another cert
    tickets = server_tls.tickets
    chain = object()
    for number in range(MAX_TICKETS + 1):  # what 4,097 full handshakes leave
        tickets.remember(number.to_bytes(4, "big"), chain, 1, tickets.generation)
    assert tickets.full

    try:
        server_tls.renew_ticket_keys()
    except TlsSetupError as error:
        raise AssertionError(f"the ticket keys could not be renewed: {error}") from None
    assert not server_tls.tickets.full
