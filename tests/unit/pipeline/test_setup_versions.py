"""Setup steps' version check: a wanted version is a prefix of the found one, component by
component; a version without digits takes any; a range cannot be checked."""

from __future__ import annotations

import pytest

from services.pipeline.worker.setup_steps import found_version, satisfies, wanted_parts


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("Python 3.11.7", "3.11.7"),
        ("v20.11.1", "20.11.1"),
        ("go version go1.22.1 linux/amd64", "1.22.1"),
        ('openjdk version "21.0.2" 2024-01-16', "21.0.2"),
        ("rustc 1.76.0 (07dca489a 2024-02-04)", "1.76.0"),
    ],
)
def test_the_version_is_the_first_number_a_tool_reports(output: str, version: str) -> None:
    assert found_version(output) == version


@pytest.mark.parametrize(
    ("wanted", "found", "ok"),
    [
        ("3.12", "3.12.4", True),
        ("3.1", "3.12.4", False),
        ("3.12", "3.120.0", False),
        ("20", "20.11.1", True),
        ("v20", "20.11.1", True),
        ("3.x", "3.9.1", True),
        ("2.7", "3.11.7", False),
        ("3.12", "", False),
    ],
)
def test_a_wanted_version_matches_by_major_and_minor_prefix(wanted: str, found: str, ok: bool) -> None:
    parts = wanted_parts(wanted)
    assert parts is not None
    assert satisfies(parts, found) is ok


def test_a_version_without_digits_takes_any_and_a_range_cannot_be_checked() -> None:
    assert wanted_parts("stable") == () and wanted_parts("lts/*") == ()
    assert wanted_parts(">=3.10") is None
