"""One typed configuration, loaded from TOML and ``OMGATE_<SECTION>__<KEY>`` variables.

Every key is declared once, as a field of its section's dataclass:
``name: type = key(parser, default)``. The parser says what the key expects and
returns the field's type (mypy checks they agree); the loader walks the fields.
Errors name the key, where the value came from and what was expected, so a bad
deploy fails at start with one readable line.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar, cast, get_args
from urllib.parse import urlsplit

from service.clientauth import (
    MODES,
    DistinguishedName,
    DnSyntaxError,
    Mode,
    Pin,
    PinSyntaxError,
    parse_dn,
    parse_pin,
)
from service.dsn import MASK, mask_dsn, reads_two_ways
from service.envtext import EnvText
from service.forwarded import (
    CLIENT_ADDRESS_HEADERS,
    ClientAddressHeader,
    ForwardedFormat,
    Network,
    format_address,
    forwarded_format,
)

ENV_PREFIX = "OMGATE_"
CONFIG_VARIABLE = ENV_PREFIX + "CONFIG"
# Where `omgate` looks for its configuration when neither --config nor $OMGATE_CONFIG
# names one: the project layout `omgate init` writes, then the system-wide file.
CONFIG_SEARCH_PATHS = (Path("config/omgate.toml"), Path("/etc/omgate/omgate.toml"))
SYSTEM_STATE_FOLDER = Path("/var/lib/omgate")
# server.max_header_count's default: header lines; nginx and Go refuse past about as many
DEFAULT_MAX_HEADER_COUNT = 100


class ConfigError(Exception):
    """A configuration value that cannot be used; the message names key and source."""


BUILT_IN_DEFAULT = "built-in default"


# ---------------------------------------------------------------------------
# Values (the few that parsers make)


@dataclass(frozen=True)
class BindAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return str(format_address((self.host, self.port)))


@dataclass(frozen=True)
class WebhookHeader:
    """A header sent with every webhook request; its value may name environment variables."""

    name: str
    value: EnvText


# ---------------------------------------------------------------------------
# Key parsers. Each takes the raw TOML value (or an environment string already
# decoded by `Key.decode_env`) and the config folder, and returns the typed
# value or raises ValueError saying what was expected.

T = TypeVar("T")
Word = TypeVar("Word", bound=str)
Parser = Callable[[Any, Path], T]


def _string(value: Any, _base: Path) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def _positive_int(value: Any, _base: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("a positive whole number")
    return value


# The most seconds any setting may say: a deadline, a lease or a retry's delay is added to
# the time now, and nan or inf would turn a deadline off.
MAX_SECONDS = 30 * 86400


def _seconds(value: Any, *, zero_allowed: bool, expected: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value > MAX_SECONDS
            or value < 0 or (value == 0 and not zero_allowed)):
        raise ValueError(f"{expected}, at most 30 days ({MAX_SECONDS})")
    return float(value)


def _positive_seconds(value: Any, _base: Path) -> float:
    return _seconds(value, zero_allowed=False, expected="a positive number of seconds")


def _non_negative_int(value: Any, _base: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("a whole number, 0 or more")
    return value


def _non_negative_seconds(value: Any, _base: Path) -> float:
    return _seconds(value, zero_allowed=True, expected="a number of seconds, 0 or more")


def _boolean(value: Any, _base: Path) -> bool:
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _word(value: Any, words: tuple[Word, ...]) -> Word | None:
    """``value`` as the one of ``words`` it is (typed as their ``Literal``), else None."""
    return next((word for word in words if isinstance(value, str) and value == word), None)


def _one_of(allowed: tuple[Word, ...]) -> Parser[Word]:
    """One of a ``Literal`` type's words (``allowed`` is its ``get_args``)."""

    def parse(value: Any, _base: Path) -> Word:
        word = _word(value, allowed)
        if word is None:
            raise ValueError("one of " + ", ".join(allowed))
        return word

    return parse


def _path(value: Any, base: Path) -> Path:
    text = _string(value, base)
    if not text:
        raise ValueError("a file path")
    return (base / text).resolve() if not Path(text).is_absolute() else Path(text)


def _keyword_or_path(keywords: tuple[Word, ...]) -> Parser[Word | Path]:
    def parse(value: Any, base: Path) -> Word | Path:
        word = _word(value, keywords)
        if word is not None:
            return word
        try:
            return _path(value, base)
        except ValueError:
            choices = " or ".join(f'"{word}"' for word in keywords)
            raise ValueError(f"{choices} or a file path") from None

    return parse


def _host_name(value: Any, _base: Path) -> str:
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise ValueError('host names like "omgate.example.com" or "*.example.com"')
    return value.lower().rstrip(".")


