"""How findings name certificates: by position as presented and subject, or by origin."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from cryptography import x509

from service.clientauth.chain import Link
from service.clientauth.dn import shown_name


def subject_of(certificate: x509.Certificate) -> str:
    return shown_name(certificate.subject) or "(empty subject)"


def describe(link: Link) -> str:
    if link.index is None:
        origin = "trust anchor" if link.origin == "anchor" else "configured CA"
        return f"the {origin} {subject_of(link.certificate)}"
    return f"certificate {link.index} ({subject_of(link.certificate)})"


def capitalized(text: str) -> str:
    """``text`` with its first letter in upper case (and the rest as it is), to open a
    sentence."""
    return text[:1].upper() + text[1:]


def sentence_start(link: Link) -> str:
    """``describe`` capitalised, to open a sentence."""
    return capitalized(describe(link))


def date(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Audience:
    """Whose chain the findings are about, and therefore which party and which settings
    their messages and hints name: the client's chain (the sender, ``client_auth.*``) or
    omgate's own server chain (``server.certfile``)."""

    party: Literal["client", "server"]
    sender: str  # who sends the chain, as a sentence names it
    chain_setting: str  # where that chain comes from
    trust_setting: str  # where the anchors it is judged against come from
    renew_leaf: str  # what to do when the leaf expires
    weak_signature_relief: str  # how to accept a weak signature meanwhile ("" when none)

    def replace_ca(self, subject: str) -> str:
        return (f"Replace {subject} with the CA's current certificate, in "
                f"{self.trust_setting} or in {self.chain_setting}.")


CLIENT = Audience(
    party="client", sender="the sender", chain_setting="the chain the sender sends",
    trust_setting="client_auth.trust",
    renew_leaf="The sender must renew its certificate (in Salesforce: create or upload a new "
               "one and select it for the outbound message).",
    weak_signature_relief="client_auth.reject_weak_signatures = false accepts it meanwhile",
)
SERVER = Audience(
    party="server", sender="the server", chain_setting="server.certfile",
    trust_setting="the trust store the check uses (--trust, or the public roots)",
    renew_leaf="Renew the server certificate and install it with its intermediates "
               "(server.certfile).",
    weak_signature_relief="",
)
