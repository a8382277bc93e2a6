"""Go: the version from go.mod's `go` (or `toolchain`) directive; `go build`, `go vet`,
`go test ./...`; golangci-lint when it is configured; govulncheck."""

from __future__ import annotations

import re

from services.pipeline.detection.existing_ci import CiEvidence
from services.pipeline.detection.report import Evidence, Report, evidence_in
from services.pipeline.detection.stack import AUDIT, BUILD, INSTALL, LINT, TEST, Cache, Stack
from services.pipeline.snapshot import Snapshot, join

MARKERS = ("go.mod",)
LINT_CONFIGS = (".golangci.yml", ".golangci.yaml", ".golangci.toml", ".golangci.json")


def detect(snapshot: Snapshot, directory: str, ci: CiEvidence, report: Report) -> Stack | None:
    path = join(directory, "go.mod")
    text = snapshot.text(path) or ""
    stack = Stack("go", directory, package_manager="go modules", tool="go")
    toolchain = re.search(r"^toolchain\s+go(\d+\.\d+(?:\.\d+)?)", text, re.MULTILINE)
    directive = re.search(r"^go\s+(\d+\.\d+)(?:\.\d+)?", text, re.MULTILINE)
    if "go" in ci.versions:
        values, where = ci.versions["go"]
        stack.versions = [report.decide("go versions", directory, ", ".join(values), where)] and values
    elif toolchain or directive:
        found = toolchain or directive
        assert found is not None
        version = found.group(1)
        stack.versions = [
            report.decide("go version", directory, version, evidence_in(path, text, found.group(0)))
        ]
    else:
        report.warn(
            "NO_GO_DIRECTIVE", f"{path} has no go directive: the newest stable Go is used", Evidence(path)
        )
        stack.versions = ["stable"]
    stack.add(INSTALL, "go mod download")
    stack.add(BUILD, "go build ./...")
    stack.add(LINT, "go vet ./...")
    report.decide("lint command", directory, "go vet ./...", Evidence(path, 0, "every Go module"))
    config = next((join(directory, c) for c in LINT_CONFIGS if join(directory, c) in snapshot), None)
    if config is None and directory:
        config = next((c for c in LINT_CONFIGS if c in snapshot), None)  # a monorepo's shared config
    if config:
        v2 = re.search(r"^version:\s*['\"]?2", snapshot.text(config) or "", re.MULTILINE)
        module = (
            "github.com/golangci/golangci-lint/v2/cmd/golangci-lint"
            if v2
            else "github.com/golangci/golangci-lint/cmd/golangci-lint"
        )
        stack.add(LINT, f"go run {module}@latest run")
        stack.tools.append("golangci-lint")
        report.decide("lint command", directory, "golangci-lint run", Evidence(config))
    stack.add(TEST, "go test ./...")
    report.decide("test command", directory, "go test ./...", Evidence(path))
    stack.add(AUDIT, "go run golang.org/x/vuln/cmd/govulncheck@latest ./...")
    sums = join(directory, "go.sum")
    if sums in snapshot:
        stack.cache = Cache(("~/go/pkg/mod", "~/.cache/go-build"), (sums,), "go")
    return stack
