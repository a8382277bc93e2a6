"""Acting on behalf of another principal: only a delegated mesh identity, only for names under
its prefix, and the principal it acts as holds no role."""

from __future__ import annotations

import pytest

from services.runtime.errors import PermissionDenied
from services.runtime.identity import on_behalf
from services.runtime.identity.principal import API_KEY, MESH, Principal

PIPELINE = Principal("spiffe://devmesh.local/ns/devmesh/sa/pipeline", role="service", kind=MESH)
DELEGATES = on_behalf.parse_delegates("spiffe://devmesh.local/ns/*/sa/pipeline=pipelines/")


def _as(name: str) -> tuple[tuple[str, str], ...]:
    return ((on_behalf.HEADER, name),)


def test_a_call_that_names_no_one_acts_as_its_caller() -> None:
    assert on_behalf.acting(PIPELINE, (("x-other", "v"),), DELEGATES) is PIPELINE


def test_the_pipeline_service_acts_as_a_pipeline_that_holds_no_role() -> None:
    acting = on_behalf.acting(PIPELINE, _as("pipelines/p1/ci"), DELEGATES)
    assert (acting.name, acting.role, acting.permissions) == ("pipelines/p1/ci", "", ())


@pytest.mark.parametrize(
    ("caller", "name"),
    [
        (Principal("apikey:abc", role="admin", kind=API_KEY), "pipelines/p1/ci"),  # a key, even admin's
        (
            Principal("spiffe://devmesh.local/ns/devmesh/sa/cost", role="service", kind=MESH),
            "pipelines/p1/ci",
        ),
        (PIPELINE, "apikey:abc"),  # outside its prefix
        (PIPELINE, "pipelines/*"),  # no wildcard
        (PIPELINE, "pipelines/p1/../../x"),
    ],
)
def test_anyone_else_or_any_other_name_is_refused(caller: Principal, name: str) -> None:
    with pytest.raises(PermissionDenied):
        on_behalf.acting(caller, _as(name), DELEGATES)


def test_a_delegation_entry_must_end_its_prefix_with_a_slash() -> None:
    with pytest.raises(ValueError):
        on_behalf.parse_delegates("spiffe://x/sa/pipeline=pipelines")
