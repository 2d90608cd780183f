"""The server's TLS context: certificate chain, protocol floor, ciphers, CertificateRequest.

OpenSSL is configured to *ask* for a client certificate and never to refuse
one by itself (except in ``reject_with = "handshake"`` mode, where the
listener's verify step refuses on the policy's behalf). Trust anchors are
still loaded so OpenSSL's per-depth verify results mean something.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from OpenSSL import SSL, crypto

from service.certfiles import ServerFile, ServerFileError, ServerIdentity, load_server_identity
from service.clientauth import Mode
from service.tls import openssl_glue
from service.tls.capture import Captured
from service.tls.resumption import TICKET_LIFETIME_SECONDS, TicketChains

# TLS 1.2 suites with forward secrecy and AEAD only; TLS 1.3 uses OpenSSL's defaults.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
# HTTP/1.1 only: Salesforce speaks it, and on HTTP/2 a client's PINGs and window updates
# would keep a stalled request alive past server.request_timeout.
ALPN_PROTOCOLS = (b"http/1.1",)
SESSION_ID_CONTEXT = b"omgate"


class TlsSetupError(Exception):
    """The server certificate or key cannot be used; the message says which and why, and
    ``key`` names the configuration key ("certfile" or "keyfile")."""

    def __init__(self, key: ServerFile, problem: str) -> None:
        super().__init__(f"[server] {key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class TlsSettings:
    certfile: Path
    keyfile: Path
    client_auth_mode: Mode
    trusted: tuple[x509.Certificate, ...]  # everything in client_auth.trust
    partial_chain: bool  # trust_intermediates: a trusted intermediate may end a path
    verify_depth: int
    advertised_ca: tuple[x509.Certificate, ...]  # their subjects go in the CertificateRequest
    refuse_in_handshake: bool
    public_names: tuple[str, ...]


def _verify_mode(settings: TlsSettings) -> int:
    if settings.client_auth_mode == "off":
        return 0
    mode = SSL.VERIFY_PEER
    if settings.client_auth_mode == "require" and settings.refuse_in_handshake:
        mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    return mode


# NO_OVERLAPPING_PROTOCOLS's class is private to pyOpenSSL, but its callback type names it.
def _select_alpn(_connection: SSL.Connection,
                 offered: list[bytes]) -> bytes | SSL._NoOverlappingProtocols:
    for protocol in ALPN_PROTOCOLS:
        if protocol in offered:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


def read_server_identity(certfile: Path, keyfile: Path) -> ServerIdentity:
    """The server's files, read with the loader ``omgate check`` uses; a key that is not
    the certificate's is refused."""
    try:
        identity = load_server_identity(certfile, keyfile)
    except ServerFileError as error:
        raise TlsSetupError(error.key, error.problem) from None
    if not identity.key_matches:
        raise TlsSetupError(
            "keyfile", "the key in server.keyfile does not belong to the certificate in "
                       f"server.certfile ({keyfile}, {certfile}): the first certificate there "
                       "must be the one issued for that key")
    return identity


def use_server_identity(context: SSL.Context, identity: ServerIdentity, certfile: Path,
                        keyfile: Path) -> None:
    """Give OpenSSL the server's certificates and key, as read from these files."""
    leaf, *intermediates = identity.chain
    try:
        context.use_certificate(crypto.X509.from_cryptography(leaf))
        for certificate in intermediates:
            context.add_extra_chain_cert(crypto.X509.from_cryptography(certificate))
    except (SSL.Error, crypto.Error) as error:
        raise TlsSetupError("certfile", f"OpenSSL refuses the certificates of {certfile}: "
                                        f"{openssl_reason(error)}") from None
    try:
        context.use_privatekey(crypto.PKey.from_cryptography_key(identity.key))
        context.check_privatekey()
    except (SSL.Error, crypto.Error) as error:
        raise TlsSetupError("keyfile", f"OpenSSL refuses the key in {keyfile}: "
                                       f"{openssl_reason(error)}") from None


def openssl_reason(error: Exception) -> str:
    """The reasons in an OpenSSL error, without its list-of-tuples dress."""
    reasons = [str(part[2]) for part in (error.args[0] if error.args else ())
               if isinstance(part, tuple) and len(part) == 3]
    return "; ".join(reasons) or str(error) or type(error).__name__


