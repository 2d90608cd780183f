"""What one unauthenticated handshake can make omgate write to its log."""

from __future__ import annotations

import ssl

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from inprocess import InProcessListener
from structlog.testing import capture_logs

from service.logs import _json_line
from service.text import SHOWN_CHARACTERS
from service.tools.pki import issue, name, new_key


def test_a_client_chain_of_names_is_not_written_to_the_log_six_times_over(
        listener_config, tmp_path, dev_pki):
    """A self-signed client certificate just under the 32 KiB that omgate judges, whose
    subjectAltName holds 120 DNS names of 250 ESC characters: in `request` mode (the mode
    the README says to start with) the client_auth.decision line's `chain` summary quotes
    every name in full, and JSON writes each ESC as six characters."""
    key = new_key()
    names = [x509.DNSName("\x1b" * 250) for _ in range(120)]
    hostile = issue(name("hostile"), key=key,
                    extensions=((x509.SubjectAlternativeName(names), False),))
    (tmp_path / "hostile.pem").write_bytes(hostile.pem())
    (tmp_path / "hostile.key").write_bytes(hostile.key_pem())
    der_size = len(hostile.certificate.public_bytes(Encoding.DER))
    assert der_size < 32 * 1024  # judged, not refused unread as chain_too_costly

    context = ssl.create_default_context(cafile=str(dev_pki / "ca.pem"))
    context.load_cert_chain(tmp_path / "hostile.pem", tmp_path / "hostile.key")
    with capture_logs() as logs, InProcessListener(tmp_path, listener_config) as listener:
        assert httpx.get(f"https://localhost:{listener.port}/x",
                         verify=context).status_code == 200
    [decision] = [event for event in logs if event["event"] == "client_auth.decision"]
    line = _json_line(decision)

    assert len(line) <= 64 * 1024, (
        f"one handshake with {der_size} bytes of certificate wrote a {len(line)}-byte "
        f"log line ({len(line) / der_size:.1f} times its size)")
    logged_names = [san for summary in decision["chain"] for san in summary["sans"]]
    assert all(len(san) <= SHOWN_CHARACTERS + 40 for san in logged_names), (
        f"{len(logged_names)} names logged, the longest {max(map(len, logged_names))} "
        "characters")
