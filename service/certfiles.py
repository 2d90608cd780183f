"""Reading PEM certificate files and folders, with errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509


class CertificateFileError(Exception):
    pass


def load_certificates(path: Path, key: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file, or in the PEM files of a folder."""
    if not path.exists():
        raise CertificateFileError(f"{key}: file not found: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    certificates: list[x509.Certificate] = []
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as error:
            raise CertificateFileError(f"{key}: cannot read {file}: {error.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in data:
            if path.is_dir():
                continue
            raise CertificateFileError(f"{key}: {file} holds no PEM certificate")
        try:
            certificates.extend(x509.load_pem_x509_certificates(data))
        except ValueError as error:
            raise CertificateFileError(f"{key}: {file} is not valid PEM: {error}") from None
    if not certificates:
        raise CertificateFileError(f"{key}: {path} holds no PEM certificate")
    return certificates
