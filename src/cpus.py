"""How many CPUs this process may really use: a container's CPU quota (cgroup v2 `cpu.max`,
v1 `cpu.cfs_quota_us`), else the CPUs it may be scheduled on, never the host's core count
(a 2-CPU pod on a 64-core node would otherwise start 64 workers)."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """CPUs the cgroup may use per period, or None when it sets no limit."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        if quota == "max" or not period:
            return None
        return int(quota) / int(period)
    quota_us = _read(root / "cpu" / "cpu.cfs_quota_us") or _read(root / "cpu.cfs_quota_us")
    period_us = _read(root / "cpu" / "cpu.cfs_period_us") or _read(root / "cpu.cfs_period_us")
    if quota_us is None or period_us is None or int(quota_us) <= 0:
        return None
    return int(quota_us) / int(period_us)


def available_cpus(root: Path = CGROUP) -> float:
    schedulable = len(os.sched_getaffinity(0))
    quota = cgroup_quota(root)
    return schedulable if quota is None else min(float(schedulable), quota)


def default_workers(root: Path = CGROUP) -> int:
    """One worker per whole CPU the quota grants, at least one (docs/BENCHMARKS.md: why)."""
    return max(1, math.floor(available_cpus(root)))
