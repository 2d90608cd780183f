"""The server's CPU per TLS handshake with and without omgate's OpenSSL hooks (issue 23,
item 5): what the message and verify callbacks cost a new connection.

omgate's own TLS context (``service.tls.context.build_context``, which installs the hooks)
against the same context built with plain verification instead; the development PKI and
a client certificate. A Python ``ssl`` client on memory BIOs in the same thread drives
each handshake; only the server's calls are timed (``time.thread_time``). Prints, per
context, the least of ``--rounds`` means of ``--handshakes`` handshakes, in µs.

    python bench/handshake_hooks.py [--handshakes 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from OpenSSL import SSL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.tls import openssl_glue  # noqa: E402
from service.tls.context import (  # noqa: E402
    TlsSettings,
    build_context,
    new_server_context,
    read_server_identity,
    use_server_identity,
    verify_client_chains,
)
from service.tools.pki import build_dev_pki, dev_files  # noqa: E402

READ_SIZE = 65536


def _settings(folder: Path) -> TlsSettings:
    for filename, content in dev_files(build_dev_pki()).items():
        (folder / filename).write_bytes(content)
    trusted = tuple(x509.load_pem_x509_certificates((folder / "client-ca.pem").read_bytes()))
    return TlsSettings(certfile=folder / "server.pem", keyfile=folder / "server.key",
                       client_auth_mode="require", trusted=trusted, partial_chain=False,
                       verify_depth=2, advertised_ca=(), refuse_in_handshake=True,
                       public_names=())


def server_contexts(settings: TlsSettings) -> dict[str, SSL.Context]:
    """omgate's context, and one with the same identity and trust verified by OpenSSL
    alone (no message, verify or server-name callback)."""
    hooked, _names = build_context(settings)
    plain = new_server_context()
    use_server_identity(plain, read_server_identity(settings.certfile, settings.keyfile),
                        settings.certfile, settings.keyfile)
    verify_client_chains(plain, settings.trusted, partial_chain=settings.partial_chain,
                         verify_depth=settings.verify_depth)
    plain.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
    return {"hooks": hooked, "plain": plain}


def _pump(server: SSL.Connection, data: bytes) -> tuple[bytes, float, bool]:
    """Hand the server the client's bytes; its answer, the CPU it took, whether it is done."""
    started = time.thread_time()
    if data:
        server.bio_write(data)
    done = True
    try:
        server.do_handshake()
    except SSL.WantReadError:
        done = False
    answer = b""
    while True:
        try:
            answer += server.bio_read(READ_SIZE)
        except SSL.WantReadError:
            break
    return answer, time.thread_time() - started, done


def handshake_cpu(server_context: SSL.Context, client_context: ssl.SSLContext) -> float:
    """The server's CPU seconds for one handshake."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    started = time.thread_time()
    server = SSL.Connection(server_context, None)
    server.set_app_data(openssl_glue.ConnectionState())
    server.set_accept_state()
    spent = time.thread_time() - started
    client_done = server_done = False
    while not (client_done and server_done):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
        answer, cpu, server_done = _pump(server, outgoing.read())
        spent += cpu
        incoming.write(answer)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handshakes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        contexts = server_contexts(_settings(folder))
        client = ssl.create_default_context(cafile=str(folder / "ca.pem"))
        client.load_cert_chain(folder / "client-chain.pem", folder / "client.key")
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, server_context in contexts.items():  # interleaved
                mean = sum(handshake_cpu(server_context, client)
                           for _ in range(args.handshakes)) / args.handshakes
                best[name] = min(best.get(name, mean), mean)
    print(json.dumps({f"{name}_us_per_handshake": round(cpu * 1e6) for name, cpu
                      in best.items()}))


if __name__ == "__main__":
    main()
