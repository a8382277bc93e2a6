"""Projects and pipelines through a real server: CRUD, etags, update masks, immutable revisions,
and definitions refused with every offending path named."""

from __future__ import annotations

import grpc
import redis
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from devmesh.pipeline.v1 import pipeline_pb2 as pb
from devmesh.pipeline.v1 import pipeline_pb2_grpc
from services.pipeline import store
from tests.helpers import detail, error_info, refused
from tests.unit.pipeline import samples
from tools.stack.valkey import Valkey

Stub = pipeline_pb2_grpc.PipelineServiceStub


async def create(pipelines: Stub, project: str, pipeline_id: str = "ci") -> pb.Pipeline:
    return await pipelines.CreatePipeline(
        pb.CreatePipelineRequest(
            parent=f"projects/{project}",
            pipeline_id=pipeline_id,
            pipeline=pb.Pipeline(display_name="CI", definition=samples.small()),
            reason="first",
        )
    )


async def test_a_created_pipeline_reads_back_as_revision_one(pipelines: Stub, project: str) -> None:
    created = await create(pipelines, project)
    assert created.name == f"projects/{project}/pipelines/ci"
    assert created.revision == 1 and created.etag == '"r1"'
    got = await pipelines.GetPipeline(pb.GetPipelineRequest(name=created.name))
    assert got.definition == samples.small()


