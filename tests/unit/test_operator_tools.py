"""The operator's tools, what the documentation promises: the built-in defaults DESIGN.md
lists (the tools run: tests/system/test_operator_tools_system.py)."""

from __future__ import annotations

import re
import tomllib

from harness import ROOT

from service.config import SCHEMA


def test_the_design_key_list_shows_the_built_in_defaults():
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    block = re.search(r"### Configuration keys.*?```toml\n(.*?)```", design, re.S)
    assert block is not None
    documented = tomllib.loads(block.group(1))
    # the built-in defaults (config/omgate.toml is the development setup, on purpose)
    defaults = {section: {name: key.default for name, key in keys.items()}
                for section, keys in SCHEMA.items()}
    differences = [(section, key, value, defaults.get(section, {}).get(key))
                   for section, table in documented.items() if isinstance(table, dict)
                   for key, value in table.items()
                   if key in defaults.get(section, {})
                   and defaults[section][key] not in (value, None)]
    assert differences == []
