"""The root-cause ranges point at the failure's reason, not at boilerplate or passing steps."""

from __future__ import annotations

import pytest

from services.debugger import root_cause
from tools.bench.root_cause_lines import HIT_GOAL, LOGCHUNKS, RECALL_GOAL, measure

TRAVIS_LOG = """\
$ pip install -r requirements.txt
Collecting requests
WARNING: pip is configured with locations that require TLS/SSL
Successfully installed requests-2.31.0
$ pytest -q
....F.
=================================== FAILURES ===================================
___________________________ test_total_is_rounded ______________________________
    def test_total_is_rounded():
>       assert total([0.1, 0.2]) == 0.3
E       assert 0.30000000000000004 == 0.3
tests/test_cart.py:12: AssertionError
1 failed, 5 passed in 0.12s
The command "pytest -q" exited with 1.
Done. Your build exited with 1.
""".splitlines()


def test_the_best_range_holds_the_failed_assertion() -> None:
    ranges = root_cause.localise(TRAVIS_LOG)
    best = ranges[0]
    assertion = TRAVIS_LOG.index("E       assert 0.30000000000000004 == 0.3") + 1
    assert best.start <= assertion <= best.end


def test_the_runners_exit_notice_and_the_failure_count_are_not_the_reason() -> None:
    first_ten = root_cause.ranked_lines(root_cause.localise(TRAVIS_LOG))[:3]
    texts = [TRAVIS_LOG[n - 1] for n in first_ten]
    assert not any("exited with" in t for t in texts)


def test_the_failing_step_runs_from_the_last_command_to_its_exit_notice() -> None:
    start, end = root_cause.failing_step(TRAVIS_LOG)
    assert TRAVIS_LOG[start] == "$ pytest -q"
    assert TRAVIS_LOG[end].startswith('The command "pytest -q" exited with 1')


def test_an_empty_log_has_no_ranges() -> None:
    assert root_cause.localise([]) == []


@pytest.mark.skipif(not LOGCHUNKS.is_dir(), reason=f"LogChunks data not found at {LOGCHUNKS}")
def test_on_logchunks_the_ranges_reach_the_goals() -> None:
    figures = measure()
    assert figures["logs"] >= 140
    assert figures["ours"]["hit_at_10"] >= HIT_GOAL, figures
    assert figures["ours"]["recall"] >= RECALL_GOAL, figures
