"""A client that costs a verifier CPU: ``--concurrency`` connections, each presenting a chain
never seen before (its own certificate, then 19 CA certificates named as its issuer, with
a 16,384-bit RSA key, a 64-bit public exponent and signatures that verify under nothing,
in a fresh order, so no decision cache knows it), one after the other for ``--seconds``.

    python bench/abuse.py --port 8443 --cert client.pem --key client.key --seconds 6

Prints one JSON object: connections, seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import ssl
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from costly_chains import junk_cas

JUNK_CERTIFICATES = 19


def _context(folder: Path, leaf_pem: bytes, key: Path, junk: list[bytes],
             number: int) -> ssl.SSLContext:
    """A client context presenting the leaf and the junk in an order not used before."""
    random.shuffle(junk)
    chain = folder / f"chain-{number % 64}.pem"
    chain.write_bytes(leaf_pem + b"".join(junk))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(chain, key)
    return context


async def _abuse(port: int, folder: Path, leaf_pem: bytes, key: Path, deadline: float,
                 counter: list[int]) -> None:
    first = x509.load_pem_x509_certificate(leaf_pem).issuer
    junk = [c.public_bytes(Encoding.PEM) for c in junk_cas(JUNK_CERTIFICATES, first)]
    request = (b"POST /salesforce/outbound HTTP/1.1\r\nHost: localhost\r\n"
               b"Content-Type: text/xml\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    while time.monotonic() < deadline:
        context = _context(folder, leaf_pem, key, junk, counter[0])
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost")
            writer.write(request)
            await reader.read()
            writer.close()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        counter[0] += 1


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", type=Path, required=True, help="the client's own certificate")
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6)
    args = parser.parse_args()
    leaf_pem = x509.load_pem_x509_certificate(args.cert.read_bytes()).public_bytes(
        Encoding.PEM)
    counter = [0]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="omgate-abuse-") as folder:
        await asyncio.gather(*(_abuse(args.port, Path(folder), leaf_pem, args.key,
                                      started + args.seconds, counter)
                               for _ in range(args.concurrency)))
    print(json.dumps({"connections": counter[0],
                      "seconds": round(time.monotonic() - started, 2)}))


if __name__ == "__main__":
    asyncio.run(main())
