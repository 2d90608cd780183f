"""Forwarded client facts, sans-IO: PROXY protocol, addresses, certificate headers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import re
import socket
import struct
import time
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from envoy_xfcc import envoy_xfcc, pem, self_signed_with_dns_name, url_pem

from service.clientauth.model import chain_fingerprint
from service.clientauth.presented import PresentedChain
from service.forwarded import (
    NEED_MORE,
    ForwardedCertError,
    ForwardingSettings,
    ProxyProtocolError,
    forwarded_format,
    parse,
    parse_address,
    resolve,
)
from service.forwarded.addresses import client_address
from service.forwarded.certificates import MAX_HEADER_BYTES
from service.forwarded.origin import FORWARDED_KEPT_BYTES, RequestOrigin, forwarded
from service.forwarded.proxy_protocol import V2_SIGNATURE
from service.identity import ORIGIN_KEY, applicable
from service.origin_middleware import ForwardedMiddleware

# -- PROXY protocol ------------------------------------------------------------------------

def v2(command: int, family: int, payload: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(payload)) \
        + payload


def test_proxy_v1_tcp4_tcp6_and_unknown():
    header = parse(b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n\x16\x03\x01")
    assert header.source == ("203.0.113.7", 51234)
    assert header.destination == ("192.0.2.1", 443)
    assert header.length == len(b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n")
    six = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n")
    assert six.source == ("2001:db8::1", 1)
    unknown = parse(b"PROXY UNKNOWN\r\n")
    assert unknown.source is None and unknown.relayed  # a client, just not a named one


def test_proxy_v2_with_tlvs_local_and_ipv6():
    payload = socket.inet_aton("198.51.100.9") + socket.inet_aton("10.0.0.5") + \
        struct.pack("!HH", 40000, 8443) + bytes([0x04, 0x00, 0x03]) + b"abc"
    header = parse(v2(1, 0x11, payload) + b"rest")
    assert header.version == 2
    assert header.source == ("198.51.100.9", 40000)
    assert header.tlvs == ((0x04, b"abc"),)
    assert header.length == 16 + len(payload)
    local = parse(v2(0, 0x00, b""))
    assert local.source is None and not local.relayed  # LOCAL: the proxy's health check
    unspec = parse(v2(1, 0x00, b""))
    assert unspec.source is None and unspec.relayed
    six = ipaddress.IPv6Address("2001:db8::7").packed + ipaddress.IPv6Address("::1").packed
    assert parse(v2(1, 0x21, six + struct.pack("!HH", 5, 6))).source == ("2001:db8::7", 5)


@pytest.mark.parametrize("partial", [b"", b"PRO", b"PROXY TCP4 1.2.3.4", V2_SIGNATURE[:5],
                                     V2_SIGNATURE + b"\x21\x11\x00\x0c" + b"\x00" * 4])
def test_proxy_header_incomplete(partial):
    assert parse(partial) is NEED_MORE


@pytest.mark.parametrize("data", [
    b"\x16\x03\x01\x02\x00",  # a TLS ClientHello, no header
    b"GET / HTTP/1.1\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
    b"PROXY TCP4 2001:db8::1 5.6.7.8 1 1\r\n",
    b"PROXY UDP4 1.2.3.4 5.6.7.8 1 1\r\n",
    b"PROXY TCP4 " + b"1" * 120,
    V2_SIGNATURE + b"\x31\x11\x00\x00",  # version 3
    V2_SIGNATURE + b"\x21\x11\xff\xff",  # oversized payload
    V2_SIGNATURE + b"\x21\x12\x00\x0c" + b"\x00" * 12,  # UDP
])
def test_proxy_header_garbage_is_refused(data):
    with pytest.raises(ProxyProtocolError):
        parse(data)


# -- addresses -----------------------------------------------------------------------------

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))


@pytest.mark.parametrize(("header", "value", "expected"), [
    ("x-forwarded-for", "203.0.113.9", "203.0.113.9"),
    ("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.1.1.1", "203.0.113.9"),  # rightmost
    ("x-forwarded-for", "1.2.3.4, 10.1.1.1", "1.2.3.4"),
    ("forwarded", 'for="[2001:db8::9]:4711";proto=https, for=10.2.2.2', "2001:db8::9"),
    ("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
    ("x-forwarded-for", None, "127.0.0.1"),
    ("x-forwarded-for", "unknown, 10.1.1.1", "127.0.0.1"),  # a garbled hop stops the walk
    ("x-forwarded-for", "10.9.9.9, 10.1.1.1", "10.9.9.9"),  # all proxies: the leftmost
    ("none", "203.0.113.9", "127.0.0.1"),
    ("forwarded", 'for=203.0.113.1;host="x.xfor=198.51.100.7"', "203.0.113.1"),  # quoted
    ("forwarded", "For=198.51.100.1, by=10.1.1.1", "127.0.0.1"),  # a hop without for=
    ("forwarded", 'for="198.51.100.1', "127.0.0.1"),  # unbalanced quotes
])
def test_client_address_walks_from_the_right(header, value, expected):
    peer = parse_address("127.0.0.1")
    assert str(client_address(peer, TRUSTED, header, value)) == expected


def test_ipv4_mapped_addresses_compare_as_ipv4():
    assert parse_address("::ffff:127.0.0.1") == ipaddress.ip_address("127.0.0.1")


# -- certificate headers, built the way each product builds them -----------------------------

def der_b64(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(Encoding.DER)).decode()


@pytest.fixture(scope="module")
def chain(client_pki):
    return tuple(x509.load_pem_x509_certificates(client_pki.cases["valid"].chain.read_bytes()))


def parsed(setting: str, headers: dict[str, str]):
    return forwarded_format(setting).parse({k.lower(): v for k, v in headers.items()})


def test_envoy_xfcc_takes_the_nearest_hop(chain, client_pki):
    leaf, intermediate = chain
    other = x509.load_pem_x509_certificate(client_pki.cases["untrusted"].leaf.read_bytes())
    digest = hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()
    full_chain = quote(pem(leaf, intermediate), safe="")
    nearest = (f'By=spiffe://cluster.local/ns/default/sa/omgate;Hash={digest};'
               f'Cert="{quote(pem(leaf), safe="")}";Chain="{full_chain}";'
               f'Subject="CN=valid.client.test,O=Salesforce-like test";URI=;'
               f'DNS=proxy.example.com;DNS=other.example.com')
    first_hop = f'By=spiffe://edge;Cert="{quote(pem(other), safe="")}"'
    assert parsed("xfcc", {"X-Forwarded-Client-Cert": f"{first_hop},{nearest}"}) == chain
    only_cert = f'Hash={digest};Cert="{quote(pem(leaf), safe="")}";Subject="CN=a\\"b;c,d"'
    assert parsed("xfcc", {"X-Forwarded-Client-Cert": only_cert}) == (leaf,)
    with pytest.raises(ForwardedCertError, match="Hash does not match"):
        parsed("xfcc", {"X-Forwarded-Client-Cert": f'Hash={"0" * 64};Cert="'
                                                   f'{quote(pem(leaf), safe="")}"'})
    with pytest.raises(ForwardedCertError, match="unterminated quote"):
        parsed("xfcc", {"X-Forwarded-Client-Cert": 'Cert="%2D%2D'})
    assert parsed("xfcc", {}) == ()


# A client certificate's DNS name, written unquoted by Envoy after everything else; each
# tries to make the victim's chain look like the nearest hop's.
FORGING_NAMES = [
    'x,Cert="{chain}"',  # a new element: the "nearest hop"
    'x,Hash={hash};Cert="{leaf}";Chain="{chain}"',  # one that passes the Hash check
    '"x",By=spiffe://edge;Cert="{chain}"',  # a name that looks quoted
    'x;Chain="{chain}"',  # a Chain for an Envoy that forwards only Cert
    'x;Hash={hash};Cert="{leaf}"',  # pairs in Envoy's own element
]


@pytest.mark.parametrize("forging_name", FORGING_NAMES)
@pytest.mark.parametrize("details", [("cert", "subject", "uri", "dns"), ("cert", "dns"),
                                     ("dns",)])
def test_xfcc_forged_through_a_certificate_name_is_refused(chain, forging_name, details):
    leaf, _ = chain
    victim_hash = hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()
    attacker = self_signed_with_dns_name(forging_name.format(
        chain=url_pem(*chain), leaf=url_pem(leaf), hash=victim_hash))
    header = envoy_xfcc((attacker,), details)  # what Envoy sends for the attacker
    with pytest.raises(ForwardedCertError, match="after a URI or DNS name"):
        parsed("xfcc", {"X-Forwarded-Client-Cert": header})


def test_xfcc_quoting_rules_and_the_nearest_hop(chain, client_pki):
    from service.forwarded.xfcc import XfccPair, parse_xfcc

    [element] = parse_xfcc(r'Subject="CN=a\"b;c,d=e\\";URI=;DNS=a.example;DNS=b.example')
    assert element.pairs == (XfccPair("subject", 'CN=a"b;c,d=e\\'), XfccPair("uri", ""),
                             XfccPair("dns", "a.example"), XfccPair("dns", "b.example"))
    first, second = parse_xfcc('By=spiffe://edge;Hash=00, by=spiffe://a;by=spiffe://b')
    assert first.value("hash") == "00"
    assert second.values("by") == ("spiffe://a", "spiffe://b")  # one By per proxy URI

    leaf = chain[0]
    other = x509.load_pem_x509_certificate(client_pki.cases["untrusted"].leaf.read_bytes())
    from_envoy = envoy_xfcc(chain, ("cert", "chain"))
    assert parsed("xfcc", {"X-Forwarded-Client-Cert": from_envoy}) == chain
    digest = from_envoy.partition(";")[0].removeprefix("Hash=")
    shouting = from_envoy.replace(f"Hash={digest}", f"HASH={digest.upper()}")
    hops = f'{envoy_xfcc((other,), ("cert", "subject"))}, {shouting}'  # a space after ','
    assert parsed("xfcc", {"X-Forwarded-Client-Cert": hops}) == chain
    quoted = f'Cert="{url_pem(leaf)}";Subject="CN=x,Cert=\\"{url_pem(other)}\\""'
    assert parsed("xfcc", {"X-Forwarded-Client-Cert": quoted}) == (leaf,)
    assert parsed("xfcc", {"X-Forwarded-Client-Cert": "Hash=" + "a" * 64}) == ()


@pytest.mark.parametrize(("header", "reason"), [
    ('Cert="{leaf}"x', "'x' after the closing quote of Cert"),
    ("Hash=ab=cd", "unquoted value of Hash holds '='"),
    ('Hash=a"b"', "unquoted value of Hash holds '\"'"),
    ("Hash=a\\b", "unquoted value of Hash holds '\\\\'"),
    ('Cert="{leaf}";cert="{leaf}"', "element 1 has Cert more than once"),
    ('Hash={hash};Chain="{chain}";Chain="{chain}"', "element 1 has Chain more than once"),
    ("Subject=;Subject=", "element 1 has Subject more than once"),
    ('Cert="%2D%2D', "unterminated quote"),
    ('By=a,Cert="{leaf}', "unterminated quote"),
    ("Cert", "pair 'Cert' has no '='"),
    ("Foo=bar", "key 'Foo' is not one Envoy writes"),
    ('Hash={hash};;Cert="{leaf}"', "an empty pair"),
    ('Cert="{leaf}";', "an empty pair"),
    (',Cert="{leaf}"', "an empty element"),
    ('Cert="{leaf}",', "an empty element"),
    ('Cert=""', "XFCC Cert is empty"),
    ('Cert="{chain}"', "XFCC Cert holds 2 certificates, not one"),
    ('Cert="{leaf}";Chain="{other}"', "Chain does not start with the Cert"),
    ("Hash=xyz;Cert=\"{leaf}\"", "Hash is not a SHA-256 digest"),
    ('Hash={zeros};Cert="{leaf}"', "Hash does not match the certificate"),
    ('URI=;Cert="{leaf}"', "Cert after a URI or DNS name"),
    ('DNS=a,Cert="{leaf}"', "another element after a URI or DNS name"),
])
def test_xfcc_that_cannot_be_read_one_way_only_is_refused(chain, client_pki, header, reason):
    leaf, _ = chain
    other = x509.load_pem_x509_certificates(client_pki.cases["untrusted"].chain.read_bytes())
    value = header.format(leaf=url_pem(leaf), chain=url_pem(*chain), other=url_pem(*other),
                          hash=hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest(),
                          zeros="0" * 64)
    with pytest.raises(ForwardedCertError, match=re.escape(reason)):
        parsed("xfcc", {"X-Forwarded-Client-Cert": value})


def test_aws_alb_passthrough_keeps_plus_and_verify_mode_checks_the_serial(chain):
    leaf, _ = chain
    value = quote(pem(*chain), safe="+=/")  # ALB leaves '+', '=' and '/' as they are
    assert "+" in value or "/" in value
    assert parsed("aws-alb", {"X-Amzn-Mtls-Clientcert": value}) == chain
    verify = {"X-Amzn-Mtls-Clientcert-Leaf": quote(pem(leaf), safe="+=/"),
              "X-Amzn-Mtls-Clientcert-Serial-Number": format(leaf.serial_number, "X"),
              "X-Amzn-Mtls-Clientcert-Subject": leaf.subject.rfc4514_string()}
    assert parsed("aws-alb", verify) == (leaf,)
    with pytest.raises(ForwardedCertError, match="Serial-Number"):
        parsed("aws-alb", {**verify, "X-Amzn-Mtls-Clientcert-Serial-Number": "0BAD"})
    # ALB in one mode never sends the other's header: with both, one is the client's (a
    # passthrough chain it chose, in front of the leaf ALB verified)
    with pytest.raises(ForwardedCertError, match="never both"):
        parsed("aws-alb", {**verify, "X-Amzn-Mtls-Clientcert": value})


def test_pem_header_reads_nginx_apache_and_haproxy(chain):
    leaf, _ = chain
    nginx = quote(pem(leaf), safe="")  # $ssl_client_escaped_cert
    apache = pem(leaf).replace("\n", " ")  # %{SSL_CLIENT_CERT}s, line breaks to spaces
    haproxy = der_b64(leaf)  # %[ssl_c_der,base64]
    for value in (nginx, apache, haproxy, pem(leaf).replace("\n", "\n\t")):
        assert parsed("pem-header:X-SSL-Cert", {"X-SSL-Cert": value}) == (leaf,)
    assert parsed("pem-header:X-SSL-Cert", {"X-SSL-Cert": "(null)"}) == ()
    assert parsed("pem-header:X-SSL-Cert", {}) == ()
    with pytest.raises(ForwardedCertError):
        parsed("pem-header:X-SSL-Cert", {"X-SSL-Cert": "not a certificate"})


def test_traefik_azure_and_rfc9440(chain):
    leaf, intermediate = chain
    traefik = quote(",".join((der_b64(leaf), der_b64(intermediate))), safe="")
    assert parsed("traefik", {"X-Forwarded-Tls-Client-Cert": traefik}) == chain
    assert parsed("azure", {"X-ARR-ClientCert": der_b64(leaf)}) == (leaf,)
    rfc = {"Client-Cert": f":{der_b64(leaf)}:", "Client-Cert-Chain": f":{der_b64(intermediate)}:"}
    assert parsed("rfc9440", rfc) == chain
    with pytest.raises(ForwardedCertError, match="byte sequence"):
        parsed("rfc9440", {"Client-Cert": der_b64(leaf)})


def test_oversized_and_too_many_certificates_are_refused(chain):
    leaf, _ = chain
    with pytest.raises(ForwardedCertError, match="more than"):
        parsed("azure", {"X-ARR-ClientCert": "A" * (MAX_HEADER_BYTES + 1)})
    with pytest.raises(ForwardedCertError, match="certificates, more than"):
        parsed("traefik", {"X-Forwarded-Tls-Client-Cert": ",".join([der_b64(leaf)] * 11)})


def test_a_forwarded_value_seen_again_is_read_once_and_another_never_takes_its_place(
        chain, client_pki):
    """A proxy forwards its sender's certificate on every request: the same value is the
    same chain, read once; a value that differs by one byte (a forged leaf) is read anew."""
    leaf, _ = chain
    pem_format = forwarded_format("pem-header:X-SSL-Cert")
    value = quote(pem(leaf), safe="")
    first = forwarded({"x-ssl-cert": value}, pem_format)
    assert first is not None and first.certificates == (leaf,)
    assert forwarded({"x-ssl-cert": value, "x-other": "x"}, pem_format) is first
    other_leaf = x509.load_pem_x509_certificate(
        client_pki.cases["expired"].leaf.read_bytes())
    other = forwarded({"x-ssl-cert": quote(pem(other_leaf), safe="")}, pem_format)
    assert other is not None and other.certificates == (other_leaf,)
    # one base64 letter of the body, away from the %XX escapes, changed: other DER bytes
    at = next(index for index in range(len(value) // 2, len(value))
              if value[index - 2:index + 1].isalnum())
    tampered = value[:at] + ("A" if value[at] != "A" else "B") + value[at + 1:]
    unreadable = forwarded({"x-ssl-cert": tampered}, pem_format)
    assert unreadable is not first and unreadable is not None
    assert unreadable.certificates != (leaf,)
    # a value larger than what is kept is read for its request alone
    large = {"x-ssl-cert": value + " " * FORWARDED_KEPT_BYTES}
    assert forwarded(large, pem_format) is not forwarded(large, pem_format)
    assert forwarded(large, pem_format).certificates == (leaf,)


def test_unknown_format_setting():
    with pytest.raises(ValueError, match="xfcc"):
        forwarded_format("x-cert")


# -- the origin of a request ---------------------------------------------------------------

def test_only_the_configured_address_header_is_read():
    # The proxy appends to X-Forwarded-For; the client wrote a Forwarded header of its own.
    headers = {"x-forwarded-for": "203.0.113.1", "forwarded": "for=192.0.2.66"}
    proxy = parse_address("10.0.0.2")
    by_xff = resolve(headers, proxy, None, ForwardingSettings(TRUSTED, None))
    assert str(by_xff.client) == "203.0.113.1"
    by_forwarded = resolve(headers, proxy, None, ForwardingSettings(TRUSTED, None, "forwarded"))
    assert str(by_forwarded.client) == "192.0.2.66"
    by_peer = resolve(headers, proxy, None, ForwardingSettings(TRUSTED, None, "none"))
    assert by_peer.client == proxy


def test_headers_after_a_proxy_header_are_the_named_clients(chain):
    """A passthrough balancer cannot add headers: what follows PROXY is the client's."""
    settings = ForwardingSettings(TRUSTED, forwarded_format("azure"))
    headers = {"x-arr-clientcert": der_b64(chain[0]), "x-forwarded-for": "10.9.9.9"}
    balancer, client = parse_address("10.0.0.2"), parse_address("198.51.100.7")
    spoofed = resolve(headers, balancer, client, settings)
    assert spoofed.forwarded_chain is None
    assert spoofed.ignored_headers == ("x-arr-clientcert", "x-forwarded-for")
    assert spoofed.client == client
    inner_proxy = resolve(headers, balancer, parse_address("10.0.0.3"), settings)
    assert inner_proxy.forwarded_chain == PresentedChain((chain[0],))
    assert str(inner_proxy.client) == "10.9.9.9"
    # PROXY UNKNOWN (v1) or UNSPEC (v2): a relayed client, but which one is not said
    unnamed = resolve(headers, balancer, None, settings, relayed=True)
    assert unnamed.forwarded_chain is None and unnamed.client is None
    assert unnamed.ignored_headers == ("x-arr-clientcert", "x-forwarded-for")


