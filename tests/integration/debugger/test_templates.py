"""ParseLog and ListTemplates: template sets in Redis, shared by replicas without losses."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from grpc import aio

from devmesh.debugger.v1 import debugger_pb2 as pb
from devmesh.debugger.v1 import debugger_pb2_grpc
from services.debugger import app as debugger_app
from tests.conftest import ServerFactory
from tests.helpers import refused
from tools.stack.valkey import Valkey


def _set() -> str:
    return f"templateSets/t-{uuid.uuid4().hex[:10]}"


async def test_each_line_gets_its_template_in_order(debugger: debugger_pb2_grpc.DebuggerServiceStub) -> None:
    lines = [
        "Took 0.26 seconds to build instance.",
        "VM Started (Lifecycle Event)",
        "Took 1.5 seconds to build instance.",
        "VM Paused (Lifecycle Event)",
    ]
    parsed = await debugger.ParseLog(pb.ParseLogRequest(template_set=_set(), lines=lines))
    names = [line.template_name for line in parsed.lines]
    assert names[0] == names[2] and len(set(names)) == 3
    assert parsed.lines[2].template == "Took <*> to build instance."


async def test_listed_templates_are_counted_most_frequent_first(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    template_set = _set()
    lines = [f"job {n} finished" for n in range(5)] + ["worker lost"]
    await debugger.ParseLog(pb.ParseLogRequest(template_set=template_set, lines=lines))
    listed = await debugger.ListTemplates(pb.ListTemplatesRequest(parent=template_set, page_size=1))
    assert listed.templates[0].template == "job <*> finished" and listed.templates[0].count == 5
    rest = await debugger.ListTemplates(
        pb.ListTemplatesRequest(parent=template_set, page_size=1, page_token=listed.next_page_token)
    )
    assert rest.templates[0].template == "worker lost" and not rest.next_page_token
    assert listed.templates[0].example.startswith("job ")


async def test_a_secret_in_a_parsed_line_never_reaches_the_template_set(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    template_set = _set()
    parsed = await debugger.ParseLog(
        pb.ParseLogRequest(template_set=template_set, lines=["login with password=hunter2hunter2 ok"])
    )
    listed = await debugger.ListTemplates(pb.ListTemplatesRequest(parent=template_set))
    assert "hunter2hunter2" not in str(parsed) + str(listed)


async def test_bad_template_sets_and_oversized_batches_are_refused(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    bad = await refused(
        debugger.ParseLog, pb.ParseLogRequest(template_set="templateSets/No Way", lines=["x"])
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    many = await refused(debugger.ParseLog, pb.ParseLogRequest(template_set=_set(), lines=["x"] * 10_001))
    assert many.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_replicas_mining_at_once_lose_no_template_and_share_what_they_learn(
    valkey: Valkey, start_config_server: ServerFactory
) -> None:
    _, one = await start_config_server(valkey.url, specs=[debugger_app.SPEC])
    _, other = await start_config_server(valkey.url, specs=[debugger_app.SPEC])
    template_set = _set()
    async with aio.insecure_channel(one) as a, aio.insecure_channel(other) as b:
        stubs = [debugger_pb2_grpc.DebuggerServiceStub(a), debugger_pb2_grpc.DebuggerServiceStub(b)]

        async def mine(replica: int, word: str) -> None:
            lines = [f"{word} step {n} done" for n in range(3)]
            await stubs[replica].ParseLog(pb.ParseLogRequest(template_set=template_set, lines=lines))

        words = [f"stage{chr(97 + i)}x" for i in range(12)]
        await asyncio.gather(*(mine(i % 2, word) for i, word in enumerate(words)))
        listed = await stubs[0].ListTemplates(pb.ListTemplatesRequest(parent=template_set, page_size=100))
        assert sorted(t.template for t in listed.templates) == sorted(f"{w} step <*> done" for w in words)
        assert all(t.count == 3 for t in listed.templates)
        # What replica 0 learnt, replica 1 uses: the same line gets the same template there.
        first = await stubs[0].ParseLog(
            pb.ParseLogRequest(template_set=template_set, lines=["stageax step 9 done"])
        )
        second = await stubs[1].ParseLog(
            pb.ParseLogRequest(template_set=template_set, lines=["stageax step 9 done"])
        )
        assert first.lines[0].template_name == second.lines[0].template_name


async def test_an_empty_lines_template_survives_a_second_save(
    debugger: debugger_pb2_grpc.DebuggerServiceStub,
) -> None:
    template_set = _set()
    for _ in range(2):  # the second save merges into the stored record (Lua's cjson)
        parsed = await debugger.ParseLog(pb.ParseLogRequest(template_set=template_set, lines=["", "x 1"]))
        assert parsed.lines[0].template == ""
    listed = await debugger.ListTemplates(pb.ListTemplatesRequest(parent=template_set))
    assert sorted(t.count for t in listed.templates) == [2, 2]
