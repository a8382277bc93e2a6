"""Resource names of the secrets service: `secrets/{id}`, `secrets/{id}/versions/{n|latest}`,
`accessPolicies/{id}`, `tenants/{tenant}`."""

from __future__ import annotations

import re

from services.runtime.errors import InvalidArgument

ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,199}")
LATEST = "latest"


def check_id(value: str, field: str) -> str:
    if ID_RE.fullmatch(value) is None:
        raise InvalidArgument.for_field(
            field, "must be 1-200 characters of letters, digits, '.', '_' and '-', starting with a letter"
        )
    return value


def check_prefix(value: str, field: str) -> str:
    """The start of a secret id, to select secrets by (empty selects every one)."""
    if value and ID_RE.fullmatch(value) is None:
        raise InvalidArgument.for_field(
            field,
            "must be the start of a secret id: up to 200 letters, digits, '.', '_' and '-', "
            "starting with a letter (or empty for every secret)",
        )
    return value


def _one(name: str, collection: str, field: str) -> str:
    prefix = f"{collection}/"
    if not name.startswith(prefix):
        raise InvalidArgument.for_field(field, f"must be {collection}/<id>")
    return check_id(name[len(prefix) :], field)


def secret_id(name: str, field: str = "name") -> str:
    return _one(name, "secrets", field)


def policy_id(name: str, field: str = "name") -> str:
    return _one(name, "accessPolicies", field)


def tenant_id(name: str, field: str = "tenant") -> str:
    return _one(name, "tenants", field)


def version_name(name: str, field: str = "name") -> tuple[str, int | None]:
    """(secret id, version number or None for `latest`)."""
    secret, sep, version = name.rpartition("/versions/")
    if not sep:
        raise InvalidArgument.for_field(field, "must be secrets/<id>/versions/<number or latest>")
    sid = secret_id(secret, field)
    if version == LATEST:
        return sid, None
    if not version.isdigit() or int(version) < 1 or len(version) > 18:
        raise InvalidArgument.for_field(field, "the version must be a positive number or `latest`")
    return sid, int(version)


def secret_name(sid: str) -> str:
    return f"secrets/{sid}"


def version_resource(sid: str, version: int) -> str:
    return f"secrets/{sid}/versions/{version}"