def test_untrusted_peers_forwarded_headers_are_dropped_trusted_ones_believed(chain):
    settings = ForwardingSettings(TRUSTED, forwarded_format("azure"))
    headers = {"x-arr-clientcert": der_b64(chain[0]), "x-forwarded-for": "203.0.113.1",
               "content-type": "text/xml"}
    direct = resolve(headers, parse_address("198.51.100.7"), None, settings)
    assert direct.ignored_headers == ("x-arr-clientcert", "x-forwarded-for")
    assert direct.forwarded_chain is None
    assert str(direct.client) == "198.51.100.7"
    proxied = resolve(headers, parse_address("10.0.0.2"), None, settings)
    assert proxied.forwarded_chain == PresentedChain((chain[0],))
    assert str(proxied.client) == "203.0.113.1"
    broken = resolve({"x-arr-clientcert": "!!"}, parse_address("10.0.0.2"), None, settings)
    assert broken.forwarded_chain is not None and not broken.forwarded_chain.certificates
    [unreadable] = broken.forwarded_chain.unreadable
    assert unreadable.der == b"!!" and "X-ARR-ClientCert is not base64" in unreadable.reason


def test_a_forged_leaf_forwarded_after_a_known_one_is_its_own_identity(chain, client_pki):
    """The request's identity (identity.applicable) takes its fingerprint from the chain read
    for that request's own value: a forged leaf after a known one never carries the known
    chain's fingerprint, which keys the decision cache, and each names its format."""
    leaf, _ = chain
    pem_format = forwarded_format("pem-header:X-SSL-Cert")
    forged_leaf = x509.load_pem_x509_certificate(
        client_pki.cases["expired"].leaf.read_bytes())
    identities = []
    for certificate in (leaf, forged_leaf, leaf):
        presented = forwarded({"x-ssl-cert": quote(pem(certificate), safe="")}, pem_format)
        origin = RequestOrigin(None, None, from_trusted_proxy=True,
                               forwarded_chain=presented, forwarded_format="pem-header")
        identities.append(applicable(None, origin, "192.0.2.7:1").identity)
    known, forged, again = identities
    assert known.chain_sha256 == chain_fingerprint((leaf,)) == again.chain_sha256
    assert forged.chain_sha256 == chain_fingerprint((forged_leaf,)) != known.chain_sha256
    assert {identity.forwarded_format for identity in identities} == {"pem-header"}
    assert forged.chain == (forged_leaf,) and forged.source == "forwarded"


