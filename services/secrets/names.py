"""Resource names of the secrets service: `secrets/{id}`, `secrets/{id}/versions/{n|latest}`,
`accessPolicies/{id}`, `tenants/{tenant}`."""

from __future__ import annotations

from services.runtime.errors import InvalidArgument
from services.runtime.resource_names import NUMBER, IdRule, ResourceName

# Wider than AIP-122's rule, as Secret Manager's is: secret ids are often names from elsewhere
# (`DB_PASSWORD`, `api.stripe`).
SECRET_ID = IdRule(
    r"[A-Za-z][A-Za-z0-9_.-]{0,199}",
    "1-200 characters of letters, digits, '.', '_' and '-', starting with a letter",
)
LATEST = "latest"
VERSION = IdRule(rf"{LATEST}|{NUMBER.regex}", "a positive version number, or `latest`")

SECRET = ResourceName("secrets/{secret}", {"secret": SECRET_ID})
SECRET_VERSION = ResourceName(
    "secrets/{secret}/versions/{version}", {"secret": SECRET_ID, "version": VERSION}
)
ACCESS_POLICY = ResourceName("accessPolicies/{access_policy}", {"access_policy": SECRET_ID})
TENANT = ResourceName("tenants/{tenant}", {"tenant": SECRET_ID})


def check_id(value: str, field: str) -> str:
    return SECRET_ID.check(value, field)


def check_prefix(value: str, field: str) -> str:
    """The start of a secret id, to select secrets by (empty selects every one)."""
    if value and not SECRET_ID.matches(value):
        raise InvalidArgument.for_field(
            field,
            "must be the start of a secret id: up to 200 letters, digits, '.', '_' and '-', "
            "starting with a letter (or empty for every secret)",
        )
    return value


def secret_id(name: str, field: str = "name") -> str:
    (sid,) = SECRET.parse(name, field)
    return sid


def policy_id(name: str, field: str = "name") -> str:
    (pid,) = ACCESS_POLICY.parse(name, field)
    return pid


def tenant_id(name: str, field: str = "tenant") -> str:
    (tenant,) = TENANT.parse(name, field)
    return tenant


def version_name(name: str, field: str = "name") -> tuple[str, int | None]:
    """(secret id, version number or None for `latest`)."""
    sid, version = SECRET_VERSION.parse(name, field)
    return sid, None if version == LATEST else int(version)


def secret_name(sid: str) -> str:
    return SECRET.format(sid)


def version_resource(sid: str, version: int) -> str:
    return SECRET_VERSION.format(sid, str(version))
