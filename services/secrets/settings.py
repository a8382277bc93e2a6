"""Settings of the secrets service (`DEVMESH_SECRETS_*`)."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.identity import on_behalf
from services.runtime.settings import parse_positive_float, parse_positive_int, setting

DELEGATES = "spiffe://devmesh.local/ns/*/sa/pipeline=pipelines/"


@dataclass(frozen=True)
class SecretsSettings:
    secrets_max_payload_bytes: int = setting(
        65536, "Largest secret value, in bytes.", parse=parse_positive_int
    )
    secrets_rotation_check_interval: float = setting(
        1.0, "Seconds between the rotation scheduler's looks at what is due.", parse=parse_positive_float
    )
    secrets_rotation_lease: float = setting(
        10.0,
        "Seconds a replica holds the lease on one due rotation (another replica retries after it).",
        parse=parse_positive_float,
    )
    secrets_events_retention: int = setting(
        10000, "Secret events kept in the stream (approximate; never fewer).", parse=parse_positive_int
    )
    secrets_watch_progress_interval: float = setting(
        5.0,
        "Seconds of silence after which a WatchSecretEvents stream gets a progress event.",
        parse=parse_positive_float,
    )
    secrets_delegates: tuple[tuple[str, str], ...] = setting(
        on_behalf.parse_delegates(DELEGATES),
        "Mesh identities that may read a secret on behalf of a principal of their own (header "
        "x-devmesh-on-behalf-of): comma-separated `<SPIFFE id glob>=<principal prefix>`. The "
        "pipeline service reads a job's secrets as `pipelines/<project>/<pipeline>`.",
        parse=on_behalf.parse_delegates,
        shown=DELEGATES,
    )
