"""Tripwires: every private or internal symbol of another package that service/ uses.

``INTERNALS`` below is the one list of them, each with the file of omgate that uses it and
the shape omgate relies on (a class, a callable and its parameters, a C function of
pyOpenSSL's bindings and how many arguments it takes, an attribute its instances carry).
An upgrade that removes or changes one fails here with a message naming the symbol and the
file, before an end-to-end test fails for an obscure reason. The scan at the end reads
service/ (by its syntax tree) and fails when it uses an internal the list does not name,
and when the list names one nothing uses any more.

What counts as internal: any name starting with ``_`` reached on another package's object
(``context._context``, ``from OpenSSL._util import lib``), everything reached through
pyOpenSSL's raw bindings (``lib.SSL_*``, ``ffi``), every name of hypercorn but its
documented API (``hypercorn.config.Config`` and ``hypercorn.asyncio.serve``: the rest is
hypercorn's inside), and what a subclass of such a class inherits and uses or overrides.
tests/unit/test_hypercorn_glue.py checks, in hypercorn's source, how the internals listed here
behave where omgate stands in for them.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import pytest
from harness import ROOT
from packaging.specifiers import SpecifierSet

Shape = Literal["class", "callable", "C function", "constant", "value", "instance attribute"]

GLUE = "service/listeners/hypercorn_glue.py"
OPENSSL_GLUE = "service/tls/openssl_glue.py"
OPINION = "service/tls/opinion.py"
TLS_CONTEXT = "service/tls/context.py"
ALGORITHMS = "service/clientauth/algorithms.py"
EXTENSIONS = "service/clientauth/extensions.py"
SOAP_PARSE = "service/soap/parse.py"


@dataclass(frozen=True)
class Internal:
    """One internal symbol omgate uses: ``path`` is its dotted name (module, then
    attributes), ``used_in`` the files of omgate that use it."""

    path: str
    used_in: tuple[str, ...]
    shape: Shape
    # a callable's parameter names, in order (omgate passes them by position or by name)
    parameters: tuple[str, ...] | None = None
    # a C function's number of arguments
    arity: int | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[1]


def _hypercorn(path: str, shape: Shape, *used_in: str,
               parameters: tuple[str, ...] | None = None) -> Internal:
    return Internal(f"hypercorn.{path}", used_in or (GLUE,), shape, parameters)


def _c_function(name: str, arity: int, *used_in: str) -> Internal:
    return Internal(f"OpenSSL._util.lib.{name}", used_in or (OPENSSL_GLUE,), "C function",
                    arity=arity)


def _c_constant(name: str) -> Internal:
    return Internal(f"OpenSSL._util.lib.{name}", (OPENSSL_GLUE,), "constant")


CONNECTION = "service/listeners/connection.py"
SERVING = "service/listeners/serving.py"

HYPERCORN = (
    # Http11Config is hypercorn's Config: the headers it adds to every answer
    _hypercorn("config.Config.response_headers", "callable", GLUE,
               parameters=("self", "protocol")),
    _hypercorn("config.Config.include_date_header", "value"),
    _hypercorn("config.Config.log", "value", SERVING),
    # an app that fails is logged on hypercorn's error log, as hypercorn logs it
    _hypercorn("logging.Logger", "class", CONNECTION, parameters=("config",)),
    _hypercorn("logging.Logger.exception", "callable", CONNECTION,
               parameters=("self", "message", "args", "kwargs")),
    _hypercorn("utils.parse_socket_addr", "callable", CONNECTION,
               parameters=("family", "address")),
    _hypercorn("utils.build_and_validate_headers", "callable", CONNECTION,
               parameters=("headers",)),
)

ASYNCIO = (
    # HttpServing takes the socket over from the stream reader a listener accepted it with
    Internal("asyncio.StreamReader._buffer", (SERVING,), "instance attribute"),
    Internal("asyncio.StreamReader._eof", (SERVING,), "instance attribute"),
)

PYOPENSSL = (
    Internal("OpenSSL._util.lib", (OPENSSL_GLUE, OPINION), "value"),
    Internal("OpenSSL._util.ffi", (OPENSSL_GLUE,), "value"),
    Internal("OpenSSL._util.ffi.callback", (OPENSSL_GLUE,), "callable"),
    Internal("OpenSSL._util.ffi.string", (OPENSSL_GLUE,), "callable"),
    Internal("OpenSSL._util.ffi.buffer", (OPENSSL_GLUE,), "callable"),
    Internal("OpenSSL._util.ffi.NULL", (OPENSSL_GLUE,), "value"),
    Internal("OpenSSL.SSL.Context._context", (OPENSSL_GLUE, OPINION), "instance attribute"),
    Internal("OpenSSL.SSL.Connection._ssl", (OPENSSL_GLUE,), "instance attribute"),
    Internal("OpenSSL.SSL.Connection._reverse_mapping", (OPENSSL_GLUE,), "value"),
    # the memory BIOs a connection reads and writes through (replaced after the handshake)
    Internal("OpenSSL.SSL.Connection._into_ssl", (OPENSSL_GLUE,), "instance attribute"),
    Internal("OpenSSL.SSL.Connection._from_ssl", (OPENSSL_GLUE,), "instance attribute"),
    Internal("OpenSSL.crypto.X509._from_raw_x509_ptr", (OPENSSL_GLUE,), "callable",
             parameters=("x509",)),
    Internal("OpenSSL.SSL._NoOverlappingProtocols", (TLS_CONTEXT,), "class"),
    _c_function("SSL_CTX_set_msg_callback", 2),
    _c_function("SSL_CTX_set_verify", 3),
    _c_function("SSL_CTX_set_tlsext_servername_callback", 2),
    _c_function("SSL_get_servername", 2),
    _c_function("SSL_set_options", 2),
    _c_function("SSL_session_reused", 1),
    _c_function("SSL_set_bio", 3),
    _c_function("BIO_new", 1),
    _c_function("BIO_s_mem", 0),
    _c_function("BIO_free", 1),
    _c_function("BIO_get_mem_data", 2),
    _c_function("SSL_get_ex_data_X509_STORE_CTX_idx", 0),
    _c_function("X509_STORE_CTX_get_ex_data", 2),
    _c_function("X509_STORE_CTX_get_error", 1),
    _c_function("X509_STORE_CTX_get_error_depth", 1),
    _c_function("X509_STORE_CTX_get_current_cert", 1),
    _c_function("X509_STORE_CTX_set_error", 2),
    _c_function("X509_up_ref", 1),
    _c_function("X509_verify_cert_error_string", 1),
    _c_function("SSL_CTX_get0_param", 1, OPINION),
    _c_function("X509_VERIFY_PARAM_set_time", 2, OPINION),
    _c_constant("SSL_OP_NO_TICKET"),
    _c_constant("TLSEXT_NAMETYPE_host_name"),
    _c_constant("SSL_TLSEXT_ERR_OK"),
    _c_constant("SSL_TLSEXT_ERR_ALERT_FATAL"),
)

OTHERS = (
    # the OIW spelling of SHA-1 with RSA, which cryptography names privately
    Internal("cryptography.x509.oid.SignatureAlgorithmOID._RSA_WITH_SHA1", (ALGORITHMS,),
             "value"),
    Internal("cryptography.x509.ObjectIdentifier._name", (EXTENSIONS,), "value"),
    # lxml's element and entity classes (documented under these names)
    Internal("lxml.etree._Element", (SOAP_PARSE,), "class"),
    Internal("lxml.etree._Entity", (SOAP_PARSE,), "class"),
)

INTERNALS = HYPERCORN + ASYNCIO + PYOPENSSL + OTHERS

# Underscored names that are documented public API: a named tuple's _replace, os._exit.
DOCUMENTED = {"?._replace", "os._exit"}
# hypercorn's documented API; every other name of hypercorn is internal
HYPERCORN_API = {"hypercorn.config.Config", "hypercorn.asyncio.serve"}
# the packages whose every use counts: hypercorn's inside, pyOpenSSL's raw bindings
INTERNAL_PREFIXES = ("hypercorn.", "OpenSSL._util.")


def resolve(path: str) -> Any:
    """The object a dotted name names: the longest importable module, then attributes."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute)
        return found
    raise ImportError(path)


