"""Utilisation samples in, rightsizing recommendations out, and their lifecycle."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from google.protobuf import timestamp_pb2

from devmesh.cost.v1 import cost_pb2 as pb
from services.cost import rightsizing
from tests.helpers import error_info, refused
from tests.integration.cost.conftest import CostServer
from tools.focus_generator import ContainerSamples, utilization


def _messages(
    workload: str, *containers: ContainerSamples, **prices: str
) -> Iterator[pb.ImportUtilizationRequest]:
    first = True
    for c in containers:
        for start in range(0, len(c.cpu), 2000):
            samples = []
            for t, cpu, mem in zip(
                c.times_us[start : start + 2000],
                c.cpu[start : start + 2000],
                c.memory[start : start + 2000],
                strict=True,
            ):
                ts = timestamp_pb2.Timestamp()
                ts.FromMicroseconds(t)
                samples.append(
                    pb.UtilizationSample(
                        container=c.container, time=ts, cpu_millicores=cpu, memory_bytes=mem,
                        cpu_request_millicores=c.cpu_request, memory_request_bytes=c.memory_request,
                    )
                )  # fmt: skip
            yield pb.ImportUtilizationRequest(
                workload=f"workloads/{workload}" if first else "",
                samples=samples,
                **(prices if first else {}),
            )
            first = False


async def test_an_oversized_container_gets_a_recommendation_with_its_evidence_and_savings(
    cost: CostServer,
) -> None:
    web = utilization("web", cpu_mean=200, cpu_request=1000, seed=1)
    stored = await cost.stub.ImportUtilization(_messages("shop.web", web))
    assert (stored.samples_stored, list(stored.containers)) == (len(web.cpu), ["web"])
    (found,) = (
        await cost.stub.ListRecommendations(pb.ListRecommendationsRequest(parent="workloads/shop.web"))
    ).recommendations
    assert found.name == "workloads/shop.web/recommendations/web"
    assert abs(found.evidence.cpu_at_percentile_millicores - web.cpu_p95) < 1e-6
    assert abs(found.evidence.memory_peak_bytes - web.memory_peak) < 1
    assert abs(found.recommended_cpu_request_millicores - round(web.cpu_p95 / 0.7, 1)) < 0.11
    assert abs(found.recommended_memory_request_bytes - round(web.memory_peak / 0.7)) <= 1
    assert found.monthly_savings.currency == "USD" and float(found.monthly_savings.amount) > 0
    assert found.state == pb.Recommendation.STATE_ACTIVE


async def test_a_right_sized_container_gets_no_recommendation(cost: CostServer) -> None:
    tight = utilization(
        "db", cpu_mean=450, memory_mean=1.2 * 1024**3, cpu_request=1000, memory_request=2 * 1024**3, seed=2
    )
    await cost.stub.ImportUtilization(_messages("shop.db", tight))
    found = await cost.stub.ListRecommendations(pb.ListRecommendationsRequest(parent="workloads/shop.db"))
    assert list(found.recommendations) == []


async def test_a_profile_changes_the_target(cost: CostServer) -> None:
    api = utilization("api", seed=3)
    await cost.stub.ImportUtilization(_messages("shop.api", api))
    listing = await cost.stub.ListRecommendations(
        pb.ListRecommendationsRequest(parent="workloads/shop.api", profile="high-availability")
    )
    (found,) = listing.recommendations
    assert found.evidence.target_utilization == rightsizing.PROFILES["high-availability"]


async def test_a_recommendation_is_claimed_then_succeeds_and_a_stale_etag_is_aborted(
    cost: CostServer,
) -> None:
    worker = utilization("worker", seed=4)
    await cost.stub.ImportUtilization(_messages("shop.worker", worker))
    name = "workloads/shop.worker/recommendations/worker"
    (active,) = (
        await cost.stub.ListRecommendations(pb.ListRecommendationsRequest(parent="workloads/shop.worker"))
    ).recommendations
    claimed = await cost.stub.MarkRecommendationClaimed(
        pb.MarkRecommendationClaimedRequest(name=name, etag=active.etag)
    )
    assert claimed.state == pb.Recommendation.STATE_CLAIMED
    stale = await refused(
        cost.stub.MarkRecommendationSucceeded,
        pb.MarkRecommendationSucceededRequest(name=name, etag=active.etag),
    )
    assert stale.code() == grpc.StatusCode.ABORTED
    done = await cost.stub.MarkRecommendationSucceeded(
        pb.MarkRecommendationSucceededRequest(name=name, etag=claimed.etag)
    )
    assert done.state == pb.Recommendation.STATE_SUCCEEDED
    again = await refused(cost.stub.MarkRecommendationClaimed, pb.MarkRecommendationClaimedRequest(name=name))
    assert error_info(again).reason == "WRONG_STATE"


async def test_dismissing_needs_a_reason_and_keeps_it(cost: CostServer) -> None:
    batch = utilization("batch", seed=5)
    await cost.stub.ImportUtilization(_messages("shop.batch", batch))
    name = "workloads/shop.batch/recommendations/batch"
    missing = await refused(
        cost.stub.MarkRecommendationDismissed, pb.MarkRecommendationDismissedRequest(name=name)
    )
    assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
    dismissed = await cost.stub.MarkRecommendationDismissed(
        pb.MarkRecommendationDismissedRequest(name=name, reason="peak season next week")
    )
    assert (dismissed.state, dismissed.state_reason) == (
        pb.Recommendation.STATE_DISMISSED,
        "peak season next week",
    )
    listed = await cost.stub.ListRecommendations(pb.ListRecommendationsRequest(parent="workloads/-"))
    assert any(
        r.name == name and r.state == pb.Recommendation.STATE_DISMISSED for r in listed.recommendations
    )


async def test_workload_prices_set_the_savings_currency(cost: CostServer) -> None:
    job = utilization("job", seed=6)
    await cost.stub.ImportUtilization(
        _messages("shop.job", job, cpu_millicore_hour_cost="0.0001", currency="EUR")
    )
    (found,) = (
        await cost.stub.ListRecommendations(pb.ListRecommendationsRequest(parent="workloads/shop.job"))
    ).recommendations
    assert found.monthly_savings.currency == "EUR"


async def test_a_sample_with_a_negative_value_is_invalid_argument(cost: CostServer) -> None:
    bad = pb.UtilizationSample(container="web", cpu_millicores=-1, time=timestamp_pb2.Timestamp(seconds=1))
    error = await refused(
        cost.stub.ImportUtilization,
        iter([pb.ImportUtilizationRequest(workload="workloads/x", samples=[bad])]),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "samples[0].cpu" in (error.details() or "")
