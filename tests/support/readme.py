"""The README's marked examples, read as the tests run them.

A block the tests run is marked with an HTML comment on the line before its fence
(``<!-- readme-NAME -->``, invisible when the README is rendered).
"""

from __future__ import annotations

import re

from harness import ROOT

README = ROOT / "README.md"


def readme_block(marker: str, language: str = "sh") -> str:
    """The text of the fenced ``language`` block marked ``<!-- marker -->``."""
    match = re.search(rf"<!-- {re.escape(marker)} -->\n```{language}\n(.*?)```",
                      README.read_text(), re.DOTALL)
    assert match, f"README.md lost its marked {language} block {marker}"
    return match.group(1)