def _pin(value: Any, _base: Path) -> Pin:
    if not isinstance(value, str):
        raise ValueError('pins like "sha256:<hex>" or "spki:<base64>"')
    try:
        return parse_pin(value)
    except PinSyntaxError as error:
        raise ValueError(str(error)) from None


def _optional_dn(value: Any, _base: Path) -> DistinguishedName | None:
    if value == "":
        return None
    if not isinstance(value, str):
        raise ValueError('a distinguished name, like "CN=a,O=b" or "/C=US/O=b/CN=a"')
    try:
        return parse_dn(value)
    except DnSyntaxError as error:
        raise ValueError(f"a distinguished name ({error})") from None


def _network(value: Any, _base: Path) -> Network:
    expected = 'networks like "10.0.0.0/8", "192.0.2.7" or "2001:db8::/32"'
    if not isinstance(value, str):
        raise ValueError(expected)
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(expected) from None


def _forwarded_cert(value: Any, _base: Path) -> ForwardedFormat | None:
    if value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("a string")
    return forwarded_format(value)


def _webhook_url(value: Any, _base: Path) -> str:
    expected = 'an http:// or https:// URL, or ""'
    if not isinstance(value, str):
        raise ValueError(expected)
    if not value:
        return value
    if reads_two_ways(value):
        raise ValueError(f"{expected} that reads one way only: a port that is a number, and "
                         'in a user name or password "/", "?", "#" and "@" percent-encoded '
                         "(%2F, %3F, %23, %40)")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(expected)
    return value


_HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _webhook_headers(value: Any, _base: Path) -> tuple[WebhookHeader, ...]:
    expected = 'a table of header names and values, like { Authorization = "Bearer ${ENV:TOKEN}" }'
    if not isinstance(value, dict):
        raise ValueError(expected)
    headers = []
    for name, text in value.items():
        if not _HTTP_TOKEN.fullmatch(name):
            raise ValueError(f"{expected} ({name!r} is not a header name)")
        if not isinstance(text, str) or any(ch in text for ch in "\r\n\0"):
            raise ValueError(f"{expected} (the value of {name} is not one line of text)")
        try:
            headers.append(WebhookHeader(name, EnvText.parse(text)))
        except ValueError as error:
            raise ValueError(f"{expected} ({name}: {error})") from None
    return tuple(headers)


def _handler(value: Any, _base: Path) -> str:
    expected = '"module:function", or ""'
    if not isinstance(value, str):
        raise ValueError(expected)
    module, sep, function = value.partition(":")
    if value and not (sep and module and function.isidentifier()
                      and all(part.isidentifier() for part in module.split("."))):
        raise ValueError(expected)
    return value


def _optional_path(value: Any, base: Path) -> Path | None:
    return None if value in ("", None) else _path(value, base)


def _list_of(item: Parser[T]) -> Parser[tuple[T, ...]]:
    def parse(value: Any, base: Path) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise ValueError("a list")
        return tuple(item(element, base) for element in value)

    return parse


def parse_bind(value: Any, _base: Path) -> BindAddress:
    """Parse ``host:port`` (``[v6]:port`` for IPv6); the host may be a name."""
    expected = 'an address like "127.0.0.1:8443" or "[::1]:8443"'
    if not isinstance(value, str):
        raise ValueError(expected)
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(expected)
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(expected)
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(expected) from None
    elif ":" in host:
        raise ValueError(expected + " (IPv6 addresses go in brackets)")
    return BindAddress(host, int(port_text))


def _optional_bind(value: Any, base: Path) -> BindAddress | None:
    return None if value == "" else parse_bind(value, base)


SALESFORCE_ID_LENGTHS = (15, 18)


def _salesforce_id(value: Any, _base: Path) -> str:
    if not (isinstance(value, str) and value.isalnum() and value.isascii()) or (
        len(value) not in SALESFORCE_ID_LENGTHS
    ):
        raise ValueError("Salesforce IDs of 15 or 18 letters and digits")
    return value


def _endpoint_path(value: Any, base: Path) -> str:
    text = _string(value, base)
    if not text.startswith("/") or any(ch.isspace() for ch in text):
        raise ValueError('a URL path starting with "/", like "/salesforce/outbound"')
    return text


def _relative_sqlite(value: Any) -> bool:
    return (isinstance(value, str) and value.startswith("sqlite:///")
            and not Path(value[len("sqlite:///"):]).is_absolute())


