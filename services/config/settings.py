"""Settings of the config service (`DEVMESH_CONFIG_*`)."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import (
    parse_positive_float,
    parse_positive_int,
    setting,
)


@dataclass(frozen=True)
class ConfigSettings:
    config_max_document_bytes: int = setting(
        1024 * 1024, "Largest environment document, in bytes of JSON.", parse=parse_positive_int
    )
    config_max_document_depth: int = setting(
        24,
        "Deepest nesting of an environment document. Protobuf parsing stops near 32 JSON levels, "
        "so values above ~30 only change which error a caller gets.",
        parse=parse_positive_int,
    )
    config_watch_progress_interval: float = setting(
        5.0,
        "Seconds of silence after which a watch stream gets a progress message.",
        parse=parse_positive_float,
    )
    config_watch_queue_size: int = setting(
        1024,
        "Revisions a watcher may fall behind before it is cut off (RESOURCE_EXHAUSTED).",
        parse=parse_positive_int,
    )
    config_log_retention: int = setting(
        10000,
        "Revisions kept per namespace in the watch log (approximate; never fewer).",
        parse=parse_positive_int,
    )
    config_api_key_retention_days: float = setting(
        30.0,
        "Days an expired or revoked API key's record stays readable (GetApiKey, ListApiKeys with "
        "show_inactive) before Redis deletes it; its audit events stay as long as the audit stream.",
        parse=parse_positive_float,
    )
