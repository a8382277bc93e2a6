"""PHP: Composer; PHPUnit (or the composer `test` script); PHPStan; `composer audit`."""

from __future__ import annotations

import re

from services.pipeline.detection import manifests
from services.pipeline.detection.existing_ci import CiEvidence
from services.pipeline.detection.report import Evidence, Report, evidence_in
from services.pipeline.detection.stack import AUDIT, INSTALL, LINT, TEST, Cache, Stack
from services.pipeline.snapshot import Snapshot, join

MARKERS = ("composer.json",)
DEFAULT_PHP = "8.3"


def detect(snapshot: Snapshot, directory: str, ci: CiEvidence, report: Report) -> Stack | None:
    path = join(directory, "composer.json")
    text = snapshot.text(path) or "{}"
    composer = manifests.json_object(path, text)
    stack = Stack("php", directory, package_manager="composer", tool="php")
    require = composer.get("require") if isinstance(composer.get("require"), dict) else {}
    dev = composer.get("require-dev") if isinstance(composer.get("require-dev"), dict) else {}
    constraint = str((require or {}).get("php", ""))
    floor = re.search(r"(\d+\.\d+)", constraint)
    if "php" in ci.versions:
        values, where = ci.versions["php"]
        stack.versions = values
        report.decide("php versions", directory, ", ".join(values), where)
    elif floor:
        stack.versions = [
            report.decide(
                "php version",
                directory,
                floor.group(1),
                evidence_in(path, text, '"php"', f"require.php {constraint}"),
            )
        ]
    else:
        stack.versions = [
            report.decide("php version", directory, DEFAULT_PHP, Evidence(path, 0, "no version declared"))
        ]
    locked = join(directory, "composer.lock") in snapshot
    if not locked:
        report.warn(
            "NO_LOCKFILE",
            f"{path} has no composer.lock: composer resolves the newest versions",
            Evidence(path),
        )
    stack.add(INSTALL, "composer install --no-interaction --prefer-dist --no-progress")
    scripts = composer.get("scripts") if isinstance(composer.get("scripts"), dict) else {}
    if "test" in (scripts or {}):
        stack.add(TEST, "composer test")
        report.decide(
            "test command", directory, "composer test", evidence_in(path, text, '"test"', "scripts.test")
        )
    elif "phpunit/phpunit" in (dev or {}) or any(
        join(directory, n) in snapshot for n in ("phpunit.xml", "phpunit.xml.dist")
    ):
        stack.add(TEST, "vendor/bin/phpunit")
        stack.tools.append("phpunit")
        report.decide(
            "test command", directory, "vendor/bin/phpunit", evidence_in(path, text, "phpunit/phpunit")
        )
    if "phpstan/phpstan" in (dev or {}) or any(
        join(directory, n) in snapshot for n in ("phpstan.neon", "phpstan.neon.dist")
    ):
        stack.add(LINT, "vendor/bin/phpstan analyse")
        stack.tools.append("phpstan")
    stack.add(AUDIT, "composer audit")
    if locked:
        stack.cache = Cache(("~/.cache/composer",), (join(directory, "composer.lock"),), "composer")
    return stack
