"""The real parts of devmesh on loopback: Valkey, OpenBao, the services and the Envoy edge.
Shared by the tests, `make run` and the benchmarks, so that all three run the same thing.

    python -m tools.stack run      # what `make run` does: everything, until Ctrl-C

One job per module: `processes` (start, stop and restart children by PID), `valkey`,
`openbao`, `vault_bootstrap`, `certs`, `channels` (gRPC channels and health checks),
`service_process` (one `devmesh serve` process), `envoy`, `ports` (the port plan and its
checks), `local` (the whole stack), and for `run`: `state_lock` (one stack per state
directory), `supervisor` (restarts with backoff) and `command`.
"""
