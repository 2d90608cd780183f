"""``omgate pki dev``: development certificates for a local server and a Salesforce-like client.

Writes, under ``--out`` (default ``certs/dev``):

- ``ca.pem``: the development server CA (trust it in clients: ``curl --cacert``);
- ``server.pem`` / ``server.key``: a server certificate for localhost, 127.0.0.1 and ::1;
- ``client-ca.pem``, ``client-intermediate.pem``: a client root and intermediate, shaped like
  the public CA chain behind Salesforce's API client certificate;
- ``client.pem`` / ``client.key`` / ``client-chain.pem``: the client leaf, its key, and the
  leaf followed by its intermediate (what a client should send).

No CA private key is written: development CAs cannot issue anything later. The files are
written together by ``service.secretfiles.write_private_files`` (keys 0600, certificates
0644): each a new file renamed over the old one, never through a symbolic link, and none
renamed until all are written.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from service.secretfiles import PRIVATE_MODE, SecretFileError, refuse_links, write_private_files

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
# The hashes CertificateBuilder.sign accepts for these keys (SHA-2 and SHA-3).
SigningHash = (hashes.SHA224 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512
               | hashes.SHA3_224 | hashes.SHA3_256 | hashes.SHA3_384 | hashes.SHA3_512)


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: PrivateKey

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def new_key(kind: str = "ec") -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def name(common_name: str, organization: str = "omgate development") -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def issue(
    subject: x509.Name,
    *,
    issuer: Issued | None = None,
    key: PrivateKey | None = None,
    ca: bool = False,
    path_length: int | None = None,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    usages: tuple[x509.ObjectIdentifier, ...] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    hash_algorithm: SigningHash | None = None,
    issuer_url: str | None = None,
    extensions: tuple[tuple[x509.ExtensionType, bool], ...] = (),
) -> Issued:
    """Issue one certificate; without ``issuer`` it is self-signed. ``extensions`` adds
    (extension, critical) pairs to the usual ones."""
    key = key or new_key()
    now = dt.datetime.now(dt.UTC)
    not_before = not_before or now - dt.timedelta(hours=1)
    not_after = not_after or now + dt.timedelta(days=825 if not ca else 3650)
    signer_key = issuer.key if issuer else key
    issuer_name = issuer.certificate.subject if issuer else subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                          crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                          data_encipherment=False, key_agreement=False, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    if issuer_url:  # where the issuer's certificate can be fetched (AIA caIssuers)
        builder = builder.add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                   x509.UniformResourceIdentifier(issuer_url))]),
            critical=False)
    alternative_names: list[x509.GeneralName] = [x509.DNSName(dns) for dns in dns_names]
    alternative_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if alternative_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alternative_names),
                                        critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    certificate = builder.sign(signer_key, hash_algorithm or hashes.SHA256())
    return Issued(certificate, key)


@dataclass(frozen=True)
class DevPki:
    server_ca: Issued
    server: Issued
    client_root: Issued
    client_intermediate: Issued
    client: Issued


def build_dev_pki() -> DevPki:
    server_ca = issue(name("omgate development server CA"), ca=True, path_length=0)
    server = issue(
        name("localhost"), issuer=server_ca, dns_names=("localhost",),
        ip_addresses=("127.0.0.1", "::1"), usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
    )
    client_root = issue(name("omgate development client root CA"), key=new_key("rsa"), ca=True)
    client_intermediate = issue(
        name("omgate development client intermediate CA"), issuer=client_root,
        key=new_key("rsa"), ca=True, path_length=0,
    )
    client = issue(
        name("omgate development client (Salesforce-like)"), issuer=client_intermediate,
        key=new_key("rsa"), usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
    )
    return DevPki(server_ca, server, client_root, client_intermediate, client)


def dev_files(pki: DevPki) -> dict[str, bytes]:
    return {
        "ca.pem": pki.server_ca.pem(),
        "server.pem": pki.server.pem(),
        "server.key": pki.server.key_pem(),
        "client-ca.pem": pki.client_root.pem(),
        "client-intermediate.pem": pki.client_intermediate.pem(),
        "client.pem": pki.client.pem(),
        "client.key": pki.client.key_pem(),
        "client-chain.pem": pki.client.pem() + pki.client_intermediate.pem(),
    }


class PkiError(Exception):
    pass


def write_dev_pki(out: Path, *, force: bool = False) -> list[Path]:
    """Write the development files; refuse to overwrite unless ``force``, and refuse any
    symbolic link in their place (or ``out`` itself being one) before writing anything."""
    files = dev_files(build_dev_pki())
    paths = [out / filename for filename in files]
    try:
        for path in paths:
            refuse_links(path)
    except SecretFileError as error:
        raise PkiError(str(error)) from None
    existing = [path for path in paths if path.exists()]
    if existing and not force:
        raise PkiError(f"{existing[0]} exists; pass --force to replace the development PKI")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PkiError(f"cannot make the folder {out}: {error.strerror}") from None
    try:  # all or none: a failure halfway leaves the files of before
        write_private_files({path: (files[path.name],
                                    PRIVATE_MODE if path.suffix == ".key" else 0o644)
                             for path in paths})
    except SecretFileError as error:
        raise PkiError(str(error)) from None
    return paths
