"""The stable names operators depend on are declared once, and the docs list exactly them."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing

from harness import ROOT

from service.clientauth.model import FINDING_CODES, MODES, FindingCode, Mode
from service.config import ENDPOINT_SCHEMA, SECTIONS, EndpointConfig, section_keys

README = (ROOT / "README.md").read_text()
DESIGN = (ROOT / "docs" / "DESIGN.md").read_text()
SHIPPED_CONFIG = (ROOT / "service" / "omgate.toml").read_text()


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    following = re.search(r"\n#{2,4} ", text[start + len(heading):])
    return text[start:start + len(heading) + (following.start() if following else len(text))]


def test_every_finding_code_is_documented_and_every_documented_code_exists():
    section = _section(README, "### The policy, and what")
    documented = set(re.findall(r"`([a-z_]+)`", section))
    codes = set(FINDING_CODES)
    table_rows = re.findall(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \|", section, re.MULTILINE)
    in_table = {code for row in table_rows for code in re.findall(r"`([a-z_]+)`", row)}
    assert in_table <= codes, in_table - codes  # no documented code that omgate lacks
    assert codes <= documented, codes - documented  # no code without its explanation
    design_codes = set(re.findall(r"`([a-z_]+)`", _section(DESIGN, "### Finding codes")))
    assert codes <= design_codes, codes - design_codes


def test_modes_are_one_literal_type():
    assert typing.get_args(Mode) == MODES == ("off", "request", "optional", "require")
    assert len(set(typing.get_args(FindingCode))) == len(FINDING_CODES)


def test_the_design_room_table_names_every_part_of_the_tree():
    table = DESIGN[DESIGN.index("| package | owns | must not |"):DESIGN.index("\n## Contracts")]
    named = set(re.findall(r"`service/([a-z_]+(?:/|\.py))`", table))
    service = ROOT / "service"
    tree = {f"{path.name}/" for path in service.iterdir()
            if path.is_dir() and any(path.glob("*.py"))}
    tree |= {path.name for path in service.glob("*.py")
             if path.name not in ("__init__.py", "__main__.py")}
    assert named == tree, (sorted(tree - named), sorted(named - tree))


def _design_layers() -> list[list[str]]:
    section = DESIGN[DESIGN.index("## Layers"):DESIGN.index("\n## Contracts")]
    return [re.findall(r"`(service[a-z_.]*)`", line)
            for line in section.splitlines() if line.startswith("1. ")]


def test_the_design_layer_order_is_the_one_make_lint_holds_and_covers_the_tree():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    [layers] = [c["layers"] for c in contracts["contracts"] if c["type"] == "layers"]
    linted = [re.findall(r"service[a-z_.]*", layer) for layer in layers]
    assert _design_layers() == linted
    # a room of the tree in no layer would be free to import anything
    rooms = {f"service.{path.name}" for path in (ROOT / "service").iterdir()
             if path.is_dir() and any(path.glob("*.py"))}
    rooms |= {f"service.{path.stem}" for path in (ROOT / "service").glob("*.py")
              if path.name != "__init__.py"}
    placed = [room for layer in linted for room in layer]
    assert sorted(placed) == sorted(rooms), (sorted(rooms - set(placed)),
                                             sorted(set(placed) - rooms))


def _field_types(declaration: type) -> dict[str, object]:
    """A section dataclass's fields and their types; a field holding another dataclass (the
    policy rules of [client_auth]) stands for that one's fields, keys of the same table."""
    types: dict[str, object] = {}
    for name, annotation in typing.get_type_hints(declaration).items():
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            types.update(_field_types(annotation))
        else:
            types[name] = annotation
    return types


def test_every_configuration_key_is_one_field_of_its_section():
    # what the loader and the tests of the docs walk is made from the fields, and a field
    # that is not a key is one the loader derives: none sits at its default unread
    derived = {"inbox": ["relative"], "endpoints": ["client_auth"]}
    for section, declaration in [*SECTIONS.items(), ("endpoints", EndpointConfig)]:
        fields = [name for name in _field_types(declaration)
                  if name not in derived.get(section, [])]
        assert fields == list(section_keys(declaration)), section
    assert list(ENDPOINT_SCHEMA) == ["path", "wsdl", "action_ids"]


def _comments_above_keys(text: str) -> dict[tuple[str, str], str]:
    """The comment lines just above each ``key = ...`` line of a TOML file, by table and key."""
    comments: dict[tuple[str, str], str] = {}
    table, block = "", []
    for line in text.splitlines():
        header = re.match(r"\[\[?([\w.]+)\]\]?", line)
        assignment = re.match(r"(\w+) = ", line)
        if header:
            table = header.group(1)
        elif line.startswith("#"):
            block.append(line)
            continue
        elif assignment:
            comments[(table, assignment.group(1))] = "\n".join(block)
        block = []
    return comments


def _choices(annotation: object) -> set[str]:
    """The words of the Literal types in a type (of ``Literal[...] | Path``, the Literal's)."""
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    return {word for part in typing.get_args(annotation) for word in _choices(part)}


def test_every_choice_of_a_configuration_key_is_in_the_comment_above_it():
    comments = _comments_above_keys(SHIPPED_CONFIG)
    keys_with_choices = []
    for section, declaration in SECTIONS.items():
        for name, annotation in _field_types(declaration).items():
            for word in _choices(annotation):
                comment = comments[(section, name)]
                assert re.search(rf"\b{re.escape(word)}\b", comment), (section, name, word)
                keys_with_choices.append(name)
    assert {"mode", "reject_with", "advertise_ca_names", "client_address_header", "format",
            "level"} <= set(keys_with_choices)
