"""`make venv` (the first step of `make run` and `make test`) installs about 600 MB of pinned
packages: with `pip --quiet` a newcomer saw nothing for minutes (review of 2026-12-04). It now
says what it installs and how large, and pip names each package as it goes, without progress
bars (CI logs)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from vaultpay_devstack.paths import REPO_ROOT

MAKEFILE = REPO_ROOT / "Makefile"


def _stamp_recipe() -> list[str]:
    """The shell lines of the virtualenv stamp's recipe (continuations joined)."""
    text = MAKEFILE.read_text().replace("\\\n", " ")
    lines = text.splitlines()
    start = lines.index("$(STAMP): requirements.lock pyproject.toml")  # unchanged
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        command = line.strip().removeprefix("@")
        if not command.startswith("#"):
            recipe.append(command)
    return recipe


def test_the_locked_packages_install_shows_its_progress() -> None:
    recipe = _stamp_recipe()
    [install] = [line for line in recipe if "-r requirements.lock" in line]

    assert "--quiet" not in install.split() and " -q " not in install
    assert "--progress-bar off" in install
    announcement = recipe[recipe.index(install) - 1]
    assert announcement.startswith("echo ")
    assert "requirements.lock" in announcement
    assert re.search(r"\d+ MB", announcement)


def test_the_stamp_is_still_touched_last_and_only_after_both_installs() -> None:
    recipe = _stamp_recipe()

    assert recipe[-1] == "touch $@"
    assert any("--no-deps --no-build-isolation -e ." in line for line in recipe[:-1])


def test_the_announcement_counts_the_pinned_packages(tmp_path: Path) -> None:
    recipe = _stamp_recipe()
    [install] = [line for line in recipe if "-r requirements.lock" in line]
    announcement = recipe[recipe.index(install) - 1].replace("$$", "$")
    pins = sum("==" in line for line in (REPO_ROOT / "requirements.lock").read_text().splitlines())

    said = subprocess.run(
        ["bash", "-c", announcement], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert f" {pins} pinned packages" in said


def test_a_failed_install_still_fails_the_recipe_through_the_filter() -> None:
    """pip's output goes through a filter: under `-o pipefail` (the Makefile's shell flags)
    pip's failure still fails the line, and a filter that drops every line does not."""
    recipe = _stamp_recipe()
    [install] = [line for line in recipe if "-r requirements.lock" in line]
    filter_ = install.split("|", 1)[1]
    shell = ["bash", "-eu", "-o", "pipefail", "-c"]
    assert "-o pipefail" in MAKEFILE.read_text().split("\n.SHELLFLAGS", 1)[1].splitlines()[0]

    failed = subprocess.run([*shell, f"(echo Collecting x; exit 1) |{filter_}"], check=False)
    satisfied = "echo 'Requirement already satisfied: grpcio'"
    quiet = subprocess.run([*shell, f"{satisfied} |{filter_}"], capture_output=True, check=False)

    assert failed.returncode != 0
    assert quiet.returncode == 0
    assert quiet.stdout == b""
