"""Which server certificate is in service: a reload puts the files in service, or keeps the
loaded pair and says why, and the file watch outlives any file it cannot use; renewing the
ticket keys (a full ticket memory, which any client can bring about) is no reload."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL

from service.certreload import CertificateReload
from service.config import load_config
from service.metrics import Metrics
from service.policy_loader import PolicyLoader
from service.server import build_server_tls
from service.tls.context import ServerTls, TlsSetupError, served_not_after
from service.tls.resumption import MAX_TICKETS
from service.tools.pki import Issued, issue, name

EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")  # the OID id-ecPublicKey, DER


def _server_tls(folder: Path, issued: Issued, **server: str | int) -> tuple[ServerTls, Path, Path]:
    """The TLS side of `omgate serve` on ``issued``'s pair in ``folder``; the two files."""
    certfile, keyfile = folder / "server.pem", folder / "server.key"
    certfile.write_bytes(issued.pem())
    keyfile.write_bytes(issued.key_pem())
    extra = "".join(f"{key} = {value}\n" for key, value in server.items())
    (folder / "omgate.toml").write_text(
        f'[server]\nbind = ["127.0.0.1:0"]\ncertfile = "{certfile}"\nkeyfile = "{keyfile}"\n'
        f'{extra}[inbox]\nurl = "sqlite:///{folder}/inbox.db"\n')
    config = load_config(folder / "omgate.toml", {})
    return build_server_tls(config, PolicyLoader(config)), certfile, keyfile


def _localhost(days: int = 90) -> Issued:
    return issue(name("localhost"), dns_names=("localhost",),
                 not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=days))


def _served_sha256(context: SSL.Context) -> bytes:
    certificate = SSL.Connection(context, None).get_certificate()
    assert certificate is not None
    return certificate.to_cryptography().fingerprint(hashes.SHA256())


def _with_a_key_type_nobody_knows(issued: Issued) -> bytes:
    """The certificate with its key's algorithm changed to an OID no library knows (as a
    certificate for a newer algorithm reads to an older library)."""
    der = issued.certificate.public_bytes(Encoding.DER)
    assert der.count(EC_PUBLIC_KEY) == 1
    odd = x509.load_der_x509_certificate(der.replace(EC_PUBLIC_KEY,
                                                     bytes.fromhex("06072a8648ce3d0209")))
    return odd.public_bytes(Encoding.PEM)


def _write(path: Path, data: bytes, tick: int) -> None:
    path.write_bytes(data)
    os.utime(path, ns=(tick * 10**9, tick * 10**9))  # a change the (mtime, size) check sees


def test_a_certificate_that_cannot_be_loaded_does_not_end_the_file_watch(tmp_path: Path):
    """UnsupportedAlgorithm (not a TlsSetupError) ended the watch for good: later, correct
    files were never put in service."""
    second = _localhost()
    server_tls, certfile, keyfile = _server_tls(tmp_path, _localhost())

    async def rotate() -> None:
        watch = asyncio.create_task(CertificateReload(server_tls, Metrics()).watch(0.05))
        _write(certfile, _with_a_key_type_nobody_knows(second), 1)  # a wrong file, at first
        await asyncio.sleep(0.5)
        _write(certfile, second.pem(), 2)  # then the right pair
        _write(keyfile, second.key_pem(), 2)
        await asyncio.sleep(0.5)
        assert not watch.done(), f"the file watch ended: {watch.exception()!r}"
        watch.cancel()

    asyncio.run(rotate())
    assert _served_sha256(server_tls.context) == second.certificate.fingerprint(hashes.SHA256())


def test_renewing_the_ticket_keys_does_not_put_changed_files_in_service(tmp_path: Path):
    server_tls, certfile, keyfile = _server_tls(tmp_path, _localhost(30),
                                                reload_check_seconds=0)
    in_service = _served_sha256(server_tls.context)
    # The operator stages the next certificate, to be put in service with SIGHUP later...
    staged = _localhost(400)
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
    read the files again failed, and then every new connection read them, logged
    tls.ticket_keys_not_renewed, and no session resumed any more."""
    server_tls, _certfile, keyfile = _server_tls(tmp_path, _localhost())
    keyfile.write_bytes(_localhost().key_pem())  # a rotation gone wrong: another cert's key
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
