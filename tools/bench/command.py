"""`python -m tools.bench [SECTION|all] [--duration S]`: one JSON document on stdout.

`all` (what `make bench` runs) is every section that has an order, in that order, after a
`machine` block that says what load the figures were taken with. A section's figures sit under
its name, apart from the config section's, which sit at the top (as they always have).
`echo-server PORT` is the baseline server the sections start in a process of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

from services.runtime import logging as runtime_logging
from tools.bench import echo
from tools.bench.load import CLIENT_PROCESSES, DURATION_S, IN_FLIGHT_PER_PROCESS, ROUNDS
from tools.bench.sections import Section, discover, in_all


def figures(section: Section, duration: float) -> dict[str, Any]:
    """The JSON keys `section` contributes, measured with `duration` seconds per target."""
    result = section.run(duration)
    return result if section.top_level else {section.name: result}


def run_all(sections: dict[str, Section], duration: float) -> dict[str, Any]:
    """What `make bench` prints: the machine and load, then every section of `all` in order."""
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "client_processes": CLIENT_PROCESSES,
            "in_flight_per_process": IN_FLIGHT_PER_PROCESS,
            "duration_s": duration,
            "rounds": ROUNDS,
        }
    }
    for section in in_all(sections):
        result.update(figures(section, duration))
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the section (or all of them) the command line names and print its JSON."""
    sections = discover()
    listing = "\n".join(
        f"  {name:<10} {section.summary}{'' if section.order is not None else ' (not in all)'}"
        for name, section in sections.items()
    )
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="Benchmarks (see tools/bench/__init__.py); JSON on stdout.",
        epilog=f"sections:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", default="all", choices=["all", *sections, "echo-server"])
    parser.add_argument("port", nargs="?", type=int, default=0)
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds measured per target")
    args = parser.parse_args(argv)
    runtime_logging.configure("warning")  # stdout carries the JSON result only
    if args.command == "echo-server":
        asyncio.run(echo.serve(args.port))
        return 0
    if args.command == "all":
        result = run_all(sections, args.duration)
    else:
        result = figures(sections[args.command], args.duration)
    print(json.dumps(result, indent=2))
    return 0
