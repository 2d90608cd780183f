"""Attacks on the verdict over real TLS: chains a client forged, and chains it cannot prove.

- Whoever holds any end-entity certificate under a trusted CA signs a new certificate
  named ``proxy.salesforce.com`` with that certificate's key and presents
  ``[forged, own certificate, CA]``: it must be refused in every setup.
- A client presents someone else's chain and fails CertificateVerify: that chain must
  never be logged or counted as accepted.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from pathlib import Path

import httpx
import pytest
from costly_chains import constrained_root, junk_cas, many_named_leaf
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from harness import PAYLOADS, SOAP_HEADERS, is_ack, ssl_context

from service.tools.pki import Issued, issue, name, new_key

BODY = (PAYLOADS / "amplabs-create_account.xml").read_bytes()


def own_certificate(client_pki) -> Issued:
    """The attacker's ordinary client certificate, issued under the trusted CA."""
    case = client_pki.cases["valid"]
    certificate = x509.load_pem_x509_certificate(case.leaf.read_bytes())
    key = serialization.load_pem_private_key(case.key.read_bytes(), None)
    return Issued(certificate, key)  # type: ignore[arg-type]


def forged_files(client_pki, folder: Path) -> tuple[Path, Path]:
    own = own_certificate(client_pki)
    forged = issue(name("proxy.salesforce.com", "Salesforce-like test"), issuer=own,
                   key=new_key("rsa"), usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    chain, key = folder / "forged-chain.pem", folder / "forged.key"
    chain.write_bytes(forged.pem() + own.pem() + client_pki.intermediate.pem())
    key.write_bytes(forged.key_pem())
    return chain, key


SETUPS = {
    "depth 3": {"verify_depth": 3},
    "trusted intermediate": {"trust_intermediates": True},
    "names and DN pinned to the forged ones": {
        "verify_depth": 3, "allowed_names": ["proxy.salesforce.com"],
        "subject_dn": "CN=proxy.salesforce.com,O=Salesforce-like test"},
    "refused in the handshake": {"verify_depth": 3, "reject_with": "handshake"},
}


@pytest.mark.parametrize("setup", SETUPS, ids=list(SETUPS))
def test_a_certificate_signed_with_a_client_key_is_refused(omgate_server, client_pki,
                                                          tmp_path, setup):
    rules = {"mode": "require", **SETUPS[setup]}
    if rules.get("trust_intermediates"):
        intermediate = tmp_path / "intermediate.pem"
        intermediate.write_bytes(client_pki.intermediate.pem())
        rules["trust"] = [str(client_pki.root_file), str(intermediate)]
    server = omgate_server({"client_auth": rules})
    chain, key = forged_files(client_pki, tmp_path)
    context = ssl_context(server.ca_path)
    context.load_cert_chain(chain, key)
    try:
        response = httpx.post(f"{server.url}/salesforce/outbound", content=BODY,
                              headers=SOAP_HEADERS, verify=context, timeout=20)
    except httpx.HTTPError:
        assert rules.get("reject_with") == "handshake"
    else:
        assert response.status_code == 403, response.text
    decision = server.wait_for("client_auth.decision")
    assert decision["outcome"] == "reject"
    errors = {(f["code"], f["cert"]) for f in decision["findings"] if f["severity"] == "error"}
    assert ("issuer_not_a_ca", 1) in errors, decision["findings"]
    assert not server.events("om.accepted")


# -- a chain whose holder cannot sign with its key ---------------------------------------


def _records(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Whole TLS records in ``data`` as (type, fragment), and what is left over."""
    records = []
    while len(data) >= 5 and len(data) >= 5 + int.from_bytes(data[3:5], "big"):
        length = int.from_bytes(data[3:5], "big")
        records.append((data[0], data[5:5 + length]))
        data = data[5 + length:]
    return records, data


def _certificate_message(chain: list[x509.Certificate]) -> bytes:
    entries = b"".join(len(der).to_bytes(3, "big") + der for der in (
        certificate.public_bytes(serialization.Encoding.DER) for certificate in chain))
    body = len(entries).to_bytes(3, "big") + entries
    return b"\x0b" + len(body).to_bytes(3, "big") + body


class CertificateSwapper:
    """A TCP relay that replaces the client's TLS 1.2 Certificate message with ``chain``:
    the server sees that chain, and the client's CertificateVerify, made with its own key,
    cannot verify with the key in it."""

    def __init__(self, target_port: int, chain: list[x509.Certificate]) -> None:
        self.target_port = target_port
        self.replacement = _certificate_message(chain)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(("127.0.0.1", self.target_port))
        for sock in (client, server):
            sock.settimeout(10)
        threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
        self._rewrite(client, server)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def _rewrite(self, client: socket.socket, server: socket.socket) -> None:
        pending, handshake = b"", b""
        try:
            while data := client.recv(65536):
                records, pending = _records(pending + data)
                for content_type, fragment in records:
                    if content_type == 22 and handshake is not None:
                        handshake = self._forward_handshake(server, handshake + fragment)
                        continue
                    handshake = None  # after ChangeCipherSpec, records are encrypted
                    server.sendall(bytes([content_type]) + b"\x03\x03"
                                   + len(fragment).to_bytes(2, "big") + fragment)
        except OSError:
            pass
        finally:
            server.close()

    def _forward_handshake(self, server: socket.socket, buffered: bytes) -> bytes:
        """Send the whole handshake messages in ``buffered`` (the Certificate swapped)."""
        while len(buffered) >= 4 and len(buffered) >= 4 + int.from_bytes(buffered[1:4], "big"):
            size = 4 + int.from_bytes(buffered[1:4], "big")
            message, buffered = buffered[:size], buffered[size:]
            if message[0] == 11:
                message = self.replacement
            for start in range(0, len(message), 16384):
                piece = message[start:start + 16384]
                server.sendall(b"\x16\x03\x03" + len(piece).to_bytes(2, "big") + piece)
        return buffered

    def close(self) -> None:
        self.listener.close()


def present_without_its_key(server, victim: list[x509.Certificate], own_chain: Path,
                            own_key: Path) -> None:
    """Present ``victim`` (someone else's public chain) in place of the client's own, then
    fail CertificateVerify, as whoever replays a chain without its key does."""
    swapper = CertificateSwapper(server.https_port, victim)
    context = ssl_context(server.ca_path)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # the Certificate message is in clear
    context.load_cert_chain(own_chain, own_key)
    try:
        with pytest.raises((ssl.SSLError, OSError)), \
                socket.create_connection(("127.0.0.1", swapper.port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            tls.recv(1)
    finally:
        swapper.close()


def test_a_chain_the_client_cannot_prove_is_never_an_acceptance(omgate_server, client_pki,
                                                               tmp_path):
    server = omgate_server({"client_auth": {"mode": "request"}})
    victim = [own_certificate(client_pki).certificate, client_pki.intermediate.certificate]
    attacker = issue(name("attacker.example", "Attacker"), key=new_key("rsa"),
                     usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    chain, key = tmp_path / "attacker.pem", tmp_path / "attacker.key"
    chain.write_bytes(attacker.pem())
    key.write_bytes(attacker.key_pem())
    present_without_its_key(server, victim, chain, key)
    decision = server.wait_for("client_auth.decision")
    assert decision["chain"][0]["subject"] == victim[0].subject.rfc4514_string()
    assert decision["outcome"] == "unproven"
    assert decision["handshake"] == "failed"
    assert decision["findings"] == []  # the chain itself is sound: only unproven
    metrics = httpx.get(f"http://127.0.0.1:{server.extra['health_port']}/metrics").text
    assert 'omgate_client_auth_decisions_total{enforced="false",outcome="unproven",' \
           'source="tls"} 1.0' in metrics
    assert 'outcome="accept"' not in metrics
    # nothing accepted: the expiry has no value at all (an alert on it must not fire), not 0
    assert "# TYPE omgate_client_cert_expiry_timestamp_seconds gauge" in metrics
    assert "\nomgate_client_cert_expiry_timestamp_seconds{" not in metrics
    # a client that proves the same chain is accepted as before, and sets it
    assert is_ack(server.post(BODY, cert=client_pki.cases["valid"]))
    metrics = httpx.get(f"http://127.0.0.1:{server.extra['health_port']}/metrics").text
    assert '\nomgate_client_cert_expiry_timestamp_seconds{source="tls"} ' in metrics


def test_a_chain_built_to_cost_cpu_is_refused_before_any_check(omgate_server, client_pki,
                                                               tmp_path):
    server = omgate_server({"client_auth": {"mode": "require"}})
    own = own_certificate(client_pki)
    junk = junk_cas(19, own.certificate.issuer)
    chain, key = tmp_path / "costly.pem", tmp_path / "costly.key"
    chain.write_bytes(own.pem() + b"".join(
        certificate.public_bytes(serialization.Encoding.PEM) for certificate in junk))
    key.write_bytes(own.key_pem())
    context = ssl_context(server.ca_path)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(chain, key)
    response = httpx.post(f"{server.url}/salesforce/outbound", content=BODY,
                          headers=SOAP_HEADERS, verify=context, timeout=20)
    assert response.status_code == 403
    decision = server.wait_for("client_auth.decision")
    assert {f["code"] for f in decision["findings"]} == {"unsupported_key"}
    assert is_ack(server.post(BODY, cert=client_pki.cases["valid"]))


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("reject_with", ["handshake", "http"])
def test_a_chain_built_to_cost_name_constraint_checks_costs_a_handshake_no_more(
        omgate_server, tmp_path, reject_with):
    """A self-made root with 1,800 subtrees over a leaf with 1,800 names, a fresh serial
    each time so no decision is remembered: 7.4 s of CPU a handshake before; now about
    what the handshake itself costs. The connection is refused, the sender unharmed."""
    server = omgate_server({"client_auth": {"mode": "require", "reject_with": reject_with}})
    root, root_key = constrained_root(900)
    spent = []
    for attempt in range(3):
        leaf, key = many_named_leaf(root, root_key, 1800)
        chain, key_file = tmp_path / f"nc-{attempt}.pem", tmp_path / f"nc-{attempt}.key"
        chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                          + root.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context = ssl_context(server.ca_path)
        context.load_cert_chain(chain, key_file)
        before = cpu_seconds(server.process.pid)
        try:
            response = httpx.post(f"{server.url}/salesforce/outbound", content=BODY,
                                  headers=SOAP_HEADERS, verify=context, timeout=30)
            assert response.status_code == 403
        except httpx.HTTPError:
            assert reject_with == "handshake"
        decision = server.wait_for("client_auth.decision",
                                   lambda event: event.get("outcome") == "reject")
        spent.append(cpu_seconds(server.process.pid) - before)
    assert min(spent) < 0.25, f"server CPU per handshake: {spent}"
    assert decision["findings"]
