"""Generate gen/ and the Envoy descriptor set from proto/, check they are fresh, lint with buf.

One tool so that the protoc invocation is written once:

    python -m tools.codegen gen        # write gen/ and envoy/descriptor.binpb
    python -m tools.codegen check      # exit 1 when gen/ or the descriptor set is stale
    python -m tools.codegen lint       # buf lint over the devmesh protos
    python -m tools.codegen breaking --against REV   # buf breaking against a git revision
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "gen"
DESCRIPTOR_SET = ROOT / "envoy" / "descriptor.binpb"
# Error detail types must be in Envoy's descriptor set, or convert_grpc_status cannot
# render google.rpc.Status details as JSON (shared/notes/edge.md §1.1).
EXTRA_DESCRIPTOR_INPUTS = ["google/rpc/error_details.proto", "google/rpc/status.proto"]


def _module_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise SystemExit(f"codegen: {module} is not installed; run `make venv` first")
    return Path(spec.origin).parent


def include_paths() -> list[Path]:
    """Import roots: our protos, googleapis-common-protos (google/api, google/rpc), protoc's WKTs."""
    googleapis_root = _module_dir("google.api.annotations_pb2").parent.parent
    wkt_root = _module_dir("grpc_tools") / "_proto"
    return [PROTO_DIR, googleapis_root, wkt_root]


def proto_files(proto_dir: Path = PROTO_DIR) -> list[str]:
    return sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))


def _protoc(args: list[str], proto_dir: Path = PROTO_DIR) -> None:
    from grpc_tools import protoc

    includes = [f"-I{proto_dir}", *(f"-I{p}" for p in include_paths()[1:])]
    code = protoc.main(["protoc", *includes, *args])
    if code != 0:
        raise SystemExit(f"codegen: protoc failed (exit {code})")


def generate(gen_dir: Path, descriptor_set: Path) -> None:
    """Write Python modules, stubs and the descriptor set for every proto under proto/."""
    gen_dir.mkdir(parents=True, exist_ok=True)
    descriptor_set.parent.mkdir(parents=True, exist_ok=True)
    mypy_plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
    mypy_grpc_plugin = shutil.which("protoc-gen-mypy_grpc", path=str(Path(sys.executable).parent))
    if mypy_plugin is None or mypy_grpc_plugin is None:
        raise SystemExit("codegen: mypy-protobuf is not installed; run `make venv` first")
    files = proto_files()
    _protoc(
        [
            f"--plugin=protoc-gen-mypy={mypy_plugin}",
            f"--plugin=protoc-gen-mypy_grpc={mypy_grpc_plugin}",
            f"--python_out={gen_dir}",
            f"--grpc_python_out={gen_dir}",
            f"--mypy_out={gen_dir}",
            f"--mypy_grpc_out={gen_dir}",
            *files,
        ]
    )
    _protoc(["--include_imports", f"--descriptor_set_out={descriptor_set}", *files, *EXTRA_DESCRIPTOR_INPUTS])
    for package_dir in {p.parent for p in gen_dir.rglob("*_pb2.py")}:
        d = package_dir
        while d != gen_dir:
            (d / "__init__.py").touch()
            d = d.parent
    (gen_dir / "py.typed").touch()


def check() -> int:
    """Regenerate into a scratch dir and compare byte for byte with what is committed."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh_gen, fresh_desc = Path(tmp) / "gen", Path(tmp) / "descriptor.binpb"
        generate(fresh_gen, fresh_desc)
        stale = _tree_differences(fresh_gen, GEN_DIR)
        if not DESCRIPTOR_SET.exists() or not filecmp.cmp(fresh_desc, DESCRIPTOR_SET, shallow=False):
            stale.append(str(DESCRIPTOR_SET.relative_to(ROOT)))
    if stale:
        print("codegen: generated code is stale; run `make gen` and commit:", *stale, sep="\n  ")
        return 1
    print("codegen: gen/ and the descriptor set are fresh")
    return 0


def _tree_differences(fresh: Path, committed: Path) -> list[str]:
    def files(root: Path) -> set[str]:
        return {
            str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
        }

    fresh_files, committed_files = files(fresh), files(committed)
    differences = sorted(fresh_files ^ committed_files)
    differences += sorted(
        f for f in fresh_files & committed_files if not filecmp.cmp(fresh / f, committed / f, shallow=False)
    )
    return [f"gen/{f}" for f in differences]


def _image(proto_dir: Path, out: Path) -> None:
    files = proto_files(proto_dir)
    _protoc(["--include_imports", "--include_source_info", f"--descriptor_set_out={out}", *files], proto_dir)


def _buf(*args: str) -> int:
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    if buf is None:
        raise SystemExit("codegen: buf is not installed; run `make venv` first")
    return subprocess.run([buf, *args], cwd=ROOT, check=False).returncode


def lint() -> int:
    """buf lint over our own files (the image also holds google/* imports, which we do not own)."""
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "image.binpb"
        _image(PROTO_DIR, image)
        return _buf("lint", str(image), "--config", "buf.yaml", "--path", "devmesh")


def breaking(against: str) -> int:
    """buf breaking (WIRE_JSON) between the working tree and the protos at git revision `against`."""
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = Path(tmp) / "base"
        base_dir.mkdir()
        listed = subprocess.run(
            ["git", "ls-tree", "-r", "--name-only", against, "--", "proto"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if listed.returncode != 0 or not listed.stdout.strip():
            print(f"codegen: no protos at {against}; nothing to compare")
            return 0
        archive = subprocess.run(
            ["git", "archive", against, "proto"], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(base_dir)], input=archive.stdout, check=True)
        base_image, head_image = Path(tmp) / "base.binpb", Path(tmp) / "head.binpb"
        _image(base_dir / "proto", base_image)
        _image(PROTO_DIR, head_image)
        return _buf(
            "breaking",
            str(head_image),
            "--against",
            str(base_image),
            "--config",
            "buf.yaml",
            "--path",
            "devmesh",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="codegen", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("gen", help="write gen/ and the Envoy descriptor set")
    sub.add_parser("check", help="fail when gen/ or the descriptor set is stale")
    sub.add_parser("lint", help="buf lint")
    breaking_parser = sub.add_parser("breaking", help="buf breaking against a git revision")
    breaking_parser.add_argument(
        "--against", default="HEAD", help="git revision to compare with (default HEAD)"
    )
    args = parser.parse_args(argv)
    if args.command == "gen":
        if GEN_DIR.exists():
            shutil.rmtree(GEN_DIR)
        generate(GEN_DIR, DESCRIPTOR_SET)
        print(f"codegen: wrote gen/ and {DESCRIPTOR_SET.relative_to(ROOT)}")
        return 0
    if args.command == "check":
        return check()
    if args.command == "lint":
        return lint()
    return breaking(args.against)


if __name__ == "__main__":
    sys.exit(main())
