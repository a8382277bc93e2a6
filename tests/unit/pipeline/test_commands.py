"""What a command runs, for comparing pipelines: wrappers, flags and CI placeholders aside."""

from __future__ import annotations

import pytest

from services.pipeline import commands


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("uv run pytest -q tests", "pytest"),
        ("python -m pytest", "pytest"),
        ("uv run --locked --no-default-groups --group dev tox run -e typing", "tox"),
        ("npm test", "npm run test"),
        ("npm run test-ci", "npm run test-ci"),
        ("pnpm run build", "pnpm run build"),
        ("./gradlew check -x test", "gradle check"),
        ("mvn clean verify -B", "mvn verify"),
        ("${{ env.CARGO }} test --verbose --workspace", "cargo test"),
        ("COMPOSER_OPTS='${{ matrix.flags }}' vendor/bin/phpunit", "phpunit"),
        ("bundle exec rake", "rake"),
        ("CI=1 go test -race ./...", "go test"),
        ("make test && echo done", "make test"),
    ],
)
def test_the_signature_is_the_tool_and_its_subcommand(command: str, expected: str) -> None:
    assert commands.signature(command) == expected


@pytest.mark.parametrize(
    "command", ["pip install tox", "npm ci", "echo building", "cd src", "uv sync --locked"]
)
def test_preparing_commands_are_not_compared(command: str) -> None:
    assert not commands.interesting(command)


@pytest.mark.parametrize(
    "command", ["make richtest", "cargo clippy -- -D warnings", "go vet ./...", "bundle exec rake"]
)
def test_building_testing_and_checking_commands_are_compared(command: str) -> None:
    assert commands.interesting(command)