def verify_client_chains(context: SSL.Context, trusted: Sequence[x509.Certificate], *,
                         partial_chain: bool, verify_depth: int) -> None:
    """What OpenSSL verifies a client chain against: the listener's context, and the
    offline handshake that gives the tools OpenSSL's opinion (service/tls/opinion.py)."""
    store = context.get_cert_store()
    if store is None:  # OpenSSL gives every context one; pyOpenSSL's type allows for none
        raise RuntimeError("this OpenSSL context has no certificate store")
    for certificate in trusted:
        with contextlib.suppress(crypto.Error):  # the same certificate listed twice
            store.add_cert(crypto.X509.from_cryptography(certificate))
    if partial_chain:
        store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
    # OpenSSL would stop at verify_depth and report error 22; +1 lets it reach the anchor
    # so its results describe the chain, while the policy enforces the depth itself.
    context.set_verify_depth(max(verify_depth + 1, 1))


def new_server_context() -> SSL.Context:
    """A server context with omgate's protocol floor and TLS 1.2 suites."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_cipher_list(TLS12_CIPHERS.encode())
    return context


def build_context(settings: TlsSettings, identity: ServerIdentity | None = None,
                  ) -> tuple[SSL.Context, openssl_glue.ServerNameCheck]:
    """A context serving ``identity`` (by default: the files as they are now)."""
    if identity is None:
        identity = read_server_identity(settings.certfile, settings.keyfile)
    context = new_server_context()
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    # An idle connection gives its record buffers back (about 34 KiB each): most open
    # connections are idle keep-alive ones.
    context.set_mode(SSL.MODE_RELEASE_BUFFERS)
    context.set_session_id(SESSION_ID_CONTEXT)
    # Sessions resume by ticket only, so every resumption is one service/tls/resumption.py
    # can tie to the chain it authenticated with.
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    # How long a ticket resumes; the ticket memory forgets a ticket after as long.
    context.set_timeout(int(TICKET_LIFETIME_SECONDS))
    context.set_alpn_select_callback(_select_alpn)
    use_server_identity(context, identity, settings.certfile, settings.keyfile)
    verify_client_chains(context, settings.trusted, partial_chain=settings.partial_chain,
                         verify_depth=settings.verify_depth)
    for certificate in settings.advertised_ca:  # none: an empty list in the CertificateRequest
        context.add_client_ca(certificate)
    server_names = openssl_glue.server_name_check(settings.public_names)
    openssl_glue.install(context, verify_mode=_verify_mode(settings), server_names=server_names)
    return context, server_names


def served_not_after(context: SSL.Context) -> dt.datetime:
    """When the server certificate ``context`` presents expires (the one OpenSSL loaded,
    not the file as it may be by now)."""
    certificate = SSL.Connection(context, None).get_certificate()
    if certificate is None:
        raise TlsSetupError("certfile", "no certificate was loaded")
    return certificate.to_cryptography().not_valid_after_utc


def _file_signature(paths: Sequence[Path]) -> tuple[tuple[int, int], ...]:
    signature = []
    for path in paths:
        try:
            status = os.stat(path)
            signature.append((status.st_mtime_ns, status.st_size))
        except OSError:
            signature.append((0, 0))
    return tuple(signature)


class ServerTls:
    """The current context, replaced atomically by :meth:`reload` when files change, and
    the chains behind the session tickets it issued (every new context has new ticket
    keys, so the memory starts anew with it)."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        # what is in service: kept, so that new ticket keys never bring in changed files
        self._identity = read_server_identity(settings.certfile, settings.keyfile)
        self.context, self._server_names = build_context(settings, self._identity)
        self.tickets: TicketChains[Captured] = TicketChains()
        self.not_after = served_not_after(self.context)
        self._signature = _file_signature(self._watched())
        self._failed_signature: tuple[tuple[int, int], ...] | None = None

    def _watched(self) -> list[Path]:
        return [self.settings.certfile, self.settings.keyfile]

    def files_changed(self) -> bool:
        signature = _file_signature(self._watched())
        return signature not in (self._signature, self._failed_signature)

    def reload(self) -> None:
        """Build a context from the files as they are now; on error keep the old one."""
        signature = _file_signature(self._watched())
        try:
            identity = read_server_identity(self.settings.certfile, self.settings.keyfile)
            context, server_names = build_context(self.settings, identity)
        except Exception:  # TlsSetupError, or what a file nothing expected raised
            self._failed_signature = signature  # do not retry until the files change again
            raise
        self.context, self._server_names, self._signature = context, server_names, signature
        self._identity = identity
        self.not_after = served_not_after(context)
        self.tickets.rotate()

    def renew_ticket_keys(self) -> None:
        """A new context with new ticket keys, when the ticket memory is full: serving the
        certificate in service, not the files as they may be by now (a reload, by SIGHUP or
        the file watch, puts those in service, says so and reports their expiry)."""
        self.context, self._server_names = build_context(self.settings, self._identity)
        self.tickets.rotate()
