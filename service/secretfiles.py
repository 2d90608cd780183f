"""Files that hold secrets: written so that no one else can read them, checked at start.

``write_private`` is the one way omgate writes a key: a new file beside the target,
opened exclusive and without following a link, with its mode from the first byte, synced,
then renamed over the target. Writing in place would keep an old file's looser mode, hand
the new key to whoever held the old file open, and follow a link planted where the file
goes. A target (or its folder) that is a symbolic link is refused, with what to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

PRIVATE_MODE = 0o600
# Both are POSIX; a system without them (none omgate runs on) loses the no-follow part only.
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class SecretFileError(Exception):
    """A file could not be written safely; the message names it and says what to do."""


FOLDER_ADVICE = "remove the link, or name the folder it points to instead"
FILE_ADVICE = "remove the link (a new file is then written in its place)"


def _link_error(path: Path, advice: str) -> SecretFileError:
    try:
        pointing = f" (to {os.readlink(path)})"
    except OSError:
        pointing = ""
    return SecretFileError(f"{path} is a symbolic link{pointing}, and omgate does not write "
                           f"a key or certificate through one: {advice}")


def refuse_links(path: Path) -> None:
    """Raise SecretFileError when ``path`` or its folder is a symbolic link (dangling or
    not). Folders above the folder are not looked at: they are the operator's layout."""
    if path.parent.is_symlink():
        raise _link_error(path.parent, FOLDER_ADVICE)
    if path.is_symlink():
        raise _link_error(path, FILE_ADVICE)


def write_private(path: Path, content: bytes, *, mode: int = PRIVATE_MODE) -> None:
    """Write ``content`` to ``path`` as a new file of ``mode`` (less the umask) that replaces
    any old one in one rename. Run as root over a file someone else owns, the new file
    keeps the old one's owner and group, so a service that could read its key still can."""
    refuse_links(path)
    try:
        folder = os.open(path.parent, os.O_RDONLY | _DIRECTORY | _NO_FOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:  # became a link since refuse_links looked
            raise _link_error(path.parent, FOLDER_ADVICE) from None
        raise SecretFileError(f"cannot write {path}: {error.strerror}") from None
    try:
        _replace_in(folder, path, content, mode)
    except OSError as error:
        raise SecretFileError(f"cannot write {path}: {error.strerror}") from None
    finally:
        os.close(folder)


def _replace_in(folder: int, path: Path, content: bytes, mode: int) -> None:
    try:
        previous: os.stat_result | None = os.stat(path.name, dir_fd=folder,
                                                  follow_symlinks=False)
    except FileNotFoundError:
        previous = None
    if previous is not None and stat.S_ISLNK(previous.st_mode):
        raise _link_error(path, FILE_ADVICE)
    temporary = f".{path.name}.{secrets.token_hex(8)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW
                         | os.O_CLOEXEC, mode, dir_fd=folder)
    try:
        with open(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            if previous is not None and os.geteuid() == 0:
                os.fchown(handle.fileno(), previous.st_uid, previous.st_gid)
            os.fsync(handle.fileno())
        # rename replaces the name itself: a link put there meanwhile is replaced, not followed
        os.replace(temporary, path.name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=folder)
        raise
    with contextlib.suppress(OSError):  # some file systems cannot sync a folder
        os.fsync(folder)


def readable_by_others(path: Path) -> int | None:
    """The permission bits of ``path`` (its target, for a link) when its group or others
    may read it; None when they may not, or when it cannot be looked at (whatever reads
    the file reports that)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & (stat.S_IRGRP | stat.S_IROTH) else None
