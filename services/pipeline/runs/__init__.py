"""Pipeline runs: the coordinator's plan, scheduling and Redis state (no grpc here)."""
