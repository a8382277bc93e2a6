"""A local stack's ports: one per part, checked before anything starts."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from tools.stack.local import local_stack
from tools.stack.ports import PortPlan
from tools.stack.processes import LOOPBACK, LOWEST_CHOSEN_PORT, StackError, free_port


def test_every_part_of_a_planned_stack_gets_its_own_port() -> None:
    for base in (0, 20000):
        plan = PortPlan.from_base(base, ["config", "secrets"])
        fixed = [
            plan.valkey,
            plan.ratelimit_valkey,
            plan.openbao,
            plan.openbao_cluster,
            plan.edge,
            plan.envoy_admin,
        ]
        ports = [*fixed, *plan.services.values(), *plan.metrics.values()]
        assert len(set(ports)) == len(ports) == 10


def test_each_service_gets_a_metrics_port_at_an_offset_of_the_base() -> None:
    plan = PortPlan.from_base(31000, ["config", "secrets"])
    assert dict(plan.metrics) == {"config": 31090, "secrets": 31091}


def test_two_services_given_one_metrics_address_are_refused_before_anything_starts(tmp_path: Path) -> None:
    shared = f"{LOOPBACK}:{free_port()}"
    with (
        pytest.raises(StackError) as refused,
        local_stack(tmp_path, ["config", "secrets"], service_env={"DEVMESH_METRICS_ADDR": shared}),
    ):
        pass
    assert str(refused.value) == (
        f"config metrics (DEVMESH_METRICS_ADDR) and secrets metrics (DEVMESH_METRICS_ADDR) are given "
        f"the same address, {shared}; each needs its own"
    )
    assert not (tmp_path / "logs").exists()  # nothing was started


def test_a_metrics_port_already_in_use_is_refused_naming_who_wanted_it(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind((LOOPBACK, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        plan = PortPlan.from_base(0, ["config"])
        plan = dataclasses.replace(plan, metrics={"config": taken})
        with pytest.raises(StackError) as refused, local_stack(tmp_path, ["config"], ports=plan):
            pass
    assert str(refused.value).startswith(
        f"config metrics cannot listen on {LOOPBACK}:{taken}: Address already in use; is another stack"
    )
    assert not (tmp_path / "logs").exists()


def test_chosen_ports_are_below_the_ephemeral_range_distinct_and_skip_a_taken_one() -> None:
    # Below the range no outgoing connection or bind to port 0 can take a port between its
    # choice and its bind; a port something listens on is passed over.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    first = free_port()
    with socket.socket() as holder:
        holder.bind((LOOPBACK, first + 1))
        holder.listen()
        chosen = [free_port() for _ in range(20)]
    assert all(LOWEST_CHOSEN_PORT <= p < low for p in [first, *chosen])
    assert len(set(chosen)) == 20 and first + 1 not in chosen