def _inbox_url(value: Any, base: Path) -> str:
    """Resolve a relative SQLite path against the config folder; PostgreSQL URLs as they are."""
    text = _string(value, base)
    expected = ('"sqlite:///relative/path.db", "sqlite:////absolute/path.db" or '
                '"postgresql://user@host/database"')
    if text.startswith(("postgresql://", "postgres://")) and len(text.split("://")[1]) > 0:
        if not mask_dsn(text).readable:
            raise ValueError(expected + " that libpq can read")
        return text
    prefix = "sqlite:///"
    if not text.startswith(prefix) or len(text) == len(prefix):
        raise ValueError(expected)
    path = Path(text[len(prefix) :])
    return prefix + str(path if path.is_absolute() else (base / path).resolve())


def default_state_folder(environ: Mapping[str, str], is_root: bool | None = None) -> Path:
    """Where omgate keeps its data when the configuration does not say: systemd's
    StateDirectory= folder, else /var/lib/omgate for root, else the user's XDG state
    folder (~/.local/state/omgate)."""
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0 if is_root is None else is_root:
        return SYSTEM_STATE_FOLDER
    home = Path(environ.get("HOME") or Path.home())
    return Path(environ.get("XDG_STATE_HOME") or home / ".local" / "state") / "omgate"


def default_inbox_url(environ: Mapping[str, str]) -> str:
    return f"sqlite:///{default_state_folder(environ) / 'inbox.db'}"


# ---------------------------------------------------------------------------
# Keys


EnvKind = Literal["string", "int", "float", "bool", "json"]  # how a variable's text is decoded
_KEY = "omgate.key"  # a field's metadata: the Key it is
_KEYS_OF = "omgate.keys_of"  # a field's metadata: the dataclass whose keys it holds


class DataclassInstance(Protocol):
    """A dataclass, as ``dataclasses.fields`` takes it (typeshed's own is private)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


Section = TypeVar("Section", bound=DataclassInstance)


@dataclass(frozen=True)
class Key:
    """How a key is read: its parser, and its built-in default as TOML writes it (None: the
    key is required), which the parser reads like any other value."""

    parse: Parser[Any]
    default: Any
    env_kind: EnvKind = "string"
    may_hold_password: bool = False  # then an error shows the value through mask_dsn
    # a default that depends on the environment (the user, systemd's folders), instead
    default_from: Callable[[Mapping[str, str]], str] | None = None

    def builtin_default(self, environ: Mapping[str, str]) -> Any:
        return self.default if self.default_from is None else self.default_from(environ)

    def shown(self, raw: Any) -> Any:
        """The raw value as an error message may show it: a table's values (headers that
        may carry tokens) are masked, a URL's or connection string's password too."""
        if not self.may_hold_password:
            return raw
        if isinstance(raw, dict):
            return dict.fromkeys(raw, MASK)
        return mask_dsn(raw).shown if isinstance(raw, str) else raw

    def decode_env(self, text: str) -> Any:
        try:
            match self.env_kind:
                case "int":
                    return int(text)
                case "float":
                    return float(text)
                case "bool":
                    lowered = text.strip().lower()
                    if lowered in ("true", "1", "yes"):
                        return True
                    if lowered in ("false", "0", "no"):
                        return False
                    return text
                case "json":
                    return json.loads(text)
        except ValueError:
            return text
        return text


def key(parse: Parser[T], default: Any, env_kind: EnvKind = "string", *,
        may_hold_password: bool = False,
        default_from: Callable[[Mapping[str, str]], str] | None = None) -> T:
    """A key, declared as its section's field ``name: T = key(parser, default)``. The field's
    own default is what the parser makes of ``default``; it has none when the key is required
    (``default`` None) or its default is known only at load (``default_from``)."""
    metadata = {_KEY: Key(parse, default, env_kind, may_hold_password, default_from)}
    if default is None or default_from is not None:
        return cast(T, field(metadata=metadata))
    # no built-in default names a file, so no folder is needed to read one
    return field(default=parse(default, Path()), metadata=metadata)


def list_key(item: Parser[T], *default: str) -> tuple[T, ...]:
    """A key whose value is a list (a JSON list in a variable) of what ``item`` parses."""
    return key(_list_of(item), list(default), "json")


def keys_of(section: type[Section]) -> Section:
    """A field holding a dataclass whose keys belong to the section declaring the field."""
    return field(default=section(), metadata={_KEYS_OF: section})


def section_keys(section: type[DataclassInstance]) -> dict[str, Key]:
    """The keys of a section's dataclass, in the order they are declared, read and listed."""
    keys: dict[str, Key] = {}
    for declared in dataclasses.fields(section):
        if _KEY in declared.metadata:
            keys[declared.name] = declared.metadata[_KEY]
        elif _KEYS_OF in declared.metadata:
            keys.update(section_keys(declared.metadata[_KEYS_OF]))
    return keys


