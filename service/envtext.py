"""Configuration text that names environment variables: ``"Bearer ${ENV:WEBHOOK_TOKEN}"``.

A secret (a webhook's token, say) then stays out of the configuration file: the file
names the variable, and its value is read only when the text is rendered, at start.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_REFERENCE = re.compile(r"\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)\}")
SYNTAX = "${ENV:NAME}"


class MissingVariable(ValueError):
    """A referenced environment variable is not set."""


@dataclass(frozen=True)
class EnvText:
    """Text with ``${ENV:NAME}`` references, not yet rendered."""

    template: str

    @classmethod
    def parse(cls, text: str) -> EnvText:
        """Raise ValueError when ``${`` starts anything but a well-formed reference."""
        if "${" in _REFERENCE.sub("", text):
            raise ValueError(f"environment variables are written {SYNTAX}, with NAME made of "
                             "letters, digits and underscores")
        return cls(text)

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_REFERENCE.findall(self.template)))

    def render(self, environ: Mapping[str, str]) -> str:
        missing = [name for name in self.variables if name not in environ]
        if missing:
            raise MissingVariable(f"environment variable {missing[0]} is not set")
        return _REFERENCE.sub(lambda match: environ[match.group(1)], self.template)
