"""A chain drawn as a picture: cards in the order presented, arrows along the path the
engine built, the anchor marked, a gap where an issuer is missing.

This module lays the picture out (positions, colours, labels) from the engine's own
analysis; ``service/console/templates/chain.svg`` draws it as SVG.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Literal

from cryptography import x509

from service.clientauth import ClientIdentity, Decision, Finding, UnreadableCertificate
from service.clientauth.chain import ChainAnalysis, analyse_chain
from service.clientauth.model import Policy, in_presented_order
from service.clientauth.summary import days_left, fingerprint, validity_words
from service.observatory.views import worth_analysing

Tone = Literal["error", "warning", "ok", "missing"]
CARD_WIDTH, CARD_HEIGHT, GAP = 620, 112, 36
LEFT, TOP, BAR_HEIGHT = 20, 20, 10
TEXT_LIMIT = 78  # characters of a name on a card; the whole name is in its tooltip


def _short(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT - 1] + "…"


@dataclass(frozen=True)
class Bar:
    """A validity bar: the span it was valid, and where now is, in pixels."""

    start: float
    end: float
    now: float


@dataclass(frozen=True)
class Card:
    y: int
    tone: Tone
    heading: str  # "certificate 0 (sent first)", "trust anchor", "missing issuer"
    lines: tuple[str, ...]
    tooltip: str
    badges: tuple[str, ...]  # finding codes shown on the card
    bar: Bar | None
    element_id: str

    @property
    def x(self) -> int:
        return LEFT

    @property
    def width(self) -> int:
        return CARD_WIDTH

    @property
    def height(self) -> int:
        return CARD_HEIGHT

    @property
    def dashed(self) -> bool:
        return self.tone == "missing" or self.heading.startswith(("trust anchor", "configured"))


@dataclass(frozen=True)
class Arrow:
    path: str  # SVG path data, from a certificate to its issuer
    apex_x: float  # the curve's rightmost point, half way (a leader joins it to the label)
    apex_y: float
    label_x: float
    label_y: float
    label: str
    upward: bool  # the issuer was sent before the certificate it issued: misordered


@dataclass(frozen=True)
class Picture:
    width: int
    height: int
    cards: tuple[Card, ...]
    arrows: tuple[Arrow, ...]
    caption: str


def _worst(findings: list[Finding]) -> Tone:
    severities = {finding.severity for finding in findings}
    return "error" if "error" in severities else "warning" if "warning" in severities else "ok"


class _Timeline:
    """One time scale for every bar of the picture, with now on it."""

    def __init__(self, certificates: list[x509.Certificate], now: dt.datetime) -> None:
        starts = [c.not_valid_before_utc for c in certificates] + [now]
        ends = [c.not_valid_after_utc for c in certificates] + [now]
        self.first, span = min(starts), (max(ends) - min(starts)).total_seconds()
        self.span = span or 1.0
        self.now = now
        self.left, self.width = LEFT + 16, CARD_WIDTH - 32

    def at(self, moment: dt.datetime) -> float:
        return self.left + self.width * (moment - self.first).total_seconds() / self.span

    def bar(self, certificate: x509.Certificate) -> Bar:
        return Bar(self.at(certificate.not_valid_before_utc),
                   self.at(certificate.not_valid_after_utc), self.at(self.now))


def _certificate_lines(certificate: x509.Certificate, now: dt.datetime) -> tuple[str, ...]:
    validity = validity_words(days_left(certificate, now))
    return (_short(certificate.subject.rfc4514_string()),
            "issuer " + _short(certificate.issuer.rfc4514_string()),
            f"sha256 {fingerprint(certificate)[:32]}…  ·  {validity}")


def _tooltip(certificate: x509.Certificate) -> str:
    return (f"subject {certificate.subject.rfc4514_string()}\n"
            f"issuer {certificate.issuer.rfc4514_string()}\nsha256 {fingerprint(certificate)}")


def _y(slot: int) -> int:
    return TOP + slot * (CARD_HEIGHT + GAP)


LANE_GAP, LABEL_GAP, LABEL_LINE, LABEL_WIDTH = 26, 14, 14, 150


def _bend(lane: int) -> float:
    return LEFT + CARD_WIDTH + 40 + LANE_GAP * lane


def _arrow(child: Card, issuer: Card, lane: int, label_x: float) -> Arrow:
    """A curve on the right of the cards, from the child's middle to the issuer's; its
    label right of every curve (``label_x``), level with its apex."""
    x = LEFT + CARD_WIDTH
    start, end = child.y + CARD_HEIGHT / 2, issuer.y + CARD_HEIGHT / 2
    bend = _bend(lane)
    path = f"M {x} {start} C {bend} {start}, {bend} {end}, {x + 6} {end}"
    apex_x = x + 0.75 * (bend - x) + 0.75  # the cubic's x at its middle (t = 1/2)
    upward = end < start
    label = "issued by (sent earlier)" if upward else "issued by"
    return Arrow(path, apex_x, (start + end) / 2, label_x, (start + end) / 2, label, upward)


def _arrows(pairs: list[tuple[Card, Card]]) -> list[Arrow]:
    """One arrow per step of the path; the labels in a column right of all curves, each at
    least a line below the one above it, so no label covers a curve or another label."""
    label_x = _bend(len(pairs) - 1) + LABEL_GAP if pairs else 0
    arrows = sorted((_arrow(child, issuer, lane, label_x)
                     for lane, (child, issuer) in enumerate(pairs)),
                    key=lambda arrow: arrow.label_y)
    placed: list[Arrow] = []
    for arrow in arrows:
        lowest = placed[-1].label_y + LABEL_LINE if placed else arrow.label_y
        placed.append(dataclasses.replace(arrow, label_y=max(arrow.label_y, lowest)))
    return placed


@dataclass
class _Layout:
    identity: ClientIdentity
    analysis: ChainAnalysis | None
    findings: tuple[Finding, ...]
    now: dt.datetime

    def presented_cards(self, timeline: _Timeline) -> list[Card]:
        leaf_index = self.analysis.path[0].index if self.analysis else None
        # a misordered chain is the client certificate's to fix: its card carries it
        chain_wide = [finding for finding in self.findings
                      if finding.cert is None and finding.code == "chain_out_of_order"]
        cards = []
        for index, item in enumerate(in_presented_order(self.identity.chain,
                                                        self.identity.unreadable)):
            own = [finding for finding in self.findings if finding.cert == index]
            if index == leaf_index:
                own += chain_wide
            badges = [finding.code for finding in own]
            order = "sent first" if index == 0 else f"sent #{index + 1}"
            if isinstance(item, UnreadableCertificate):
                cards.append(Card(_y(index), "error", f"certificate {index} ({order})",
                                  ("unreadable: " + _short(item.reason),
                                   f"sha256 {item.sha256[:32]}…"), item.reason,
                                  tuple(badges), None, f"card-{index}"))
                continue
            role = "client certificate" if index == leaf_index else self._role(index)
            cards.append(Card(_y(index), _worst(own) if own else "ok",
                              f"certificate {index} ({order}) · {role}",
                              _certificate_lines(item, self.now), _tooltip(item),
                              tuple(dict.fromkeys(badges)), timeline.bar(item),
                              f"card-{index}"))
        return cards

    def _role(self, index: int) -> str:
        if self.analysis is None:
            return "not judged"
        if index in self.analysis.unrelated:
            return "not on the path"
        if index in self.analysis.duplicates:
            return "duplicate"
        if index in self.analysis.roots_included:
            return "copy of the trust anchor"
        return "issuer"


def draw_chain(identity: ClientIdentity, decision: Decision, policy: Policy,
               now: dt.datetime) -> Picture:
    """The picture of a presented chain under ``policy`` (its ``decision`` colours it)."""
    if not identity.presented:
        card = Card(_y(0), "missing", "no certificate presented",
                    ("The client sent no certificate.",), "", ("no_client_cert",), None,
                    "card-none")
        return Picture(LEFT * 2 + CARD_WIDTH, _y(1), (card,), (), "No certificate.")
    analysis = analyse_chain(identity.chain, policy.anchors, policy.known_cas) \
        if worth_analysing(identity) and not identity.unreadable else None
    extra = [link.certificate for link in analysis.path if link.index is None] \
        if analysis else []
    timeline = _Timeline(list(identity.chain) + extra, now)
    layout = _Layout(identity, analysis, decision.findings, now)
    cards = layout.presented_cards(timeline)
    arrows: list[Arrow] = []
    if analysis is not None:
        cards, arrows = _path(analysis, cards, timeline, now)
    height = max(card.y for card in cards) + CARD_HEIGHT + TOP
    width = int(_bend(max(len(arrows) - 1, 0)) + LABEL_GAP + LABEL_WIDTH)
    caption = _caption(analysis, identity)
    return Picture(width, height, tuple(cards), tuple(arrows), caption)


def _path(analysis: ChainAnalysis, cards: list[Card], timeline: _Timeline,
          now: dt.datetime) -> tuple[list[Card], list[Arrow]]:
    """Cards for the path's certificates that were not presented (anchor, configured), a
    gap card for a missing issuer, and an arrow for every step of the path."""
    by_index = {int(card.element_id.split("-")[1]): card for card in cards}
    slot = len(cards)
    path_cards: list[Card] = []
    for link in analysis.path:
        index = link.index
        if index is None and link.origin == "anchor" and analysis.roots_included:
            index = analysis.roots_included[0]  # the anchor was sent too: point at its copy
        if index is not None:
            path_cards.append(by_index[index])
            continue
        heading = "trust anchor (client_auth.trust)" if link.origin == "anchor" else \
            "configured intermediate (client_auth.trust)"
        card = Card(_y(slot), "ok", heading, _certificate_lines(link.certificate, now),
                    _tooltip(link.certificate), (), timeline.bar(link.certificate),
                    f"card-{link.origin}-{slot}")
        slot += 1
        cards.append(card)
        path_cards.append(card)
    if analysis.anchored:
        last = path_cards[-1]
        marked = Card(last.y, last.tone, last.heading + " ⚓ anchor", last.lines,
                      last.tooltip, last.badges, last.bar, last.element_id)
        cards[cards.index(last)] = marked
        path_cards[-1] = marked
    elif analysis.end in ("issuer_not_found", "bad_signature"):
        wanted = analysis.path[-1].certificate.issuer.rfc4514_string()
        gap = Card(_y(slot), "missing", "missing issuer: neither sent nor trusted",
                   (_short(wanted), "the path stops here"), wanted,
                   ("missing_intermediate",) if len(analysis.path) == 1 else (), None,
                   "card-missing")
        cards.append(gap)
        path_cards.append(gap)
    return cards, _arrows(list(itertools.pairwise(path_cards)))


def _caption(analysis: ChainAnalysis | None, identity: ClientIdentity) -> str:
    if analysis is None:
        return "A presented certificate cannot be read; nothing behind it is judged."
    order = " → ".join(str(link.index) if link.index is not None else link.origin
                       for link in analysis.path)
    sent = len(identity.chain) + len(identity.unreadable)
    text = f"{sent} certificate(s) sent; the path the engine built: {order}"
    if analysis.anchored:
        return text + ", ending at a trust anchor."
    return text + f" (it ends: {analysis.end.replace('_', ' ')})."
