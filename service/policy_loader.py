"""Load client-certificate policies from configuration: the file reading clientauth avoids.

Trust anchors, pinned certificates and CRLs are read here, once per file, and
handed to :mod:`service.clientauth` as values. Every error names the key and the
file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from service.certfiles import CertificateFileError, load_certificates, read_file
from service.clientauth import Mode, Policy, pin_for_certificate
from service.clientauth.chain import is_self_signed
from service.config import Config, PolicyRules


def load_crls(path: Path, key: str) -> list[x509.CertificateRevocationList]:
    """A PEM file of one or more CRLs, or one DER CRL."""
    data = read_file(path, key)
    marker = b"-----BEGIN X509 CRL-----"
    try:
        if marker in data:
            blocks = data.split(marker)[1:]
            return [x509.load_pem_x509_crl(marker + block) for block in blocks]
        return [x509.load_der_x509_crl(data)]
    except ValueError as error:
        raise CertificateFileError(f"{path} is not a CRL (PEM or DER): {error}") from None


@dataclass
class PolicyLoader:
    """Turns configured rules into policies, reading each file once."""

    config: Config
    _certificates: dict[tuple[Path, str], tuple[x509.Certificate, ...]] = field(
        default_factory=dict)

    def certificates(self, path: Path, name: str) -> tuple[x509.Certificate, ...]:
        """The certificates of ``path``, which ``[client_auth] name`` lists."""
        if (path, name) not in self._certificates:
            try:
                self._certificates[(path, name)] = tuple(load_certificates(path, ""))
            except CertificateFileError as error:
                raise self.config.error("client_auth", name, str(error)) from None
        return self._certificates[(path, name)]

    def trusted(self, rules: PolicyRules) -> tuple[x509.Certificate, ...]:
        return tuple(c for path in rules.trust for c in self.certificates(path, "trust"))

    def policy(self, rules: PolicyRules, mode: Mode | None = None) -> Policy:
        trusted = self.trusted(rules)
        known: tuple[x509.Certificate, ...]
        if rules.trust_intermediates:
            anchors, known = trusted, ()
        else:
            anchors = tuple(c for c in trusted if is_self_signed(c))
            known = tuple(c for c in trusted if not is_self_signed(c))
        pinned = tuple(
            pin_for_certificate(certificate, str(path))
            for path in rules.pin_files
            for certificate in self.certificates(path, "pin_files"))
        try:
            crls = tuple(crl for path in rules.crl_files for crl in load_crls(path, ""))
        except CertificateFileError as error:
            raise self.config.error("client_auth", "crl_files", str(error)) from None
        return Policy(
            mode=mode or self.config.client_auth.mode,
            anchors=anchors,
            known_cas=known,
            trust_intermediates=rules.trust_intermediates,
            verify_depth=rules.verify_depth,
            pins=rules.pins + pinned,
            issuer_dn=rules.issuer_dn,
            subject_dn=rules.subject_dn,
            allowed_names=rules.allowed_names,
            require_client_auth_eku=rules.require_client_auth_eku,
            crls=crls,
            clock_skew=dt.timedelta(seconds=rules.clock_skew_seconds),
            expiry_warning_days=rules.expiry_warning_days,
            reject_weak_signatures=rules.reject_weak_signatures,
        )

    def listener_policy(self) -> Policy:
        return self.policy(self.config.client_auth.rules)

    def endpoint_policies(self) -> dict[str, Policy]:
        """Policies of the endpoints that override rules (the others use the listener's)."""
        return {endpoint.path: self.policy(endpoint.client_auth)
                for endpoint in self.config.endpoints if endpoint.client_auth is not None}

    def advertised(self) -> tuple[x509.Certificate, ...]:
        setting = self.config.client_auth.advertise_ca_names
        if setting == "none":
            return ()
        if setting == "anchors":
            return self.trusted(self.config.client_auth.rules)
        return self.certificates(Path(setting), "advertise_ca_names")
