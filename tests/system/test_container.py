"""The Dockerfile, built by `make image` (podman on a debootstrapped base), run with buildah.

Public images cannot be pulled here, so `make image` makes a Debian base from the
machine's own apt mirror and downloads the locked wheels on the host first, so the image
builds without a package index. It says what it does as it goes: a build takes minutes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib

import httpx
import pytest
from checkout import LONGEST_SILENCE, Streamed
from harness import (
    PAYLOADS,
    ROOT,
    SOAP_HEADERS,
    free_port,
    is_ack,
    logged_events,
    require_executable,
)

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
SOURCE_LABEL = "org.opencontainers.image.source"


def build_image_script():
    spec = importlib.util.spec_from_file_location("build_image",
                                                  ROOT / "scripts" / "build_image.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run(*command, timeout: float = 1800, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            timeout=timeout, check=False, **kwargs)
    assert result.returncode == 0, f"{command}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def test_a_plain_docker_build_labels_the_image_with_the_project_version():
    """`docker build .` without build arguments: the Dockerfile's default is the label, and
    no source label says something unknown (it was once a local path)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^ARG VERSION={re.escape(VERSION)}$", dockerfile, re.MULTILINE)
    for label in ("version", "revision"):
        assert f"org.opencontainers.image.{label}=" in dockerfile
    assert f"{SOURCE_LABEL}=\"" not in dockerfile and "ARG SOURCE" not in dockerfile


def test_the_source_label_is_the_repository_url_of_the_project_metadata_or_none():
    script = build_image_script()
    assert script.source_url({"urls": {"Homepage": "https://omgate.example",
                                       "Source Code": "https://git.example/omgate"}}) == \
        "https://git.example/omgate"
    assert script.source_url({"urls": {"Repository": "https://git.example/o"}}) == \
        "https://git.example/o"
    assert script.source_url({"urls": {"Homepage": "https://omgate.example"}}) is None
    assert script.source_url({}) is None
    assert script.labels().source == script.source_url(PROJECT)


@pytest.mark.slow
def test_container_builds_runs_and_acknowledges(tmp_path, dev_pki):
    podman = require_executable("podman")
    buildah = require_executable("buildah")
    make = require_executable("make")
    require_executable("debootstrap")
    if os.geteuid() != 0:
        message = "debootstrap and chroot isolation need root"
        if os.environ.get("OMGATE_REQUIRE_ALL") == "1":
            pytest.fail(message)
        pytest.skip(message)
    runroot = tempfile.mkdtemp(prefix="omg-run-", dir="/tmp")  # podman wants a short path
    storage = ["--root", str(tmp_path / "storage"), "--runroot", runroot,
               "--storage-driver", "vfs"]
    try:
        building = Streamed.start(
            [make, "image", "IMAGE=localhost/omgate:test",
             f"IMAGE_OPTIONS=--root {tmp_path / 'storage'} --runroot {runroot}"], ROOT)
        try:
            building.process.wait(3600)
        finally:
            building.stop()
        output = building.text()
        (tmp_path / "make-image.log").write_text(output)
        assert building.process.returncode == 0, output[-3000:]
        how_to_run = output.rsplit("Built localhost/omgate:test.", 1)[1]
        assert " run --detach " in how_to_run and "| docker load" in how_to_run
        # each stage announced, then podman's steps passed on as they came: "[1/2] STEP
        # 1/4: FROM ..." for each instruction of each stage of the Dockerfile
        assert re.findall(r"^make image: \[(\d)/3\]", output, re.MULTILINE) == ["1", "2", "3"]
        steps = [(at, re.match(r"  \[(\d+)/(\d+)\] STEP (\d+)/(\d+): ", line))
                 for at, line in building.lines]
        steps = [(at, step) for at, step in steps if step]
        numbered = [tuple(int(n) for n in step.groups()) for _, step in steps]
        stages = list(dict.fromkeys((stage, total, count) for stage, total, _, count in numbered))
        assert [stage for stage, _, _ in stages] == list(range(1, stages[0][1] + 1)), output
        assert numbered == [(stage, total, step, count) for stage, total, count in stages
                            for step in range(1, count + 1)], output
        assert steps[-1][0] - steps[0][0] > 1, "podman's steps came all at once, at the end"
        assert building.longest_silence() < LONGEST_SILENCE, output

        [image] = json.loads(run(podman, *storage, "inspect", "localhost/omgate:test").stdout)
        config = image["Config"]
        labels = config["Labels"]
        assert labels["org.opencontainers.image.version"] == VERSION
        head = run("git", "-C", ROOT, "rev-parse", "HEAD").stdout.strip()
        assert labels["org.opencontainers.image.revision"] == head
        source = build_image_script().source_url(PROJECT)
        assert labels.get(SOURCE_LABEL) == source  # absent when the project names none
        assert config["User"] == "10001:10001"
        assert "/var/lib/omgate" in config["Volumes"]
        assert "OMGATE_CONFIG=/etc/omgate/omgate.toml" in config["Env"]
        assert "OMGATE_LOGGING__FORMAT=json" in config["Env"]
        healthcheck = image["Healthcheck"]["Test"]  # podman puts it beside Config
        assert "/readyz" in " ".join(healthcheck)
        assert config["Entrypoint"] == ["omgate"]

        data = tmp_path / "data"
        data.mkdir()
        os.chown(data, 10001, 10001)
        tls_port, health_port = free_port(), free_port()
        container = run(buildah, *storage, "from", "localhost/omgate:test").stdout.strip()
        # The certificates go in by copy: buildah's chroot isolation keeps only one bind
        # mount writable through to the host, and that one is the inbox volume.
        run(buildah, *storage, "copy", "--chown", "10001:10001", container, dev_pki, "/certs")
        health_url = f"http://127.0.0.1:{health_port}/readyz"
        run(buildah, *storage, "config",
            "--env", f'OMGATE_SERVER__BIND=["127.0.0.1:{tls_port}"]',
            "--env", f"OMGATE_SERVER__HEALTH_BIND=127.0.0.1:{health_port}",
            "--env", 'OMGATE_SERVER__PUBLIC_NAMES=["localhost"]',
            "--env", f"OMGATE_HEALTH_URL={health_url}", container)
        log = tmp_path / "container.log"
        server = subprocess.Popen(
            [buildah, *storage, "run", "--isolation", "chroot", "--network", "host",
             "--user", "10001:10001", "-v", f"{data}:/var/lib/omgate",
             container, "--", "omgate", "serve"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(health_url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None, log.read_text()
                time.sleep(0.3)
            verify = ssl.create_default_context(cafile=str(dev_pki / "ca.pem"))
            verify.load_cert_chain(dev_pki / "client-chain.pem", dev_pki / "client.key")
            response = httpx.post(f"https://localhost:{tls_port}/salesforce/outbound",
                                  content=(PAYLOADS / "amplabs-create_account.xml").read_bytes(),
                                  headers=SOAP_HEADERS, verify=verify, timeout=20)
            assert is_ack(response), response.text
            assert "OMGATE_HEALTH_URL" in " ".join(healthcheck)
            run(buildah, *storage, "run", "--isolation", "chroot", "--network", "host",
                container, "--", *healthcheck[1:])  # the HEALTHCHECK command, in the image
            assert (data / "inbox.db").exists()
            assert (data / "inbox.db").stat().st_uid == 10001
            lines = logged_events(log)
            assert any(line["event"] == "om.accepted" for line in lines)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
    finally:
        subprocess.run([podman, *storage, "system", "reset", "--force"], capture_output=True,
                       timeout=300, check=False)
        shutil.rmtree(runroot, ignore_errors=True)
