"""The Envoy edge: its config rendered from envoy/ and validated, then the process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tools import envoy_config
from tools.envoy_config import EdgeSettings, Upstream
from tools.stack.processes import LOOPBACK, ManagedProcess, StackError, spawn, wait_until


@dataclass
class Envoy:
    process: ManagedProcess
    edge_addr: str
    admin_url: str
    config_path: Path

    def live(self) -> bool:
        import requests

        return requests.get(f"{self.admin_url}/ready", timeout=1).status_code == 200

    def clusters_healthy(self) -> bool:
        """Every upstream host passes Envoy's own gRPC health check."""
        import requests

        lines = requests.get(f"{self.admin_url}/clusters", timeout=1).text.splitlines()
        flags = [line.rsplit("::", 1)[1] for line in lines if "::health_flags::" in line]
        return bool(flags) and all(flag == "healthy" for flag in flags)


def start_envoy(
    settings: EdgeSettings,
    upstreams: list[Upstream],
    out_dir: Path,
    log_dir: Path,
    *,
    wait_healthy: bool = True,
) -> Envoy:
    """Render and validate the edge config, then run Envoy (until every upstream is healthy)."""
    config = envoy_config.render(settings, upstreams, out_dir)
    envoy_config.validate(config)
    argv = [
        envoy_config.envoy_binary(), "-c", str(config), "--log-level", "warn",
        # Several Envoys may share a machine (tests, a second stack): no shared-memory hot restart.
        "--disable-hot-restart", "--concurrency", os.environ.get("DEVMESH_ENVOY_CONCURRENCY", "1"),
    ]  # fmt: skip
    process = spawn(f"envoy-{settings.edge_port}", argv, log_dir)
    envoy = Envoy(
        process, f"{LOOPBACK}:{settings.edge_port}", f"http://{LOOPBACK}:{settings.admin_port}", config
    )
    ready = envoy.clusters_healthy if wait_healthy else envoy.live
    try:
        wait_until(ready, 30, "envoy: upstreams healthy", process)
    except StackError:
        process.stop(2)
        raise
    return envoy
