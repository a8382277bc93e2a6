"""remediationPolicies/{policy}: created, read, listed page by page, updated under its etag and
deleted; bad policies are refused naming the field; a stored diagnosis that a policy matches
proposes a remediation (awaiting approval above the policy's threshold), one it does not
match proposes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc import aio

from devmesh.debugger.v1 import debugger_pb2 as dpb
from devmesh.debugger.v1 import debugger_pb2_grpc, remediation_pb2_grpc
from devmesh.debugger.v1 import remediation_pb2 as pb
from services.debugger import app as debugger_app
from tests.conftest import ServerFactory
from tests.helpers import error_info, refused, violated_fields
from tools.stack.valkey import Valkey

NETWORK_LOG = "step: fetch\ncurl: (6) Could not resolve host: mirror.example.invalid\nerror: exit status 6\n"


@pytest.fixture(scope="module")
async def channel(valkey: Valkey, start_config_server: ServerFactory) -> AsyncIterator[aio.Channel]:
    # The executor is off: these remediations stay as proposed for the test to look at.
    env = {"DEVMESH_DEBUGGER_REMEDIATION_EXECUTOR": "off"}
    _, addr = await start_config_server(valkey.url, env=env, specs=[debugger_app.SPEC])
    async with aio.insecure_channel(addr) as opened:
        yield opened


@pytest.fixture
def stub(channel: aio.Channel) -> remediation_pb2_grpc.RemediationServiceStub:
    return remediation_pb2_grpc.RemediationServiceStub(channel)


def _policy(**fields: object) -> pb.RemediationPolicy:
    defaults: dict[str, object] = {
        "categories": [dpb.CATEGORY_NETWORK],
        "targets": ["projects/web/pipelines/*/runs/*/jobs/*"],
        "actions": [pb.ACTION_KIND_PIPELINE_RERUN_WITH_BACKOFF],
    }
    return pb.RemediationPolicy(**{**defaults, **fields})


async def _create(
    stub: remediation_pb2_grpc.RemediationServiceStub, **fields: object
) -> pb.RemediationPolicy:
    return await stub.CreateRemediationPolicy(
        pb.CreateRemediationPolicyRequest(
            remediation_policy_id=f"p{uuid.uuid4().hex[:10]}", remediation_policy=_policy(**fields)
        )
    )


async def test_a_policy_is_created_read_updated_under_its_etag_and_deleted(
    stub: remediation_pb2_grpc.RemediationServiceStub,
) -> None:
    made = await _create(stub, description="flaky mirrors", parameters={"delay": "30s"})
    assert made.name.startswith("remediationPolicies/p") and made.etag and made.create_time.seconds
    assert await stub.GetRemediationPolicy(pb.GetRemediationPolicyRequest(name=made.name)) == made
    changed = await stub.UpdateRemediationPolicy(
        pb.UpdateRemediationPolicyRequest(
            remediation_policy=pb.RemediationPolicy(
                name=made.name, etag=made.etag, threshold=0.2, description="x"
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["threshold"]),
        )
    )
    assert changed.threshold == pytest.approx(0.2) and changed.description == "flaky mirrors"
    assert changed.etag != made.etag and list(changed.targets) == list(made.targets)
    stale = await refused(
        stub.UpdateRemediationPolicy,
        pb.UpdateRemediationPolicyRequest(
            remediation_policy=pb.RemediationPolicy(name=made.name, etag=made.etag, disabled=True)
        ),
    )
    assert stale.code() == grpc.StatusCode.ABORTED
    assert not (await stub.GetRemediationPolicy(pb.GetRemediationPolicyRequest(name=made.name))).disabled
    await stub.DeleteRemediationPolicy(pb.DeleteRemediationPolicyRequest(name=made.name, etag=changed.etag))
    gone = await refused(stub.GetRemediationPolicy, pb.GetRemediationPolicyRequest(name=made.name))
    assert gone.code() == grpc.StatusCode.NOT_FOUND


async def test_a_taken_id_is_already_exists(stub: remediation_pb2_grpc.RemediationServiceStub) -> None:
    made = await _create(stub)
    again = await refused(
        stub.CreateRemediationPolicy,
        pb.CreateRemediationPolicyRequest(
            remediation_policy_id=made.name.split("/")[1], remediation_policy=_policy()
        ),
    )
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_policies_list_by_id_page_by_page(stub: remediation_pb2_grpc.RemediationServiceStub) -> None:
    mine = {(await _create(stub)).name for _ in range(3)}
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListRemediationPolicies(
            pb.ListRemediationPoliciesRequest(page_size=2, page_token=token)
        )
        assert len(page.remediation_policies) <= 2
        seen += [p.name for p in page.remediation_policies]
        token = page.next_page_token
        if not token:
            break
    assert mine <= set(seen) and seen == sorted(seen) and len(seen) == len(set(seen))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"targets": []}, "remediation_policy.targets"),
        ({"targets": [""]}, "remediation_policy.targets[0]"),
        ({"actions": []}, "remediation_policy.actions"),
        ({"actions": [pb.ACTION_KIND_UNSPECIFIED]}, "remediation_policy.actions[0]"),
        ({"categories": [dpb.CATEGORY_UNSPECIFIED]}, "remediation_policy.categories[0]"),
        ({"threshold": 1.5}, "remediation_policy.threshold"),
        ({"threshold": float("nan")}, "remediation_policy.threshold"),
        ({"thresholds": {"prod": -0.1}}, "remediation_policy.thresholds['prod']"),
        ({"parameters": {"delay": "soon"}}, "remediation_policy.parameters['delay']"),
    ],
)
async def test_a_bad_policy_is_refused_naming_the_field(
    stub: remediation_pb2_grpc.RemediationServiceStub, fields: dict[str, object], field: str
) -> None:
    error = await refused(
        stub.CreateRemediationPolicy,
        pb.CreateRemediationPolicyRequest(remediation_policy_id="bad", remediation_policy=_policy(**fields)),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violated_fields(error)


async def test_an_unknown_mask_path_and_a_malformed_name_are_invalid(
    stub: remediation_pb2_grpc.RemediationServiceStub,
) -> None:
    made = await _create(stub)
    error = await refused(
        stub.UpdateRemediationPolicy,
        pb.UpdateRemediationPolicyRequest(
            remediation_policy=pb.RemediationPolicy(name=made.name),
            update_mask=field_mask_pb2.FieldMask(paths=["create_time"]),
        ),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "update_mask" in violated_fields(error)
    error = await refused(
        stub.GetRemediationPolicy, pb.GetRemediationPolicyRequest(name="remediationPolicies/a/b")
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).reason


async def test_a_matching_diagnosis_proposes_a_remediation_awaiting_approval_above_the_policys_threshold(
    stub: remediation_pb2_grpc.RemediationServiceStub, channel: aio.Channel
) -> None:
    project = f"w{uuid.uuid4().hex[:8]}"
    policy = await _create(
        stub,
        targets=[f"projects/{project}/"],
        threshold=0.01,
        execute_on_approval=True,
        parameters={"delay": "5s"},
    )
    job = f"projects/{project}/pipelines/ci/runs/r1/jobs/fetch"
    diagnosis = await debugger_pb2_grpc.DebuggerServiceStub(channel).AnalyzeLog(
        dpb.AnalyzeLogRequest(text=NETWORK_LOG, context=dpb.AnalysisContext(job=job))
    )
    assert diagnosis.category == dpb.CATEGORY_NETWORK
    (made,) = (await stub.ListRemediations(pb.ListRemediationsRequest(target=job))).remediations
    assert made.diagnosis == diagnosis.name and made.policy == policy.name and made.proposer == policy.name
    assert made.state == pb.REMEDIATION_STATE_AWAITING_APPROVAL and made.execute_on_approval
    assert made.risk.automatic_threshold == pytest.approx(0.01)
    (action,) = made.plan
    assert action.kind == pb.ACTION_KIND_PIPELINE_RERUN_WITH_BACKOFF and action.parameters["delay"] == "5s"


async def test_a_diagnosis_no_policy_matches_proposes_nothing(
    stub: remediation_pb2_grpc.RemediationServiceStub, channel: aio.Channel
) -> None:
    project = f"w{uuid.uuid4().hex[:8]}"
    await _create(stub, targets=[f"projects/{project}/"], categories=[dpb.CATEGORY_TIMEOUT])
    await _create(stub, targets=[f"projects/{project}/"], disabled=True)
    job = f"projects/{project}/pipelines/ci/runs/r1/jobs/fetch"
    await debugger_pb2_grpc.DebuggerServiceStub(channel).AnalyzeLog(
        dpb.AnalyzeLogRequest(text=NETWORK_LOG, context=dpb.AnalysisContext(job=job))
    )
    assert not (await stub.ListRemediations(pb.ListRemediationsRequest(target=job))).remediations
