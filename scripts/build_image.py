"""``make image``: build the container image here, with podman, without a Docker engine.

Public images cannot be pulled here, so the base is a Debian made by debootstrap from the
apt mirror this machine already uses (read from its apt sources, never written down) and
imported into podman's storage once. The locked wheels (requirements.txt, hash-checked)
are downloaded on the host into the build context, so the build itself needs no package
index. ``--format docker`` keeps the HEALTHCHECK, which the OCI format drops.
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BASE_SUITE = "bookworm"
BASE_PYTHON = "3.11"  # the python3 of BASE_SUITE: the wheels are downloaded for it
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))


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
    source: str


def run(command: Sequence[str | Path], what: str) -> str:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise BuildError(f"{what} failed ({shlex.join(map(str, command))}):\n"
                         f"{(result.stdout + result.stderr)[-3000:]}")
    return result.stdout


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
        print(f"base image {base}: already in podman's storage")
        return
    if os.geteuid() != 0:
        raise BuildError("debootstrap needs root to make the base image")
    print(f"base image {base}: debootstrap {BASE_SUITE} (a few minutes, once)")
    rootfs, tarball = workdir / "rootfs", workdir / "rootfs.tar"
    run([program("debootstrap"), "--variant=minbase", f"--include={BASE_PACKAGES}",
         BASE_SUITE, rootfs, apt_mirror()], "debootstrap")
    run(["tar", "-C", rootfs, "-cf", tarball, "."], "packing the base")
    shutil.rmtree(rootfs)
    run(podman.command("import", tarball, base), "podman import")
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
    download = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                "--no-deps", "--only-binary", ":all:", "--python-version", BASE_PYTHON,
                "--dest", destination / "wheels"]
    run([*download, "--require-hashes", "-r", ROOT / "requirements.txt"],
        "downloading the locked wheels")
    # the build backend named in pyproject.toml, to build omgate's own wheel
    run([*download, "setuptools>=61"], "downloading setuptools")


def labels() -> Labels:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    revision = run(["git", "-C", ROOT, "rev-parse", "HEAD"], "reading the commit").strip()
    remote = subprocess.run(["git", "-C", str(ROOT), "remote", "get-url", "origin"],
                            capture_output=True, text=True, check=False).stdout.strip()
    return Labels(project["version"], revision, _without_credentials(remote) or "unknown")


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc or not parts.scheme:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def build(podman: Podman, tag: str, base: str) -> Labels:
    found = labels()
    with tempfile.TemporaryDirectory(prefix="omgate-image-", dir="/var/tmp") as scratch:
        workdir = Path(scratch)
        ensure_base(podman, base, workdir)
        context = workdir / "context"
        build_context(context)
        print(f"building {tag} (version {found.version}, revision {found.revision[:12]})")
        run(podman.command(
            "build", "--isolation", "chroot", "--format", "docker",
            "--build-arg", f"BASE_IMAGE={base}",
            "--build-arg", "PIP_INSTALL_OPTIONS=--no-index --find-links /src/wheels",
            "--build-arg", f"VERSION={found.version}",
            "--build-arg", f"REVISION={found.revision}",
            "--build-arg", f"SOURCE={found.source}",
            "--tag", tag, context), "podman build")
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
