"""``make image``: build the container image here, with podman, without a Docker engine.

Public images cannot be pulled here, so the base is a Debian made by debootstrap from the
apt mirror this machine already uses (read from its apt sources, never written down) and
imported into podman's storage once. The locked wheels (requirements.txt, hash-checked)
are downloaded on the host into the build context, so the build itself needs no package
index. ``--format docker`` keeps the HEALTHCHECK, which the OCI format drops.

Each stage is announced, and every line its programs print is passed on as it comes
(podman's ``STEP n/m`` for each instruction of the Dockerfile): a build takes minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASE_SUITE = "bookworm"
BASE_PYTHON = "3.11"  # the python3 of BASE_SUITE: the wheels are downloaded for it
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))
STAGES = 3
# [project.urls] labels that name where the source is (PEP 753's "source" and its aliases),
# compared as PEP 753 normalizes them
SOURCE_URL_LABELS = ("source", "repository", "sourcecode", "github")
SOURCE_LABEL = "org.opencontainers.image.source"


class BuildError(Exception):
    """A step failed; the message says which and why."""


@dataclass(frozen=True)
class Podman:
    """podman with the storage options every call needs."""

    program: str
    storage: tuple[str, ...]

    def command(self, *arguments: str | Path) -> list[str]:
        return [self.program, *self.storage, *(str(argument) for argument in arguments)]

    def shown(self, *arguments: str) -> str:
        return shlex.join([Path(self.program).name, *self.storage, *arguments])


@dataclass(frozen=True)
class Labels:
    version: str
    revision: str
    source: str | None  # the repository's URL from pyproject.toml, if it names one


def stage(number: int, what: str) -> None:
    print(f"make image: [{number}/{STAGES}] {what}", flush=True)


def run(command: Sequence[str | Path], what: str) -> str:
    """Run ``command`` quietly; its output, or what went wrong."""
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise BuildError(f"{what} failed ({shlex.join(map(str, command))}):\n"
                         f"{(result.stdout + result.stderr)[-3000:]}")
    return result.stdout


def run_shown(command: Sequence[str | Path], what: str) -> None:
    """Run ``command``, passing each line it prints on as it comes, indented."""
    shown = [str(part) for part in command]
    print(f"  $ {shlex.join(shown)}", flush=True)
    last: deque[str] = deque(maxlen=40)
    with subprocess.Popen(shown, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace") as process:
        for line in process.stdout or ():
            last.append(line)
            print(f"  {line}", end="", flush=True)
    if process.returncode != 0:
        raise BuildError(f"{what} failed (exit status {process.returncode}); its last lines:\n"
                         + "".join(last))


def program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BuildError(f"{name} is not installed (Debian package: {name})")
    return path


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses."""
    files = [path for folder in APT_SOURCES
             for path in ([folder] if folder.is_file() else sorted(folder.glob("*")))
             if path.suffix in (".sources", ".list")]
    for path in files:
        text = path.read_text()
        found = (re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.MULTILINE)
                 or re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s+\S+", text, re.MULTILINE))
        if found:
            return found.group(1)
    raise BuildError("no Debian mirror found in the apt sources")


def ensure_base(podman: Podman, base: str, workdir: Path) -> None:
    """Import a debootstrapped Debian as ``base``, unless podman has it already."""
    exists = subprocess.run(podman.command("image", "exists", base), check=False)
    if exists.returncode == 0:
        stage(1, f"base image {base}: already in podman's storage")
        return
    if os.geteuid() != 0:
        raise BuildError("debootstrap needs root to make the base image")
    stage(1, f"base image {base}: debootstrap {BASE_SUITE} (a few minutes, once)")
    rootfs, tarball = workdir / "rootfs", workdir / "rootfs.tar"
    run_shown([program("debootstrap"), "--variant=minbase", f"--include={BASE_PACKAGES}",
               BASE_SUITE, rootfs, apt_mirror()], "debootstrap")
    print("  packing the base and importing it into podman's storage", flush=True)
    run(["tar", "-C", rootfs, "-cf", tarball, "."], "packing the base")
    shutil.rmtree(rootfs)
    run_shown(podman.command("import", tarball, base), "podman import")
    tarball.unlink()