def _assigned_by_instances(cls: type, name: str) -> bool:
    """Whether ``self.<name>`` is assigned (or declared) in the source of ``cls`` or a base."""
    assigned = re.compile(rf"self\.{re.escape(name)}\s*[:=]")
    for klass in cls.__mro__:
        try:
            if assigned.search(inspect.getsource(klass)):
                return True
        except (OSError, TypeError):  # a class written in C or Rust
            continue
    return hasattr(cls, name)  # a descriptor (property, slot, getter)


def _parameter_names(target: Any) -> tuple[str, ...]:
    return tuple(inspect.signature(target).parameters)


def shape_problem(internal: Internal) -> str | None:
    """What is wrong with ``internal`` in the installed version, or None."""
    if internal.shape == "instance attribute":
        owner, name = internal.path.rsplit(".", 1)
        cls = resolve(owner)
        return None if _assigned_by_instances(cls, name) else "its instances no longer have it"
    try:
        target = resolve(internal.path)
    except (ImportError, AttributeError) as error:
        return f"gone ({error})"
    if internal.shape == "class" and not isinstance(target, type):
        return f"no longer a class: {target!r}"
    if internal.shape in ("callable", "C function") and not callable(target):
        return f"no longer callable: {target!r}"
    if internal.shape == "constant" and not isinstance(target, int):
        return f"no longer an int: {target!r}"
    if internal.parameters is not None and _parameter_names(target) != internal.parameters:
        return (f"takes {_parameter_names(target)}, omgate passes {internal.parameters}")
    if internal.arity is not None:
        from OpenSSL._util import ffi

        arguments = ffi.typeof(target).args
        if len(arguments) != internal.arity:
            return f"takes {len(arguments)} arguments ({arguments}), omgate passes {internal.arity}"
    return None


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda internal: internal.path)
def test_each_internal_omgate_uses_is_there_with_the_shape_it_relies_on(internal: Internal):
    problem = shape_problem(internal)
    assert problem is None, f"{internal.path} (used by {', '.join(internal.used_in)}): {problem}"


