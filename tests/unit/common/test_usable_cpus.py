"""How many CPUs a service sizes its bcrypt pools to: the fewest of the machine's, its
affinity and its cgroup's quota (review of 2026-12-05: `os.cpu_count()` is the node's, so a
pod limited to one CPU on a 32-core node ran 32 hashing threads inside its quota)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vaultpay_common.cpu_pool import usable_cpus

V2 = "0::/kubepods/pod-1/container-a\n"
V1 = "12:cpu,cpuacct:/kubepods/pod-1/container-a\n11:memory:/kubepods/pod-1/container-a\n"


def _machine() -> int:
    count = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        count = min(count, len(os.sched_getaffinity(0)))
    return count


def _write(root: Path, relative: str, name: str, text: str) -> None:
    folder = root / relative
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def _cpus(tmp_path: Path, self_cgroup: str) -> int:
    (tmp_path / "self-cgroup").write_text(self_cgroup)
    return usable_cpus(cgroup_root=tmp_path / "cg", self_cgroup=tmp_path / "self-cgroup")


@pytest.mark.parametrize(("limit", "expected"), [("100000 100000", 1), ("50000 100000", 1)])
def test_a_cgroup_v2_quota_bounds_it(tmp_path: Path, limit: str, expected: int) -> None:
    _write(tmp_path / "cg", "kubepods/pod-1/container-a", "cpu.max", limit)
    assert _cpus(tmp_path, V2) == min(expected, _machine())


def test_a_v2_quota_seen_at_the_root_of_a_container_counts_too(tmp_path: Path) -> None:
    _write(tmp_path / "cg", "", "cpu.max", "150000 100000")  # 1.5 CPUs: two threads
    assert _cpus(tmp_path, "0::/\n") == min(2, _machine())


def test_a_cgroup_v1_quota_bounds_it(tmp_path: Path) -> None:
    folder = "cpu,cpuacct/kubepods/pod-1/container-a"
    _write(tmp_path / "cg", folder, "cpu.cfs_quota_us", "100000")
    _write(tmp_path / "cg", folder, "cpu.cfs_period_us", "100000")
    assert _cpus(tmp_path, V1) == 1


@pytest.mark.parametrize(
    ("self_cgroup", "relative", "name", "text"),
    [
        (V2, "kubepods/pod-1/container-a", "cpu.max", "max 100000"),
        (V1, "cpu/kubepods/pod-1/container-a", "cpu.cfs_quota_us", "-1"),
        (V2, "", "unrelated", ""),  # no cgroup file at all
        ("garbage without colons\n", "", "unrelated", ""),
    ],
)
def test_without_a_quota_it_is_the_machines(
    tmp_path: Path, self_cgroup: str, relative: str, name: str, text: str
) -> None:
    _write(tmp_path / "cg", relative, name, text)
    if name == "cpu.cfs_quota_us":
        _write(tmp_path / "cg", relative, "cpu.cfs_period_us", "100000")
    assert _cpus(tmp_path, self_cgroup) == _machine()


def test_this_process_gets_at_least_one() -> None:
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