def build_context(destination: Path) -> None:
    """The repository's files (committed or not, minus what git ignores), and the locked
    wheels in wheels/ for an index-less build."""
    listed = run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others",
                  "--exclude-standard"], "listing the repository's files")
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    download: list[str | Path] = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
        "--progress-bar", "off", "--no-deps", "--only-binary", ":all:",
        "--python-version", BASE_PYTHON, "--dest", destination / "wheels"]
    run_shown([*download, "--require-hashes", "-r", ROOT / "requirements.txt"],
              "downloading the locked wheels")
    # the build backend named in pyproject.toml, to build omgate's own wheel
    run_shown([*download, "setuptools>=61"], "downloading setuptools")


def source_url(project: Mapping[str, Any]) -> str | None:
    """The repository's URL among pyproject.toml's [project.urls], if it names one."""
    for label, url in project.get("urls", {}).items():
        if re.sub(r"[^a-z0-9]", "", label.lower()) in SOURCE_URL_LABELS:
            return str(url)
    return None


def labels() -> Labels:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    revision = run(["git", "-C", ROOT, "rev-parse", "HEAD"], "reading the commit").strip()
    return Labels(project["version"], revision, source_url(project))


def build(podman: Podman, tag: str, base: str) -> Labels:
    found = labels()
    # no source label rather than a wrong one (a local path, a mirror)
    source: list[str] = ["--label", f"{SOURCE_LABEL}={found.source}"] if found.source else []
    with tempfile.TemporaryDirectory(prefix="omgate-image-", dir="/var/tmp") as scratch:
        workdir = Path(scratch)
        ensure_base(podman, base, workdir)
        context = workdir / "context"
        stage(2, "build context: the repository's files and the locked wheels")
        build_context(context)
        stage(3, f"podman build {tag} (version {found.version}, revision "
                 f"{found.revision[:12]}, source {found.source or 'not labelled'}): a step "
                 "per instruction of the Dockerfile")
        run_shown(podman.command(
            "build", "--isolation", "chroot", "--format", "docker",
            "--build-arg", f"BASE_IMAGE={base}",
            "--build-arg", "PIP_INSTALL_OPTIONS=--no-index --find-links /src/wheels",
            "--build-arg", f"VERSION={found.version}",
            "--build-arg", f"REVISION={found.revision}",
            *source, "--tag", tag, context), "podman build")
    return found


def how_to_run(podman: Podman, tag: str) -> str:
    run_command = podman.shown("run", "--detach", "--name", "omgate", "-p", "8443:8443",
                               "-p", "9090:9090", "-v", "/srv/omgate/certs:/certs:ro",
                               "-v", "omgate-inbox:/var/lib/omgate", tag)
    export = podman.shown("save", "--format", "docker-archive", tag)
    return (f"\nBuilt {tag}. Run it (certificates in /srv/omgate/certs: server.pem, "
            f"server.key, client-ca.pem):\n  {run_command}\n"
            f"or hand it to a Docker engine:\n  {export} | docker load\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build omgate's container image with podman on a debootstrapped base.")
    parser.add_argument("--tag", default="localhost/omgate:latest")
    parser.add_argument("--base", default=f"localhost/omgate-base:{BASE_SUITE}",
                        help="the base image; made with debootstrap when podman lacks it")
    parser.add_argument("--storage-driver", default="vfs",
                        help="podman's storage driver (vfs works without kernel overlay)")
    parser.add_argument("--root", help="podman's storage folder (default: podman's own)")
    parser.add_argument("--runroot", help="podman's state folder (default: podman's own)")
    options = parser.parse_args(argv)
    storage = ["--storage-driver", options.storage_driver]
    for flag in ("root", "runroot"):
        if getattr(options, flag):
            storage += [f"--{flag}", getattr(options, flag)]
    try:
        podman = Podman(program("podman"), tuple(storage))
        build(podman, options.tag, options.base)
    except BuildError as error:
        print(f"make image: {error}", file=sys.stderr)
        return 1
    print(how_to_run(podman, options.tag))
    return 0


if __name__ == "__main__":
    sys.exit(main())
