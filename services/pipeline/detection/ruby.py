"""Ruby: Bundler; RSpec or minitest through rake; RuboCop when configured; bundler-audit."""

from __future__ import annotations

import re

from services.pipeline.detection.existing_ci import CiEvidence
from services.pipeline.detection.report import Evidence, Report, evidence_in
from services.pipeline.detection.stack import AUDIT, INSTALL, LINT, TEST, Cache, Stack
from services.pipeline.snapshot import Snapshot, join

MARKERS = ("Gemfile",)
DEFAULT_RUBY = "3.3"


def detect(snapshot: Snapshot, directory: str, ci: CiEvidence, report: Report) -> Stack | None:
    gemfile = join(directory, "Gemfile")
    text = snapshot.text(gemfile) or ""
    stack = Stack("ruby", directory, package_manager="bundler", tool="ruby")
    pinned_path = join(directory, ".ruby-version")
    pinned = (snapshot.text(pinned_path) or "").strip()
    declared = re.search(r"^\s*ruby\s+['\"][~>= ]*(\d+\.\d+)", text, re.MULTILINE)
    if pinned and re.match(r"\d+\.\d+", pinned.removeprefix("ruby-")):
        version = ".".join(pinned.removeprefix("ruby-").split(".")[:2])
        stack.versions = [report.decide("ruby version", directory, version, Evidence(pinned_path, 1, pinned))]
    elif "ruby" in ci.versions:
        values, where = ci.versions["ruby"]
        stack.versions = values
        report.decide("ruby versions", directory, ", ".join(values), where)
    elif declared:
        stack.versions = [
            report.decide(
                "ruby version",
                directory,
                declared.group(1),
                evidence_in(gemfile, text, declared.group(0).strip()),
            )
        ]
    else:
        stack.versions = [
            report.decide(
                "ruby version", directory, DEFAULT_RUBY, Evidence(gemfile, 0, "no version declared")
            )
        ]
    if join(directory, "Gemfile.lock") not in snapshot:
        report.warn(
            "NO_LOCKFILE",
            f"{gemfile} has no Gemfile.lock: bundle install resolves the newest versions",
            Evidence(gemfile),
        )
    stack.add(INSTALL, "bundle install --jobs 4")
    stack.env["BUNDLE_PATH"] = "vendor/bundle"
    rspec = (
        join(directory, ".rspec") in snapshot
        or any(p.startswith(join(directory, "spec/")) for p in snapshot.under(directory))
        or "rspec" in text
    )
    if rspec:
        stack.add(TEST, "bundle exec rspec")
        stack.tools.append("rspec")
        report.decide(
            "test command",
            directory,
            "bundle exec rspec",
            evidence_in(gemfile, text, "rspec") if "rspec" in text else Evidence(join(directory, ".rspec")),
        )
    else:
        stack.add(TEST, "bundle exec rake test")
        stack.tools.append("minitest")
        report.decide(
            "test command",
            directory,
            "bundle exec rake test",
            Evidence(join(directory, "Rakefile") if join(directory, "Rakefile") in snapshot else gemfile),
        )
    if join(directory, ".rubocop.yml") in snapshot:
        stack.add(LINT, "bundle exec rubocop")
        stack.tools.append("rubocop")
        report.decide(
            "lint command", directory, "bundle exec rubocop", Evidence(join(directory, ".rubocop.yml"))
        )
    stack.add(AUDIT, "gem install bundler-audit\nbundle-audit check --update")
    if join(directory, "Gemfile.lock") in snapshot:
        stack.cache = Cache(
            (join(directory, "vendor/bundle"),), (join(directory, "Gemfile.lock"),), "bundler"
        )
    return stack