async def test_a_project_that_exists_is_already_exists(pipelines: Stub, project: str) -> None:
    error = await refused(pipelines.CreateProject, pb.CreateProjectRequest(project_id=project))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_a_pipeline_in_a_missing_project_is_not_found(pipelines: Stub) -> None:
    error = await refused(
        pipelines.CreatePipeline,
        pb.CreatePipelineRequest(
            parent="projects/nowhere-at-all",
            pipeline_id="ci",
            pipeline=pb.Pipeline(definition=samples.small()),
        ),
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_an_invalid_definition_names_each_offending_path_and_stores_nothing(
    pipelines: Stub, project: str
) -> None:
    definition = samples.small()
    definition.jobs[1].needs[0] = "ghost"
    definition.jobs[0].steps[1].run.command = ""
    error = await refused(
        pipelines.CreatePipeline,
        pb.CreatePipelineRequest(
            parent=f"projects/{project}", pipeline_id="ci", pipeline=pb.Pipeline(definition=definition)
        ),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = detail(error, error_details_pb2.BadRequest)
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert {v.field for v in bad.field_violations} == {
        "pipeline.definition.jobs[1].needs[0]",
        "pipeline.definition.jobs[0].steps[1].run.command",
    }
    listed = await pipelines.ListPipelines(pb.ListPipelinesRequest(parent=f"projects/{project}"))
    assert list(listed.pipelines) == []


async def test_an_update_makes_a_new_revision_and_keeps_the_old_one_as_it_was(
    pipelines: Stub, project: str
) -> None:
    created = await create(pipelines, project)
    changed = samples.small()
    changed.jobs[1].steps[1].run.command = "make check"
    updated = await pipelines.UpdatePipeline(
        pb.UpdatePipelineRequest(
            pipeline=pb.Pipeline(name=created.name, definition=changed, etag=created.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["definition"]),
            reason="stricter",
        )
    )
    assert updated.revision == 2 and updated.display_name == "CI"
    listed = await pipelines.ListPipelineRevisions(
        pb.ListPipelineRevisionsRequest(name=created.name, view=pb.VIEW_FULL)
    )
    assert [r.revision for r in listed.revisions] == [2, 1]
    assert listed.revisions[1].definition == samples.small()
    assert listed.revisions[0].reason == "stricter"
    assert listed.revisions[1].name == f"{created.name}/revisions/1"


async def test_a_stale_etag_is_aborted_and_loses_nothing(pipelines: Stub, project: str) -> None:
    created = await create(pipelines, project)
    await pipelines.UpdatePipeline(
        pb.UpdatePipelineRequest(pipeline=pb.Pipeline(name=created.name, display_name="second"))
    )
    error = await refused(
        pipelines.UpdatePipeline,
        pb.UpdatePipelineRequest(
            pipeline=pb.Pipeline(name=created.name, display_name="lost", etag=created.etag)
        ),
    )
    assert error.code() == grpc.StatusCode.ABORTED
    assert error_info(error).metadata["current_etag"] == '"r2"'
    got = await pipelines.GetPipeline(pb.GetPipelineRequest(name=created.name))
    assert got.display_name == "second" and got.revision == 2


async def test_the_update_mask_changes_only_what_it_names(pipelines: Stub, project: str) -> None:
    created = await create(pipelines, project)
    updated = await pipelines.UpdatePipeline(
        pb.UpdatePipelineRequest(
            pipeline=pb.Pipeline(name=created.name, display_name="renamed", description="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    )
    assert updated.display_name == "renamed" and updated.description == ""
    assert updated.definition == samples.small()


async def test_an_unknown_mask_path_is_invalid(pipelines: Stub, project: str) -> None:
    created = await create(pipelines, project)
    error = await refused(
        pipelines.UpdatePipeline,
        pb.UpdatePipelineRequest(
            pipeline=pb.Pipeline(name=created.name), update_mask=field_mask_pb2.FieldMask(paths=["revision"])
        ),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_lists_page_through_pipelines_in_id_order(pipelines: Stub, project: str) -> None:
    for pipeline_id in ("c-one", "a-one", "b-one"):
        await create(pipelines, project, pipeline_id)
    first = await pipelines.ListPipelines(pb.ListPipelinesRequest(parent=f"projects/{project}", page_size=2))
    second = await pipelines.ListPipelines(
        pb.ListPipelinesRequest(parent=f"projects/{project}", page_size=2, page_token=first.next_page_token)
    )
    assert [p.name.rsplit("/", 1)[1] for p in [*first.pipelines, *second.pipelines]] == [
        "a-one",
        "b-one",
        "c-one",
    ]
    assert not first.pipelines[0].HasField("definition")
    assert second.next_page_token == ""


async def test_revisions_page_newest_first(pipelines: Stub, project: str) -> None:
    created = await create(pipelines, project)
    for n in range(4):
        await pipelines.UpdatePipeline(
            pb.UpdatePipelineRequest(pipeline=pb.Pipeline(name=created.name, display_name=f"v{n}"))
        )
    first = await pipelines.ListPipelineRevisions(
        pb.ListPipelineRevisionsRequest(name=created.name, page_size=3)
    )
    second = await pipelines.ListPipelineRevisions(
        pb.ListPipelineRevisionsRequest(name=created.name, page_size=3, page_token=first.next_page_token)
    )
    assert [r.revision for r in [*first.revisions, *second.revisions]] == [5, 4, 3, 2, 1]
    assert not first.revisions[0].HasField("definition")


async def test_a_project_with_pipelines_is_deleted_only_with_force(pipelines: Stub, project: str) -> None:
    await create(pipelines, project)
    error = await refused(pipelines.DeleteProject, pb.DeleteProjectRequest(name=f"projects/{project}"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    await pipelines.DeleteProject(pb.DeleteProjectRequest(name=f"projects/{project}", force=True))
    error = await refused(
        pipelines.GetPipeline, pb.GetPipelineRequest(name=f"projects/{project}/pipelines/ci")
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_a_recreated_pipeline_continues_the_revision_count(pipelines: Stub, project: str) -> None:
    created = await create(pipelines, project)
    await pipelines.DeletePipeline(pb.DeletePipelineRequest(name=created.name, etag=created.etag))
    again = await create(pipelines, project)
    assert again.revision == 2
    revisions = await pipelines.ListPipelineRevisions(pb.ListPipelineRevisionsRequest(name=again.name))
    assert [r.revision for r in revisions.revisions] == [2]


async def test_a_stale_etag_on_delete_is_aborted_and_the_pipeline_stays(
    pipelines: Stub, project: str
) -> None:
    created = await create(pipelines, project)
    error = await refused(pipelines.DeletePipeline, pb.DeletePipelineRequest(name=created.name, etag='"r7"'))
    assert error.code() == grpc.StatusCode.ABORTED
    assert (await pipelines.GetPipeline(pb.GetPipelineRequest(name=created.name))).revision == 1


async def test_projects_and_pipelines_live_under_the_pipeline_prefix(
    pipelines: Stub, project: str, valkey: Valkey
) -> None:
    await create(pipelines, project)
    client = redis.Redis.from_url(valkey.url)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match=f"*{project}*"))
    finally:
        client.close()
    assert keys and all(k.startswith(store.PREFIX + ":") for k in keys)


async def test_validate_pipeline_counts_runs_and_refuses_what_create_refuses(pipelines: Stub) -> None:
    answer = await pipelines.ValidatePipeline(pb.ValidatePipelineRequest(definition=samples.everything()))
    assert answer.job_runs == 6
    assert [w.code for w in answer.warnings] == ["NO_CHECKOUT"]
    broken = samples.small()
    broken.jobs[0].matrix.SetInParent()
    error = await refused(pipelines.ValidatePipeline, pb.ValidatePipelineRequest(definition=broken))
    bad = detail(error, error_details_pb2.BadRequest)
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert bad.field_violations[0].field == "definition.jobs[0].matrix"


async def test_a_stored_pipeline_exports_under_its_display_name(pipelines: Stub, project: str) -> None:
    created = await create(pipelines, project)
    exported = await pipelines.ExportPipeline(
        pb.ExportPipelineRequest(name=created.name, target=pb.EXPORT_TARGET_GITHUB_ACTIONS)
    )
    assert exported.path == ".github/workflows/ci.yml"
    assert "\nname: CI\n" in exported.content


async def test_an_export_without_a_target_or_of_a_missing_pipeline_is_refused(
    pipelines: Stub, project: str
) -> None:
    error = await refused(pipelines.ExportPipeline, pb.ExportPipelineRequest(definition=samples.small()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).reason == "BAD_TARGET"
    error = await refused(
        pipelines.ExportPipeline,
        pb.ExportPipelineRequest(
            name=f"projects/{project}/pipelines/ghost", target=pb.EXPORT_TARGET_GITLAB_CI
        ),
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
