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
from collections.abc import Mapping
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
    write_private_files({path: (content, mode)})


def write_private_files(contents: Mapping[Path, tuple[bytes, int]]) -> None:
    """Write several files as ``write_private`` writes one (each ``path: (content,
    mode)``), all or none: each new file is written and synced beside its target first,
    and only when every one is are they renamed over their targets. A failure on the way
    (a full disk, a link) leaves every old file as it was."""
    staged: list[tuple[int, str, Path]] = []  # folder, temporary name, target
    try:
        for path, (content, mode) in contents.items():
            folder = _open_folder(path)
            try:
                staged.append((folder, _stage(folder, path, content, mode), path))
            except BaseException:
                os.close(folder)
                raise
        for folder, temporary, path in staged:
            try:
                # rename replaces the name itself: a link put there meanwhile is replaced
                os.replace(temporary, path.name, src_dir_fd=folder, dst_dir_fd=folder)
            except OSError as error:
                raise SecretFileError(f"cannot write {path}: {error.strerror}") from None
            with contextlib.suppress(OSError):  # some file systems cannot sync a folder
                os.fsync(folder)
    finally:
        for folder, temporary, _path in staged:
            with contextlib.suppress(OSError):  # renamed already, or never written
                os.unlink(temporary, dir_fd=folder)
            os.close(folder)


def _open_folder(path: Path) -> int:
    refuse_links(path)
    try:
        return os.open(path.parent, os.O_RDONLY | _DIRECTORY | _NO_FOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:  # became a link since refuse_links looked
            raise _link_error(path.parent, FOLDER_ADVICE) from None
        raise SecretFileError(f"cannot write {path}: {error.strerror}") from None


def _stage(folder: int, path: Path, content: bytes, mode: int) -> str:
    """``content`` written and synced in a new file beside ``path``: its name."""
    try:
        previous: os.stat_result | None = os.stat(path.name, dir_fd=folder,
                                                  follow_symlinks=False)
    except FileNotFoundError:
        previous = None
    except OSError as error:
        raise SecretFileError(f"cannot write {path}: {error.strerror}") from None
    if previous is not None and stat.S_ISLNK(previous.st_mode):
        raise _link_error(path, FILE_ADVICE)
    temporary = f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW
                             | os.O_CLOEXEC, mode, dir_fd=folder)
    except OSError as error:
        raise SecretFileError(f"cannot write {path}: {error.strerror}") from None
    try:
        with open(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            if previous is not None and os.geteuid() == 0:
                os.fchown(handle.fileno(), previous.st_uid, previous.st_gid)
            os.fsync(handle.fileno())
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=folder)
        if isinstance(error, OSError):
            raise SecretFileError(f"cannot write {path}: {error.strerror}") from None
        raise
    return temporary


def readable_by_others(path: Path) -> int | None:
    """The permission bits of ``path`` (its target, for a link) when its group or others
    may read it; None when they may not, or when it cannot be looked at (whatever reads
    the file reports that)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & (stat.S_IRGRP | stat.S_IROTH) else None
