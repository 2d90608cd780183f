"""`make run`, then the README's curl command, on a copy of the repository with no .venv."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest
from harness import ROOT, require_executable

PORT = 8443
IGNORED = shutil.ignore_patterns(".venv", "var", "dev", ".git", "__pycache__", ".pytest_cache",
                                 ".ruff_cache", ".mypy_cache", "*.egg-info")


def readme_curl_command() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- readme-curl -->\n```sh\n(.*?)```", readme, re.DOTALL)
    assert match, "README.md lost its marked curl example"
    return match.group(1)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.slow
def test_make_run_then_readme_curl_returns_the_ack(tmp_path):
    require_executable("make")
    require_executable("curl")
    if not port_is_free(PORT):
        if os.environ.get("OMGATE_REQUIRE_ALL") == "1":
            pytest.fail(f"port {PORT} is taken; `make run` needs it")
        pytest.skip(f"port {PORT} is taken (is `make run` already running?)")
    checkout = tmp_path / "omgate"
    shutil.copytree(ROOT, checkout, ignore=IGNORED)
    log = (tmp_path / "make-run.log").open("wb")
    process = subprocess.Popen(["make", "run"], cwd=checkout, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        answer = None
        while time.monotonic() < deadline and process.poll() is None:
            result = subprocess.run(["bash", "-c", readme_curl_command()], cwd=checkout,
                                    capture_output=True, text=True, timeout=30, check=False)
            if result.returncode == 0:
                answer = result.stdout
                break
            time.sleep(1)
        output = (tmp_path / "make-run.log").read_text()
        assert answer is not None, f"make run never answered:\n{output[-3000:]}"
        assert "<Ack>true</Ack>" in answer
        assert (checkout / "certs" / "dev" / "server.pem").exists()
        assert (checkout / "var" / "inbox.db").exists()
        listed = subprocess.run([".venv/bin/omgate", "inbox", "list"], cwd=checkout,
                                capture_output=True, text=True, check=True, timeout=60)
        assert '"notification_id": "04lxx000000CaSdAAK"' in listed.stdout
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
        log.close()