def _build(section: type[Section], values: Mapping[str, Any], **others: Any) -> Section:
    """The section's dataclass from its keys' parsed values; ``others`` are its fields that
    are not keys."""
    arguments = dict(others)
    for declared in dataclasses.fields(section):
        if _KEY in declared.metadata:
            arguments[declared.name] = values[declared.name]
        elif _KEYS_OF in declared.metadata:
            arguments[declared.name] = _build(declared.metadata[_KEYS_OF], values)
    return section(**arguments)


# ---------------------------------------------------------------------------
# The sections and their keys


EventLoop = Literal["auto", "uvloop", "asyncio"]  # server.event_loop
EVENT_LOOPS: tuple[EventLoop, ...] = ("auto", "uvloop", "asyncio")


@dataclass(frozen=True)
class ServerConfig:
    bind: tuple[BindAddress, ...] = list_key(parse_bind, "127.0.0.1:8443")
    # required by the TLS listeners of bind (Config.server_identity)
    certfile: Path | None = key(_optional_path, "")
    keyfile: Path | None = key(_optional_path, "")
    plain_bind: tuple[BindAddress, ...] = list_key(parse_bind)
    health_bind: BindAddress | None = key(_optional_bind, "")
    public_names: tuple[str, ...] = list_key(_host_name, "localhost")
    trusted_proxies: tuple[Network, ...] = list_key(_network)
    client_address_header: ClientAddressHeader = key(_one_of(CLIENT_ADDRESS_HEADERS),
                                                     "x-forwarded-for")
    proxy_protocol: bool = key(_boolean, False, "bool")
    allowed_client_networks: tuple[Network, ...] = list_key(_network)
    max_body_bytes: int = key(_positive_int, 10 * 1024 * 1024, "int")
    max_buffered_bytes: int = key(_positive_int, 64 * 1024 * 1024, "int")
    max_buffered_bytes_per_client: int = key(_positive_int, 16 * 1024 * 1024, "int")
    max_connections: int = key(_positive_int, 4096, "int")
    max_connections_per_peer: int = key(_positive_int, 64, "int")
    max_header_count: int = key(_positive_int, DEFAULT_MAX_HEADER_COUNT, "int")
    workers: int = key(_non_negative_int, 0, "int")
    event_loop: EventLoop = key(_one_of(EVENT_LOOPS), "auto")
    handshake_timeout: float = key(_positive_seconds, 10, "float")
    request_timeout: float = key(_positive_seconds, 60, "float")
    write_timeout: float = key(_positive_seconds, 10, "float")
    idle_timeout: float = key(_positive_seconds, 15, "float")
    read_timeout: float = key(_positive_seconds, 30, "float")
    shutdown_timeout: float = key(_positive_seconds, 30, "float")
    drain_seconds: float = key(_non_negative_seconds, 0, "float")
    reload_check_seconds: float = key(_non_negative_seconds, 60, "float")
    # the console (service/console/); None: off
    admin_bind: BindAddress | None = key(_optional_bind, "")


@dataclass(frozen=True)
class PolicyRules:
    """The ``[client_auth]`` keys an endpoint may override (everything but the listener's)."""

    trust: tuple[Path, ...] = list_key(_path)
    trust_intermediates: bool = key(_boolean, False, "bool")
    verify_depth: int = key(_non_negative_int, 2, "int")
    pins: tuple[Pin, ...] = list_key(_pin)
    pin_files: tuple[Path, ...] = list_key(_path)
    issuer_dn: DistinguishedName | None = key(_optional_dn, "")
    subject_dn: DistinguishedName | None = key(_optional_dn, "")
    allowed_names: tuple[str, ...] = list_key(_host_name)
    require_client_auth_eku: bool = key(_boolean, False, "bool")
    crl_files: tuple[Path, ...] = list_key(_path)
    clock_skew_seconds: int = key(_non_negative_int, 300, "int")
    expiry_warning_days: int = key(_non_negative_int, 30, "int")
    reject_weak_signatures: bool = key(_boolean, True, "bool")


CaNamesKeyword = Literal["none", "anchors"]  # advertise_ca_names, when not a file
CA_NAMES_KEYWORDS: tuple[CaNamesKeyword, ...] = get_args(CaNamesKeyword)
RejectWith = Literal["http", "handshake"]
REJECT_WITH: tuple[RejectWith, ...] = get_args(RejectWith)


