"""Real TLS clients behind one call: Python ssl (httpx), curl, openssl s_client and Java.

``send(client, server, case)`` posts the account payload presenting ``case``'s chain
(``None``: no certificate) and returns the status, body and correlation id.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from harness import PAYLOADS, ROOT, SOAP_HEADERS, require_executable

PAYLOAD = PAYLOADS / "amplabs-create_account.xml"
CLIENTS = ("python", "curl", "s_client", "java")


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    correlation_id: str


def _parse_http(raw: str) -> Answer:
    head, _, body = raw.partition("\r\n\r\n")
    while head.split(" ")[1:2] == ["100"]:  # interim "100 Continue" answers come first
        head, _, body = body.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":")
                                                           for line in lines[1:])}
    return Answer(status, body, headers.get("x-correlation-id", ""))


def _python(server, case) -> Answer:
    response = server.post(PAYLOAD.read_bytes(), cert=case, headers=SOAP_HEADERS)
    return Answer(response.status_code, response.text, response.headers["x-correlation-id"])


def _curl(server, case) -> Answer:
    args = ["--cert", str(case.chain), "--key", str(case.key)] if case else []
    result = subprocess.run(
        [require_executable("curl"), "--silent", "--show-error", "--include", "--http1.1",
         "--cacert", str(server.ca_path), "-H", "Content-Type: text/xml; charset=utf-8",
         "-H", 'SOAPAction: ""', "--data-binary", f"@{PAYLOAD}", *args,
         f"{server.url}/salesforce/outbound"],
        capture_output=True, timeout=60, check=True)  # bytes: keep the CRLFs
    return _parse_http(result.stdout.decode())


def _s_client(server, case) -> Answer:
    body = PAYLOAD.read_bytes()
    request = (b"POST /salesforce/outbound HTTP/1.1\r\nHost: localhost\r\n"
               b"Content-Type: text/xml; charset=utf-8\r\nConnection: close\r\n"
               + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    args = []
    if case:
        args = ["-cert", str(case.leaf), "-key", str(case.key)]
        if case.extra:
            args += ["-cert_chain", str(case.extra)]
    result = subprocess.run(
        [require_executable("openssl"), "s_client", "-connect", f"127.0.0.1:{server.https_port}",
         "-servername", "localhost", "-CAfile", str(server.ca_path), "-quiet", *args],
        input=request, capture_output=True, timeout=60, check=False)
    return _parse_http(result.stdout.decode())


def java_keystore(case, folder: Path) -> Path:
    path = folder / f"{case.label}.p12"
    if path.exists():
        return path
    key = serialization.load_pem_private_key(case.key.read_bytes(), None)
    chain = x509.load_pem_x509_certificates(case.chain.read_bytes())
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .kdf_rounds(20000)
                  .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                  .hmac_hash(hashes.SHA1())  # noqa: S303 - what every JDK reads
                  .build(b"changeit"))
    path.write_bytes(pkcs12.serialize_key_and_certificates(b"client", key, chain[0],
                                                           chain[1:], encryption))
    return path


_java_build: dict[str, Path] = {}


def java_command(folder: Path) -> list[str]:
    """Compile the JSSE client once per test session with the JDK's javac."""
    if "classes" not in _java_build:
        javac = require_executable("javac")
        classes = folder / "java-classes"
        source = ROOT / "tests" / "support" / "java" / "OmClient.java"
        subprocess.run([javac, "-d", str(classes), str(source)],
                       check=True, capture_output=True, timeout=180)
        _java_build["classes"] = classes
    return [require_executable("java"), "-cp", str(_java_build["classes"]), "OmClient"]


def _java_output(folder: Path, url: str, ca: Path, keystore: Path | None) -> list[str]:
    result = subprocess.run(
        [*java_command(folder), url, str(ca), str(keystore) if keystore else "-", "changeit",
         str(PAYLOAD)], capture_output=True, text=True, timeout=120, check=False)
    return (result.stdout + result.stderr).splitlines()


def java_error(folder: Path, url: str, ca: Path, keystore: Path | None) -> str:
    """The exception the JSSE client ended with (it must end with one)."""
    lines = _java_output(folder, url, ca, keystore)
    if not lines or not lines[0].startswith("ERROR "):
        raise AssertionError(f"the java client did not fail: {lines}")
    return lines[0]


def run_java(folder: Path, url: str, ca: Path, keystore: Path | None) -> Answer:
    lines = _java_output(folder, url, ca, keystore)
    if not lines or not lines[0].startswith("STATUS "):
        raise AssertionError(f"java client failed: {lines}")
    return Answer(int(lines[0].split()[1]), "\n".join(lines[2:]), lines[1].split()[1])


def _java(server, case, folder: Path) -> Answer:
    keystore = java_keystore(case, folder) if case else None
    return run_java(folder, f"{server.url}/salesforce/outbound", server.ca_path, keystore)


def send(client: str, server, case, folder: Path) -> Answer:
    if client == "java":
        return _java(server, case, folder)
    return {"python": _python, "curl": _curl, "s_client": _s_client}[client](server, case)
