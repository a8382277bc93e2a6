"""One AIP-122 resource-name parser for every service."""

from __future__ import annotations

import pytest

from services.runtime.errors import InvalidArgument
from services.runtime.resource_names import NUMBER, IdRule, ResourceName

ENVIRONMENT = ResourceName(
    "namespaces/{namespace}/environments/{environment}", wildcards=frozenset({"environment"})
)
VERSION = ResourceName("things/{thing}/versions/{version}", {"version": NUMBER})


def test_a_name_parses_into_its_ids_and_formats_back() -> None:
    ids = ENVIRONMENT.parse("namespaces/shop/environments/prod")
    assert ids == ("shop", "prod")
    assert ENVIRONMENT.format(*ids) == "namespaces/shop/environments/prod"


@pytest.mark.parametrize(
    "name",
    ["", "namespaces/shop", "namespaces/shop/environments/prod/x", "namespaces/shop/envs/prod",
     "namespaces//environments/prod", "namespaces/Shop/environments/prod", "namespaces/a\x00b/environments/p",
     "namespaces/../environments/prod"],
)  # fmt: skip
def test_a_malformed_name_is_invalid_and_names_the_field(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        ENVIRONMENT.parse(name, "parent")
    assert caught.value.field_violations[0].field == "parent"


def test_a_wildcard_is_accepted_only_where_the_pattern_allows_it() -> None:
    assert ENVIRONMENT.parse("namespaces/shop/environments/-") == ("shop", "-")
    with pytest.raises(InvalidArgument):
        ENVIRONMENT.parse("namespaces/-/environments/prod")


def test_a_variable_can_have_a_rule_of_its_own() -> None:
    assert VERSION.parse("things/ab/versions/12") == ("ab", "12")
    for bad in ("0", "-1", "x", "9" * 19):
        with pytest.raises(InvalidArgument):
            VERSION.parse(f"things/ab/versions/{bad}")


def test_an_error_quotes_a_huge_name_only_in_part() -> None:
    with pytest.raises(InvalidArgument) as caught:
        ENVIRONMENT.parse("namespaces/" + "a" * 100_000)
    assert len(caught.value.message) < 400


def test_a_rule_says_what_it_expects() -> None:
    rule = IdRule(r"[a-z]{3}", "three lowercase letters")
    with pytest.raises(InvalidArgument, match="three lowercase letters"):
        rule.check("abcd", "id")


def test_a_pattern_must_be_pairs_of_collection_and_variable() -> None:
    with pytest.raises(ValueError):
        ResourceName("namespaces/{namespace}/environments")