@dataclass(frozen=True)
class ClientAuthConfig:
    mode: Mode = key(_one_of(MODES), "request")
    advertise_ca_names: CaNamesKeyword | Path = key(_keyword_or_path(CA_NAMES_KEYWORDS), "none")
    reject_with: RejectWith = key(_one_of(REJECT_WITH), "http")
    forwarded_cert: ForwardedFormat | None = key(_forwarded_cert, "")
    # the policy rules, keys of [client_auth] too; an [endpoints.client_auth] table may
    # override any of them
    rules: PolicyRules = keys_of(PolicyRules)


@dataclass(frozen=True)
class SalesforceConfig:
    organization_ids: tuple[str, ...] = list_key(_salesforce_id)


@dataclass(frozen=True)
class EndpointConfig:
    path: str = key(_endpoint_path, None)
    wsdl: Path | None = key(_optional_path, "")
    action_ids: tuple[str, ...] = list_key(_salesforce_id)
    client_auth: PolicyRules | None = None  # the global rules with this endpoint's overrides


@dataclass(frozen=True)
class InboxConfig:
    url: str = key(_inbox_url, None, may_hold_password=True, default_from=default_inbox_url)
    store_session_id: bool = key(_boolean, False, "bool")
    group_commit: bool = key(_boolean, True, "bool")
    pool_size: int = key(_positive_int, 10, "int")
    # not a key: a SQLite URL written relative to the configuration's folder: a project's own
    # layout (`omgate init`'s ../var), whose folder omgate serve may create
    relative: bool = False


@dataclass(frozen=True)
class DeliveryConfig:
    webhook_url: str = key(_webhook_url, "", may_hold_password=True)
    webhook_headers: tuple[WebhookHeader, ...] = key(_webhook_headers, {}, "json",
                                                     may_hold_password=True)
    webhook_ca: Path | None = key(_optional_path, "")
    webhook_client_cert: Path | None = key(_optional_path, "")
    webhook_client_key: Path | None = key(_optional_path, "")
    handler: str = key(_handler, "")
    timeout: float = key(_positive_seconds, 10, "float")
    max_attempts: int = key(_positive_int, 12, "int")
    retry_base_seconds: float = key(_positive_seconds, 2, "float")
    retry_max_seconds: float = key(_positive_seconds, 3600, "float")
    concurrency: int = key(_positive_int, 4, "int")

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url or self.handler)


@dataclass(frozen=True)
class ChainsConfig:
    """The registry of client chains seen (service/observatory/)."""

    # false: no registry (the console and `omgate chains` show nothing new)
    enabled: bool = key(_boolean, True, "bool")
    # refused or unproven new chains, per worker (accepted ones have a share of their own)
    max_new_per_hour: int = key(_non_negative_int, 1000, "int")
    retention_days: int = key(_positive_int, 90, "int")  # chains not seen for this long are removed


@dataclass(frozen=True)
class AdminConfig:
    token_file: Path | None = key(_optional_path, "")  # the console's token; required off loopback


LogFormat = Literal["auto", "json", "console"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)


@dataclass(frozen=True)
class LoggingConfig:
    format: LogFormat = key(_one_of(LOG_FORMATS), "auto")
    level: LogLevel = key(_one_of(LOG_LEVELS), "info")


@dataclass(frozen=True)
class Config:
    source: Path
    server: ServerConfig
    client_auth: ClientAuthConfig
    salesforce: SalesforceConfig
    endpoints: tuple[EndpointConfig, ...]
    inbox: InboxConfig
    delivery: DeliveryConfig
    logging: LoggingConfig
    chains: ChainsConfig = ChainsConfig()
    admin: AdminConfig = AdminConfig()
    # where each value came from, by "section.key" ("endpoints" for the [[endpoints]] list):
    # "environment variable OMGATE_...", the file, or BUILT_IN_DEFAULT
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def origin(self, section: str, name: str = "") -> str:
        """Where ``[section] name`` was set: an environment variable, the file, or
        BUILT_IN_DEFAULT. ``name`` may go on after its key ("webhook_headers Authorization");
        every [[endpoints]] table comes from one place."""
        key = section if section == "endpoints" or not name else f"{section}.{name.split()[0]}"
        return self.origins.get(key, str(self.source))

    def error(self, section: str, name: str, problem: str) -> ConfigError:
        """An error about the value of ``[section] name``, naming where it was set, as the
        type errors of load_config do: ``<where>: [section] name: <problem>``. A value that
        was not set is named in the file, as the built-in default."""
        where = self.origin(section, name)
        label = f"[[endpoints]] {name}" if section == "endpoints" else f"[{section}] {name}"
        if where == BUILT_IN_DEFAULT:
            where, label = str(self.source), f"{label} (not set: its built-in default)"
        return ConfigError(f"{where}: {label}: {problem}")

    def server_identity(self) -> tuple[Path, Path]:
        """[server] certfile and keyfile, which the TLS listeners of [server] bind need (other
        commands, such as inspect or inbox, do without them)."""
        server = self.server
        if server.certfile is None or server.keyfile is None:
            missing = [name for name, path in (("certfile", server.certfile),
                                               ("keyfile", server.keyfile)) if path is None]
            problem = ("required by the TLS listeners of [server] bind (the server "
                       "certificate, leaf first, and its private key; `omgate pki dev` writes "
                       "development ones)")
            if len(missing) == 1:
                raise self.error("server", missing[0], problem)
            raise ConfigError(f"{self.source}: [server] certfile and keyfile: {problem}")
        return server.certfile, server.keyfile


