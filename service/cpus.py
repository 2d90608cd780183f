"""How many CPUs this process may use, for ``server.workers = 0``.

``os.cpu_count()`` is the machine's count: a container limited to 2 CPUs on a 64-core
node would start 64 workers, each with its memory and its inbox connections, all
throttled to 2 CPUs' worth of time. The process is bounded twice: by its CPU affinity
mask (``taskset``, cpusets) and by its cgroup's CPU quota (cgroup v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; Kubernetes CPU limits, ``docker --cpus``),
set on its own cgroup or on any above it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")

CpuBound = Literal["affinity", "cgroup quota"]


@dataclass(frozen=True)
class CpuCount:
    cpus: int
    bound: CpuBound  # which limit decided
    quota: float | None  # CPUs' worth of time the cgroup quota allows; None: no quota


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _quota_v2(folder: Path) -> float | None:
    """``cpu.max``: "max 100000" (no limit) or "<quota> <period>" in microseconds."""
    text = _read(folder / "cpu.max")
    if text is None:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return int(quota) / int(period)


def _quota_v1(folder: Path) -> float | None:
    """``cpu.cfs_quota_us`` (-1: no limit) over ``cpu.cfs_period_us``."""
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    try:
        quota_us, period_us = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _up_to(mount: Path, path: str) -> Iterator[Path]:
    """The process's cgroup folder under ``mount`` and every folder above it, to the mount.
    Inside a container the path may name the host's hierarchy, which is not mounted: only
    the folders that exist are read."""
    folder = mount / path.strip("/")
    while True:
        if folder.is_dir():
            yield folder
        if folder == mount or mount not in folder.parents:
            return
        folder = folder.parent


def cgroup_cpu_quota(proc_cgroup: Path = PROC_SELF_CGROUP,
                     cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The tightest CPU quota on this process's cgroup and its ancestors, in CPUs."""
    quotas: list[float] = []
    for line in (_read(proc_cgroup) or "").splitlines():
        _hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controllers == "":  # cgroup v2, the unified hierarchy
            if (cgroup_root / "cgroup.controllers").exists():
                quotas += [q for f in _up_to(cgroup_root, path) if (q := _quota_v2(f))]
        elif "cpu" in controllers.split(","):  # cgroup v1's cpu controller
            for mount in (cgroup_root / controllers, cgroup_root / "cpu"):
                if mount.is_dir():
                    quotas += [q for f in _up_to(mount, path) if (q := _quota_v1(f))]
                    break
    return min(quotas, default=None)


def usable_cpus(affinity: int | None = None, proc_cgroup: Path = PROC_SELF_CGROUP,
                cgroup_root: Path = CGROUP_ROOT) -> CpuCount:
    """CPUs this process may use: its affinity mask, lowered to its cgroup quota rounded up
    (1.5 CPUs of time keep two workers busy part of the time), and at least 1."""
    allowed = len(os.sched_getaffinity(0)) if affinity is None else affinity
    quota = cgroup_cpu_quota(proc_cgroup, cgroup_root)
    if quota is not None and math.ceil(quota) < allowed:
        return CpuCount(max(1, math.ceil(quota)), "cgroup quota", quota)
    return CpuCount(max(1, allowed), "affinity", quota)
