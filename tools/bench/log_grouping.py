"""Grouping accuracy of the debugger's template miner on Loghub-2k, against drain3 in the same run.

Grouping accuracy (GA, Zhu et al., ICSE-SEIP 2019): a line counts as correct when the set of
lines its mined template holds equals the set its ground-truth template holds. The input is
each system's `Content` column (the message without the header), as the Loghub benchmark and
drain3's published figures use it. One configuration for every system: the miner's defaults.
The baseline is drain3 0.9.11 with its default settings and generic IP, hex and number masks.
"""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from services.debugger.log_masks import forget_tokens
from services.debugger.template_miner import TemplateMiner

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LOGHUB = SHARED_DATA / "loghub"
GA_GOAL = 0.92

# drain3's README example masks, the generic ones: an IP, a hex number, a number.
_DRAIN3_MASKS = (
    (r"((?<=[^A-Za-z0-9])|^)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})((?=[^A-Za-z0-9])|$)", "IP"),
    (r"((?<=[^A-Za-z0-9])|^)(0x[a-fA-F0-9]+)((?=[^A-Za-z0-9])|$)", "HEX"),
    (r"((?<=[^A-Za-z0-9])|^)([\-\+]?\d+)((?=[^A-Za-z0-9])|$)", "NUM"),
)


def systems(root: Path = LOGHUB) -> list[str]:
    """The Loghub systems under `root` (each a folder with its `_2k.log_structured.csv`)."""
    return sorted(p.name for p in root.iterdir() if (p / f"{p.name}_2k.log_structured.csv").is_file())


def load(system: str, root: Path = LOGHUB) -> tuple[list[str], list[str]]:
    """A system's messages and the ground-truth template of each."""
    with (root / system / f"{system}_2k.log_structured.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return [row["Content"] for row in rows], [row["EventTemplate"] for row in rows]


def grouping_accuracy(predicted: Sequence[object], truth: Sequence[str]) -> float:
    """The fraction of lines whose predicted group is exactly their true group."""
    groups: dict[object, list[int]] = defaultdict(list)
    true_groups: dict[str, set[int]] = defaultdict(set)
    for index, (group, template) in enumerate(zip(predicted, truth, strict=True)):
        groups[group].append(index)
        true_groups[template].add(index)
    correct = sum(len(lines) for lines in groups.values() if true_groups[truth[lines[0]]] == set(lines))
    return correct / len(truth) if truth else 0.0


def ours(lines: Sequence[str]) -> list[str]:
    """Each line's template id after mining them all, in order (a template that later became
    part of another counts as that one)."""
    miner = TemplateMiner()
    ids = []
    for line in lines:
        template = miner.add(line)
        ids.append(template.id if template is not None else "")
    return [miner.resolve(i).id for i in ids]


def drain3_baseline(lines: Sequence[str]) -> list[int]:
    """Each line's cluster with drain3's defaults and the generic masks."""
    from drain3 import TemplateMiner as Drain3
    from drain3.masking import MaskingInstruction
    from drain3.template_miner_config import TemplateMinerConfig

    config = TemplateMinerConfig()
    config.masking_instructions = [MaskingInstruction(pattern, name) for pattern, name in _DRAIN3_MASKS]
    config.profiling_enabled = False
    miner = Drain3(None, config)
    return [miner.add_log_message(line)["cluster_id"] for line in lines]


def measure(root: Path = LOGHUB) -> dict[str, Any]:
    """GA per system and its mean, ours and the baseline's, and the in-process mining rate."""
    parsers: dict[str, Callable[[Sequence[str]], Sequence[object]]] = {
        "ours": ours,
        "drain3_baseline": drain3_baseline,
    }
    per_system: dict[str, dict[str, float]] = {}
    for system in systems(root):
        lines, truth = load(system, root)
        per_system[system] = {
            name: round(grouping_accuracy(parse(lines), truth), 4) for name, parse in parsers.items()
        }
    names = list(per_system)
    means = {
        name: round(sum(per_system[s][name] for s in names) / len(names), 4) if names else 0.0
        for name in parsers
    }
    return {
        "systems": names,
        "per_system": per_system,
        "mean": means,
        "goal_mean": GA_GOAL,
        "configuration": "TemplateMiner() defaults: the generic masks of log_masks, similarity "
        "0.5, words constant until 4 words share a position",
    }


def mining_rate(root: Path = LOGHUB, rounds: int = 3) -> dict[str, Any]:
    """Lines per second mined in process: every system's lines through one fresh miner, the
    best of `rounds` (each round a new miner, so that it learns its templates again)."""
    lines = [line for system in systems(root) for line in load(system, root)[0]]
    best = best_cpu = 0.0
    for _ in range(rounds):
        forget_tokens()
        miner = TemplateMiner()
        start, start_cpu = time.perf_counter(), time.process_time()
        for line in lines:
            miner.add(line)
        best = max(best, len(lines) / (time.perf_counter() - start))
        best_cpu = max(best_cpu, len(lines) / (time.process_time() - start_cpu))
    # Per second of this process's CPU too: on a shared 2-core machine the wall-clock rate
    # says as much about the neighbours as about the miner.
    return {
        "lines": len(lines),
        "lines_per_s": round(best),
        "lines_per_cpu_s": round(best_cpu),
        "goal_lines_per_s": 50_000,
    }
