"""The supervisor's signals against its own forks: a SIGTERM that arrives while a worker is
being forked must still stop that worker, or omgate never exits."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from harness import ROOT

_SUPERVISOR = r'''
import os, signal, sys
from pathlib import Path
from service.config import load_config
from service.supervisor import serve_processes

folder = Path(sys.argv[1])
(folder / "omgate.toml").write_text(
    '[server]\nbind = []\nplain_bind = ["127.0.0.1:0"]\nworkers = 2\nshutdown_timeout = 2\n'
    f'[inbox]\nurl = "sqlite:///{folder}/inbox.db"\n[logging]\nformat = "json"\n')
config = load_config(folder / "omgate.toml", {})
forks = []

def sigterm_as_the_first_worker_is_forked() -> None:
    # what `kill -TERM` (systemd, Kubernetes) does when it lands while fork() runs: the
    # supervisor's handler runs as soon as fork returns, before the pid is written down
    forks.append(1)
    if len(forks) == 1:
        os.kill(os.getpid(), signal.SIGTERM)

os.register_at_fork(after_in_parent=sigterm_as_the_first_worker_is_forked)
print("exit", serve_processes(config), flush=True)
'''


def test_a_sigterm_during_a_workers_fork_still_stops_that_worker(tmp_path: Path):
    process = subprocess.Popen([sys.executable, "-c", _SUPERVISOR, str(tmp_path)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the supervisor and the worker it forgot
        output, _ = process.communicate()
        raise AssertionError("omgate did not exit 30 s after SIGTERM: the worker forked as "
                             "it arrived was never told to stop\n" + output[-1500:]) from None
    assert process.returncode == 0 and "exit 0" in output, output[-1500:]
    assert re.search(r"supervisor\.started\W.*\bworkers\W+1\b", output), output[-1500:]
