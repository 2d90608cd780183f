"""What OpenSSL alone keeps for one open TLS connection with a client certificate.

The floor under omgate's memory per connection: omgate's own TLS context
(``service.tls.context.build_context``, so SSL_MODE_RELEASE_BUFFERS and the rest as
served), pyOpenSSL connections on memory BIOs as the listener uses them, and the client
chain the bench's load generator presents; no sockets, no asyncio, no HTTP. Prints the
resident memory each server-side connection adds, in KiB, as JSON.

    python bench/openssl_memory.py --folder DIR [--count 500]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import ssl
import sys
from pathlib import Path

from cryptography import x509
from OpenSSL import SSL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.tls import openssl_glue  # noqa: E402
from service.tls.context import TlsSettings, build_context  # noqa: E402

HANDSHAKE_ROUNDS = 20


def _resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _pump(server: SSL.Connection, client: ssl.SSLObject, to_client: ssl.MemoryBIO,
          from_client: ssl.MemoryBIO) -> None:
    """Moves records both ways until both ends have finished the handshake."""
    for _ in range(HANDSHAKE_ROUNDS):
        try:
            client.do_handshake()
            client_done = True
        except ssl.SSLWantReadError:
            client_done = False
        if from_client.pending:
            server.bio_write(from_client.read())
        with contextlib.suppress(SSL.WantReadError):
            server.do_handshake()
        while True:
            try:
                to_client.write(server.bio_read(65536))
            except SSL.WantReadError:
                break
        if client_done and not from_client.pending:
            return
    raise RuntimeError("the handshake did not finish")


def measure(folder: Path, count: int) -> float:
    trusted = tuple(x509.load_pem_x509_certificates((folder / "client-ca.pem").read_bytes()))
    context, _names = build_context(TlsSettings(
        certfile=folder / "server.pem", keyfile=folder / "server.key",
        client_auth_mode="require", trusted=trusted, partial_chain=False, verify_depth=4,
        advertised_ca=trusted, refuse_in_handshake=False, public_names=("localhost",)))
    client_context = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    client_context.load_cert_chain(folder / "client-chain.pem", folder / "client.key")

    def connected() -> SSL.Connection:
        server = SSL.Connection(context, None)
        server.set_accept_state()
        to_client, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_context.wrap_bio(to_client, from_client, server_hostname="localhost")
        _pump(server, client, to_client, from_client)
        openssl_glue.release_handshake_buffers(server)  # as omgate's TLS stream does
        return server  # the client end is dropped: only the server's state is counted

    connected()  # first use: lazily built OpenSSL and Python state
    gc.collect()
    before = _resident_kib()
    servers = [connected() for _ in range(count)]
    gc.collect()
    added = _resident_kib() - before
    del servers
    return round(added / count, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True,
                        help="the bench's development PKI (server.pem, client-chain.pem, ...)")
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    print(json.dumps({"kib_per_connection": measure(args.folder, args.count)}))


if __name__ == "__main__":
    main()
