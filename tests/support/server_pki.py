"""Server certificate chains with one fault each, for `omgate check` and `omgate probe`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from service.tools.pki import Issued, issue, name, new_key

HOST = "omgate.example.test"
AIA = "http://pki.example.test/intermediate.crt"


@dataclass(frozen=True)
class ServerCase:
    label: str
    chain: Path  # as the server sends it
    key: Path
    public_names: tuple[str, ...]
    errors: frozenset[str]
    warnings: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ServerPki:
    root: Path  # the "public" root checks and probes trust
    cases: dict[str, ServerCase]


def _leaf(issuer: Issued, **kwargs: object) -> Issued:
    options = {"key": new_key("rsa"), "usages": (ExtendedKeyUsageOID.SERVER_AUTH,), **kwargs}
    return issue(name(HOST, "Example Receiver"), issuer=issuer,
                 dns_names=(HOST, f"*.{HOST}"), issuer_url=AIA, **options)  # type: ignore[arg-type]


def build_server_pki(folder: Path) -> ServerPki:
    now = dt.datetime.now(dt.UTC)
    root = issue(name("Example Public Root CA"), ca=True)
    intermediate = issue(name("Example Public TLS CA"), issuer=root, ca=True, path_length=0)
    leaf = _leaf(intermediate)
    expired = _leaf(intermediate, not_before=now - dt.timedelta(days=400),
                    not_after=now - dt.timedelta(days=3))
    self_signed = issue(name(HOST), dns_names=(HOST,), usages=(ExtendedKeyUsageOID.SERVER_AUTH,))
    weak = _leaf(intermediate, key=rsa.generate_private_key(  # the fault under test
        public_exponent=65537, key_size=1024))  # noqa: S505
    # a certificate issued for TLS clients, installed as the server's
    client_only = _leaf(intermediate, usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "root.pem").write_bytes(root.pem())

    def case(label: str, chain: list[Issued], key: Issued, errors: set[str],
             warnings: set[str] = frozenset(), public_names: tuple[str, ...] = (HOST,)
             ) -> ServerCase:
        (folder / f"{label}.pem").write_bytes(b"".join(item.pem() for item in chain))
        (folder / f"{label}.key").write_bytes(key.key_pem())
        return ServerCase(label, folder / f"{label}.pem", folder / f"{label}.key",
                          public_names, frozenset(errors), frozenset(warnings))

    cases = [
        case("correct", [leaf, intermediate], leaf, set()),
        case("no_intermediate", [leaf], leaf, {"missing_intermediate"}),
        case("wrong_order", [leaf, root, intermediate], leaf, set(),
             {"chain_out_of_order", "root_included"}),
        case("root_included", [leaf, intermediate, root], leaf, set(), {"root_included"}),
        case("expired", [expired, intermediate], expired, {"expired"}),
        case("wildcard_one_label", [leaf, intermediate], leaf, {"hostname_mismatch"},
             public_names=(f"a.b.{HOST}",)),
        case("self_signed", [self_signed], self_signed, {"self_signed"}),
        case("weak_key", [weak, intermediate], weak, {"weak_signature_algorithm"}),
        case("client_auth_only", [client_only, intermediate], client_only,
             {"missing_server_auth_eku"}),
    ]
    return ServerPki(folder / "root.pem", {c.label: c for c in cases})
