"""Root-cause lines on LogChunks: the debugger's ranked ranges against k8sgpt's rule, same run.

For each failed Travis build log of ../shared/data/logchunks, the chunk a person marked as
the reason is found in the log by text (each chunk line, ANSI codes and spacing aside, at its
last occurrence; a chunk line of at least 8 characters may also be part of a log line, since
some chunks were trimmed). A log whose chunk cannot be found is left out (and counted).
hit@10: one of the first ten lines returned is in the chunk; recall: the share of the chunk's
lines among all the lines returned; precision: the share of returned lines in the chunk.
The baseline is k8sgpt's log analyzer: the last 100 lines matching `error|exception|fail`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from services.debugger import root_cause
from services.debugger.log_masks import strip_ansi
from services.debugger.template_miner import TemplateMiner
from tools.bench.log_grouping import SHARED_DATA

LOGCHUNKS = SHARED_DATA / "logchunks"
HIT_GOAL = 0.8
RECALL_GOAL = 0.6
_K8SGPT = re.compile(r"error|exception|fail", re.IGNORECASE)


def _normal(text: str) -> str:
    return " ".join(strip_ansi(text).split())


def examples(root: Path = LOGCHUNKS) -> Iterator[tuple[str, list[str], str]]:
    """(log path, its lines, the labelled chunk) for every example whose log is present."""
    for labels in sorted(root.glob("build-failure-reason/*/*.xml")):
        for example in ET.parse(labels).getroot().iter("Example"):
            log = example.findtext("Log") or ""
            path = root / "logs" / log
            if log and path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")
                yield log, text.split("\n"), example.findtext("Chunk") or ""


def locate(lines: Sequence[str], chunk: str) -> set[int]:
    """The 0-based indexes of the log lines that hold the chunk's lines."""
    normal = [_normal(line) for line in lines]
    found: set[int] = set()
    for wanted in (_normal(c) for c in chunk.split("\n")):
        if not wanted:
            continue
        hits = [i for i, line in enumerate(normal) if line == wanted]
        if not hits and len(wanted) >= 8:
            hits = [i for i, line in enumerate(normal) if wanted in line]
        if hits:
            found.add(hits[-1])
    return found


def k8sgpt_rule(lines: Sequence[str]) -> list[int]:
    """k8sgpt's log analyzer: the last 100 lines that match `error|exception|fail`."""
    return [i for i, line in enumerate(lines) if _K8SGPT.search(strip_ansi(line))][-100:]


def ours(lines: Sequence[str]) -> list[int]:
    """The debugger's ranked ranges, flattened: best range first, each in log order."""
    clean = [strip_ansi(line) for line in lines]
    miner = TemplateMiner()
    ids = []
    for line in clean:
        template = miner.add(line)
        ids.append(template.id if template is not None else "")
    template_of = [miner.resolve(i).id if i else "" for i in ids]
    return [n - 1 for n in root_cause.ranked_lines(root_cause.localise(clean, template_of))]


def measure(root: Path = LOGCHUNKS) -> dict[str, Any]:
    """hit@10, recall and precision of ours and the baseline over every locatable example."""
    methods: dict[str, Callable[[Sequence[str]], list[int]]] = {"ours": ours, "k8sgpt_baseline": k8sgpt_rule}
    totals = {name: {"hit_at_10": 0.0, "recall": 0.0, "precision": 0.0} for name in methods}
    located = skipped = 0
    for _log, lines, chunk in examples(root):
        truth = locate(lines, chunk)
        if not truth:
            skipped += 1
            continue
        located += 1
        for name, method in methods.items():
            returned = method(lines)
            common = truth & set(returned)
            totals[name]["hit_at_10"] += any(i in truth for i in returned[:10])
            totals[name]["recall"] += len(common) / len(truth)
            totals[name]["precision"] += len(common) / len(returned) if returned else 0.0
    return {
        "logs": located,
        "chunk_not_found": skipped,
        **{
            name: {k: round(v / max(located, 1), 3) for k, v in figures.items()}
            for name, figures in totals.items()
        },
        "goal_hit_at_10": HIT_GOAL,
        "goal_recall": RECALL_GOAL,
    }
