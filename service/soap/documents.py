"""The two answers Salesforce understands: the acknowledgement and a SOAP 1.1 fault."""

from __future__ import annotations

from xml.sax.saxutils import escape

from service.soap.model import OUTBOUND_NS, SOAP_ENV_NS

CONTENT_TYPE = "text/xml; charset=utf-8"
OMGATE_NS = "urn:omgate"
# Fault texts a client reads (omgate probe tells them apart): a refused client certificate,
# and a SOAP Body without a notifications element.
CLIENT_CERT_REFUSED = "Client certificate not accepted."
NOT_NOTIFICATIONS = "not a notifications element"

ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV_NS}">'
    "<soapenv:Body>"
    f'<notificationsResponse xmlns="{OUTBOUND_NS}"><Ack>true</Ack></notificationsResponse>'
    "</soapenv:Body></soapenv:Envelope>\n"
).encode()


def fault(fault_code: str, message: str, correlation_id: str) -> bytes:
    """A SOAP 1.1 Fault; ``fault_code`` is ``Client`` (sender's fault) or ``Server`` (ours)."""
    if fault_code not in ("Client", "Server"):
        raise ValueError(f"fault code must be Client or Server, not {fault_code!r}")
    text = f"{message} (correlation id {correlation_id})"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV_NS}">'
        "<soapenv:Body><soapenv:Fault>"
        f"<faultcode>soapenv:{fault_code}</faultcode>"
        f"<faultstring>{escape(text)}</faultstring>"
        f'<detail><correlationId xmlns="{OMGATE_NS}">{escape(correlation_id)}</correlationId>'
        "</detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>\n"
    ).encode()
