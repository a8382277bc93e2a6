"""Forecasts, anomaly monitors, budgets and their notifications, on generated FOCUS data with
a labelled anomaly, imported through ImportCostData."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import grpc
import pytest
from google.protobuf import timestamp_pb2

from devmesh.cost.v1 import cost_pb2 as pb
from services.runtime import notifications
from tests.helpers import error_info, refused
from tests.integration.cost.conftest import CostServer, upload
from tools.focus_generator import Anomaly, Spec, write_rows

START = date(2024, 7, 1)
DAYS = 60
SPIKE = Anomaly(START + timedelta(days=45), "BigQuery", 5.0)
SECRET = "webhook-test-secret"


@pytest.fixture(scope="module")
async def imported(cost: CostServer, tmp_path_factory: pytest.TempPathFactory) -> CostServer:
    """Sixty days of hourly rows of 20 resources, with one anomaly, imported once."""
    path = tmp_path_factory.mktemp("generated") / "focus.csv"
    write_rows(Spec(start=START, days=DAYS, resources=20, anomalies=(SPIKE,)), path)
    answer = await cost.stub.ImportCostData(upload(path.read_bytes(), "generated", chunk=1 << 20))
    assert answer.rows_rejected == 0
    return cost


def _day(d: date) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromJsonString(f"{d.isoformat()}T00:00:00Z")
    return ts


@dataclass
class Receiver:
    """A webhook endpoint on loopback that answers `failures` 500s first, then 200s."""

    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    failures: int = 0
    arrived: threading.Condition = field(default_factory=threading.Condition)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if state.failures > 0:
                state.failures -= 1
                self.send_response(500)
            else:
                with state.arrived:
                    state.received.append((dict(self.headers), body))
                    state.arrived.notify_all()
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()


async def _posts(receiver: Receiver, count: int) -> None:
    """Wait (up to 20 s) until `receiver` has had `count` good POSTs."""

    def wait() -> bool:
        with receiver.arrived:
            return receiver.arrived.wait_for(lambda: len(receiver.received) >= count, timeout=20)

    assert await asyncio.to_thread(wait), f"{len(receiver.received)} POSTs, not {count}"


async def test_a_forecast_runs_to_the_end_of_the_month_with_its_interval_and_projection(
    imported: CostServer,
) -> None:
    answer = await imported.stub.ForecastCost(pb.ForecastCostRequest())
    last_day = START + timedelta(days=DAYS - 1)  # 29 August
    assert (
        answer.forecast_start_time.ToJsonString() == f"{(last_day + timedelta(days=1)).isoformat()}T00:00:00Z"
    )
    assert len(answer.points) == 2  # 30 and 31 August
    assert answer.method and answer.prediction_interval_level == 80 and answer.history_days == DAYS
    for point in answer.points:
        assert Decimal(point.lower) <= Decimal(point.amount) <= Decimal(point.upper)
    projection, to_date = Decimal(answer.month_end_projection), Decimal(answer.month_to_date)
    assert Decimal(answer.month_end_lower) <= projection <= Decimal(answer.month_end_upper)
    assert projection > to_date > 0


async def test_a_wider_level_gives_a_wider_interval(imported: CostServer) -> None:
    narrow = await imported.stub.ForecastCost(
        pb.ForecastCostRequest(horizon_days=30, prediction_interval_level=60)
    )
    wide = await imported.stub.ForecastCost(
        pb.ForecastCostRequest(horizon_days=30, prediction_interval_level=99)
    )
    assert len(wide.points) == 30
    width = lambda p: Decimal(p.upper) - Decimal(p.lower)  # noqa: E731
    assert all(width(w) >= width(n) for w, n in zip(wide.points, narrow.points, strict=True))


async def test_too_little_history_is_a_failed_precondition_that_says_how_much_is_needed(
    imported: CostServer,
) -> None:
    error = await refused(
        imported.stub.ForecastCost, pb.ForecastCostRequest(history_end_time=_day(START + timedelta(days=9)))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(error)
    assert (info.reason, info.metadata["needed_days"], info.metadata["history_days"]) == (
        "NOT_ENOUGH_HISTORY",
        "28",
        "10",
    )


async def test_an_interval_level_outside_51_to_99_is_invalid(imported: CostServer) -> None:
    error = await refused(imported.stub.ForecastCost, pb.ForecastCostRequest(prediction_interval_level=50))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_service_monitor_finds_the_injected_anomaly_with_its_root_cause(imported: CostServer) -> None:
    monitor = await imported.stub.CreateAnomalyMonitor(
        pb.CreateAnomalyMonitorRequest(
            anomaly_monitor_id="by-service", anomaly_monitor=pb.AnomalyMonitor(dimension="service")
        )
    )
    assert monitor.history_days == DAYS
    found = (await imported.stub.ListAnomalies(pb.ListAnomaliesRequest(parent=monitor.name))).anomalies
    spikes = [a for a in found if a.day.ToJsonString() == f"{SPIKE.day.isoformat()}T00:00:00Z"]
    assert [a.dimension_value for a in spikes] == [SPIKE.service]
    (spike,) = spikes
    assert Decimal(spike.impact.amount) > 0 and spike.impact_percent > 100 and spike.z_score >= 3.5
    assert spike.root_causes and spike.root_causes[0].share > 0.5
    assert len(found) <= 4  # a few false alarms at most over ten services and 46 days each


async def test_alert_thresholds_gate_notifications_never_detection(imported: CostServer) -> None:
    gated = await imported.stub.CreateAnomalyMonitor(
        pb.CreateAnomalyMonitorRequest(
            anomaly_monitor_id="gated",
            anomaly_monitor=pb.AnomalyMonitor(dimension="service", alert_threshold_amount="1000000"),
        )
    )
    found = (await imported.stub.ListAnomalies(pb.ListAnomaliesRequest(parent=gated.name))).anomalies
    assert any(a.dimension_value == SPIKE.service for a in found)
    assert not any(a.notified for a in found)


async def test_feedback_is_kept_on_the_anomaly(imported: CostServer) -> None:
    monitor = await imported.stub.CreateAnomalyMonitor(
        pb.CreateAnomalyMonitorRequest(
            anomaly_monitor_id="feedback", anomaly_monitor=pb.AnomalyMonitor(dimension="service")
        )
    )
    (first, *_) = (await imported.stub.ListAnomalies(pb.ListAnomaliesRequest(parent=monitor.name))).anomalies
    marked = await imported.stub.SetAnomalyFeedback(
        pb.SetAnomalyFeedbackRequest(name=first.name, feedback=pb.Anomaly.FEEDBACK_NOT_AN_ANOMALY)
    )
    assert marked.feedback == pb.Anomaly.FEEDBACK_NOT_AN_ANOMALY
    assert (await imported.stub.GetAnomaly(pb.GetAnomalyRequest(name=first.name))).feedback == marked.feedback


async def test_a_crossed_budget_threshold_posts_one_signed_webhook_and_one_event(
    imported: CostServer, receiver: Receiver
) -> None:
    receiver.failures = 1  # the first POST fails: the delivery is retried
    budget = await imported.stub.CreateBudget(
        pb.CreateBudgetRequest(
            budget_id="august",
            budget=pb.Budget(
                amount=pb.Money(currency="USD", amount="100"),
                thresholds=[
                    pb.BudgetThreshold(percent=50),
                    pb.BudgetThreshold(percent=90, basis=pb.BudgetThreshold.BASIS_FORECASTED),
                ],
                webhook_urls=[receiver.url],
                webhook_secret=SECRET,
            ),
        )
    )
    assert budget.period_start_time.ToJsonString() == "2024-08-01T00:00:00Z"
    assert Decimal(budget.actual_spend.amount) > 50 and not budget.webhook_secret
    await _posts(receiver, 2)
    for headers, body in receiver.received:
        assert notifications.verify(SECRET, headers[notifications.SIGNATURE_HEADER], body)
    kinds = {(json.loads(b)["threshold_percent"], json.loads(b)["basis"]) for _, b in receiver.received}
    assert kinds == {(50, "ACTUAL"), (90, "FORECASTED")}
    # Evaluated again (an update, another import): the same thresholds in the same period stay quiet.
    await imported.stub.UpdateBudget(pb.UpdateBudgetRequest(budget=pb.Budget(name=budget.name, webhook_urls=[receiver.url]),
                                                           update_mask={"paths": ["webhook_urls"]}))  # fmt: skip
    # A delivery is queued in the same script as its event: no third event, no third POST.
    events = await _events(imported, count=3)
    assert len(events) == 2 and len(receiver.received) == 2
    assert {(e.resource, e.period, e.type) for e in events} == {
        ("budgets/august", "2024-08", pb.CostEvent.TYPE_BUDGET_THRESHOLD_CROSSED)
    }


async def _events(cost: CostServer, count: int) -> list[pb.CostEvent]:
    found: list[pb.CostEvent] = []
    stream: AsyncIterator[pb.CostEvent] = cost.stub.WatchCostEvents(pb.WatchCostEventsRequest(after_id="0-0"))
    async for event in stream:
        if event.type == pb.CostEvent.TYPE_BUDGET_THRESHOLD_CROSSED:
            found.append(event)
        if len(found) == count or event.type == pb.CostEvent.TYPE_PROGRESS:
            stream.cancel()  # type: ignore[attr-defined]
            break
    return found


async def test_a_stale_budget_etag_is_aborted(imported: CostServer) -> None:
    budget = await imported.stub.CreateBudget(
        pb.CreateBudgetRequest(
            budget_id="stale", budget=pb.Budget(amount=pb.Money(currency="USD", amount="1000000"))
        )
    )
    await imported.stub.UpdateBudget(pb.UpdateBudgetRequest(budget=pb.Budget(name=budget.name, amount=pb.Money(currency="USD", amount="2000000")),
                                                           update_mask={"paths": ["amount"]}))  # fmt: skip
    error = await refused(
        imported.stub.DeleteBudget, pb.DeleteBudgetRequest(name=budget.name, etag=budget.etag)
    )
    assert error.code() == grpc.StatusCode.ABORTED


async def test_a_sixth_threshold_is_invalid(imported: CostServer) -> None:
    thresholds = [pb.BudgetThreshold(percent=p) for p in (10, 20, 30, 40, 50, 60)]
    error = await refused(
        imported.stub.CreateBudget,
        pb.CreateBudgetRequest(
            budget_id="six",
            budget=pb.Budget(amount=pb.Money(currency="USD", amount="1"), thresholds=thresholds),
        ),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
