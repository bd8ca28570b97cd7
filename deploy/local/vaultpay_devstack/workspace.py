"""The Python side of child processes: which source roots they see, what they can import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping

from vaultpay_devstack.paths import GATEWAY_DIR, GEN_PYTHON, LOCAL_DIR, SERVICES_DIR
from vaultpay_devstack.procs import StartupError, base_env

__all__ = ["importable_modules", "python_env", "source_roots"]


def source_roots() -> list[str]:
    """The workspace's source roots (pyproject.toml's list) that exist on disk today.

    Children get them on PYTHONPATH, so a service package added after the virtualenv's editable
    install is importable without reinstalling.
    """
    roots = [GEN_PYTHON, SERVICES_DIR / "common"]
    if SERVICES_DIR.is_dir():
        roots += sorted(p for p in SERVICES_DIR.iterdir() if p.is_dir() and p.name != "common")
    roots += [GATEWAY_DIR, LOCAL_DIR]
    return [str(root) for root in roots if root.is_dir()]


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An allowlisted base environment plus the source roots, unbuffered output and `extra`.

    Nothing else of the supervisor's environment reaches a child: each service gets exactly
    the settings `service_env` gives it.
    """
    env = base_env()
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*source_roots(), *inherited])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


_PROBE = """
import importlib.util, json, sys
found, broken = [], {}
for name in sys.argv[1:]:
    try:
        if importlib.util.find_spec(name) is not None:
            found.append(name)
    except ModuleNotFoundError as exc:
        if not exc.name or not (name == exc.name or name.startswith(exc.name + ".")):
            broken[name] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:
        broken[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"found": found, "broken": broken}))
"""


def importable_modules(names: Iterable[str]) -> set[str]:
    """Which of `names` a child Python (same interpreter, `python_env()`) can import; the
    others are not there at all. A package that is there but fails to import (a syntax error
    in its `__init__`, a missing dependency) raises StartupError naming it and why: it read
    as absent, so `make run` started nothing of it and said the mesh was up (review of
    2026-12-05).

    Asked in a child so that a broken or half-written package cannot break the supervisor.
    """
    wanted = list(names)
    result = subprocess.run(  # noqa: S603 (our own argv, no shell)
        [sys.executable, "-c", _PROBE, *wanted],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-10:])
        raise StartupError(f"could not look for the services' modules:\n{tail}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    if broken := answer["broken"]:
        lines = "\n".join(f"  {name}: {why}" for name, why in sorted(broken.items()))
        raise StartupError(f"these modules are there but do not import:\n{lines}")
    return set(answer["found"]) & set(wanted)
