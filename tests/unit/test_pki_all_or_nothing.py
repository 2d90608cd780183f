"""``omgate pki dev --force`` replaces the development files all or none."""

from __future__ import annotations

import errno
import os

import pytest

from service import secretfiles
from service.tools.pki import PkiError, write_dev_pki


def test_a_failure_halfway_leaves_every_file_of_before(tmp_path, monkeypatch):
    """A full disk while the fourth file is written: the first three were already in place
    of the old ones, so the folder held keys that matched no certificate."""
    out = tmp_path / "dev"
    written = write_dev_pki(out)
    before = {path.name: path.read_bytes() for path in written}
    synced = 0
    real_fsync = os.fsync

    def fsync_until_the_disk_is_full(descriptor: int) -> None:
        nonlocal synced
        if os.path.isfile(f"/proc/self/fd/{descriptor}"):  # a file, not its folder
            synced += 1
            if synced == 4:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(descriptor)

    monkeypatch.setattr(secretfiles.os, "fsync", fsync_until_the_disk_is_full)
    with pytest.raises(PkiError, match="No space left on device"):
        write_dev_pki(out, force=True)
    assert {path.name: path.read_bytes() for path in written} == before
    assert sorted(path.name for path in out.iterdir()) == sorted(before)  # no leftovers

    monkeypatch.setattr(secretfiles.os, "fsync", real_fsync)
    write_dev_pki(out, force=True)
    assert all(path.read_bytes() != before[path.name] for path in written if
               path.suffix == ".key")
