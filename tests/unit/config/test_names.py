import pytest

from services.config import names
from services.runtime.errors import InvalidArgument


@pytest.mark.parametrize("value", ["ab", "shop", "team-1", "a" * 63])
def test_valid_ids(value: str) -> None:
    assert names.check_id(value, "f") == value


@pytest.mark.parametrize("value", ["", "a", "A", "1ab", "ab-", "a_b", "a" * 64, "-", "ab/c", "ab\n"])
def test_invalid_ids_name_the_field(value: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        names.check_id(value, "namespace_id")
    assert caught.value.field_violations[0].field == "namespace_id"


def test_environment_names_parse() -> None:
    assert names.parse_environment("namespaces/shop/environments/prod") == ("shop", "prod")


@pytest.mark.parametrize(
    "name",
    ["", "namespaces/shop", "namespaces/shop/environments", "namespaces/shop/envs/prod",
     "namespaces/shop/environments/prod/x", "namespaces/Shop/environments/prod"],
)  # fmt: skip
def test_malformed_environment_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument):
        names.parse_environment(name)


def test_wildcard_environment_only_where_allowed() -> None:
    assert names.parse_environment("namespaces/shop/environments/-", allow_all=True) == ("shop", "-")
    with pytest.raises(InvalidArgument):
        names.parse_environment("namespaces/shop/environments/-")


@pytest.mark.parametrize("name", ["namespaces/shop/revisions/0", "namespaces/shop/revisions/x",
                                  "namespaces/shop/revisions/-1", "namespaces/shop/revisions/" + "9" * 19])  # fmt: skip
def test_bad_revision_names(name: str) -> None:
    with pytest.raises(InvalidArgument):
        names.parse_revision(name)
