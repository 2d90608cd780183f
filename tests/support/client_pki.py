"""Client certificate chains for tests: a trusted root and intermediate, and faulty variants."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography.x509.oid import ExtendedKeyUsageOID

from service.tools.pki import Issued, issue, name, new_key


@dataclass(frozen=True)
class ClientCase:
    """Files a client presents: ``chain`` (leaf first, as sent), ``leaf`` and ``key``."""

    label: str
    chain: Path
    leaf: Path
    key: Path
    extra: Path | None  # what follows the leaf in ``chain`` (for -cert_chain), if anything


def _write(folder: Path, label: str, leaf: Issued, *rest: Issued) -> ClientCase:
    folder.mkdir(parents=True, exist_ok=True)
    chain = folder / f"{label}-chain.pem"
    chain.write_bytes(b"".join(item.pem() for item in (leaf, *rest)))
    leaf_file = folder / f"{label}-leaf.pem"
    leaf_file.write_bytes(leaf.pem())
    key = folder / f"{label}.key"
    key.write_bytes(leaf.key_pem())
    extra = None
    if rest:
        extra = folder / f"{label}-extra.pem"
        extra.write_bytes(b"".join(item.pem() for item in rest))
    return ClientCase(label, chain, leaf_file, key, extra)


@dataclass(frozen=True)
class ClientPki:
    root_file: Path
    other_root_file: Path
    root: Issued
    intermediate: Issued
    cases: dict[str, ClientCase]


def client_leaf(issuer: Issued, common_name: str, **kwargs: object) -> Issued:
    return issue(name(common_name, "Salesforce-like test"), issuer=issuer, key=new_key("rsa"),
                 usages=(ExtendedKeyUsageOID.CLIENT_AUTH,), **kwargs)  # type: ignore[arg-type]


def build_client_pki(folder: Path) -> ClientPki:
    now = dt.datetime.now(dt.UTC)
    root = issue(name("Test client root CA"), key=new_key("rsa"), ca=True)
    intermediate = issue(name("Test client intermediate CA"), issuer=root, key=new_key("rsa"),
                         ca=True, path_length=0)
    other_root = issue(name("Unrelated root CA"), ca=True)
    other_intermediate = issue(name("Unrelated intermediate CA"), issuer=other_root, ca=True,
                               path_length=0)
    valid = client_leaf(intermediate, "valid.client.test")
    cases = {
        "valid": _write(folder, "valid", valid, intermediate),
        "untrusted": _write(folder, "untrusted",
                            client_leaf(other_intermediate, "untrusted.client.test"),
                            other_intermediate),
        "expired": _write(folder, "expired",
                          client_leaf(intermediate, "expired.client.test",
                                      not_before=now - dt.timedelta(days=400),
                                      not_after=now - dt.timedelta(days=35)),
                          intermediate),
        "leaf_only": _write(folder, "leaf_only", valid),
    }
    root_file = folder / "client-root.pem"
    root_file.write_bytes(root.pem())
    other_root_file = folder / "unrelated-root.pem"
    other_root_file.write_bytes(other_root.pem())
    return ClientPki(root_file, other_root_file, root, intermediate, cases)