@pytest.mark.parametrize("distribution", ["hypercorn", "pyOpenSSL"])
def test_the_packages_whose_internals_are_used_are_capped_and_installed_inside(distribution):
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [pin] = [d for d in dependencies if d.lower().startswith(distribution.lower())]
    specifiers = SpecifierSet(pin[len(distribution):])
    assert any(s.operator == "<" for s in specifiers), f"{distribution} has no upper bound"
    assert version(distribution) in specifiers


def test_the_pointers_omgate_hands_to_openssl_are_what_it_expects():
    from OpenSSL import SSL
    from OpenSSL._util import ffi

    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    connection = SSL.Connection(context, None)
    assert ffi.typeof(context._context) is ffi.typeof("SSL_CTX *"), "Context._context"
    assert ffi.typeof(connection._ssl) is ffi.typeof("SSL *"), "Connection._ssl"
    # a connection without a socket has two memory BIOs (release_handshake_buffers)
    assert ffi.typeof(connection._into_ssl) is ffi.typeof("BIO *"), "Connection._into_ssl"
    assert ffi.typeof(connection._from_ssl) is ffi.typeof("BIO *"), "Connection._from_ssl"
    # state_of finds the connection from the SSL pointer OpenSSL gives a callback
    assert SSL.Connection._reverse_mapping[connection._ssl] is connection


def _service_files() -> list[str]:
    return sorted(str(path.relative_to(ROOT)) for path in (ROOT / "service").rglob("*.py"))


def _tree(file: str) -> ast.Module:
    return ast.parse((ROOT / file).read_text(), file)


def _callback_types() -> list[str]:
    """The C types of the callbacks omgate declares with ``ffi.callback``."""
    return [node.args[0].value for path in _service_files() for node in ast.walk(_tree(path))
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "ffi.callback"
            and isinstance(node.args[0], ast.Constant)]


@pytest.mark.parametrize("declared", _callback_types())
def test_the_callback_types_omgate_declares_are_known_to_the_bindings(declared: str):
    from OpenSSL._util import ffi

    assert ffi.typeof(declared).kind == "function", f"{declared} ({OPENSSL_GLUE})"


