"""When each sender's certificates expire, as a picture: one row per certificate of every
chain that sent messages or was accepted, a bar from its start to its end on one time
line, now marked, the next 30 days shaded, and the endpoints that pin a client certificate
named on its row: the sender's rotation breaks them, and this shows it weeks ahead.

This module lays the timeline out; ``service/console/templates/expiry.svg`` draws it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

from service.clientauth import Policy
from service.clientauth.summary import days_left, fingerprint
from service.inbox.chains import NO_CERTIFICATE, ChainRecord
from service.observatory.views import leaf_of, record_identity

Tone = Literal["expired", "soon", "ok"]
# Each row is its name and expiry on a line, its bar under them across the whole width: no
# label shares a line with a bar, and a phone can shrink the picture to its width.
WIDTH, BAR_LEFT, BAR_RIGHT = 520, 8, 512
AXIS_TOP, ROW_HEIGHT = 40, 54
PINNED_LIMIT = 60  # characters naming where a certificate is pinned
BEFORE, AFTER = dt.timedelta(days=30), dt.timedelta(days=365)  # the time line around now
SOON = dt.timedelta(days=30)
MAX_ROWS = 30  # certificates drawn at most; the chains left out are counted
NAME_LIMIT = 44  # characters of a name on a row; the whole subject is in its tooltip


def _short(text: str, limit: int = NAME_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def display_name(certificate: x509.Certificate) -> str:
    """Its common name, or its whole subject when it has none."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else certificate.subject.rfc4514_string()
    return _short(value if isinstance(value, str) else value.decode("latin-1"))


@dataclass(frozen=True)
class ExpiryRow:
    y: float
    chain_sha256: str
    name: str
    role: str  # "client certificate", or "issuer" for a CA certificate the chain carried
    not_after: dt.datetime
    days_left: int
    tone: Tone
    bar_start: float
    bar_end: float
    runs_on: bool  # it ends after the time line does
    pinned_on: tuple[str, ...]  # where a pin names it (client certificates only)
    tooltip: str
    sha256: str
    first_of_chain: bool

    @property
    def when(self) -> str:
        """When it expires, and where it is pinned."""
        moment = self.not_after.strftime("%Y-%m-%d")
        when = (f"expired {-self.days_left} days ago ({moment})" if self.days_left < 0
                else f"expires in {self.days_left} days ({moment})")
        if not self.pinned_on:
            return when
        return f"{when} · pinned on {_short(', '.join(self.pinned_on), PINNED_LIMIT)}"


@dataclass(frozen=True)
class Tick:
    position: float
    label: str  # empty: a tick without a label


@dataclass(frozen=True)
class ExpiryTimeline:
    rows: tuple[ExpiryRow, ...]
    ticks: tuple[Tick, ...]
    now_x: float
    soon_x: float
    height: int
    chains_left_out: int
    width: int = WIDTH
    row_height: int = ROW_HEIGHT
    bar_left: int = BAR_LEFT
    bar_right: int = BAR_RIGHT
    axis_top: int = AXIS_TOP


class _Scale:
    def __init__(self, now: dt.datetime) -> None:
        self.start, self.end = now - BEFORE, now + AFTER

    def at(self, moment: dt.datetime) -> float:
        clamped = min(max(moment, self.start), self.end)
        share = (clamped - self.start) / (self.end - self.start)
        return BAR_LEFT + (BAR_RIGHT - BAR_LEFT) * share

    def months(self) -> list[Tick]:
        month = self.start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        ticks = []
        while month <= self.end:
            if month >= self.start:
                label = month.strftime("%Y-%m") if month.month % 3 == 1 else ""
                ticks.append(Tick(self.at(month), label))
            month = (month + dt.timedelta(days=32)).replace(day=1)
        return ticks


def _is_sender(record: ChainRecord) -> bool:
    return record.chain_sha256 != NO_CERTIFICATE and (record.messages > 0
                                                     or record.outcome == "accept")


def _certificates(record: ChainRecord) -> list[tuple[x509.Certificate, str]]:
    """The client certificate first, then the other certificates it was sent with."""
    identity = record_identity(record)
    leaf = leaf_of(identity)
    if leaf is None:
        return []
    others = [c for c in identity.chain if fingerprint(c) != fingerprint(leaf)]
    unique = {fingerprint(c): c for c in others}
    return [(leaf, "client certificate"), *((c, "issuer") for c in unique.values())]


def _tone(left: int) -> Tone:
    return "expired" if left < 0 else "soon" if left <= SOON.days else "ok"


def expiry_timeline(records: Iterable[ChainRecord], pins: Mapping[str, Policy],
                    now: dt.datetime) -> ExpiryTimeline:
    """The timeline of the senders among ``records``, soonest expiry first. ``pins``: the
    policies in force, by where they apply (the listener, an endpoint's path)."""
    scale = _Scale(now)
    chains = [(record, certificates) for record in records if _is_sender(record)
              if (certificates := _certificates(record))]
    chains.sort(key=lambda chain: chain[1][0][0].not_valid_after_utc)
    rows: list[ExpiryRow] = []
    left_out = 0
    for index, (record, certificates) in enumerate(chains):
        if len(rows) + len(certificates) > MAX_ROWS:  # those left out expire later
            left_out = len(chains) - index
            break
        for position, (certificate, role) in enumerate(certificates):
            left = days_left(certificate, now)
            pinned = tuple(where for where, policy in pins.items()
                           if role == "client certificate"
                           and any(pin.matches(certificate) for pin in policy.pins))
            sha256 = fingerprint(certificate)
            rows.append(ExpiryRow(
                y=AXIS_TOP + len(rows) * ROW_HEIGHT, chain_sha256=record.chain_sha256,
                name=display_name(certificate), role=role,
                not_after=certificate.not_valid_after_utc, days_left=left, tone=_tone(left),
                bar_start=scale.at(certificate.not_valid_before_utc),
                bar_end=scale.at(certificate.not_valid_after_utc),
                runs_on=certificate.not_valid_after_utc > scale.end, pinned_on=pinned,
                tooltip=(f"subject {certificate.subject.rfc4514_string()}\n"
                         f"issuer {certificate.issuer.rfc4514_string()}\nsha256 {sha256}"),
                sha256=sha256, first_of_chain=position == 0))
    return ExpiryTimeline(tuple(rows), tuple(scale.months()), scale.at(now),
                          scale.at(now + SOON), AXIS_TOP + len(rows) * ROW_HEIGHT + 8,
                          left_out)
