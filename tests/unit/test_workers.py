"""`server.workers`, in-process: the count of CPUs for `workers = 0`, and the restart backoff
(the processes: tests/system/test_workers_system.py)."""

from __future__ import annotations

import sys

import pytest
from harness import ROOT

from service.config import Config, ConfigError, load_config
from service.supervisor import RESTART_BACKOFF_MAX, WorkerSlot, event_loop_factory


def fake_cgroups(tmp_path, membership: str, files: dict[str, str], v2: bool = True):
    """/proc/self/cgroup saying ``membership``, and a cgroup tree holding ``files``."""
    root = tmp_path / "sys-fs-cgroup"
    root.mkdir()
    if v2:
        (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(membership)
    return proc, root


@pytest.mark.parametrize(("membership", "files", "v2", "affinity", "expected"), [
    # a container limited to 2 CPUs on a 64-core node (Kubernetes, cgroup v2)
    ("0::/kubepods/pod1/c1\n", {"kubepods/pod1/c1/cpu.max": "200000 100000"}, True, 64,
     (2, "cgroup quota")),
    # the limit is on a parent; 1.5 CPUs of time are two workers
    ("0::/kubepods/pod1/c1\n", {"kubepods/pod1/c1/cpu.max": "max 100000",
                                "kubepods/pod1/cpu.max": "150000 100000"}, True, 64,
     (2, "cgroup quota")),
    ("0::/a/b\n", {"a/b/cpu.max": "max 100000", "a/cpu.max": "max 100000"}, True, 64,
     (64, "affinity")),
    # docker --cpus=1 with a cgroup namespace: the container's cgroup is the mount's root
    ("0::/\n", {"cpu.max": "100000 100000"}, True, 64, (1, "cgroup quota")),
    # the host's path is not mounted in the container: the mount's root still counts
    ("0::/system.slice/docker-abc.scope\n", {"cpu.max": "300000 100000"}, True, 64,
     (3, "cgroup quota")),
    ("0::/\n", {"cpu.max": "50000 100000"}, True, 64, (1, "cgroup quota")),
    # the affinity mask is the tighter bound (taskset -c 0-3)
    ("0::/\n", {"cpu.max": "800000 100000"}, True, 4, (4, "affinity")),
    # cgroup v1
    ("5:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n",
     {"cpu,cpuacct/cpu.cfs_quota_us": "300000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
     False, 64, (3, "cgroup quota")),
    ("5:cpu,cpuacct:/docker/abc\n",
     {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000",
      "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
      "cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
     False, 64, (2, "cgroup quota")),
    ("5:cpu,cpuacct:/\n", {"cpu,cpuacct/cpu.cfs_quota_us": "-1",
                           "cpu,cpuacct/cpu.cfs_period_us": "100000"}, False, 64,
     (64, "affinity")),
    ("", {}, False, 8, (8, "affinity")),  # no cgroup information at all
])
def test_workers_zero_counts_the_cpus_the_process_may_use(tmp_path, membership, files, v2,
                                                          affinity, expected):
    from service.cpus import usable_cpus

    proc, root = fake_cgroups(tmp_path, membership, files, v2)
    counted = usable_cpus(affinity, proc, root)
    assert (counted.cpus, counted.bound) == expected


def test_a_worker_that_died_at_start_a_thousand_times_waits_the_cap_not_an_overflow():
    slot = WorkerSlot(0, quick_deaths=5000)
    assert slot.backoff() == RESTART_BACKOFF_MAX


def _event_loop(choice: str) -> Config:
    return load_config(ROOT / "config" / "omgate.toml", {"OMGATE_SERVER__EVENT_LOOP": choice})


def test_the_event_loop_is_uvloop_where_it_installs_and_asyncio_on_request():
    import uvloop

    assert event_loop_factory(_event_loop("auto")) is uvloop.new_event_loop
    assert event_loop_factory(_event_loop("uvloop")) is uvloop.new_event_loop
    assert event_loop_factory(_event_loop("asyncio")) is None


def test_without_uvloop_auto_runs_on_asyncio_and_uvloop_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # importing it raises ImportError
    assert event_loop_factory(_event_loop("auto")) is None
    with pytest.raises(ConfigError, match=r"event_loop: uvloop is not installed"):
        event_loop_factory(_event_loop("uvloop"))


def test_an_event_loop_that_omgate_does_not_know_is_refused():
    with pytest.raises(ConfigError, match="event_loop"):
        _event_loop("trio")


def test_what_serve_imports_before_the_supervisor_makes_no_metric():
    """prometheus_client picks single- or multi-process mode when it is imported; the
    supervisor sets the shared folder first. omgate check, which serve runs before it,
    once imported the server (and with it the metrics): each worker then kept its own,
    and /metrics showed none of them."""
    import subprocess
    import sys

    probe = ("import sys\nimport service.commands.serve, service.tools.check\n"
             "print('prometheus_client' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "False"