# ---- the scan: what service/ uses, against the list ------------------------------------


@dataclass(frozen=True)
class Use:
    """An internal used at ``file``:``line``; ``path`` starts with ``?.`` when what it is
    reached on is a local value (its type is not known from the syntax)."""

    file: str
    line: int
    path: str

    def named_by(self, internal: Internal) -> bool:
        if self.file not in internal.used_in:
            return False
        if self.path.startswith("?."):
            return internal.path.endswith(self.path[1:])
        return internal.path == self.path


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _foreign(module: str) -> bool:
    return module.split(".")[0] not in ("service", "__future__")


def _imported(tree: ast.Module) -> dict[str, str]:
    """Each name a module binds by importing another package's, with what it names."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _foreign(alias.name):
                    local = alias.asname or alias.name.split(".")[0]
                    names[local] = alias.name if alias.asname else local
        elif (isinstance(node, ast.ImportFrom) and node.module and not node.level
              and _foreign(node.module)):
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.expr, imported: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return imported.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, imported)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _internal_name(path: str) -> bool:
    if any(_private(part) for part in path.split(".")):
        return True
    return path.startswith(INTERNAL_PREFIXES) and path not in HYPERCORN_API


# pyOpenSSL's raw bindings, whose every attribute is one C function or constant
BINDINGS = ("OpenSSL._util.lib", "OpenSSL._util.ffi")


def _names_a_module(path: str) -> bool:
    try:
        importlib.import_module(path)
    except ImportError:
        return False
    return True


def _the_internal_reached(path: str) -> str | None:
    """The internal an attribute chain reaches: its shortest internal prefix that is no
    module and not the bindings (``SSL.Connection._reverse_mapping.get`` uses
    ``_reverse_mapping``; ``lib.SSL_set_options`` uses ``SSL_set_options``)."""
    parts = path.split(".")
    for end in range(1, len(parts) + 1):
        prefix = ".".join(parts[:end])
        if (_internal_name(prefix) and prefix not in BINDINGS
                and not _names_a_module(prefix)):
            return prefix
    return None


def _imports_and_attributes(file: str, tree: ast.Module,
                            imported: dict[str, str]) -> Iterator[Use]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                path = f"{node.module}.{alias.name}"
                if _foreign(node.module) and _internal_name(path):
                    yield Use(file, node.lineno, path)
        elif isinstance(node, ast.Attribute):
            path = _dotted(node, imported)
            if path is not None:
                used = _the_internal_reached(path)
                if used is not None:
                    yield Use(file, node.lineno, used)
            elif _private(node.attr) and not (isinstance(node.value, ast.Name)
                                              and node.value.id in ("self", "cls")):
                yield Use(file, node.lineno, f"?.{node.attr}")


def _third_party(cls: type) -> bool:
    root = cls.__module__.split(".")[0]
    return root not in sys.stdlib_module_names and root not in ("builtins", "service")


def _names_a_class_uses(node: ast.ClassDef) -> set[str]:
    """What a class defines in its body, and every ``self.<name>`` it reads or writes."""
    names = {item.name for item in node.body
             if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)}
    for item in node.body:
        targets = (item.targets if isinstance(item, ast.Assign)
                   else [item.target] if isinstance(item, ast.AnnAssign) else [])
        names |= {target.id for target in targets if isinstance(target, ast.Name)}
    names |= {inner.attr for inner in ast.walk(node) if isinstance(inner, ast.Attribute)
              and isinstance(inner.value, ast.Name) and inner.value.id == "self"}
    return {name for name in names if not name.startswith("__")}


def _inherited(file: str, tree: ast.Module, imported: dict[str, str]) -> Iterator[Use]:
    """What a subclass of another package's class takes from it: every private name, and
    for hypercorn (internal throughout) every name."""
    module = file.removesuffix(".py").replace("/", ".")
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for base_node in node.bases:
            base_path = _dotted(base_node, imported) or (
                f"{module}.{ast.unparse(base_node)}" if isinstance(base_node, ast.Name) else None)
            try:
                base = resolve(base_path) if base_path else None
            except AttributeError:  # a builtin, or a class defined in a function
                continue
            if not isinstance(base, type):
                continue
            for name in sorted(_names_a_class_uses(node)):
                owner = next((cls for cls in base.__mro__ if _third_party(cls)
                              and _assigned_by_instances(cls, name)), None)
                if owner is not None and (_private(name) or owner.__module__.startswith(
                        "hypercorn")):
                    yield Use(file, node.lineno, f"{owner.__module__}.{owner.__qualname__}.{name}")


def uses_in_service() -> list[Use]:
    found: list[Use] = []
    for file in _service_files():
        tree = _tree(file)
        imported = _imported(tree)
        uses = [*_imports_and_attributes(file, tree, imported),
                *_inherited(file, tree, imported)]
        found += [use for use in uses if use.path not in DOCUMENTED]
    return list(dict.fromkeys(found))


def test_service_uses_no_internal_the_list_does_not_name():
    unnamed = sorted({f"{use.file}:{use.line}: {use.path}" for use in uses_in_service()
                      if not any(use.named_by(internal) for internal in INTERNALS)})
    assert not unnamed, ("internals of other packages used in service/ but not named in "
                         "tests/unit/test_tripwires.py INTERNALS (name each, with its shape, or "
                         "use a public API):\n" + "\n".join(unnamed))


def test_every_internal_the_list_names_is_still_used():
    uses = uses_in_service()
    for internal in INTERNALS:
        for file in internal.used_in:
            assert (ROOT / file).exists(), f"{internal.path}: {file} does not exist"
            scanned = any(use.named_by(internal) and use.file == file for use in uses)
            # a few are relied on without being spelled as an access the scan sees (hypercorn
            # calls IdleTimer.restart; ProtocolWrapper builds Http11): their name is in the file
            assert scanned or re.search(rf"\b{re.escape(internal.name)}\b",
                                        Path(ROOT / file).read_text()), (
                f"{internal.path} is listed as used by {file}, which no longer uses it")


def test_the_scan_sees_the_internals_it_is_meant_to_see():
    # the scan itself must be able to fail: a few uses it has to find, by each of its rules
    paths = {(use.file, use.path) for use in uses_in_service()}
    for expected in [(OPENSSL_GLUE, "OpenSSL._util.lib"),
                     (OPENSSL_GLUE, "OpenSSL._util.lib.SSL_CTX_set_verify"),
                     (OPENSSL_GLUE, "?._ssl"),
                     (OPENSSL_GLUE, "OpenSSL.SSL.Connection._reverse_mapping"),
                     (GLUE, "hypercorn.config.Config.response_headers"),
                     (SERVING, "?._buffer"),
                     (CONNECTION, "hypercorn.utils.build_and_validate_headers")]:
        assert expected in paths, f"the scan no longer sees {expected}"


def _assignments_into_other_packages(file: str, tree: ast.Module) -> list[str]:
    """``module.name = ...`` (or ``del``, or ``+=``) on a name another package bound: the
    other package's module changed for every user in the process."""
    imported = _imported(tree)
    found = []
    for node in ast.walk(tree):
        targets = (node.targets if isinstance(node, ast.Assign | ast.Delete)
                   else [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign)
                   else [])
        for target in targets:
            if isinstance(target, ast.Attribute) and _dotted(target, imported):
                found.append(f"{file}:{node.lineno}: {ast.unparse(target)}")
    return found


def test_no_module_of_omgate_assigns_into_another_packages():
    assigned = [found for file in _service_files()
                for found in _assignments_into_other_packages(file, _tree(file))]
    assert assigned == []


def test_the_assignment_scan_sees_an_assignment_into_another_package():
    sample = ast.parse("import hypercorn.protocol\nfrom hypercorn import config\n"
                       "hypercorn.protocol.H11Protocol = object\nconfig.Config.x += 1\n"
                       "local = object()\nlocal.attribute = 1\n")
    found = _assignments_into_other_packages("sample.py", sample)
    assert [line.split(": ", 1)[1] for line in found] == [
        "hypercorn.protocol.H11Protocol", "config.Config.x"]
