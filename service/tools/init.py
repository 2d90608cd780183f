"""``omgate init [DIR]``: write the commented configuration to start from.

The text is the package's ``omgate.toml`` (the repository's ``config/omgate.toml`` links
to it): every key with its comment, set up for the certificates ``omgate pki dev`` writes.
An existing file is never replaced.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TextIO

from service.config import ConfigError, find_config, load_config
from service.inbox import sqlite_path

CONFIG_NAME = "omgate.toml"


class InitError(Exception):
    """The configuration cannot be written; the message says why."""


def commented_config() -> str:
    return resources.files("service").joinpath(CONFIG_NAME).read_text(encoding="utf-8")


def write_config(folder: Path) -> Path:
    """Write ``folder/omgate.toml``; refuse (InitError) if it exists."""
    path = folder / CONFIG_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # FileExistsError too: DIR is a file
        raise InitError(f"cannot make the folder {folder}: "
                        f"{error.strerror or 'it exists and is not a folder'}") from None
    try:
        with path.open("x", encoding="utf-8") as handle:  # "x": never over an existing file
            handle.write(commented_config())
    except FileExistsError:
        raise InitError(f"{path} exists; it was left as it is (remove it first, or name "
                        "another DIR)") from None
    except OSError as error:
        raise InitError(f"cannot write {path}: {error.strerror}") from None
    return path


def make_inbox_folder(path: Path) -> Path | None:
    """Create the folder of the SQLite inbox the written configuration names (serve refuses
    a missing one, which is how a mistyped inbox.url shows); the folder made, if any."""
    database = sqlite_path(load_config(path, {}).inbox.url)
    if database is None or database.parent.is_dir():
        return None
    try:
        database.parent.mkdir(mode=0o700, parents=True)
    except OSError as error:
        raise InitError(f"cannot create the inbox folder {database.parent}: "
                        f"{error.strerror}") from None
    return database.parent


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def _found_without_flag(path: Path, environ: Mapping[str, str]) -> bool:
    try:
        found = find_config(None, environ).path
    except ConfigError:
        return False
    return os.path.abspath(found) == os.path.abspath(path)


def write_next_steps(path: Path, out: TextIO, environ: Mapping[str, str],
                     inbox_folder: Path | None = None) -> None:
    config = load_config(path, {})
    certfile, _keyfile = config.server_identity()
    serve = "omgate serve" if _found_without_flag(path, environ) else \
        f"omgate serve --config {_shown(path)}"
    address = config.server.bind[0] if config.server.bind else None
    out.write(f"wrote {_shown(path)}\n")
    if inbox_folder is not None:
        out.write(f"created {_shown(inbox_folder)}, the folder of its inbox ([inbox] url)\n")
    out.write(f"""
It serves https://{address}{config.endpoints[0].path} with the server certificate
{_shown(certfile)}. Write development certificates there (or set [server] certfile
and keyfile to yours), then serve:

  omgate pki dev --out {_shown(certfile.parent)}
  {serve}
""")
