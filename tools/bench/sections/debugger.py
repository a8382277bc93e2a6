"""The debugger: template grouping on Loghub against drain3, root-cause lines on LogChunks against k8sgpt.

Grouping accuracy per Loghub-2k system and its mean with the miner's one generic
configuration, against drain3 (defaults and generic masks) in the same run; lines mined per
second in process (`tools.bench.log_grouping`); hit@10 and recall of the root-cause ranges on
LogChunks against k8sgpt's log rule (`tools.bench.root_cause_lines`); category accuracy and
confidence reliability on labelled fixtures (`tools.bench.category_accuracy`); ParseLog's rate
against the in-process one and a 50 MiB streamed log's peak memory in a service process
(`tools.bench.debugger_service`). Goals: mean GA >= 0.92, >= 50,000 lines/s in process and
half of it through ParseLog, hit@10 >= 0.8, recall >= 0.6, peak growth under three chunks
plus the template set. Needs ../shared/data (each part is skipped with a reason when its
data is absent).
"""

from __future__ import annotations

from typing import Any

from tools.bench import category_accuracy, debugger_service, log_grouping, root_cause_lines
from tools.bench.sections import Section


def run(_duration: float) -> dict[str, Any]:
    """Every debugger figure whose data is present."""
    figures: dict[str, Any] = {}
    if log_grouping.LOGHUB.is_dir():
        figures["grouping_accuracy"] = log_grouping.measure()
        figures["mining"] = log_grouping.mining_rate()
    else:
        figures["grouping_accuracy"] = {"skipped": f"no Loghub data at {log_grouping.LOGHUB}"}
    if root_cause_lines.LOGCHUNKS.is_dir():
        figures["root_cause_lines"] = root_cause_lines.measure()
    else:
        figures["root_cause_lines"] = {"skipped": f"no LogChunks data at {root_cause_lines.LOGCHUNKS}"}
    figures["categories"] = category_accuracy.measure()
    if log_grouping.LOGHUB.is_dir():
        figures["service"] = debugger_service.measure()
    return figures


SECTION = Section("debugger", run, order=80)
