"""The inbox password never leaves omgate: not in logs, error messages or HTTP answers.
And files that hold secrets (keys, the console's token, the SQLite inbox) that other local
users can read are named at start.

The password is random per run, so any leak of it is unmistakable. PostgreSQL trusts
local connections here, so a URL may carry any password and still connect.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from harness import free_port, ssl_context
from postgres_server import PostgresServer, start_postgres

from service.app import READINESS_FRESH_SECONDS

PASSWORD = f"Wh1sper-{secrets.token_hex(6)}"
ROLE = "omgate_with_password"
MASK = "***"


@dataclass(frozen=True)
class Database:
    port: int
    name: str

    def url_with_password_in_user_info(self) -> str:
        return f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{self.name}"

    def url_with_password_parameter(self) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{self.name}?password={PASSWORD}"


def database_owned_by_a_role_with_a_password(server: PostgresServer) -> Database:
    import psycopg

    name = f"secret_{secrets.token_hex(4)}"
    with psycopg.connect(server.admin_url, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                    (ROLE,)).fetchone()
        if not exists:
            connection.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        connection.execute(f'CREATE DATABASE "{name}" OWNER {ROLE}')
    return Database(server.port, name)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, so the test can stop it."""
    server = start_postgres()
    yield server
    server.stop()


@pytest.mark.parametrize("form", ["url_with_password_in_user_info",
                                  "url_with_password_parameter"])
def test_server_started_shows_the_inbox_without_its_password(omgate_server, postgres, form):
    url = getattr(database_owned_by_a_role_with_a_password(postgres), form)()
    server = omgate_server({"inbox": {"url": url}})
    started = server.wait_for("server.started")
    assert f"password={MASK}" in started["inbox"]
    assert f"user={ROLE}" in started["inbox"]
    server.stop()
    assert PASSWORD not in server.log_path.read_text()


@pytest.mark.parametrize(("url", "env"), [
    (f"host=127.0.0.1 password={PASSWORD} dbname=omgate", False),  # the keyword form
    (f"postgresq://omgate:{PASSWORD}@127.0.0.1/omgate", False),
    (f"postgresql://omgate@127.0.0.1:1/omgate?password={PASSWORD}&sslmod=require", False),
    (f"postgresq://omgate:{PASSWORD}@127.0.0.1/omgate", True),
])
def test_a_bad_inbox_url_is_a_configuration_error_without_the_password(omgate_server, url,
                                                                       env):
    if env:
        server = omgate_server(env={"OMGATE_INBOX__URL": url}, wait=False)
    else:
        server = omgate_server({"inbox": {"url": url}}, wait=False)
    assert server.process.wait(30) == 2
    output = server.log_path.read_text()
    assert "configuration error" in output
    assert "[inbox] url" in output
    assert ("OMGATE_INBOX__URL" if env else str(server.config_path)) in output
    assert PASSWORD not in output


def test_readiness_tells_only_the_health_listener_why_postgresql_is_gone(omgate_server,
                                                                        own_postgres):
    url = database_owned_by_a_role_with_a_password(own_postgres).url_with_password_parameter()
    plain_port, health_port = free_port(), free_port()
    server = omgate_server({"inbox": {"url": url},
                            "server": {"plain_bind": [f"127.0.0.1:{plain_port}"],
                                       "health_bind": f"127.0.0.1:{health_port}"}})
    public = {"tls": f"{server.url}/readyz", "plain": f"http://127.0.0.1:{plain_port}/readyz"}
    health = f"http://127.0.0.1:{health_port}/readyz"
    with httpx.Client(verify=ssl_context(server.ca_path), timeout=20) as client:
        assert all(client.get(address).text == "ready\n" for address in public.values())
        assert client.get(health).text == "ready\n"
        own_postgres.stop()
        time.sleep(READINESS_FRESH_SECONDS)  # past the answer of the last check
        for address in public.values():
            answer = client.get(address)
            assert (answer.status_code, answer.text) == (503, "not ready\n"), address
        answer = client.get(health)
    assert answer.status_code == 503
    assert answer.text.startswith("inbox not writable: ")
    assert f"password={MASK}" in answer.text
    assert PASSWORD not in answer.text
    not_ready = server.wait_for("health.not_ready")
    assert f"password={MASK}" in not_ready["detail"]
    server.stop()
    assert PASSWORD not in server.log_path.read_text()


def _copy(source: Path, target: Path, mode: int) -> Path:
    shutil.copyfile(source, target)
    target.chmod(mode)
    return target


@pytest.mark.parametrize("client_key", ["own_file", "in_the_certificate_file"])
def test_start_names_each_secret_file_others_can_read_and_leaves_its_mode(omgate_server,
                                                                            dev_pki, tmp_path,
                                                                            client_key):
    files = tmp_path / "files"
    files.mkdir()
    token = files / "admin-token"
    token.write_text(secrets.token_urlsafe(24))
    token.chmod(0o640)  # readable by the file's group
    inbox = files / "inbox.db"
    inbox.touch(0o644)  # an inbox an older omgate (or the umask) made readable by everyone
    inbox.chmod(0o644)
    if client_key == "own_file":
        delivery_files = {"webhook_client_cert": dev_pki / "client-chain.pem",
                          "webhook_client_key": _copy(dev_pki / "client.key",
                                                      files / "client.key", 0o604)}
        key_file = ("delivery.webhook_client_key", delivery_files["webhook_client_key"])
    else:
        combined = files / "client-and-key.pem"
        combined.write_bytes((dev_pki / "client-chain.pem").read_bytes()
                             + (dev_pki / "client.key").read_bytes())
        combined.chmod(0o604)
        delivery_files = {"webhook_client_cert": combined}
        key_file = ("delivery.webhook_client_cert", combined)
    expected = {
        "server.keyfile": (_copy(dev_pki / "server.key", files / "server.key", 0o644), "0644"),
        key_file[0]: (key_file[1], "0604"),
        "admin.token_file": (token, "0640"),
        "inbox.url": (inbox, "0644"),
    }
    server = omgate_server({
        "server": {"keyfile": expected["server.keyfile"][0],
                   "admin_bind": f"127.0.0.1:{free_port()}"},
        "admin": {"token_file": token},
        "delivery": {"webhook_url": f"https://127.0.0.1:{free_port()}/hook", **delivery_files},
        "inbox": {"url": f"sqlite:///{inbox}"},
    }, umask=0o022)
    warnings = server.events("config.file_permissions")
    assert len(warnings) == len(expected)
    assert {event["key"]: (event["path"], event["mode"]) for event in warnings} == {
        key: (str(path), mode) for key, (path, mode) in expected.items()}
    for event in warnings:
        assert event["level"] == "warning"
        assert event["config"] == str(server.config_path)
        assert f"chmod go-rwx {event['path']}" in event["hint"]
    assert server.events("server.started")
    # omgate said so and changed nothing: the modes are the operator's to set
    assert {key: f"{path.stat().st_mode & 0o777:04o}" for key, (path, _mode) in expected.items()
            } == {key: mode for key, (_path, mode) in expected.items()}
    log = server.log_path.read_text()
    assert token.read_text() not in log
    assert (files / "server.key").read_text().splitlines()[1] not in log