# The tables of the file, in the order they are read and listed in errors.
SECTIONS: Mapping[str, type[DataclassInstance]] = {
    "server": ServerConfig,
    "client_auth": ClientAuthConfig,
    "salesforce": SalesforceConfig,
    "inbox": InboxConfig,
    "delivery": DeliveryConfig,
    "chains": ChainsConfig,
    "admin": AdminConfig,
    "logging": LoggingConfig,
}
# Read from the declarations above, never written by hand.
SCHEMA: Mapping[str, Mapping[str, Key]] = {
    name: section_keys(section) for name, section in SECTIONS.items()}
RULE_KEYS: Mapping[str, Key] = section_keys(PolicyRules)
LISTENER_ONLY_KEYS = tuple(name for name in SCHEMA["client_auth"] if name not in RULE_KEYS)
ENDPOINT_SCHEMA: Mapping[str, Key] = section_keys(EndpointConfig)

DEFAULT_ENDPOINTS: list[dict[str, Any]] = [{"path": "/salesforce/outbound"}]


# ---------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class _Source:
    """Where a raw value came from, for error messages."""

    description: str
    raw: Any = field(repr=False)


def _fail(where: str, key: str, expected: str, got: Any) -> ConfigError:
    return ConfigError(f"{where}: {key}: expected {expected}, got {got!r}")


def _parse_key(key: Key, source: _Source, label: str, base: Path) -> Any:
    try:
        return key.parse(source.raw, base)
    except ValueError as error:
        raise _fail(source.description, label, str(error), key.shown(source.raw)) from None


_TABLE_HEADER = re.compile(r"\s*\[\[?([^\[\]]+)\]\]?\s*(?:#.*)?$")
_KEY_LINE = re.compile(r"\s*([A-Za-z0-9_\-\"'. ]+?)\s*=")


def _dotted(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in text.split("."))


@dataclass(frozen=True)
class _Lines:
    """The configuration file's lines, to say on which one a key is: tomllib reports the
    position of a syntax error, but not where a key it read was written. A plain scan of
    table headers and ``key =`` lines (a multi-line string could fool it; it only points)."""

    lines: tuple[str, ...] = ()

    def line_of(self, table: tuple[str, ...], key: str | None, block: int = 1) -> int | None:
        """The line of ``key`` in ``table`` (of its header when key is None); ``block``
        counts the ``[[table]]`` of an array of tables (``[[endpoints]]`` #2 is block 2)."""
        current: tuple[str, ...] = ()
        arrays: dict[str, int] = {}
        for number, line in enumerate(self.lines, start=1):
            header = _TABLE_HEADER.match(line)
            if header:
                current = _dotted(header.group(1))
                if line.lstrip().startswith("[["):
                    arrays[current[0]] = arrays.get(current[0], 0) + 1
                if key is None and current == table and arrays.get(table[0], 1) == block:
                    return number
                continue
            assignment = _KEY_LINE.match(line)
            if assignment is None or not table or arrays.get(table[0], 1) != block:
                continue
            written = current + _dotted(assignment.group(1))
            if written == (*table, key) or (key is None and written[:len(table)] == table):
                return number
        return None


def _unknown(where: str, label: str, name: str, known: Sequence[str],
             line: int | None) -> ConfigError:
    """An unknown key: its line, and the nearest known one (or, with none near, the list)."""
    at = f" (at line {line})" if line else ""
    nearest = difflib.get_close_matches(name, known, n=1)
    advice = (f"did you mean {nearest[0]!r}?" if nearest
              else f"the keys of {label} are {', '.join(known)}")
    return ConfigError(f"{where}: {label}: unknown key {name!r}{at}; {advice}")


