"""The Dockerfile, built with podman on a base made by debootstrap, run with buildah.

Public images cannot be pulled here, so the base is a Debian made from the machine's
own apt mirror; BASE_IMAGE points the build at it. Wheels are built on the host first
(PIP_INSTALL_OPTIONS), so the image builds without a package index.
"""

from __future__ import annotations

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
from pathlib import Path

import httpx
import pytest
from harness import PAYLOADS, ROOT, SOAP_HEADERS, free_port, is_ack, require_executable

pytestmark = pytest.mark.slow


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (never written into the repository)."""
    sources = [*Path("/etc/apt/sources.list.d").glob("*.sources"),
               *Path("/etc/apt/sources.list.d").glob("*.list"), Path("/etc/apt/sources.list")]
    for path in sources:
        if not path.exists():
            continue
        text = path.read_text()
        found = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.MULTILINE) or \
            re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s+\S+", text, re.MULTILINE)
        if found:
            return found.group(1)
    pytest.fail("no Debian mirror in the apt sources")


def context_files(destination: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
    for name in listed.stdout.decode().split("\0"):
        if name and (ROOT / name).is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)


def run(*command: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, f"{command}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def test_container_builds_runs_and_acknowledges(tmp_path, dev_pki):
    podman = require_executable("podman")
    buildah = require_executable("buildah")
    debootstrap = require_executable("debootstrap")
    if os.geteuid() != 0:
        message = "debootstrap and chroot isolation need root"
        if os.environ.get("OMGATE_REQUIRE_ALL") == "1":
            pytest.fail(message)
        pytest.skip(message)
    runroot = tempfile.mkdtemp(prefix="omg-run-", dir="/tmp")  # podman wants a short path
    storage = ["--root", str(tmp_path / "storage"), "--runroot", runroot,
               "--storage-driver", "vfs"]
    try:
        rootfs = tmp_path / "rootfs"
        run(debootstrap, "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
            "bookworm", rootfs, apt_mirror())
        tarball = tmp_path / "rootfs.tar"
        run("tar", "-C", rootfs, "-cf", tarball, ".")
        run(podman, *storage, "import", tarball, "localhost/omgate-base:test")
        tarball.unlink()
        shutil.rmtree(rootfs)

        context = tmp_path / "context"
        context_files(context)
        run(sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", context / "wheels",
            context)
        run(sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:",
            "--dest", context / "wheels", "setuptools>=61")
        run(podman, *storage, "build", "--isolation", "chroot", "--format", "docker",
            "--build-arg", "BASE_IMAGE=localhost/omgate-base:test",
            "--build-arg", "PIP_INSTALL_OPTIONS=--no-index --find-links /src/wheels",
            "-t", "localhost/omgate:test", context)

        [image] = json.loads(run(podman, *storage, "inspect", "localhost/omgate:test").stdout)
        config = image["Config"]
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
            lines = [json.loads(line) for line in log.read_text().splitlines()
                     if line.startswith("{")]
            assert any(line["event"] == "om.accepted" for line in lines)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
    finally:
        subprocess.run([podman, *storage, "system", "reset", "--force"], capture_output=True,
                       timeout=300, check=False)
        shutil.rmtree(runroot, ignore_errors=True)
