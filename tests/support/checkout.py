"""A copy of the repository as a new operator has it, and a command run in it whose output
lines are kept with the time each arrived."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

IGNORED = shutil.ignore_patterns(".venv", "var", "dev", ".git", "__pycache__", ".pytest_cache",
                                 ".ruff_cache", ".mypy_cache", "*.egg-info", "output")
LONGEST_SILENCE = 120  # seconds: `make test` once said nothing for over two minutes


def shell_env() -> dict[str, str]:
    """The environment of a user's shell: no make of ours around (under `make test`, a nested
    make would announce the directories it enters)."""
    return {name: value for name, value in os.environ.items()
            if name not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"}}


@dataclass
class Streamed:
    """A command whose output lines are kept with the time each arrived."""

    process: subprocess.Popen[str]
    lines: list[tuple[float, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None  # when the output closed
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, command: list[str], cwd: Path, **environment: str) -> Streamed:
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE,
                                   env=shell_env() | environment,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        streamed = cls(process)
        streamed.reader = threading.Thread(target=streamed._read, daemon=True)
        streamed.reader.start()
        return streamed

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))
        self.ended = time.monotonic()

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def longest_silence(self) -> float:
        """The longest wait for a line, from the start to the end of the output."""
        times = [self.started, *(at for at, _ in self.lines), self.ended or time.monotonic()]
        return max(later - earlier for earlier, later in itertools.pairwise(times))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(60)
        if self.reader is not None:
            self.reader.join(30)