@dataclass(frozen=True)
class _Table:
    """A table as written: where (the file, or an environment variable) and, in the file,
    its path and block (for the line of a key)."""

    where: str
    label: str  # as errors name it: "[server]", "[[endpoints]] #2"
    lines: _Lines = _Lines()
    path: tuple[str, ...] = ()
    block: int = 1

    def unknown_keys(self, table: Mapping[str, Any], known: Sequence[str]) -> None:
        unknown = [name for name in table if name not in known]
        if not unknown:
            return
        located = sorted((self.lines.line_of(self.path, name, self.block) or 0, name)
                         for name in unknown)
        line, name = next(((line, name) for line, name in located if line), located[0])
        raise _unknown(self.where, self.label, name, known, line or None)


def _parse_table(
    schema: Mapping[str, Key],
    table: Mapping[str, Any],
    written: _Table,
    base: Path,
    env_overrides: Mapping[str, _Source],
    environ: Mapping[str, str],
    origins: dict[str, str],
    section: str,
) -> dict[str, Any]:
    """The table's values, each recorded in ``origins`` under "section.key"."""
    written.unknown_keys(table, list(schema))
    values: dict[str, Any] = {}
    for name, key in schema.items():
        if name in env_overrides:
            source = env_overrides[name]
        elif name in table:
            source = _Source(written.where, table[name])
        else:
            source = _Source(BUILT_IN_DEFAULT, key.builtin_default(environ))
        if source.raw is None:
            raise ConfigError(f"{written.where}: {written.label}: required key {name!r} is "
                              "missing")
        values[name] = _parse_key(key, source, f"{written.label} {name}", base)
        origins[f"{section}.{name}"] = source.description
    return values


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, dict[str, _Source]], Any]:
    """Collect ``OMGATE_<SECTION>__<KEY>`` values, and ``OMGATE_ENDPOINTS`` (a JSON list)."""
    overrides: dict[str, dict[str, _Source]] = {}
    endpoints: Any = None
    for variable, text in environ.items():
        if variable == ENV_PREFIX + "ENDPOINTS":
            try:
                endpoints = json.loads(text)
            except ValueError:
                raise _fail(f"environment variable {variable}", "[[endpoints]]",
                            "a JSON list of tables", text) from None
            continue
        if not variable.startswith(ENV_PREFIX) or "__" not in variable:
            continue
        section, _, name = variable[len(ENV_PREFIX) :].lower().partition("__")
        key = SCHEMA.get(section, {}).get(name)
        if key is None:
            every = [f"{ENV_PREFIX}{known}__{option}".upper()
                     for known, keys in SCHEMA.items() for option in keys]
            nearest = difflib.get_close_matches(variable, every, n=1)
            advice = (f"did you mean {nearest[0]}?" if nearest
                      else f"the sections are {', '.join(SCHEMA)}")
            raise ConfigError(
                f"environment variable {variable}: no key [{section}] {name}; {advice}")
        where = f"environment variable {variable}"
        overrides.setdefault(section, {})[name] = _Source(where, key.decode_env(text))
    return overrides, endpoints


