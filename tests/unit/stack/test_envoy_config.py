"""What tools/envoy_config.py derives for the edge: the per-try timeout from the services'
dependency timeouts, and the REST guard's view of the HTTP bindings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tools import envoy_config, envoy_rest_guard
from tools.envoy_config import EdgeSettings, EnvoyConfigError, Upstream


def _settings(tmp_path: Path, **overrides: float) -> EdgeSettings:
    return EdgeSettings("127.0.0.1", 1, 2, tmp_path, **overrides)  # type: ignore[arg-type]


def test_the_per_try_timeout_outlasts_the_slowest_dependency(tmp_path: Path) -> None:
    assert envoy_config.per_try_timeout(_settings(tmp_path), {}) == max(
        envoy_config.MIN_PER_TRY_TIMEOUT, envoy_config.dependency_timeout({}) + envoy_config.DEPENDENCY_MARGIN
    )
    slow_vault = {"DEVMESH_VAULT_TIMEOUT": "9"}
    assert envoy_config.per_try_timeout(_settings(tmp_path), slow_vault) == 9 + envoy_config.DEPENDENCY_MARGIN


def test_a_per_try_timeout_at_or_below_a_dependency_timeout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EnvoyConfigError, match="per-try timeout"):
        envoy_config.per_try_timeout(_settings(tmp_path, per_try_timeout=2.0), {"DEVMESH_REDIS_TIMEOUT": "2"})


def test_the_rendered_routes_carry_the_derived_per_try_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVMESH_VAULT_TIMEOUT", "7")
    config = yaml.safe_load(
        envoy_config.render(_settings(tmp_path), [Upstream("config", "127.0.0.1", 3)], tmp_path).read_text()
    )
    routes = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"
    ]
    tries = {
        r["route"]["retry_policy"].get("per_try_timeout")
        for r in routes["virtual_hosts"][0]["routes"]
        if "route" in r and r["route"].get("timeout") != "0s"
    }
    assert tries == {"8.0s"}


@pytest.mark.parametrize(
    ("template", "parsed"),
    [
        ("/v1/namespaces", (("v1", "namespaces"), None)),
        (
            "/v1/{name=namespaces/*/environments/*}:resolve",
            (("v1", "namespaces", "*", "environments", "*"), "resolve"),
        ),
        ("/v1/tokens:exchange", (("v1", "tokens"), "exchange")),
        ("/v1/{name}/x/{rest=**}", (("v1", "*", "x", "**"), None)),
    ],
)
def test_http_templates_are_read_as_the_transcoder_reads_them(
    template: str, parsed: tuple[object, ...]
) -> None:
    assert envoy_rest_guard.parse_template(template) == parsed


def test_message_tables_take_json_and_proto_names_and_leave_free_form_types_open() -> None:
    pool = envoy_rest_guard.load_pool(envoy_config.DESCRIPTOR)
    tables = envoy_rest_guard.message_tables(
        pool, ["devmesh.config.v1.Environment", "devmesh.config.v1.Namespace"]
    )
    namespace = tables["devmesh.config.v1.Namespace"]
    assert namespace["displayName"] == namespace["display_name"] == 0
    assert namespace["labels"] == {"map": 0}
    assert tables["devmesh.config.v1.Environment"]["content"] == 0  # a Struct takes anything
