"""The default worker count follows the CPU quota a container really has."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from customer360.cpus import available_cpus, cgroup_quota, default_workers


def v2(root: Path, value: str) -> Path:
    (root / "cpu.max").write_text(value + "\n")
    return root


def v1(root: Path, quota: int, period: int = 100_000) -> Path:
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


@pytest.mark.parametrize(
    ("make", "quota"),
    [
        (lambda r: v2(r, "200000 100000"), 2.0),
        (lambda r: v2(r, "150000 100000"), 1.5),
        (lambda r: v2(r, "max 100000"), None),
        (lambda r: v1(r, 50_000), 0.5),
        (lambda r: v1(r, -1), None),
        (lambda r: r, None),  # no cgroup files at all
    ],
)
def test_the_quota_is_read_from_cgroup_v2_and_v1(tmp_path: Path, make, quota) -> None:
    assert cgroup_quota(make(tmp_path)) == quota


def test_workers_are_one_per_whole_cpu_of_the_quota_never_the_hosts_cores(tmp_path: Path) -> None:
    schedulable = len(os.sched_getaffinity(0))
    assert default_workers(v2(tmp_path, "150000 100000")) == 1  # 1.5 CPUs: one worker
    assert available_cpus(tmp_path) == min(schedulable, 1.5)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    assert default_workers(v2(tiny, "20000 100000")) == 1  # a fifth of a CPU: still one
    free = tmp_path / "free"
    free.mkdir()
    assert default_workers(v2(free, "max 100000")) == schedulable
