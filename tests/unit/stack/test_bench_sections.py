"""The bench command finds its sections in `tools.bench.sections` and prints them as before."""

from __future__ import annotations

from typing import Any

from tools.bench.command import figures
from tools.bench.sections import Section, discover, in_all


def test_make_bench_runs_the_sections_it_ran_before_in_the_same_order() -> None:
    assert [section.name for section in in_all(discover())] == [
        "config",
        "writes",
        "identity",
        "secrets",
        "edge",
        "pipeline",
        "cost",
        "debugger",
        "pipeline_runs",
    ]


def test_the_watch_fan_out_runs_on_its_own_but_not_in_make_bench() -> None:
    sections = discover()
    assert sections["watch"].order is None
    assert sections["watch"] not in in_all(sections)


def test_every_section_says_in_a_line_what_it_measures() -> None:
    for name, section in discover().items():
        assert section.summary, f"{name} has no module docstring"


def test_a_sections_figures_sit_under_its_name_and_a_top_level_sections_at_the_top() -> None:
    def run(duration: float) -> dict[str, Any]:
        return {"rps": duration}

    assert figures(Section("nested", run, order=1), 2.0) == {"nested": {"rps": 2.0}}
    assert figures(Section("flat", run, order=1, top_level=True), 2.0) == {"rps": 2.0}
    assert discover()["config"].top_level
