"""Java and Kotlin: Maven (with its wrapper) and Gradle (with its wrapper), the JDK version from
the build files, `.java-version` or `.sdkmanrc`."""

from __future__ import annotations

import re

from services.pipeline.detection.existing_ci import CiEvidence
from services.pipeline.detection.report import Evidence, Report, evidence_in
from services.pipeline.detection.stack import AUDIT, BUILD, TEST, Cache, Stack
from services.pipeline.snapshot import Snapshot, join

MARKERS = ("pom.xml", "build.gradle", "build.gradle.kts", "settings.gradle", "settings.gradle.kts")
DEFAULT_JDK = "21"
MAX_NESTED_BUILD_FILES = 20
_JDK_PATTERNS = (
    r"<maven\.compiler\.release>\s*(\d+)",
    r"<release>\s*(\d+)\s*</release>",
    r"<java\.version>\s*(?:1\.)?(\d+)",
    r"<maven\.compiler\.source>\s*(?:1\.)?(\d+)",
    r"JavaLanguageVersion\.of\(\s*(\d+)\s*\)",
    r"languageVersion\s*=\s*JavaLanguageVersion\.of\(\s*(\d+)",
    r"jvmToolchain\(\s*(\d+)\s*\)",
    r"sourceCompatibility\s*=\s*(?:JavaVersion\.VERSION_)?['\"]?(?:1[._])?(\d+)",
)


def _jdk(
    snapshot: Snapshot, directory: str, build_files: list[str], ci: CiEvidence, report: Report
) -> list[str]:
    for name in (".java-version", ".sdkmanrc"):
        path = join(directory, name)
        text = snapshot.text(path) or ""
        found = re.search(r"(?:java=)?(\d+)", text)
        if found:
            return [
                report.decide(
                    "jdk version", directory, found.group(1), evidence_in(path, text, found.group(0))
                )
            ]
    if "java" in ci.versions:
        values, where = ci.versions["java"]
        report.decide("jdk versions", directory, ", ".join(values), where)
        return values
    for path in build_files:
        text = snapshot.text(path) or ""
        for pattern in _JDK_PATTERNS:
            found = re.search(pattern, text)
            if found:
                return [
                    report.decide(
                        "jdk version", directory, found.group(1), evidence_in(path, text, found.group(0))
                    )
                ]
    report.warn(
        "NO_JDK_VERSION",
        f"no JDK version declared in {directory or '.'}: JDK {DEFAULT_JDK} is used",
        Evidence(build_files[0]),
    )
    return [DEFAULT_JDK]


def detect(snapshot: Snapshot, directory: str, ci: CiEvidence, report: Report) -> Stack | None:
    pom = join(directory, "pom.xml")
    gradle_files = [join(directory, n) for n in MARKERS[1:] if join(directory, n) in snapshot]
    if pom in snapshot:
        wrapper = join(directory, "mvnw") in snapshot
        mvn = "./mvnw" if wrapper else "mvn"
        stack = Stack("java", directory, package_manager="maven", tool="java")
        stack.versions = _jdk(snapshot, directory, [pom], ci, report)
        stack.add(TEST, f"{mvn} -B verify")
        stack.add(BUILD, f"{mvn} -B -DskipTests package")
        report.decide(
            "build tool",
            directory,
            "maven" + (" wrapper" if wrapper else ""),
            Evidence(join(directory, "mvnw") if wrapper else pom),
        )
        report.decide("test command", directory, f"{mvn} -B verify", Evidence(pom))
        stack.add(AUDIT, f"{mvn} -B org.owasp:dependency-check-maven:check")
        stack.cache = Cache(
            ("~/.m2/repository",), (join(directory, "**/pom.xml") if directory else "**/pom.xml",), "maven"
        )
        if "kotlin" in (snapshot.text(pom) or ""):
            stack.tools.append("kotlin")
        return stack
    if not gradle_files:
        return None
    wrapper = join(directory, "gradlew") in snapshot
    gradle = "./gradlew" if wrapper else "gradle"
    stack = Stack("java", directory, package_manager="gradle", tool="java")
    # A multi-project build declares the toolchain in its subprojects as often as at its root.
    nested = sorted(
        p
        for p in snapshot.under(directory)
        if p.endswith(("build.gradle", "build.gradle.kts")) and p not in gradle_files
    )[:MAX_NESTED_BUILD_FILES]
    stack.versions = _jdk(snapshot, directory, gradle_files + nested, ci, report)
    if any(f.endswith(".kts") or "kotlin" in (snapshot.text(f) or "") for f in gradle_files):
        stack.tools.append("kotlin")
    report.decide(
        "build tool",
        directory,
        "gradle" + (" wrapper" if wrapper else ""),
        Evidence(join(directory, "gradlew") if wrapper else gradle_files[0]),
    )
    if not wrapper:
        report.warn(
            "NO_GRADLE_WRAPPER",
            f"{directory or '.'} has no Gradle wrapper: the runner's gradle is used",
            Evidence(gradle_files[0]),
        )
    stack.add(TEST, f"{gradle} check")
    stack.add(BUILD, f"{gradle} assemble")
    report.decide("test command", directory, f"{gradle} check", Evidence(gradle_files[0]))
    key = "**/*.gradle*"
    stack.cache = Cache(
        ("~/.gradle/caches", "~/.gradle/wrapper"), (join(directory, key) if directory else key,), "gradle"
    )
    report.warn(
        "NO_AUDIT_TOOL",
        f"Gradle has no built-in dependency audit: {directory or '.'} gets none (add the OWASP dependency-check plugin)",
        Evidence(gradle_files[0]),
    )
    return stack
