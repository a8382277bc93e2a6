"""The miner's one generic configuration groups Loghub-2k lines as well as the goal asks."""

from __future__ import annotations

import pytest

from tools.bench.log_grouping import GA_GOAL, LOGHUB, grouping_accuracy, load, ours, systems

pytestmark = pytest.mark.skipif(not LOGHUB.is_dir(), reason=f"Loghub data not found at {LOGHUB}")


def test_grouping_accuracy_counts_a_line_only_when_its_whole_group_is_right() -> None:
    truth = ["a", "a", "b", "c"]
    assert grouping_accuracy([1, 1, 2, 3], truth) == 1.0
    assert grouping_accuracy([1, 1, 2, 2], truth) == 0.5  # b and c merged: both wrong
    assert grouping_accuracy([1, 2, 3, 4], truth) == 0.5  # a split: both wrong


def test_the_mean_grouping_accuracy_over_the_loghub_systems_reaches_the_goal() -> None:
    scores = {}
    for system in systems():
        lines, truth = load(system)
        scores[system] = grouping_accuracy(ours(lines), truth)
    assert len(scores) >= 8
    assert sum(scores.values()) / len(scores) >= GA_GOAL, scores