def _origin_of(raw_headers: list[tuple[bytes, bytes]], setting: str) -> RequestOrigin:
    """The origin ForwardedMiddleware gives a request a trusted proxy sent with these
    header lines."""
    seen: list[RequestOrigin] = []

    async def app(scope: dict, _receive: object, _send: object) -> None:
        seen.append(scope["extensions"][ORIGIN_KEY])

    middleware = ForwardedMiddleware(app, ForwardingSettings(TRUSTED, forwarded_format(setting)))
    asyncio.run(middleware({"type": "http", "headers": raw_headers,
                            "client": ("10.0.0.2", 40000), "extensions": {}}, None, None))
    return seen[0]


@pytest.mark.parametrize("setting", ["pem-header:X-SSL-Cert", "traefik", "aws-alb", "rfc9440"])
def test_a_certificate_header_sent_twice_is_not_believed(chain, client_pki, setting):
    """Behind a proxy that adds its header instead of replacing the client's, a client
    could put anyone's public certificate first, where the leaf is read from. A header the
    format reads as one value, sent twice, is an unreadable chain, never a leaf."""
    leaf, _ = chain
    victim = x509.load_pem_x509_certificate(client_pki.cases["expired"].leaf.read_bytes())
    name, value = {
        "pem-header:X-SSL-Cert": (b"x-ssl-cert", lambda c: quote(pem(c), safe="")),
        "traefik": (b"x-forwarded-tls-client-cert", lambda c: quote(der_b64(c), safe="")),
        "aws-alb": (b"x-amzn-mtls-clientcert", lambda c: quote(pem(c), safe="+=/")),
        "rfc9440": (b"client-cert", lambda c: f":{der_b64(c)}:"),
    }[setting]
    once = _origin_of([(name, value(leaf).encode())], setting)
    assert once.forwarded_chain == PresentedChain((leaf,))
    twice = _origin_of([(name, value(victim).encode()), (b"X-Other", b"1"),
                        (name.upper(), value(leaf).encode())], setting)
    assert twice.forwarded_chain is not None and not twice.forwarded_chain.certificates
    [unreadable] = twice.forwarded_chain.unreadable
    assert "more than once" in unreadable.reason and name.decode() in unreadable.reason


