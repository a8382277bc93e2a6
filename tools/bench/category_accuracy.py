"""Category accuracy of the debugger on labelled real failures, per category, and how well its
confidence is calibrated on them.

The fixtures: LogChunks logs (real Travis jobs, ../shared/data/logchunks) whose category was
read off the chunk a person marked as the failure's reason; short CI logs written after the
messages real tools print, for categories LogChunks has no example of
(tests/fixtures/debugger/ci); and pods in kubectl's shapes (tests/fixtures/debugger/pods).
Calibration: the fixtures in confidence bins, each bin's mean confidence against its accuracy.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from services.debugger.diagnosis import Context, Diagnosis, PreviousAttempt, diagnose
from services.debugger.log_reader import LogReader
from services.debugger.pod_state import diagnose_pod
from services.debugger.taxonomy import Category
from services.debugger.template_miner import TemplateMiner
from tools.bench.root_cause_lines import LOGCHUNKS

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "debugger"

# LogChunks log -> the category its marked chunk shows (the chunk's first line, abridged).
LOGCHUNKS_LABELS: dict[str, Category] = {
    # "Could not find artifact clojure-complete:clojure-complete:jar:0.2.4 in central"
    "Clojure/technomancy@leiningen/failed/239201655.log": Category.DEPENDENCY_RESOLUTION,
    # "Error: Cannot find module 'fast-deep-equal'"
    "C++/electron@electron/failed/303144317.log": Category.DEPENDENCY_RESOLUTION,
    # "src/rabbit_vhost.erl:91: field description undefined in record vhost"
    "Erlang/rabbitmq@rabbitmq-server/failed/571748388.log": Category.COMPILATION,
    # 'Error: Invalid CSS after "2.3em": expected expression' (the Sass build)
    "CSS/jgthms@bulma/failed/437082455.log": Category.COMPILATION,
    # "sigar_darwin.go:12:10: fatal error: 'libproc.h' file not found"
    "Go/ethereum@go-ethereum/failed/566352197.log": Category.COMPILATION,
    # "ObservableRefCountTest > publishNoLeak FAILED"
    "Java/ReactiveX@RxJava/failed/561008032.log": Category.TEST_FAILURE,
    # "Minitest::Assertion: Expected true to not be truthy."
    "Ruby/jekyll@jekyll/failed/557871100.log": Category.TEST_FAILURE,
    # "1) Inflector_helper_test::test_plural Failed asserting that two strings are equal."
    "PHP/bcit-ci@CodeIgniter/failed/476896825.log": Category.TEST_FAILURE,
    # "1) test does not log converted errors ... Assertion with == failed"
    "Elixir/phoenixframework@phoenix/failed/565197107.log": Category.TEST_FAILURE,
    # "FAIL: TestBoundedForkedSync64Fast"
    "Go/ethereum@go-ethereum/failed/566009484.log": Category.TEST_FAILURE,
    # "1) unittests:: Reuse program structure:: General ... AssertionError"
    "TypeScript/Microsoft@TypeScript/failed/566234931.log": Category.TEST_FAILURE,
    # "confirms_rejects_SUITE:mixed_dead_alive_queues_reject failed on line 195"
    "Erlang/rabbitmq@rabbitmq-server/failed/571552147.log": Category.TEST_FAILURE,
    # "** (ExUnit.TimeoutError) test timed out after 60000ms"
    "Elixir/phoenixframework@phoenix/failed/566184515.log": Category.TIMEOUT,
    # "xcodebuild: error: Unable to find a destination matching the provided destination specifier"
    "Swift/SwiftyJSON@SwiftyJSON/failed/364917910.log": Category.CONFIGURATION,
    # "No Rakefile found (looking for: rakefile, Rakefile, rakefile.rb, Rakefile.rb)"
    "Clojure/technomancy@leiningen/failed/239432824.log": Category.CONFIGURATION,
    # "CHANGELOG.md failed indent_char: found setting '  ', should be '    '" (editorconfig)
    "JavaScript/airbnb@javascript/failed/562099876.log": Category.LINT,
    # "Offenses:" (RuboCop)
    "Ruby/jekyll@jekyll/failed/565960060.log": Category.LINT,
    # "react/README.md: 750: MD034/no-bare-urls Bare URL used" (markdownlint)
    "JavaScript/airbnb@javascript/failed/556126724.log": Category.LINT,
}
CI_LABELS: dict[str, Category] = {
    "network-npm-econnreset.log": Category.NETWORK,
    "permission-docker-push-denied.log": Category.PERMISSION,
    "worker-lost-runner-shutdown.log": Category.WORKER_LOST,
    "disk-full-docker-build.log": Category.DISK_FULL,
    "timeout-no-output.log": Category.TIMEOUT,
    "oom-jest-heap.log": Category.OUT_OF_MEMORY,
    "unknown-silent-exit.log": Category.UNKNOWN,
}
# A flaky test is a test failure plus run history: these LogChunks test failures, given a
# previous attempt of the same commit that passed (the history the pipeline's runs will give).
FLAKY_LABELS: tuple[str, ...] = (
    "Java/ReactiveX@RxJava/failed/561008032.log",
    "Go/ethereum@go-ethereum/failed/566009484.log",
)
_FLAKY_CONTEXT = Context(commit="c0ffee1", previous_attempts=(PreviousAttempt("c0ffee1", passed=True),))
POD_LABELS: dict[str, Category] = {
    "oomkilled": Category.OUT_OF_MEMORY,
    "crashloop": Category.CRASH_LOOP,
    "imagepull": Category.IMAGE_PULL,
    "configerror": Category.CONFIGURATION,
    "unschedulable": Category.CONFIGURATION,
    "evicted": Category.DISK_FULL,
    "unhealthy": Category.TIMEOUT,
}


def _log(text: str, context: Context | None = None) -> Diagnosis:
    reader = LogReader(TemplateMiner())
    reader.feed_text(text)
    return diagnose(
        reader.finish(),
        diagnosis_id="bench",
        kind="CI_JOB",
        context=context or Context(),
        template_set="",
        now_us=0,
    )


def _pod(case: str) -> Diagnosis:
    pods = FIXTURES / "pods"
    events = pods / f"{case}.events.json"
    previous = pods / f"{case}.previous.log"
    return diagnose_pod(
        TemplateMiner(),
        json.loads((pods / f"{case}.pod.json").read_text()),
        json.loads(events.read_text()) if events.exists() else None,
        current_log="",
        previous_log=previous.read_text() if previous.exists() else "",
        container="",
        diagnosis_id="bench",
        template_set="",
        now_us=0,
    )


def cases() -> list[tuple[str, Category, Diagnosis]]:
    """(source, labelled category, diagnosis) for every fixture whose data is present."""
    found = []
    for path, category in LOGCHUNKS_LABELS.items():
        log = LOGCHUNKS / "logs" / path
        if log.is_file():
            found.append((f"logchunks:{path}", category, _log(log.read_text(errors="replace"))))
    for path in FLAKY_LABELS:
        log = LOGCHUNKS / "logs" / path
        if log.is_file():
            text = log.read_text(errors="replace")
            found.append(
                (f"logchunks:{path} (passed before)", Category.FLAKY_TEST, _log(text, _FLAKY_CONTEXT))
            )
    for name, category in CI_LABELS.items():
        found.append((f"fixtures/ci/{name}", category, _log((FIXTURES / "ci" / name).read_text())))
    for name, category in POD_LABELS.items():
        found.append((f"fixtures/pods/{name}", category, _pod(name)))
    return found


def measure() -> dict[str, Any]:
    """Accuracy per category and overall, the misses, and the confidence's reliability."""
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    bins: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    misses = []
    all_cases = cases()
    for source, category, diagnosis in all_cases:
        right = diagnosis.category is category
        per[category.value][0] += right
        per[category.value][1] += 1
        low = min(int(diagnosis.confidence * 5), 4) / 5
        bins[f"{low:.1f}-{low + 0.2:.1f}"].append((diagnosis.confidence, right))
        if not right:
            misses.append(
                {"source": source, "labelled": category.value, "diagnosed": diagnosis.category.value}
            )
    correct = sum(r for r, _ in per.values())
    return {
        "fixtures": len(all_cases),
        "accuracy": round(correct / max(len(all_cases), 1), 3),
        "per_category": {c: {"correct": r, "of": n} for c, (r, n) in sorted(per.items())},
        "misses": misses,
        "reliability": {
            name: {
                "n": len(items),
                "mean_confidence": round(sum(c for c, _ in items) / len(items), 3),
                "accuracy": round(sum(r for _, r in items) / len(items), 3),
            }
            for name, items in sorted(bins.items())
        },
    }
