"""Generates the Python stubs and the gateway's descriptor set from protos/.

    python -m vaultpay_devstack.protogen --out protos/gen/python          # write stubs
    python -m vaultpay_devstack.protogen --check --out protos/gen/python  # fail on drift
    python -m vaultpay_devstack.protogen --descriptor build/vaultpay.binpb

Stubs are the only generated code in the repository; they are committed so that readers and
type checkers see them, and `--check` (run by `make test`) fails when they differ from what
the protos produce.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

from vaultpay_devstack.paths import PROTOS, THIRD_PARTY, site_packages

__all__ = ["generate_descriptor_set", "generate_stubs", "proto_files"]

# Types the gateway must know to render error details as JSON (GATEWAY.md, item 2).
_DETAIL_PROTOS = ["google/rpc/status.proto", "google/rpc/error_details.proto"]


def proto_files() -> list[str]:
    """Our .proto files, relative to protos/, in a stable order."""
    return sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "vaultpay").rglob("*.proto"))


def _include_args() -> list[str]:
    wkt = site_packages() / "grpc_tools" / "_proto"
    return [f"-I{PROTOS}", f"-I{THIRD_PARTY}", f"-I{wkt}"]


def _run_protoc(args: list[str]) -> None:
    code = protoc.main(["grpc_tools.protoc", *_include_args(), *args])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def generate_stubs(out: Path) -> None:
    """Writes *_pb2.py, *_pb2_grpc.py and their .pyi stubs into `out` (replacing it)."""
    out.mkdir(parents=True, exist_ok=True)
    plugin_dir = Path(sys.executable).parent
    _run_protoc(
        [
            f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out=quiet:{out}",
            f"--mypy_grpc_out=quiet:{out}",
            *proto_files(),
        ]
    )
    for package_dir in [
        out / "vaultpay",
        *[p for p in (out / "vaultpay").rglob("*") if p.is_dir()],
    ]:
        (package_dir / "__init__.py").touch()
    (out / "vaultpay" / "py.typed").touch()


def generate_descriptor_set(target: Path) -> None:
    """Writes a self-contained FileDescriptorSet for Envoy's gRPC-JSON transcoder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _run_protoc(
        [
            f"--descriptor_set_out={target}",
            "--include_imports",
            "--include_source_info",
            *proto_files(),
            *_DETAIL_PROTOS,
        ]
    )


def _drift(expected: Path, actual: Path) -> list[str]:
    def walk(root: Path) -> set[str]:
        return {
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        }

    want, have = walk(expected), walk(actual)
    problems = [f"missing: {name}" for name in sorted(want - have)]
    problems += [f"unexpected: {name}" for name in sorted(have - want)]
    problems += [
        f"differs: {name}"
        for name in sorted(want & have)
        if not filecmp.cmp(expected / name, actual / name, shallow=False)
    ]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="stub output directory")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--descriptor", type=Path, help="write a descriptor set here")
    args = parser.parse_args(argv)

    if args.descriptor:
        generate_descriptor_set(args.descriptor)
        print(f"descriptor set written to {args.descriptor}")
    if not args.out:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "python"
        generate_stubs(fresh)
        if args.check:
            problems = _drift(fresh, args.out)
            if problems:
                print("generated code drifted from protos/ (run `make protos`):", file=sys.stderr)
                print("\n".join(f"  {p}" for p in problems), file=sys.stderr)
                return 1
            print("generated code matches protos/")
            return 0
        if args.out.exists():
            shutil.rmtree(args.out)
        shutil.copytree(fresh, args.out)
        print(f"stubs written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
