"""The server certificate's file watch outlives a file it cannot use: whatever stops one
reload is logged as tls.reload_failed, and the next change of the files is still loaded."""

from __future__ import annotations

import asyncio
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
from service.tools.pki import Issued, issue, name

EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")  # the OID id-ecPublicKey, DER


def _with_a_key_type_nobody_knows(issued: Issued) -> bytes:
    """The certificate with its key's algorithm changed to an OID no library knows (as a
    certificate for a newer algorithm reads to an older library)."""
    der = issued.certificate.public_bytes(Encoding.DER)
    assert der.count(EC_PUBLIC_KEY) == 1
    odd = x509.load_der_x509_certificate(der.replace(EC_PUBLIC_KEY,
                                                     bytes.fromhex("06072a8648ce3d0209")))
    return odd.public_bytes(Encoding.PEM)


def _served_sha256(context: SSL.Context) -> bytes:
    certificate = SSL.Connection(context, None).get_certificate()
    assert certificate is not None
    return certificate.to_cryptography().fingerprint(hashes.SHA256())


def _write(path: Path, data: bytes, tick: int) -> None:
    path.write_bytes(data)
    os.utime(path, ns=(tick * 10**9, tick * 10**9))  # a change the (mtime, size) check sees


def test_a_certificate_that_cannot_be_loaded_does_not_end_the_file_watch(tmp_path: Path):
    first, second = (issue(name("localhost"), dns_names=("localhost",)) for _ in range(2))
    certfile, keyfile = tmp_path / "server.pem", tmp_path / "server.key"
    certfile.write_bytes(first.pem())
    keyfile.write_bytes(first.key_pem())
    (tmp_path / "omgate.toml").write_text(
        f'[server]\nbind = ["127.0.0.1:0"]\ncertfile = "{certfile}"\nkeyfile = "{keyfile}"\n'
        f'[inbox]\nurl = "sqlite:///{tmp_path}/inbox.db"\n')
    config = load_config(tmp_path / "omgate.toml", {})
    server_tls = build_server_tls(config, PolicyLoader(config))

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
