"""A corpus of client chains around a moment ``now``: valid ones and one per fault.

Used as pure-function cases (tests/unit/test_clientauth_policy.py) and, for the chains a
TLS client can present, through a live server (tests/system/test_policy_live.py).
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from service.clientauth import fingerprint, parse_dn, parse_pin, pin_for_certificate
from service.clientauth.summary import spki_sha256
from service.tools.pki import Issued, issue, name, new_key

DAY = dt.timedelta(days=1)


def dn(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(x509.oid.NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(x509.oid.NameOID.ORGANIZATION_NAME, "Example, Inc."),
        x509.NameAttribute(x509.oid.NameOID.ORGANIZATIONAL_UNIT_NAME, "www.example.com/CPS"),
        x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, common_name),
    ])




@dataclass
class Pki:
    root: Issued
    intermediate: Issued
    second_intermediate: Issued
    leaf: Issued
    deep_leaf: Issued
    other_root: Issued
    other_intermediate: Issued
    extras: dict[str, Issued] = field(default_factory=dict)


def build_pki(now: dt.datetime) -> Pki:
    """Every certificate of the corpus, valid around ``now`` unless a case says otherwise."""
    def at(**kwargs: object) -> dict[str, object]:
        return {"not_before": now - 30 * DAY, "not_after": now + 365 * DAY, **kwargs}

    def client(issuer: Issued, common_name: str = "proxy.example.com", *,
               dns: tuple[str, ...] = ("proxy.example.com",),
               usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
               **kwargs: object) -> Issued:
        return issue(dn(common_name), issuer=issuer, key=new_key("rsa"), dns_names=dns,
                     usages=usages, **at(**kwargs))  # type: ignore[arg-type]

    def ca(subject: x509.Name, issuer: Issued | None = None, **kwargs: object) -> Issued:
        return issue(subject, issuer=issuer, ca=True, **at(**kwargs))  # type: ignore[arg-type]

    root = ca(name("Corpus Root CA"))
    intermediate = ca(dn("Corpus Intermediate CA"), root)
    second = ca(dn("Corpus Second Intermediate CA"), intermediate)
    other_root = ca(name("Other Root CA"))
    other_intermediate = ca(name("Other Intermediate CA"), other_root)
    not_a_ca = issue(dn("Not A CA"), issuer=root, **at())  # type: ignore[arg-type]
    result = Pki(root, intermediate, second, client(intermediate), client(second, "deep"),
                 other_root, other_intermediate)
    forger = Issued(intermediate.certificate, new_key())  # right name, wrong key
    result.extras = {
        "expired": client(intermediate, not_before=now - 400 * DAY, not_after=now - 35 * DAY),
        "not_yet": client(intermediate, not_before=now + 10 * DAY, not_after=now + 400 * DAY),
        "soon": client(intermediate, not_after=now + 5 * DAY),
        "expired_intermediate": ca(dn("Expired Intermediate CA"), root,
                                   not_before=now - 900 * DAY, not_after=now - 2 * DAY),
        "forged": client(forger),
        "self_signed": issue(dn("proxy.example.com"), dns_names=("proxy.example.com",),
                             usages=(ExtendedKeyUsageOID.CLIENT_AUTH,), **at()),  # type: ignore[arg-type]
        "untrusted": client(other_intermediate),
        "server_only": client(intermediate, usages=(ExtendedKeyUsageOID.SERVER_AUTH,)),
        "no_eku": client(intermediate, usages=()),
        "sha1": resigned_with_sha1(client(intermediate), intermediate),
        "two_labels": client(intermediate, "a.b.example.com", dns=("a.b.example.com",)),
    }
    result.extras["leaf_of_expired_ca"] = client(result.extras["expired_intermediate"])
    result.extras["not_a_ca"] = not_a_ca
    result.extras["leaf_of_non_ca"] = client(not_a_ca)
    result.extras.update(rfc5280_extras(result, client, ca, at))
    return result


UNKNOWN_EXTENSION = x509.UnrecognizedExtension(
    x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")


def rfc5280_extras(pki: Pki, client: Callable[..., Issued], ca: Callable[..., Issued],
                   at: Callable[..., dict[str, object]]) -> dict[str, Issued]:
    """Chains an attacker or a sloppy CA would present, each breaking one RFC 5280 rule."""
    no_cert_sign = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False)
    only_example = x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.com")],
                                        excluded_subtrees=[x509.DNSName("bad.example.com")])
    pathlen_zero = issue(dn("Path Length Zero CA"), issuer=pki.root, ca=True, path_length=0,
                         **at())  # type: ignore[arg-type]
    below_zero = ca(dn("Below Path Length Zero CA"), pathlen_zero)
    constrained = ca(dn("Constrained CA"), pki.root, extensions=((only_example, True),))
    unsigning = issue(dn("No Certificate Signing CA"), issuer=pki.root, ca=True,
                      **at())  # type: ignore[arg-type]
    unsigning = Issued(_with_key_usage(unsigning, pki.root, no_cert_sign), unsigning.key)
    server_only_ca = ca(dn("Server Only CA"), pki.root, extensions=(
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),))
    return {
        # A certificate its holder signed with an ordinary client certificate's key.
        "forged_by_leaf": issue(dn("proxy.salesforce.com"), issuer=pki.leaf,
                                key=new_key("rsa"), usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
                                **at()),  # type: ignore[arg-type]
        "pathlen_zero": pathlen_zero,
        "below_zero": below_zero,
        "leaf_below_zero": client(below_zero),
        "constrained": constrained,
        "constrained_ok": client(constrained, "a.example.com", dns=("a.example.com",)),
        "constrained_san_out": client(constrained, "a.example.com", dns=("evil.org",)),
        "constrained_excluded": client(constrained, "x", dns=("x.bad.example.com",)),
        "constrained_cn_out": client(constrained, "evil.org", dns=()),
        "unknown_critical": client(pki.intermediate, extensions=((UNKNOWN_EXTENSION, True),)),
        "unknown_non_critical": client(pki.intermediate,
                                       extensions=((UNKNOWN_EXTENSION, False),)),
        "unsigning": unsigning,
        "leaf_of_unsigning": client(unsigning),
        "server_only_ca": server_only_ca,
        "leaf_of_server_only_ca": client(server_only_ca),
        "email_san_only": client(pki.intermediate, dns=(), extensions=(
            (x509.SubjectAlternativeName([x509.RFC822Name("ops@example.com")]), False),)),
        # the intermediate's own name and key, certified by another root: a cross-signed copy
        "cross_signed_intermediate": issue(dn("Corpus Intermediate CA"), issuer=pki.other_root,
                                           key=pki.intermediate.key, ca=True,
                                           **at()),  # type: ignore[arg-type]
        "no_subject_san": _without_subject(pki.intermediate, critical=False, **at()),
        "no_subject_critical_san": _without_subject(pki.intermediate, critical=True, **at()),
        "huge_exponent": _with_public_key(pki.leaf, pki.intermediate, rsa.RSAPublicNumbers(
            2**1500 + 1, pki.leaf.key.public_key().public_numbers().n).public_key()),  # type: ignore[union-attr]
    }


def _without_subject(issuer: Issued, *, critical: bool, **validity: object) -> Issued:
    """A client certificate named only in its subjectAltName."""
    return issue(x509.Name([]), issuer=issuer, key=new_key("rsa"),
                 usages=(ExtendedKeyUsageOID.CLIENT_AUTH,), extensions=(
                     (x509.SubjectAlternativeName([x509.DNSName("proxy.example.com")]),
                      critical),), **validity)  # type: ignore[arg-type]


def _with_key_usage(certificate: Issued, issuer: Issued,
                    usage: x509.KeyUsage) -> x509.Certificate:
    """The certificate re-issued with ``usage`` in place of its key usage."""
    return _reissued(certificate.certificate, issuer, certificate.certificate.public_key(),
                     replace={x509.KeyUsage: usage})


def _with_public_key(certificate: Issued, issuer: Issued,
                     key: rsa.RSAPublicKey) -> Issued:
    return Issued(_reissued(certificate.certificate, issuer, key), certificate.key)


def _reissued(original: x509.Certificate, issuer: Issued, key: rsa.RSAPublicKey | object,
              replace: dict[type, x509.ExtensionType] | None = None) -> x509.Certificate:
    replace = replace or {}
    builder = (x509.CertificateBuilder().subject_name(original.subject)
               .issuer_name(original.issuer).public_key(key)  # type: ignore[arg-type]
               .serial_number(original.serial_number)
               .not_valid_before(original.not_valid_before_utc)
               .not_valid_after(original.not_valid_after_utc))
    for extension in original.extensions:
        value = replace.get(type(extension.value), extension.value)
        builder = builder.add_extension(value, critical=extension.critical)
    return builder.sign(issuer.key, hashes.SHA256())


def resigned_with_sha1(certificate: Issued, issuer: Issued) -> Issued:
    """cryptography no longer signs with SHA-1; pyOpenSSL (OpenSSL) still does."""
    from OpenSSL import crypto

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy = crypto.X509.from_cryptography(certificate.certificate)
        legacy.sign(crypto.PKey.from_cryptography_key(issuer.key), "sha1")
    return Issued(legacy.to_cryptography(), certificate.key)


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _element_end(der: bytes, start: int) -> tuple[int, int]:
    """Where the contents of the DER element at ``start`` begin and where it ends."""
    first = der[start + 1]
    if first < 0x80:
        return start + 2, start + 2 + first
    count = first & 0x7F
    contents = start + 2 + count
    return contents, contents + int.from_bytes(der[start + 2:contents], "big")


def with_lax_boolean(certificate: Issued, issuer: Issued) -> bytes:
    """The certificate's DER, its first BOOLEAN TRUE written 0x01 (BER, not DER), re-signed.

    OpenSSL parses and verifies it; cryptography refuses to parse it. A client can send it.
    """
    der = certificate.certificate.public_bytes(serialization.Encoding.DER)
    outer_contents, _ = _element_end(der, 0)
    _, tbs_end = _element_end(der, outer_contents)
    _, algorithm_end = _element_end(der, tbs_end)
    tbs = der[outer_contents:tbs_end].replace(b"\x01\x01\xff", b"\x01\x01\x01", 1)
    assert tbs != der[outer_contents:tbs_end], "no BOOLEAN TRUE to loosen"
    if isinstance(issuer.key, rsa.RSAPrivateKey):
        signature = issuer.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = issuer.key.sign(tbs, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,union-attr]
    bits = b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature
    body = tbs + der[tbs_end:algorithm_end] + bits
    return b"\x30" + _der_length(len(body)) + body


def with_loose_length(der: bytes) -> bytes:
    """The certificate with its outer length in 4 bytes where DER wants the fewest (BER):
    OpenSSL reads it, and verifies it (the signature covers only the inner part);
    cryptography refuses it."""
    contents, end = _element_end(der, 0)
    return b"\x30\x84" + (end - contents).to_bytes(4, "big") + der[contents:end]


def crl_revoking(issuer: Issued, revoked: x509.Certificate) -> x509.CertificateRevocationList:
    when = revoked.not_valid_before_utc + DAY
    entry = (x509.RevokedCertificateBuilder().serial_number(revoked.serial_number)
             .revocation_date(when).build())
    return (x509.CertificateRevocationListBuilder().issuer_name(issuer.certificate.subject)
            .last_update(when).next_update(when + 400 * DAY)
            .add_revoked_certificate(entry).sign(issuer.key, hashes.SHA256()))


@dataclass(frozen=True)
class Case:
    label: str
    chain: Callable[[Pki], list[Issued]]
    errors: set[str]
    warnings: set[str] = field(default_factory=set)
    policy: Callable[[Pki], dict[str, object]] = lambda pki: {}
    names: Callable[[Pki], Issued | None] = lambda pki: None  # certificate the message names


LEAF = lambda pki: pki.leaf  # noqa: E731


CASES = [
    Case("valid chain", lambda p: [p.leaf, p.intermediate], set()),
    Case("leaf without its intermediate", lambda p: [p.leaf], {"missing_intermediate"},
         names=LEAF),
    Case("chain in reverse order", lambda p: [p.intermediate, p.leaf], {"chain_out_of_order"},
         names=lambda p: p.intermediate),
    Case("intermediates out of order", lambda p: [p.deep_leaf, p.intermediate,
                                                  p.second_intermediate],
         set(), {"chain_out_of_order"}, policy=lambda p: {"verify_depth": 3}),
    Case("root included", lambda p: [p.leaf, p.intermediate, p.root], set(), {"root_included"},
         names=lambda p: p.root),
    Case("duplicate certificate", lambda p: [p.leaf, p.intermediate, p.intermediate], set(),
         {"duplicate_certificate"}, names=lambda p: p.intermediate),
    Case("unrelated extra certificate", lambda p: [p.leaf, p.intermediate, p.other_intermediate],
         set(), {"unrelated_certificate"}, names=lambda p: p.other_intermediate),
    Case("self-signed leaf", lambda p: [p.extras["self_signed"]], {"self_signed"},
         names=lambda p: p.extras["self_signed"]),
    Case("untrusted root", lambda p: [p.extras["untrusted"], p.other_intermediate],
         {"untrusted_root"}, names=lambda p: p.other_intermediate),
    Case("expired leaf", lambda p: [p.extras["expired"], p.intermediate], {"expired"},
         names=lambda p: p.extras["expired"]),
    Case("expired intermediate",
         lambda p: [p.extras["leaf_of_expired_ca"], p.extras["expired_intermediate"]],
         {"expired"}, names=lambda p: p.extras["expired_intermediate"]),
    Case("not yet valid", lambda p: [p.extras["not_yet"], p.intermediate], {"not_yet_valid"},
         names=lambda p: p.extras["not_yet"]),
    Case("expires soon", lambda p: [p.extras["soon"], p.intermediate], set(), {"expires_soon"},
         names=lambda p: p.extras["soon"]),
    Case("depth one too small", lambda p: [p.deep_leaf, p.second_intermediate, p.intermediate],
         {"depth_exceeded"}, names=lambda p: p.deep_leaf),
    Case("same chain at depth + 1", lambda p: [p.deep_leaf, p.second_intermediate,
                                               p.intermediate], set(),
         policy=lambda p: {"verify_depth": 3}),
    Case("bad signature", lambda p: [p.extras["forged"], p.intermediate], {"bad_signature"},
         names=lambda p: p.extras["forged"]),
    Case("sha256 pin matches", lambda p: [p.leaf, p.intermediate], set(),
         policy=lambda p: {"pins": (parse_pin("sha256:" + fingerprint(p.leaf.certificate)),)}),
    Case("sha256 pin with colons matches", lambda p: [p.leaf, p.intermediate], set(),
         policy=lambda p: {"pins": (parse_pin("sha256:" + ":".join(
             fingerprint(p.leaf.certificate)[i:i + 2].upper() for i in range(0, 64, 2))),)}),
    Case("sha256 pin mismatches", lambda p: [p.leaf, p.intermediate], {"pin_mismatch"},
         policy=lambda p: {"pins": (parse_pin("sha256:" + "ab" * 32),)}, names=LEAF),
    Case("spki pin matches", lambda p: [p.leaf, p.intermediate], set(),
         policy=lambda p: {"pins": (parse_pin("spki:" + spki_sha256(p.leaf.certificate)),)}),
    Case("spki pin mismatches", lambda p: [p.leaf, p.intermediate], {"pin_mismatch"},
         policy=lambda p: {"pins": (parse_pin("spki:" + spki_sha256(p.root.certificate)),)},
         names=LEAF),
    Case("two pins during a rotation", lambda p: [p.leaf, p.intermediate], set(),
         policy=lambda p: {"pins": (parse_pin("sha256:" + "cd" * 32),
                                    parse_pin("spki:" + spki_sha256(p.leaf.certificate)))}),
    Case("pin file matches", lambda p: [p.leaf, p.intermediate], set(),
         policy=lambda p: {"pins": (pin_for_certificate(p.leaf.certificate, "leaf.pem"),)}),
    Case("pins alone, no trust anchors", lambda p: [p.extras["self_signed"]], set(),
         policy=lambda p: {"anchors": (), "pins": (
             pin_for_certificate(p.extras["self_signed"].certificate, "self.pem"),)}),
    Case("issuer DN, RFC 4514", lambda p: [p.leaf, p.intermediate], set(),
         policy=lambda p: {"issuer_dn": parse_dn(
             r"CN=Corpus Intermediate CA,OU=www.example.com/CPS,O=Example\, Inc.,C=US")}),
    Case("issuer DN, OpenSSL one-line", lambda p: [p.leaf, p.intermediate], set(),
         policy=lambda p: {"issuer_dn": parse_dn(
             "/C=US/O=Example, Inc./OU=www.example.com/CPS/CN=corpus  intermediate CA")}),
    Case("issuer DN, OpenSSL comma form", lambda p: [p.leaf, p.intermediate], set(),
         policy=lambda p: {"issuer_dn": parse_dn(
             'C = US, O = "Example, Inc.", OU = www.example.com/CPS, CN = Corpus Intermediate CA'
         )}),
    Case("issuer DN, one attribute off", lambda p: [p.leaf, p.intermediate],
         {"issuer_dn_mismatch"}, names=LEAF, policy=lambda p: {"issuer_dn": parse_dn(
             "/C=US/O=Example, Inc./OU=www.example.com/CPS/CN=Corpus Other CA")}),
    Case("subject DN matches", lambda p: [p.leaf, p.intermediate], set(),
         policy=lambda p: {"subject_dn": parse_dn(
             r"CN=proxy.example.com,OU=www.example.com/CPS,O=Example\, Inc.,C=US")}),
    Case("subject DN mismatches", lambda p: [p.leaf, p.intermediate], {"subject_dn_mismatch"},
         names=LEAF, policy=lambda p: {"subject_dn": parse_dn("CN=someone.else,C=US")}),
    Case("allowed name, exact", lambda p: [p.leaf, p.intermediate], set(),
         policy=lambda p: {"allowed_names": ("proxy.example.com",)}),
    Case("allowed name, wildcard", lambda p: [p.leaf, p.intermediate], set(),
         policy=lambda p: {"allowed_names": ("*.example.com",)}),
    Case("allowed name, wildcard covers one label only",
         lambda p: [p.extras["two_labels"], p.intermediate], {"name_not_allowed"},
         policy=lambda p: {"allowed_names": ("*.example.com",)},
         names=lambda p: p.extras["two_labels"]),
    Case("missing clientAuth EKU", lambda p: [p.extras["server_only"], p.intermediate],
         {"missing_client_auth_eku"}, policy=lambda p: {"require_client_auth_eku": True},
         names=lambda p: p.extras["server_only"]),
    Case("no EKU when clientAuth is required", lambda p: [p.extras["no_eku"], p.intermediate],
         {"missing_client_auth_eku"}, policy=lambda p: {"require_client_auth_eku": True}),
    Case("server-only EKU is a warning when not required",
         lambda p: [p.extras["server_only"], p.intermediate], set(),
         {"missing_client_auth_eku"}),
    Case("revoked by a CRL", lambda p: [p.leaf, p.intermediate], {"revoked"}, names=LEAF,
         policy=lambda p: {"crls": (crl_revoking(p.intermediate, p.leaf.certificate),)}),
    Case("SHA-1 signature", lambda p: [p.extras["sha1"], p.intermediate],
         {"weak_signature_algorithm"}, names=lambda p: p.extras["sha1"]),
    Case("intermediate that is not a CA (RFC 5280 check)",
         lambda p: [p.extras["leaf_of_non_ca"], p.extras["not_a_ca"]], {"issuer_not_a_ca"},
         names=lambda p: p.extras["not_a_ca"]),
    Case("a leaf signed with an ordinary client certificate's key",
         lambda p: [p.extras["forged_by_leaf"], p.leaf, p.intermediate], {"issuer_not_a_ca"},
         policy=lambda p: {"verify_depth": 3}, names=LEAF),
    Case("a leaf signed with a client key, intermediates trusted",
         lambda p: [p.extras["forged_by_leaf"], p.leaf, p.intermediate], {"issuer_not_a_ca"},
         {"root_included"},
         policy=lambda p: {"anchors": (p.root.certificate, p.intermediate.certificate),
                           "trust_intermediates": True,
                           "allowed_names": ("proxy.salesforce.com",)}, names=LEAF),
    Case("path length constraint exceeded",
         lambda p: [p.extras["leaf_below_zero"], p.extras["below_zero"],
                    p.extras["pathlen_zero"]], {"path_length_exceeded"},
         policy=lambda p: {"verify_depth": 3}, names=lambda p: p.extras["pathlen_zero"]),
    Case("within name constraints", lambda p: [p.extras["constrained_ok"],
                                               p.extras["constrained"]], set()),
    Case("SAN outside the name constraints",
         lambda p: [p.extras["constrained_san_out"], p.extras["constrained"]],
         {"name_constraints_violated"}, names=lambda p: p.extras["constrained_san_out"]),
    Case("SAN inside an excluded subtree",
         lambda p: [p.extras["constrained_excluded"], p.extras["constrained"]],
         {"name_constraints_violated"}),
    Case("CN used as a name, outside the name constraints",
         lambda p: [p.extras["constrained_cn_out"], p.extras["constrained"]],
         {"name_constraints_violated"}, names=lambda p: p.extras["constrained_cn_out"]),
    Case("unknown critical extension", lambda p: [p.extras["unknown_critical"], p.intermediate],
         {"unknown_critical_extension"}, names=lambda p: p.extras["unknown_critical"]),
    Case("unknown non-critical extension",
         lambda p: [p.extras["unknown_non_critical"], p.intermediate], set()),
    Case("CA whose key usage does not allow certificate signing",
         lambda p: [p.extras["leaf_of_unsigning"], p.extras["unsigning"]], {"issuer_not_a_ca"},
         names=lambda p: p.extras["unsigning"]),
    Case("CA restricted to server authentication",
         lambda p: [p.extras["leaf_of_server_only_ca"], p.extras["server_only_ca"]],
         {"missing_client_auth_eku"}, names=lambda p: p.extras["server_only_ca"]),
    Case("a SAN with only an email rules the CN out of allowed_names",
         lambda p: [p.extras["email_san_only"], p.intermediate], {"name_not_allowed"},
         policy=lambda p: {"allowed_names": ("proxy.example.com",)}),
    Case("an RSA exponent that would make checks slow",
         lambda p: [p.extras["huge_exponent"], p.intermediate], {"unsupported_key"}),
    Case("alternate path: the cross-signed copy sent leads nowhere, the configured one does",
         lambda p: [p.leaf, p.extras["cross_signed_intermediate"]], set(),
         {"unrelated_certificate"},
         policy=lambda p: {"known_cas": (p.intermediate.certificate,)}),
    Case("alternate path: the copy sent first leads nowhere, the one sent second does",
         lambda p: [p.leaf, p.extras["cross_signed_intermediate"], p.intermediate], set(),
         {"unrelated_certificate"}),
    Case("an empty subject with a non-critical subjectAltName (RFC 5280, 4.2.1.6)",
         lambda p: [p.extras["no_subject_san"], p.intermediate], {"path_validation_failed"}),
    Case("an empty subject with a critical subjectAltName",
         lambda p: [p.extras["no_subject_critical_san"], p.intermediate], set()),
    Case("SHA-1 accepted when allowed", lambda p: [p.extras["sha1"], p.intermediate], set(),
         {"weak_signature_algorithm"}, policy=lambda p: {"reject_weak_signatures": False}),
]


