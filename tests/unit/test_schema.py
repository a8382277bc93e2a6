import pytest

from services.config import schema
from services.runtime.errors import InvalidArgument

PORT_SCHEMA = {
    "type": "object",
    "properties": {
        "db": {"type": "object", "properties": {"port": {"type": "integer"}}, "required": ["port"]}
    },
}


def test_violations_carry_json_pointers_and_the_environment() -> None:
    found = schema.violations(PORT_SCHEMA, {"db": {"port": "x"}}, "prod")
    assert [v.field for v in found] == ["/db/port"]
    assert "prod" in found[0].description


def test_a_valid_document_has_no_violations() -> None:
    assert schema.violations(PORT_SCHEMA, {"db": {"port": 5432}}, "prod") == []


def test_an_invalid_schema_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        schema.check_schema({"type": "no-such-type"})
    assert caught.value.reason == "INVALID_SCHEMA"


def test_remote_refs_are_never_fetched() -> None:
    remote = {"$ref": "https://example.invalid/schema.json"}
    with pytest.raises(InvalidArgument, match="cannot be resolved"):
        schema.violations(remote, {"a": 1}, "default")


def test_local_refs_work() -> None:
    local = {"$defs": {"port": {"type": "integer"}}, "properties": {"p": {"$ref": "#/$defs/port"}}}
    assert [v.field for v in schema.violations(local, {"p": "x"}, "default")] == ["/p"]
