"""Detection and generation on the fixture repositories: the stacks, commands and versions found,
the evidence behind them, the warnings on ambiguity, and proposals that export cleanly."""

from __future__ import annotations

import pytest

from services.pipeline import exporter, generator
from services.pipeline.detection.stack import Stack
from services.pipeline.exporter import Target
from services.runtime.errors import FailedPrecondition
from tests.unit.pipeline import repos
from tools.actionlint import Actionlint


def generate(files: dict[str, str], **options: object) -> generator.Generated:
    return generator.generate(repos.snapshot(files), generator.Options(**options))  # type: ignore[arg-type]


def only(generated: generator.Generated, ecosystem: str) -> Stack:
    (stack,) = [s for s in generated.stacks if s.ecosystem == ecosystem]
    return stack


def decision(generated: generator.Generated, subject: str) -> tuple[str, str, int]:
    found = next(d for d in generated.report.decisions if d.subject == subject)
    return found.choice, found.evidence[0].path, found.evidence[0].line


def warnings(generated: generator.Generated) -> set[str]:
    return {w.code for w in generated.report.warnings}


@pytest.mark.parametrize("name", sorted(repos.ALL))
def test_every_fixture_repository_gets_a_pipeline_both_targets_accept(
    name: str, actionlint: Actionlint
) -> None:
    generated = generate(repos.ALL[name])
    for target in Target:
        result = exporter.export(generated.definition, target)
        if target is Target.GITHUB_ACTIONS:
            assert actionlint.lint(result.content) == [], name


def test_uv_is_chosen_from_its_lockfile_and_pytest_from_its_config() -> None:
    generated = generate(repos.PYTHON_UV)
    stack = only(generated, "python")
    assert stack.package_manager == "uv"
    assert stack.commands["test"] == ["uv run pytest"]
    assert decision(generated, "package manager") == ("uv", "uv.lock", 0)
    choice, path, line = decision(generated, "test command")
    assert (choice, path, line) == ("uv run pytest", "pyproject.toml", 18)


def test_python_versions_come_from_the_classifiers_as_a_matrix() -> None:
    generated = generate(repos.PYTHON_UV)
    assert only(generated, "python").versions == ["3.10", "3.11", "3.12"]
    test = next(j for j in generated.definition.jobs if j.id == "python-test")
    assert list(test.matrix.axes[0].values) == ["3.10", "3.11", "3.12"]
    assert test.steps[1].setup.version == "${{ matrix.python }}"


def test_ruff_and_mypy_come_from_their_pyproject_tables() -> None:
    stack = only(generate(repos.PYTHON_UV), "python")
    assert stack.commands["lint"] == ["uv run ruff check ."]
    assert stack.commands["typecheck"] == ["uv run mypy ."]


def test_poetry_with_black_and_a_pinned_python() -> None:
    generated = generate(repos.PYTHON_POETRY)
    stack = only(generated, "python")
    assert (stack.package_manager, stack.versions) == ("poetry", ["3.12"])
    assert stack.commands["format"] == ["poetry run black --check ."]
    assert decision(generated, "python version") == ("3.12", ".python-version", 1)


def test_pip_with_requirements_files_finds_pytest_and_flake8() -> None:
    stack = only(generate(repos.PYTHON_PIP), "python")
    assert stack.package_manager == "pip"
    assert stack.commands["test"] == ["python -m pytest"]
    assert stack.commands["lint"] == ["flake8"]


def test_two_lockfiles_give_a_warning_with_the_evidence_never_a_silent_guess() -> None:
    generated = generate(repos.PYTHON_TWO_LOCKFILES)
    found = next(w for w in generated.report.warnings if w.code == "SEVERAL_LOCKFILES")
    assert {e.path for e in found.evidence} == {"uv.lock", "poetry.lock"}
    assert "uv was chosen" in found.message


def test_pnpm_comes_from_package_manager_and_the_scripts_from_package_json() -> None:
    generated = generate(repos.NODE_PNPM)
    stack = only(generated, "node")
    assert stack.package_manager == "pnpm"
    assert stack.commands["install"] == ["pnpm install --frozen-lockfile"]
    assert stack.commands["test"] == ["pnpm test"]
    assert stack.commands["typecheck"] == ["pnpm run typecheck"]
    assert decision(generated, "node version") == ("20", ".nvmrc", 1)


def test_no_lockfile_is_a_warning_and_npm_install() -> None:
    generated = generate(repos.NODE_NO_LOCKFILE)
    assert only(generated, "node").commands["install"] == ["npm install"]
    assert "NO_LOCKFILE" in warnings(generated)


def test_go_takes_its_version_from_go_mod_and_golangci_lint_from_its_config() -> None:
    generated = generate(repos.GO)
    stack = only(generated, "go")
    assert stack.versions == ["1.22"]
    assert decision(generated, "go version") == ("1.22", "go.mod", 3)
    assert any("golangci-lint/v2" in c for c in stack.commands["lint"])
    assert stack.commands["test"] == ["go test ./..."]


def test_a_cargo_workspace_is_one_project_with_its_toolchain() -> None:
    stack = only(generate(repos.RUST), "rust")
    assert stack.directory == "" and stack.versions == ["1.79.0"]
    assert stack.commands["test"] == ["cargo test --locked --workspace"]
    assert "cargo clippy" in stack.commands["lint"][0]