def _read_toml(choice: ConfigChoice) -> tuple[dict[str, Any], _Lines]:
    path = choice.path
    try:
        text = path.read_bytes().decode("utf-8")
        return tomllib.loads(text), _Lines(tuple(text.splitlines()))
    except FileNotFoundError:
        named = "" if choice.named_by == "search" else f" (named by {choice.named_by})"
        raise ConfigError(f"{path}: configuration file not found{named}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read configuration file: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text ({error.reason} at byte "
                          f"{error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None


def _rules_override(table: Any, written: _Table, base: Path,
                    rules: PolicyRules) -> PolicyRules:
    if not isinstance(table, dict):
        raise _fail(written.where, written.label, "a table of [client_auth] rule keys", table)
    for name in table:
        if name in LISTENER_ONLY_KEYS:
            raise ConfigError(f"{written.where}: {written.label}: {name!r} is set per listener "
                              "in [client_auth], not per endpoint (the CertificateRequest is "
                              "sent before the path is known)")
    written.unknown_keys(table, list(RULE_KEYS))
    overrides = {name: _parse_key(RULE_KEYS[name], _Source(written.where, value),
                                  f"{written.label} {name}", base)
                 for name, value in table.items()}
    return dataclasses.replace(rules, **overrides)


def _parse_endpoints(raw: Any, where: str, lines: _Lines, base: Path,
                     rules: PolicyRules) -> tuple[EndpointConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise _fail(where, "[[endpoints]]", "at least one [[endpoints]] table", raw)
    endpoints = []
    for index, table in enumerate(raw, start=1):
        label = f"[[endpoints]] #{index}"
        if not isinstance(table, dict):
            raise _fail(where, label, "a table", table)
        plain = {key: value for key, value in table.items() if key != "client_auth"}
        written = _Table(where, label, lines, ("endpoints",), index)
        values = _parse_table(ENDPOINT_SCHEMA, plain, written, base, {}, {}, {}, "endpoints")
        if "client_auth" in table:
            values["client_auth"] = _rules_override(
                table["client_auth"],
                _Table(where, f"{label} client_auth", lines, ("endpoints", "client_auth"),
                       index),
                base, rules)
        endpoints.append(EndpointConfig(**values))
    paths = [endpoint.path for endpoint in endpoints]
    duplicated = sorted({path for path in paths if paths.count(path) > 1})
    if duplicated:
        raise ConfigError(f"{where}: [[endpoints]]: path {duplicated[0]!r} is listed twice")
    return tuple(endpoints)


ConfigNamedBy = Literal["--config", "$OMGATE_CONFIG", "search"]


@dataclass(frozen=True)
class ConfigChoice:
    path: Path
    named_by: ConfigNamedBy


def find_config(explicit: Path | None, environ: Mapping[str, str],
                search: Sequence[Path] = CONFIG_SEARCH_PATHS) -> ConfigChoice:
    """``--config``, else ``$OMGATE_CONFIG``, else the first file of ``search`` that exists;
    the error when there is none says everywhere it looked."""
    if explicit is not None:
        return ConfigChoice(Path(explicit), "--config")
    if environ.get(CONFIG_VARIABLE):
        return ConfigChoice(Path(environ[CONFIG_VARIABLE]), "$OMGATE_CONFIG")
    for candidate in search:
        if candidate.is_file():
            return ConfigChoice(candidate, "search")
    looked = ", ".join(str(candidate) for candidate in search)
    raise ConfigError(f"no configuration file found; looked for --config (not given), "
                      f"${CONFIG_VARIABLE} (not set), {looked}. "
                      "`omgate init` writes one in config/.")


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None,
                search: Sequence[Path] = CONFIG_SEARCH_PATHS) -> Config:
    """Load the configuration file and apply environment overrides.

    ``path`` (``--config``) defaults to ``$OMGATE_CONFIG``, else the first file of
    ``search`` that exists.
    """
    environ = os.environ if environ is None else environ
    choice = find_config(path, environ, search)
    path = choice.path
    document, lines = _read_toml(choice)
    # the folder the file was named in, symlinks not followed: a Kubernetes ConfigMap's
    # file is a link into a hidden subfolder, and relative paths mean the visible one
    base = Path(os.path.abspath(path)).parent
    file_label = str(path)
    overrides, env_endpoints = _env_overrides(environ)

    unknown = sorted(set(document) - set(SCHEMA) - {"endpoints"})
    if unknown:
        name = unknown[0]
        line = lines.line_of((name,), None)
        at = f" (at line {line})" if line else ""
        nearest = difflib.get_close_matches(name, [*SCHEMA, "endpoints"], n=1)
        advice = (f"did you mean [{nearest[0]}]?" if nearest
                  else f"the sections are {', '.join(SCHEMA)}, endpoints")
        raise ConfigError(f"{file_label}: unknown section [{name}]{at}; {advice}")
    origins: dict[str, str] = {}
    sections: dict[str, dict[str, Any]] = {}
    for section, schema in SCHEMA.items():
        table = document.get(section, {})
        if not isinstance(table, dict):
            raise _fail(file_label, f"[{section}]", "a table", table)
        written = _Table(file_label, f"[{section}]", lines, (section,))
        sections[section] = _parse_table(schema, table, written, base,
                                          overrides.get(section, {}), environ, origins, section)

    client_auth = _build(ClientAuthConfig, sections["client_auth"])
    rules = client_auth.rules
    if env_endpoints is not None:
        origins["endpoints"] = f"environment variable {ENV_PREFIX}ENDPOINTS"
        endpoints = _parse_endpoints(env_endpoints, origins["endpoints"], _Lines(), base, rules)
    else:
        origins["endpoints"] = file_label
        endpoints = _parse_endpoints(document.get("endpoints", DEFAULT_ENDPOINTS), file_label,
                                     lines, base, rules)

    return Config(
        source=path,
        server=_build(ServerConfig, sections["server"]),
        client_auth=client_auth,
        salesforce=_build(SalesforceConfig, sections["salesforce"]),
        endpoints=endpoints,
        inbox=_build(InboxConfig, sections["inbox"], relative=_relative_sqlite(
            overrides["inbox"]["url"].raw if "url" in overrides.get("inbox", {})
            else document.get("inbox", {}).get("url"))),
        delivery=_build(DeliveryConfig, sections["delivery"]),
        logging=_build(LoggingConfig, sections["logging"]),
        chains=_build(ChainsConfig, sections["chains"]),
        admin=_build(AdminConfig, sections["admin"]),
        origins=origins,
    )