def test_a_list_header_may_come_in_several_lines(chain):
    """Envoy's XFCC is a list: two lines are one list, and the nearest hop's is the last."""
    leaf, _ = chain
    element = f'Cert="{url_pem(leaf)}"'
    origin = _origin_of([(b"x-forwarded-client-cert", b"By=spiffe://edge"),
                         (b"x-forwarded-client-cert", element.encode())], "xfcc")
    assert origin.forwarded_chain == PresentedChain((leaf,))


def test_pem_blocks_are_found_in_time_linear_in_the_value():
    """A value of BEGIN lines without an END made the block pattern rescan the rest of
    the value from each one (a second of CPU for 64 KiB)."""
    value = "-----BEGIN CERTIFICATE-----" * (MAX_HEADER_BYTES // 27)
    started = time.process_time()
    with pytest.raises(ForwardedCertError, match="no PEM certificate"):
        parsed("pem-header:X-SSL-Cert", {"X-SSL-Cert": value})
    assert time.process_time() - started < 0.2


def test_without_trusted_proxies_forwarded_headers_are_dropped_and_named():
    """A listener that trusts no proxy believes nobody's forwarded facts: every line of a
    forwarded header (any case, any number of times) is gone from what the app sees, named
    once among the ignored headers, and the client is the TCP peer."""
    seen: list[dict] = []

    async def app(scope: dict, _receive: object, _send: object) -> None:
        seen.append(scope)

    middleware = ForwardedMiddleware(app, ForwardingSettings((), None))
    lines = [(b"X-Forwarded-For", b"203.0.113.9"), (b"content-type", b"text/xml"),
             (b"x-forwarded-for", b"198.51.100.1"), (b"X-SSL-Client-Cert", b"forged"),
             (b"Forwarded", b"for=192.0.2.1")]
    asyncio.run(middleware({"type": "http", "headers": lines,
                            "client": ("10.0.0.2", 40000), "extensions": {}}, None, None))
    [scope] = seen
    origin = scope["extensions"][ORIGIN_KEY]
    assert origin.ignored_headers == ("forwarded", "x-forwarded-for", "x-ssl-client-cert")
    assert scope["headers"] == [(b"content-type", b"text/xml")]
    assert origin.client == origin.peer == parse_address("10.0.0.2")
    assert not origin.from_trusted_proxy and origin.forwarded_chain is None
    assert scope["client"] == ("10.0.0.2", 40000)
