"""Fixtures of both parts of the suite: tests/unit (in-process, seconds; `make test-fast`)
and tests/system (starts `omgate serve` and other programs, real clients, browsers,
containers). Their helpers are in tests/support (on sys.path: pyproject.toml's pythonpath)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from client_pki import ClientPki, build_client_pki
from harness import RunningServer, free_port, merge, start_server, to_toml
from postgres_server import PostgresServer, start_postgres

from service.tools.pki import write_dev_pki

SYSTEM = Path(__file__).resolve().parent / "system"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/system is ``slow``: ``-m 'not slow'`` and the folders agree."""
    for item in items:
        if item.path.is_relative_to(SYSTEM):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    write_dev_pki(folder)
    return folder


@pytest.fixture(scope="session")
def client_pki(tmp_path_factory: pytest.TempPathFactory) -> ClientPki:
    return build_client_pki(tmp_path_factory.mktemp("client-pki"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def server_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every server the suite starts logs here; the SessionId sweep reads all of it."""
    return tmp_path_factory.mktemp("server-logs")


def base_config(dev_pki: Path, client_root: Path, folder: Path, port: int) -> dict[str, Any]:
    return {
        "server": {
            "bind": [f"127.0.0.1:{port}"],
            "health_bind": f"127.0.0.1:{free_port()}",  # readiness polls need no certificate
            "certfile": dev_pki / "server.pem",
            "keyfile": dev_pki / "server.key",
            "read_timeout": 10,
            "shutdown_timeout": 10,
            "workers": 1,
            # every test client connects from 127.0.0.1; tests of the cap set their own
            "max_connections_per_peer": 4096,
        },
        "client_auth": {"trust": [client_root]},
        "inbox": {"url": f"sqlite:///{folder / 'inbox.db'}"},
        "logging": {"level": "debug"},
    }


ServerFactory = Callable[..., RunningServer]


class Launcher:
    """Starts ``omgate serve`` processes with the base config merged with overrides."""

    def __init__(self, dev_pki: Path, client_root: Path, log_dir: Path, folder: Path,
                 label: str) -> None:
        self.dev_pki, self.client_root = dev_pki, client_root
        self.log_dir, self.folder, self.label = log_dir, folder, label
        self.started: list[RunningServer] = []

    def __call__(self, overrides: dict[str, Any] | None = None, *,
                 env: dict[str, str] | None = None, port: int | None = None,
                 wait: bool = True, umask: int = -1) -> RunningServer:
        port = port or free_port()
        config = merge(base_config(self.dev_pki, self.client_root, self.folder, port),
                       overrides or {})
        health = config["server"].get("health_bind", "")
        health_port = int(health.rpartition(":")[2]) if health else None
        number = len(self.started)
        config_path = self.folder / f"omgate-{number}.toml"
        config_path.write_text(to_toml(config))
        log_path = self.log_dir / f"{self.label}-{number}.log".replace("/", "_")
        server = start_server(config_path, log_path, self.dev_pki / "ca.pem", port, env=env,
                              wait=wait, health_port=health_port, umask=umask)
        self.started.append(server)
        return server

    def kill_all(self) -> None:
        for server in self.started:
            server.kill()


@pytest.fixture
def omgate_server(dev_pki: Path, client_pki: ClientPki, server_log_dir: Path, tmp_path: Path,
                  request: pytest.FixtureRequest) -> Iterator[ServerFactory]:
    launcher = Launcher(dev_pki, client_pki.root_file, server_log_dir, tmp_path,
                        request.node.name)
    yield launcher
    launcher.kill_all()


@pytest.fixture(scope="module")
def shared_server(dev_pki: Path, client_pki: ClientPki, server_log_dir: Path,
                  tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """One default server for a module's tests that do not need their own."""
    folder = tmp_path_factory.mktemp("shared")
    launcher = Launcher(dev_pki, client_pki.root_file, server_log_dir, folder,
                        request.module.__name__)
    yield launcher()
    launcher.kill_all()


@pytest.fixture
def listener_config(dev_pki: Path, client_pki: ClientPki, tmp_path: Path) -> dict[str, Any]:
    """The settings of an in-process TLS listener (tests/unit/test_tls_listener.py and the
    s_client test of tests/system/test_tls_listener_system.py)."""
    return {
        "server": {"certfile": dev_pki / "server.pem", "keyfile": dev_pki / "server.key"},
        "client_auth": {"mode": "request", "trust": [client_pki.root_file]},
        "inbox": {"url": f"sqlite:///{tmp_path / 'unused.db'}"},
    }
