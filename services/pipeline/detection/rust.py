"""Rust: Cargo packages and workspaces; the toolchain from rust-toolchain(.toml), the MSRV from
`rust-version`; build, test, clippy and fmt; cargo-audit."""

from __future__ import annotations

from typing import Any

from services.pipeline.detection import manifests
from services.pipeline.detection.existing_ci import CiEvidence
from services.pipeline.detection.report import Evidence, Report, evidence_in
from services.pipeline.detection.stack import AUDIT, BUILD, FORMAT, LINT, TEST, Cache, Stack
from services.pipeline.snapshot import Snapshot, join

MARKERS = ("Cargo.toml",)


def workspace_members(manifest: dict[str, Any]) -> list[str]:
    workspace = manifest.get("workspace")
    if isinstance(workspace, dict) and isinstance(workspace.get("members"), list):
        return [str(m) for m in workspace["members"]]
    return []


def detect(snapshot: Snapshot, directory: str, ci: CiEvidence, report: Report) -> Stack | None:
    path = join(directory, "Cargo.toml")
    text = snapshot.text(path) or ""
    manifest = manifests.toml(path, text) if text else {}
    stack = Stack("rust", directory, package_manager="cargo", tool="rust")
    workspace = "workspace" in manifest
    toolchain_path = next(
        (
            join(directory, n)
            for n in ("rust-toolchain.toml", "rust-toolchain")
            if join(directory, n) in snapshot
        ),
        None,
    )
    channel = ""
    if toolchain_path:
        toolchain_text = snapshot.text(toolchain_path) or ""
        if toolchain_path.endswith(".toml"):
            toolchain = manifests.toml(toolchain_path, toolchain_text).get("toolchain", {})
            channel = str(toolchain.get("channel", "")) if isinstance(toolchain, dict) else ""
        else:
            channel = toolchain_text.strip().splitlines()[0] if toolchain_text.strip() else ""
    package = manifest.get("package") if isinstance(manifest.get("package"), dict) else {}
    msrv = (
        str((package or {}).get("rust-version", ""))
        if isinstance((package or {}).get("rust-version"), str)
        else ""
    )
    if channel:
        stack.versions = [
            report.decide(
                "rust toolchain",
                directory,
                channel,
                evidence_in(toolchain_path or path, snapshot.text(toolchain_path or path), channel),
            )
        ]
    elif msrv:
        stack.versions = [msrv, "stable"]
        report.decide(
            "rust versions",
            directory,
            f"{msrv}, stable",
            evidence_in(path, text, "rust-version", "the MSRV and stable"),
        )
    else:
        stack.versions = [
            report.decide(
                "rust toolchain", directory, "stable", Evidence(path, 0, "no toolchain file: stable")
            )
        ]
    locked = " --locked" if join(directory, "Cargo.lock") in snapshot else ""
    scope = " --workspace" if workspace else ""
    stack.add(BUILD, f"cargo build{locked}{scope} --all-targets")
    stack.add(TEST, f"cargo test{locked}{scope}")
    report.decide(
        "test command",
        directory,
        f"cargo test{locked}{scope}",
        evidence_in(path, text, "[workspace]") if workspace else Evidence(path),
    )
    stack.add(LINT, f"cargo clippy{locked}{scope} --all-targets -- -D warnings")
    stack.add(FORMAT, "cargo fmt --all -- --check")
    stack.tools += ["clippy", "rustfmt"]
    stack.add(AUDIT, "cargo install cargo-audit --locked\ncargo audit")
    if locked:
        stack.cache = Cache(
            ("~/.cargo/registry", "~/.cargo/git", join(directory, "target")),
            (join(directory, "Cargo.lock"),),
            "cargo",
        )
    return stack