def test_gradle_with_its_wrapper_and_a_kotlin_toolchain() -> None:
    generated = generate(repos.JAVA_GRADLE)
    stack = only(generated, "java")
    assert stack.commands["test"] == ["./gradlew check"]
    assert "kotlin" in stack.tools
    assert stack.versions == ["17"]


def test_maven_with_its_wrapper_and_the_compiler_release() -> None:
    stack = only(generate(repos.JAVA_MAVEN), "java")
    assert stack.commands["test"] == ["./mvnw -B verify"] and stack.versions == ["21"]


def test_dotnet_ruby_and_php_are_detected() -> None:
    assert only(generate(repos.DOTNET), "dotnet").versions == ["8.0.x"]
    ruby = only(generate(repos.RUBY), "ruby")
    assert ruby.commands["test"] == ["bundle exec rspec"] and ruby.commands["lint"] == ["bundle exec rubocop"]
    php = only(generate(repos.PHP), "php")
    assert php.commands["test"] == ["vendor/bin/phpunit"] and php.versions == ["8.2"]


def test_a_monorepo_gets_jobs_per_subproject_with_path_filters_and_skips_examples() -> None:
    generated = generate(repos.MONOREPO)
    found = {(s.ecosystem, s.directory) for s in generated.stacks}
    assert found == {
        ("python", "services/api"),
        ("node", "services/web"),
        ("go", "tools/cli"),
        ("docker", "services/api"),
        ("helm", "charts/app"),
        ("kubernetes", "deploy"),
    }
    jobs = {j.id: j for j in generated.definition.jobs}
    assert list(jobs["services-api-python-test"].paths) == ["services/api/**"]
    assert jobs["services-web-node-test"].working_directory == "services/web"


def test_existing_ci_is_evidence_for_the_runner_and_the_versions() -> None:
    generated = generate(repos.EXISTING_CI)
    stack = only(generated, "python")
    assert stack.commands["test"] == ["uvx tox"]
    assert decision(generated, "test command")[1:] == (".github/workflows/ci.yml", 12)
    assert stack.versions == ["3.11", "3.12"]


def test_differences_with_the_existing_ci_are_reported_both_ways() -> None:
    differences = generate(repos.EXISTING_CI).differences
    existing = {d.command for d in differences if d.only_in_existing}
    generated = {d.command for d in differences if not d.only_in_existing}
    assert existing == {"make docs"}  # `tox -e py` is what the proposal runs too; `pip install` prepares
    assert "ruff check" in generated and "tox" not in generated


def test_security_gates_are_jobs_each_skippable() -> None:
    ids = {j.id for j in generate(repos.PYTHON_UV).definition.jobs}
    assert {"secret-scan", "python-audit"} <= ids
    skipped = {j.id for j in generate(repos.PYTHON_UV, skip_gates=frozenset({"secret-scan"})).definition.jobs}
    assert "secret-scan" not in skipped and "python-audit" in skipped


def test_the_cache_is_keyed_by_the_lockfile() -> None:
    job = next(j for j in generate(repos.NODE_PNPM).definition.jobs if j.id == "node-test")
    cache = next(s.cache for s in job.steps if s.HasField("cache"))
    assert list(cache.key_files) == ["pnpm-lock.yaml"]


def test_nothing_recognised_is_a_failed_precondition_naming_what_was_looked_for() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        generate(repos.NOTHING)
    assert caught.value.reason == "NOTHING_RECOGNISED"
    assert "pyproject.toml" in caught.value.message and "go.mod" in caught.value.message


def test_the_existing_ci_test_target_wins_with_its_line_as_evidence() -> None:
    generated = generate(repos.GO_WITH_MAKE_CI)
    stack = only(generated, "go")
    assert stack.commands["test"] == ["make test"]
    assert stack.adopted["test"] == ["go test ./..."]
    choice, path, line = decision_last(generated, "test command")
    assert "detection proposed go test ./..." in choice and (path, line) == (".github/workflows/ci.yml", 6)


def decision_last(generated: generator.Generated, subject: str) -> tuple[str, str, int]:
    found = [d for d in generated.report.decisions if d.subject == subject][-1]
    return found.choice, found.evidence[0].path, found.evidence[0].line


def test_a_ci_line_counts_for_the_project_in_its_working_directory() -> None:
    generated = generate(repos.NODE_WORKSPACE_CI)
    site = next(s for s in generated.stacks if s.directory == "site")
    root = next(s for s in generated.stacks if s.directory == "")
    assert site.commands["test"] == ["npm run test:unit"]
    assert root.commands["test"] == ["npm test"]


def test_workspace_members_are_the_roots_and_their_manifests_are_not_parsed() -> None:
    dirs = {s.directory for s in generate(repos.NODE_WORKSPACE_CI).stacks}
    assert dirs == {"", "site"}  # packages/broken is a member: its broken manifest is never read


def test_split_php_packages_belong_to_the_root() -> None:
    assert [s.directory for s in generate(repos.PHP_SPLIT_PACKAGES).stacks] == [""]


def test_two_dockerfiles_in_one_directory_get_jobs_of_their_own() -> None:
    ids = [j.id for j in generate(repos.TWO_DOCKERFILES).definition.jobs if j.id.endswith("docker-build")]
    assert len(ids) == len(set(ids)) == 2
