"""The TLS front door in-process, with `openssl s_client` as the client."""

from __future__ import annotations

import subprocess

from harness import require_executable
from inprocess import InProcessListener
from tls_listener_cases import REQUEST, pems


def s_client(port: int, ca, *args: str, request: bytes) -> subprocess.CompletedProcess[bytes]:
    openssl = require_executable("openssl")
    return subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
         "-CAfile", str(ca), "-quiet", "-verify_return_error", *args],
        input=request, capture_output=True, timeout=30, check=False)


def test_s_client_chain_reaches_the_app_certificate_by_certificate(
        listener_config, tmp_path, dev_pki, client_pki):
    case = client_pki.cases["valid"]
    # Out of order and with a duplicate: the app must see exactly what was sent.
    extra = tmp_path / "extra.pem"
    extra.write_bytes(client_pki.root.pem() + client_pki.intermediate.pem()
                      + client_pki.intermediate.pem())
    with InProcessListener(tmp_path, listener_config) as listener:
        result = s_client(listener.port, dev_pki / "ca.pem", "-cert", str(case.leaf),
                          "-cert_chain", str(extra), "-key", str(case.key), request=REQUEST)
        assert result.stdout.startswith(b"HTTP/1.1 200"), result.stderr.decode()
        tls = listener.app.scopes[-1]["extensions"]["tls"]
    assert tls["client_cert_chain"] == pems(case.leaf) + pems(extra)
    assert tls["client_cert_name"] == "CN=valid.client.test,O=Salesforce-like test"
    assert tls["tls_version"] in (0x0303, 0x0304)
    assert isinstance(tls["cipher_suite"], int)
