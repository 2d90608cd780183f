"""Text that came from a peer, made safe to show on an operator's terminal.

Much of what omgate shows was written by someone else: request paths, headers,
certificate names, the field values of stored notifications. A terminal acts on control
characters (ESC and the one-byte C1 controls start sequences that set the window title,
clear the screen or move the cursor), and bidirectional formatting characters make text
read in another order than it is stored. Everything shown to a person goes through
:func:`escape_controls`; JSON goes through :func:`json_text`, which writes the same
characters as JSON escapes, so the document still parses to the exact values.
"""

from __future__ import annotations

import json
import re
from typing import Any

# DEL, the C1 controls, the line and paragraph separators, and the bidirectional
# formatting characters (the Arabic letter mark, LRM and RLM, embeddings and overrides,
# isolates). JSON already escapes the C0 controls.
_UNSAFE_BEYOND_C0 = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x1f{_UNSAFE_BEYOND_C0}]")
_UNSAFE_IN_JSON = re.compile(f"[{_UNSAFE_BEYOND_C0}]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(character: str) -> str:
    code = ord(character)
    return _SHORT_ESCAPES.get(character) or (
        f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")


def escape_controls(text: str, *, keep: str = "") -> str:
    """``text`` with every control and bidirectional formatting character written as an
    escape (``\\x1b``, ``\\x9b``, ``\\u202e``, ``\\n``); the characters in ``keep`` stay
    as they are (``"\\n"`` for a block of lines)."""
    return _UNSAFE.sub(
        lambda match: match.group() if match.group() in keep else _escape(match.group()), text)


def json_text(document: Any, *, indent: int | None = None) -> str:
    """``document`` as JSON in which no character can act on a terminal."""
    text = json.dumps(document, ensure_ascii=False, indent=indent)
    return _UNSAFE_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
