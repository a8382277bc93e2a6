"""Settings of the debugger service (`DEVMESH_DEBUGGER_*`)."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import parse_positive_int, setting


@dataclass(frozen=True)
class DebuggerSettings:
    debugger_max_log_bytes: int = setting(
        256 * 1024 * 1024, "Largest log StreamAnalyzeLog accepts, in bytes.", parse=parse_positive_int
    )
    debugger_max_templates: int = setting(
        20000,
        "Templates one template set holds at most; lines that need more get none.",
        parse=parse_positive_int,
    )
    debugger_diagnosis_retention: int = setting(
        30 * 24 * 3600, "Seconds a diagnosis is kept.", parse=parse_positive_int
    )
