"""omgate outside its repository: finding the configuration, `omgate init`, refusing at start
what cannot work, and a wheel installed in a new virtual environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import (
    PAYLOADS,
    ROOT,
    free_port,
    is_ack,
    run_omgate,
    ssl_context,
    start_server,
    to_toml,
)

from service.config import find_config, load_config

ACCOUNT = PAYLOADS / "amplabs-create_account.xml"


def omgate_in(folder: Path, *args: str, env: dict[str, str] | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`omgate` run from ``folder`` (this checkout's code), as a user elsewhere would."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    environment.pop("OMGATE_CONFIG", None)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=folder, env=environment,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_serve_requires_the_server_certificate_and_key_and_names_them(tmp_path):
    path = tmp_path / "omgate.toml"
    path.write_text(f'[server]\nbind = ["127.0.0.1:{free_port()}"]\nworkers = 1\n'
                    f'[inbox]\nurl = "sqlite:///inbox.db"\n')
    result = run_omgate("serve", "--config", str(path))
    assert result.returncode == 2
    assert (f"omgate: configuration error: {path}: [server] certfile and keyfile: required by "
            "the TLS listeners of [server] bind") in result.stderr
    # the inbox tools need neither (and create no inbox: migrate does)
    assert run_omgate("inbox", "migrate", "--config", str(path)).returncode == 0
    assert run_omgate("inbox", "list", "--config", str(path)).returncode == 0
    path.write_text('[server]\nbind = []\nplain_bind = ["127.0.0.1:8080"]\n')
    assert load_config(path, {}).server.certfile is None  # a balancer terminates TLS


@pytest.mark.slow
def test_a_config_with_only_the_server_section_serves_and_acknowledges(dev_pki, tmp_path,
                                                                       server_log_dir):
    port = free_port()
    config = tmp_path / "omgate.toml"
    config.write_text(to_toml({"server": {"bind": [f"127.0.0.1:{port}"],
                                          "certfile": dev_pki / "server.pem",
                                          "keyfile": dev_pki / "server.key"}}))
    state = tmp_path / "state"
    env = {"STATE_DIRECTORY": str(state)}
    server = start_server(config, server_log_dir / "only-server.log", dev_pki / "ca.pem", port,
                          env=env)
    try:
        context = ssl_context(dev_pki / "ca.pem")
        context.load_cert_chain(dev_pki / "client-chain.pem", dev_pki / "client.key")
        with server.client() as plain:
            assert is_ack(plain.post("/salesforce/outbound", content=ACCOUNT.read_bytes(),
                                     headers={"Content-Type": "text/xml"}))
        import httpx

        with httpx.Client(base_url=server.url, verify=context, timeout=20) as presenting:
            response = presenting.post("/salesforce/outbound", content=ACCOUNT.read_bytes(),
                                       headers={"Content-Type": "text/xml"})
        assert is_ack(response)  # request mode with no anchors: logged, never refused
        decision = server.wait_for("client_auth.decision", lambda e: e.get("chain"))
        assert decision["mode"] == "request"
        assert decision["enforced"] is False
        assert [f["code"] for f in decision["findings"]] == ["untrusted_root"]
        assert (state / "inbox.db").exists()
        listed = run_omgate("inbox", "list", "--config", str(config), env=env)
        assert [n["notification_id"] for n in json.loads(listed.stdout)] == [
            "04lxx000000CaSdAAK"]
    finally:
        assert server.stop() == 0


def test_require_with_nothing_to_trust_does_not_start(dev_pki, tmp_path, server_log_dir):
    port = free_port()
    config = tmp_path / "omgate.toml"
    config.write_text(to_toml({
        "server": {"bind": [f"127.0.0.1:{port}"], "certfile": dev_pki / "server.pem",
                   "keyfile": dev_pki / "server.key", "workers": 1},
        "client_auth": {"mode": "require"},
        "inbox": {"url": f"sqlite:///{tmp_path / 'inbox.db'}"}}))
    server = start_server(config, server_log_dir / "require-nothing.log", dev_pki / "ca.pem",
                          port, wait=False)
    assert server.process.wait(30) == 2
    output = server.log_path.read_text()
    checked = json.loads(run_omgate("check", "--config", str(config), "--json",
                                    "--trust", str(dev_pki / "ca.pem")).stdout)
    [conflict] = [f for f in checked["findings"] if f["code"] == "config_conflict"]
    assert f"ERROR config_conflict: {conflict['message']}" in output  # check's very words
    assert conflict["hint"] in output
    assert not server.events("server.started")
    assert not (tmp_path / "inbox.db").exists()


def test_conflict_warnings_are_logged_and_the_server_starts(omgate_server):
    server = omgate_server({"client_auth": {"mode": "off", "reject_with": "handshake"}})
    [warning] = server.events("config.conflict")
    assert warning["level"] == "warning"
    assert warning["code"] == "config_conflict"
    assert "mode is off" in warning["message"]
    assert server.events("server.started")


def test_the_configuration_is_looked_for_in_order_and_the_error_says_where(tmp_path):
    nowhere = omgate_in(tmp_path, "inbox", "list")
    assert nowhere.returncode == 2
    assert ("no configuration file found; looked for --config (not given), $OMGATE_CONFIG "
            "(not set), config/omgate.toml, /etc/omgate/omgate.toml") in nowhere.stderr
    assert "omgate init" in nowhere.stderr

    def named(folder: str, level: str) -> Path:
        path = tmp_path / folder / "omgate.toml"
        path.parent.mkdir(parents=True)
        path.write_text(f'[server]\nbind = []\nplain_bind = ["127.0.0.1:1"]\n'
                        f'[inbox]\nurl = "sqlite:///inbox.db"\n[logging]\nlevel = "{level}"\n')
        return path

    found = named("config", "debug")
    variable = named("elsewhere", "warning")
    flag = named("flag", "error")
    system = tmp_path / "etc" / "omgate.toml"
    assert find_config(None, {}, (found, system)).path == found
    assert find_config(None, {}, (tmp_path / "none.toml", found)).path == found
    assert find_config(None, {"OMGATE_CONFIG": str(variable)}, (found,)).path == variable
    assert find_config(flag, {"OMGATE_CONFIG": str(variable)}, (found,)).path == flag
    # and the real commands, from the folder that holds config/omgate.toml (migrate creates
    # the inbox its URL names, relative to that file; list reads it)
    assert omgate_in(tmp_path, "inbox", "migrate").returncode == 0
    assert (tmp_path / "config" / "inbox.db").exists()
    assert omgate_in(tmp_path, "inbox", "list").stdout.strip() == "[]"
    missing = omgate_in(tmp_path, "inbox", "list", env={"OMGATE_CONFIG": "gone.toml"})
    assert missing.returncode == 2
    assert "gone.toml: configuration file not found (named by $OMGATE_CONFIG)" in missing.stderr


def test_init_writes_the_shipped_configuration_and_never_overwrites(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = omgate_in(work, "init")
    assert result.returncode == 0, result.stderr
    written = work / "config" / "omgate.toml"
    assert written.read_text() == (ROOT / "config" / "omgate.toml").read_text()
    assert (work / "var").is_dir()  # its inbox's folder: serve refuses a missing one
    assert "created var, the folder of its inbox ([inbox] url)" in result.stdout
    assert "omgate pki dev --out certs/dev" in result.stdout
    assert "\n  omgate serve\n" in result.stdout  # found there without --config
    written.write_text("# mine\n")
    again = omgate_in(work, "init")
    assert again.returncode == 1
    assert "exists" in again.stderr
    assert written.read_text() == "# mine\n"
    elsewhere = tmp_path / "etc-omgate"
    other = omgate_in(work, "init", str(elsewhere))
    assert other.returncode == 0
    assert f"omgate pki dev --out {tmp_path / 'certs' / 'dev'}" in other.stdout
    assert f"omgate serve --config {elsewhere / 'omgate.toml'}" in other.stdout


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    import socket

    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"omgate did not listen:\n{log.read_text()}")


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_repository(tmp_path):
    """A new user's path: build the wheel, install it in a new virtual environment
    elsewhere, and there init, make certificates, serve, send, and list the inbox."""
    wheels, venv, home = tmp_path / "wheels", tmp_path / "venv", tmp_path / "home"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(wheels), str(ROOT)], check=True, timeout=600)
    [wheel] = wheels.glob("omgate-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], check=True,
                   timeout=900)
    home.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("OMGATE_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"

    def omgate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["omgate", *args], cwd=home, env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    version = omgate("--version")
    assert version.returncode == 0 and version.stdout.startswith("omgate 0."), version
    # the manual is what --help points to, and it is installed: a wheel has no README.md
    assert "README" not in omgate("--help").stdout
    manual = omgate("help", "probe")
    assert manual.returncode == 0 and manual.stdout.startswith("### `omgate probe URL`"), manual
    assert omgate("init").returncode == 0
    assert omgate("pki", "dev").returncode == 0
    port = free_port()
    env["OMGATE_SERVER__BIND"] = f'["127.0.0.1:{port}"]'
    env["OMGATE_SERVER__WORKERS"] = "1"
    log = tmp_path / "serve.log"
    process = subprocess.Popen(["omgate", "serve"], cwd=home, env=env, stdout=log.open("wb"),
                               stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, process, log)
        sent = omgate("send", f"https://localhost:{port}/salesforce/outbound", "--generate",
                      "Account", "--ca", "certs/dev/ca.pem", "--client-cert",
                      "certs/dev/client-chain.pem", "--client-key", "certs/dev/client.key")
        assert sent.returncode == 0, sent.stdout + sent.stderr + log.read_text()
        listed = json.loads(omgate("inbox", "list").stdout)
        assert [n["sobject_type"] for n in listed] == ["Account"]
        assert (home / "var" / "inbox.db").exists()
    finally:
        process.terminate()
        assert process.wait(60) == 0


def test_a_missing_inbox_folder_stops_the_start_unless_asked_to_create_it(dev_pki, tmp_path,
                                                                          server_log_dir):
    """A mistyped inbox URL silently created its folders, started, and acknowledged into
    an inbox nobody reads. A folder that does not exist now stops the start (and the
    tools), unless `serve --create-inbox-dir`; the resolved path is logged at start."""
    port, health = free_port(), free_port()
    missing = tmp_path / "nonexistent" / "dir"
    config = tmp_path / "omgate.toml"
    config.write_text(to_toml({
        "server": {"bind": [f"127.0.0.1:{port}"], "health_bind": f"127.0.0.1:{health}",
                   "certfile": dev_pki / "server.pem", "keyfile": dev_pki / "server.key",
                   "workers": 1},
        "inbox": {"url": f"sqlite:///{missing / 'inbox.db'}"}}))
    refused = run_omgate("serve", "--config", str(config))
    assert refused.returncode == 2
    assert (f"omgate: configuration error: {config}: [inbox] url: the folder {missing} does "
            "not exist") in refused.stderr, refused.stderr
    assert "--create-inbox-dir" in refused.stderr
    for tool in (["inbox", "list"], ["chains", "list"]):
        result = run_omgate(*tool, "--config", str(config))
        assert result.returncode == 2 and f"the folder {missing} does not exist" in \
            result.stderr, result
    elsewhere = tmp_path / "typo" / "inbox.db"
    blamed = run_omgate("serve", "--config", str(config),
                        env={"OMGATE_INBOX__URL": f"sqlite:///{elsewhere}"})
    assert "environment variable OMGATE_INBOX__URL: [inbox] url: the folder" in blamed.stderr
    assert not (tmp_path / "nonexistent").exists() and not elsewhere.parent.exists()

    server = start_server(config, server_log_dir / "create-inbox-dir.log", dev_pki / "ca.pem",
                          port, health_port=health, serve_args=("--create-inbox-dir",))
    try:
        location = server.wait_for("inbox.location")
        assert location["location"] == str(missing / "inbox.db")
        assert location["set_by"] == str(config)
        assert location["created_folder"] == str(missing)
        with server.client() as client:
            assert is_ack(client.post("/salesforce/outbound", content=ACCOUNT.read_bytes(),
                                      headers={"Content-Type": "text/xml"}))
    finally:
        assert server.stop() == 0
    assert (missing / "inbox.db").exists()
    # a URL relative to the configuration's folder is a project's own layout (`omgate
    # init` writes ../var): its folder is created, and the start says so
    relative = start_server(config, server_log_dir / "relative-inbox.log", dev_pki / "ca.pem",
                            port, health_port=health,
                            env={"OMGATE_INBOX__URL": "sqlite:///state/inbox.db"})
    try:
        location = relative.wait_for("inbox.location")
        assert location["location"] == str(tmp_path / "state" / "inbox.db")
        assert location["set_by"] == "environment variable OMGATE_INBOX__URL"
        assert location["created_folder"] == str(tmp_path / "state")
    finally:
        assert relative.stop() == 0


def test_every_configuration_refusal_comes_before_a_socket_is_opened(dev_pki, tmp_path):
    """With the port taken, a console off loopback without a token was reported as
    "address already in use": the configuration's own fault is said first."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "omgate.toml"
        settings = {"server": {"bind": [f"127.0.0.1:{port}"], "workers": 1,
                               "certfile": dev_pki / "server.pem",
                               "keyfile": dev_pki / "server.key",
                               "admin_bind": f"0.0.0.0:{free_port()}"},
                    "inbox": {"url": f"sqlite:///{tmp_path / 'inbox.db'}"}}
        config.write_text(to_toml(settings))
        console = run_omgate("serve", "--config", str(config), env={"OMGATE_ADMIN_TOKEN": ""})
        assert console.returncode == 2
        assert f"{config}: [server] admin_bind: 0.0.0.0:" in console.stderr, console.stderr
        assert "already in use" not in console.stderr
        settings["server"]["admin_bind"] = ""
        config.write_text(to_toml(settings))
        busy = run_omgate("serve", "--config", str(config))
        assert busy.returncode == 2
        assert f"cannot listen on 127.0.0.1:{port} ([server] bind): address already in use" \
            in busy.stderr, busy.stderr
