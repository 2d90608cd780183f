"""Build a path from a presented chain to a trust anchor, tolerating disorder and extras.

The presented list may be out of order, repeat certificates, or carry certificates
that belong to nothing; the path is built from the client certificate upwards by
issuer name *and* signature, preferring trust anchors, then presented
certificates, then certificates configured in ``trust``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from service.clientauth.algorithms import LEGACY_DIGESTS
from service.clientauth.extensions import ca_problem, key_identifier_problem
from service.clientauth.summary import fingerprint, is_ca

Origin = Literal["presented", "anchor", "configured"]
PathEnd = Literal["anchor", "self_signed", "issuer_not_found", "bad_signature", "loop",
                  "too_complex"]
MAX_PATH = 16
# Enough for any honest chain (each certificate checked against its issuer, and the
# leaf search), far from the all-pairs search a chain of look-alike names would ask for.
MAX_SIGNATURE_CHECKS = 32
# Paths to an anchor the search hands over for judging, likeliest first.
MAX_PATHS = 4


@dataclass(frozen=True)
class Link:
    certificate: x509.Certificate
    origin: Origin
    index: int | None  # position in the presented chain (its first occurrence), if presented


@dataclass(frozen=True)
class ChainAnalysis:
    leaf_index: int
    path: tuple[Link, ...]  # leaf first
    end: PathEnd
    unverified_issuer: x509.Certificate | None  # named as issuer, signature did not verify
    unchecked_links: tuple[int, ...]  # path positions whose signature could not be checked
    duplicates: tuple[int, ...]
    unrelated: tuple[int, ...]
    roots_included: tuple[int, ...]  # presented copies of the anchor the path ends at
    out_of_order: bool

    @property
    def anchored(self) -> bool:
        return self.end == "anchor"

    @property
    def depth(self) -> int:
        """CA certificates above the client certificate, the anchor included."""
        return len(self.path) - 1


def same_certificate(first: x509.Certificate, second: x509.Certificate) -> bool:
    return fingerprint(first) == fingerprint(second)


def same_key_and_name(first: x509.Certificate, second: x509.Certificate) -> bool:
    """What OpenSSL treats as the same CA: one subject, one public key."""
    if first.subject != second.subject:
        return False
    try:
        return first.public_key() == second.public_key()
    except (ValueError, TypeError):
        return same_certificate(first, second)


def _legacy_signature_ok(child: x509.Certificate, parent: x509.Certificate) -> bool | None:
    digest = LEGACY_DIGESTS.get(child.signature_algorithm_oid)
    if digest is None:
        return None
    key = parent.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes, padding.PKCS1v15(),
                       digest())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(digest()))
        else:
            return None
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return True


def signature_ok(child: x509.Certificate, parent: x509.Certificate) -> bool | None:
    """True: ``parent`` signed ``child``; False: it did not; None: it cannot be checked here."""
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except InvalidSignature:
        return False
    except Exception:  # noqa: BLE001 - unsupported key or digest (SHA-1, MD2, exotic curves)
        return _legacy_signature_ok(child, parent)
    return True


def is_self_signed(certificate: x509.Certificate) -> bool:
    return certificate.subject == certificate.issuer and signature_ok(certificate,
                                                                      certificate) is not False


class SignatureBudgetExceeded(Exception):
    """More signature checks than one chain may cost (see MAX_SIGNATURE_CHECKS)."""


@dataclass
class SignatureChecks:
    """Signature checks for one analysis: each pair at most once, and a bounded number, so
    a chain of many look-alike names cannot make omgate search all pairs."""

    limit: int = MAX_SIGNATURE_CHECKS
    done: int = 0
    _results: dict[tuple[int, int], bool | None] = field(default_factory=dict)

    def __call__(self, child: x509.Certificate, parent: x509.Certificate) -> bool | None:
        if child.issuer != parent.subject:
            return False
        pair = (id(child), id(parent))  # the objects live as long as the analysis
        if pair not in self._results:
            if self.done >= self.limit:
                raise SignatureBudgetExceeded
            self.done += 1
            self._results[pair] = signature_ok(child, parent)
        return self._results[pair]


@dataclass(frozen=True)
class BuiltPath:
    """One path the search reached the end of: an anchor, or where it could go no further."""

    links: tuple[Link, ...]
    end: PathEnd
    rejected: x509.Certificate | None  # named as issuer, signature did not verify
    unchecked: tuple[int, ...]  # path positions whose signature could not be checked


@dataclass
class _Builder:
    """A depth-first search for paths from the leaf to an anchor (RFC 4158): at each step
    the likeliest issuers first, and another one when the path through the first ends
    nowhere, so a cross-signed or re-keyed CA sent beside the right one does not lock the
    sender out. Bounded by the signature checks it may spend and the paths it may find."""

    presented: tuple[x509.Certificate, ...]
    anchors: tuple[x509.Certificate, ...]
    configured: tuple[x509.Certificate, ...]
    signed_by: SignatureChecks
    anchored: list[BuiltPath] = field(default_factory=list)
    dead_ends: list[BuiltPath] = field(default_factory=list)

    def is_anchor(self, certificate: x509.Certificate) -> bool:
        return any(same_key_and_name(certificate, anchor) for anchor in self.anchors)

    def candidates(self, certificate: x509.Certificate) -> list[Link]:
        """Possible issuers: anchors, then presented, then configured certificates; among
        each, those allowed to sign certificates and whose key identifier the certificate
        names first (as OpenSSL's issuer check prefers)."""
        wanted = certificate.issuer
        groups = (
            [Link(anchor, "anchor", None) for anchor in self.anchors if anchor.subject == wanted],
            [Link(cert, "presented", index) for index, cert in enumerate(self.presented)
             if cert.subject == wanted],
            [Link(cert, "configured", None) for cert in self.configured
             if cert.subject == wanted],
        )

        def unlikely(link: Link) -> tuple[bool, bool]:
            return (ca_problem(link.certificate, as_anchor=link.origin == "anchor") is not None,
                    key_identifier_problem(certificate, link.certificate) is not None)
        return [link for group in groups for link in sorted(group, key=unlikely)]

    def search(self, leaf: Link) -> None:
        try:
            self._extend([leaf], [])
        except (SignatureBudgetExceeded, _Enough) as stop:
            if isinstance(stop, SignatureBudgetExceeded) and not self.anchored:
                self.dead_ends.insert(0, BuiltPath((leaf,), "too_complex", None, ()))

    def _end(self, path: list[Link], unchecked: list[int], end: PathEnd,
             rejected: x509.Certificate | None = None) -> None:
        built = BuiltPath(tuple(path), end, rejected, tuple(unchecked))
        if end == "anchor":
            self.anchored.append(built)
            if len(self.anchored) >= MAX_PATHS:
                raise _Enough
        else:
            self.dead_ends.append(built)

    def _extend(self, path: list[Link], unchecked: list[int]) -> None:
        current = path[-1].certificate
        if self.is_anchor(current):
            return self._end(path, unchecked, "anchor")
        if current.subject == current.issuer and self.signed_by(current, current) is not False:
            return self._end(path, unchecked, "self_signed")
        if len(path) >= MAX_PATH:
            return self._end(path, unchecked, "loop")
        rejected: x509.Certificate | None = None
        followed = False
        for candidate in self.candidates(current):
            if any(same_certificate(candidate.certificate, link.certificate) for link in path):
                continue
            verdict = self.signed_by(current, candidate.certificate)
            if verdict is False:
                rejected = rejected or candidate.certificate
                continue
            followed = True
            self._extend([*path, candidate],
                         [*unchecked, len(path) - 1] if verdict is None else unchecked)
        if not followed:
            self._end(path, unchecked, "bad_signature" if rejected else "issuer_not_found",
                      rejected)
        return None


class _Enough(Exception):
    """The search has found as many anchored paths as it may judge."""


def _leaf_index(presented: tuple[x509.Certificate, ...], signed_by: SignatureChecks) -> int:
    """The first certificate, unless it is a CA that issued another presented certificate."""
    def issues_another(position: int) -> bool:
        return any(position != other and signed_by(cert, presented[position])
                   for other, cert in enumerate(presented))

    try:
        if not is_ca(presented[0]) or not issues_another(0):
            return 0
        ends = [i for i in range(len(presented)) if not issues_another(i)]
    except SignatureBudgetExceeded:
        return 0
    non_ca = [i for i in ends if not is_ca(presented[i])]
    return (non_ca or ends or [0])[0]


def candidate_analyses(presented: tuple[x509.Certificate, ...],
                       anchors: tuple[x509.Certificate, ...],
                       configured: tuple[x509.Certificate, ...] = ()
                       ) -> tuple[ChainAnalysis, ...]:
    """The structure of a non-empty presented chain along each path to an anchor, likeliest
    first (at most MAX_PATHS); when none reaches one, the first path the search could not
    take further, which is the one to explain."""
    first_seen: dict[str, int] = {}
    duplicates = []
    for index, certificate in enumerate(presented):
        key = fingerprint(certificate)
        if key in first_seen:
            duplicates.append(index)
        else:
            first_seen[key] = index
    original_index = sorted(first_seen.values())
    unique = tuple(presented[i] for i in original_index)
    signed_by = SignatureChecks()
    builder = _Builder(unique, anchors, configured, signed_by)
    leaf_position = _leaf_index(unique, signed_by)
    leaf = Link(unique[leaf_position], "presented", original_index[leaf_position])
    builder.search(leaf)
    built = builder.anchored or builder.dead_ends[:1]
    return tuple(_analysis(path, leaf, presented, first_seen, original_index,
                           tuple(duplicates)) for path in built)


def analyse_chain(presented: tuple[x509.Certificate, ...],
                  anchors: tuple[x509.Certificate, ...],
                  configured: tuple[x509.Certificate, ...] = ()) -> ChainAnalysis:
    """The likeliest path's structure (see :func:`candidate_analyses`)."""
    return candidate_analyses(presented, anchors, configured)[0]


def _analysis(built: BuiltPath, leaf: Link, presented: tuple[x509.Certificate, ...],
              first_seen: dict[str, int], original_index: list[int],
              duplicates: tuple[int, ...]) -> ChainAnalysis:
    end, rejected = built.end, built.rejected
    path = tuple(Link(link.certificate, link.origin,
                      original_index[link.index] if link.index is not None else None)
                 for link in built.links)
    on_path = {link.index for link in path if link.index is not None}
    anchor = path[-1].certificate if end == "anchor" else None
    roots_included = tuple(
        index for index in first_seen.values()
        if index not in on_path and anchor is not None
        and same_key_and_name(presented[index], anchor))
    claimed = {index for index in first_seen.values()
               if rejected is not None and same_certificate(presented[index], rejected)}
    unrelated = tuple(index for index in sorted(first_seen.values())
                      if index not in on_path and index not in roots_included
                      and index not in claimed)
    # Each certificate sent must certify the one before it: the path's certificates, then
    # a root that was included, in that order.
    presented_order = [link.index for link in path if link.index is not None]
    presented_order += list(roots_included)
    out_of_order = leaf.index != 0 or presented_order != sorted(presented_order)
    return ChainAnalysis(
        leaf_index=leaf.index or 0,
        path=path,
        end=end,
        unverified_issuer=rejected,
        unchecked_links=built.unchecked,
        duplicates=duplicates,
        unrelated=unrelated,
        roots_included=roots_included,
        out_of_order=out_of_order,
    )
