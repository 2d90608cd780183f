"""Hostile SOAP bodies of tests/unit/test_soap_parse.py, tests/system/test_soap_parse_system.py
and tests/system/test_server.py."""

from __future__ import annotations


def billion_laughs(levels: int = 10) -> bytes:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, levels)
    ]
    return (f'<?xml version="1.0"?><!DOCTYPE lolz [{"".join(entities)}]>'
            f"<lolz>&lol{levels - 1};</lolz>").encode()


# a DOCTYPE with an external entity: refused before parsing, in-process and live
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<notifications xmlns="http://soap.sforce.com/2005/09/outbound">
<OrganizationId>&xxe;</OrganizationId></notifications></soapenv:Body></soapenv:Envelope>"""
