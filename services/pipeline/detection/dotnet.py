""".NET: solutions and projects, the SDK from global.json or the target framework; restore,
build, test, format; vulnerable package listing."""

from __future__ import annotations

import json
import re

from services.pipeline.detection.existing_ci import CiEvidence
from services.pipeline.detection.report import Evidence, Report, evidence_in
from services.pipeline.detection.stack import AUDIT, BUILD, FORMAT, INSTALL, TEST, Cache, Stack
from services.pipeline.snapshot import Snapshot, join

SUFFIXES = (".sln", ".slnx", ".csproj", ".fsproj", ".vbproj")
SOLUTIONS = (".sln", ".slnx")
DEFAULT_SDK = "8.0.x"


def detect(snapshot: Snapshot, directory: str, ci: CiEvidence, report: Report) -> Stack | None:
    files = sorted(p for p in snapshot.in_dir(directory) if p.endswith(SUFFIXES))
    if not files:
        return None
    target = next((f for f in files if f.endswith(SOLUTIONS)), files[0])
    stack = Stack("dotnet", directory, package_manager="dotnet", tool="dotnet")
    global_json = join(directory, "global.json")
    text = snapshot.text(global_json)
    version = ""
    if text:
        try:
            sdk = json.loads(text).get("sdk", {})
            version = str(sdk.get("version", "")) if isinstance(sdk, dict) else ""
        except (ValueError, AttributeError):
            version = ""
        if version:
            version = ".".join(version.split(".")[:2]) + ".x"
            report.decide("dotnet sdk", directory, version, evidence_in(global_json, text, '"version"'))
    if not version:
        for path in files:
            found = re.search(r"<TargetFrameworks?>\s*net(\d+\.\d+)", snapshot.text(path) or "")
            if found:
                version = f"{found.group(1)}.x"
                report.decide(
                    "dotnet sdk", directory, version, evidence_in(path, snapshot.text(path), found.group(0))
                )
                break
    stack.versions = [version or DEFAULT_SDK]
    name = target.rsplit("/", 1)[-1]
    stack.add(INSTALL, f"dotnet restore {name}")
    stack.add(BUILD, f"dotnet build {name} --no-restore -c Release")
    stack.add(TEST, f"dotnet test {name} --no-restore -c Release")
    stack.add(FORMAT, f"dotnet format {name} --verify-no-changes")
    report.decide("test command", directory, f"dotnet test {name}", Evidence(target))
    stack.add(AUDIT, f"dotnet list {name} package --vulnerable --include-transitive")
    stack.cache = Cache(
        ("~/.nuget/packages",), (join(directory, "**/*.csproj") if directory else "**/*.csproj",), "nuget"
    )
    return stack
