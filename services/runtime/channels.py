"""Redis pub/sub channels shared between services: one publishes, others follow."""

from __future__ import annotations

# The secrets service publishes every secret event here as JSON {type, secret (id), version,
# time_us}; the config service follows it to tell its watchers about rotated secrets.
SECRET_EVENTS = "devmesh:secrets:events:live"
