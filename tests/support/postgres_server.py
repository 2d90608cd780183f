"""A real PostgreSQL server from Debian's packages, started for the test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from itertools import count
from pathlib import Path

from harness import free_port, require

_databases = count(1)


@dataclass
class PostgresServer:
    port: int
    folder: Path
    binaries: Path

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"omgate_test_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        _as_postgres([str(self.binaries / "pg_ctl"), "-D", str(self.folder / "data"), "-m",
                      "fast", "-w", "stop"], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def _as_postgres(command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """PostgreSQL refuses to run as root: as root, run it as the postgres user."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=check)


def start_postgres() -> PostgresServer:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0)
    require(bool(versions), "PostgreSQL is not installed (Debian package postgresql)")
    binaries = versions[-1].parent
    folder = Path(tempfile.mkdtemp(prefix="omgate-pg-", dir="/tmp"))
    folder.chmod(0o755)
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    _as_postgres([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--no-instructions"])
    _as_postgres([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
                  "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 "
                        "-c max_connections=200", "start"])
    return PostgresServer(port, folder, binaries)
