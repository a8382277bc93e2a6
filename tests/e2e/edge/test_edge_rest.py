"""REST through the edge behaves like REST: unknown body fields and unknown verbs are refused,
limits answer with the status that names them (413, 414, 431, over HTTP/2 too), answers carry
no gRPC plumbing, and the transcoder's own parsing of query parameters is pinned."""

from __future__ import annotations

import json
import uuid

import grpc
import pytest

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import config_pb2_grpc
from services import catalog
from tests.e2e.conftest import Rest
from tests.e2e.edge import h2_frames
from tools import envoy_config, envoy_rest_guard
from tools.stack.certs import CertPaths

EDGE = envoy_config.EdgeSettings("", 0, 0, envoy_config.ENVOY_DIR)  # the defaults the stack runs with
GRPC_HEADERS = ("grpc-status", "grpc-message", "grpc-accept-encoding")


@pytest.fixture
def ns(rest: Rest) -> str:
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    assert rest("POST", "/v1/namespaces", params={"namespace_id": name}, json={}).status_code == 200
    return name


def _details(body: dict[str, object], kind: str) -> list[dict[str, object]]:
    return [d for d in body["details"] if d["@type"].endswith("." + kind)]  # type: ignore[attr-defined,index,union-attr]


# -- unknown fields (item 14) -----------------------------------------------------------------


def test_a_misspelt_body_field_is_400_naming_it_and_changes_nothing(rest: Rest, ns: str) -> None:
    response = rest("PATCH", f"/v1/namespaces/{ns}", json={"displayname": "typo", "description": "kept?"})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 3 and "namespace.displayname" in body["message"]
    assert _details(body, "ErrorInfo")[0]["reason"] == "UNKNOWN_FIELD"
    assert [v["field"] for v in _details(body, "BadRequest")[0]["fieldViolations"]] == [
        "namespace.displayname"
    ]  # type: ignore[index]
    assert _details(body, "RequestInfo")[0]["requestId"]
    assert rest("GET", f"/v1/namespaces/{ns}").json()["description"] == ""  # nothing was written


def test_every_unknown_field_is_named_with_its_path(rest: Rest) -> None:
    secret = {"labels": {"any-key": "fine"}, "rotation": {"intervall": "60s"}, "colour": "red"}
    response = rest("POST", "/v1/secrets", params={"secretId": f"s-{uuid.uuid4().hex[:8]}"}, json=secret)
    assert response.status_code == 400, response.text
    fields = {v["field"] for v in _details(response.json(), "BadRequest")[0]["fieldViolations"]}  # type: ignore[index, union-attr]
    assert fields == {"secret.rotation.intervall", "secret.colour"}


def test_known_fields_pass_under_json_and_proto_names_and_free_form_values_take_anything(
    rest: Rest, ns: str
) -> None:
    renamed = rest("PATCH", f"/v1/namespaces/{ns}", data=b'{"display_name": "a", "\\u0064escription": "b"}')
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["displayName"], renamed.json()["description"]) == ("a", "b")
    content = {"anything": {"nested": [{"deep": {"displayname": 1}}], "x": None}}
    env = rest(
        "PATCH",
        f"/v1/namespaces/{ns}/environments/default",
        params={"allow_missing": "true"},
        json={"content": content, "etag": ""},
    )
    assert env.status_code == 200, env.text
    assert env.json()["content"] == content


def test_a_body_that_is_not_json_is_left_to_the_transcoder(rest: Rest, ns: str) -> None:
    response = rest("PATCH", f"/v1/namespaces/{ns}", data=b'{"displayname": ')
    assert response.status_code == 400
    assert _details(response.json(), "ErrorInfo")[0]["reason"] == "INVALID_ARGUMENT"


def _sample_path(binding: envoy_rest_guard.BodyBinding) -> str:
    segments = ["x1" if s in ("*", "**") else s for s in binding.segments]
    return "/" + "/".join(segments) + (f":{binding.verb}" if binding.verb else "")


BINDINGS = envoy_rest_guard.body_bindings(
    envoy_rest_guard.load_pool(envoy_config.DESCRIPTOR),
    [s for spec in catalog.every() for s in spec.proto_services],
)


@pytest.mark.parametrize("binding", BINDINGS, ids=lambda b: f"{b.http_method} {_sample_path(b)}")
def test_every_rest_binding_with_a_body_refuses_an_unknown_field(
    rest: Rest, binding: envoy_rest_guard.BodyBinding
) -> None:
    # The guard matches REST paths itself: each binding must be the one the transcoder picks.
    response = rest(binding.http_method, _sample_path(binding), json={"noSuchField": 1})
    assert response.status_code == 400, response.text
    expected = f"{binding.prefix}.noSuchField" if binding.prefix else "noSuchField"
    assert _details(response.json(), "ErrorInfo")[0]["metadata"] == {"fields": expected}


# -- unknown verbs (item 17) ------------------------------------------------------------------


def test_an_unknown_custom_verb_is_an_unknown_method(rest: Rest, ns: str) -> None:
    response = rest("GET", f"/v1/namespaces/{ns}/environments/default:frobnicate")
    assert response.status_code == 404, response.text
    assert response.json()["code"] == 5 and "Could not resolve" in response.json()["message"]
    assert rest("GET", f"/v1/namespaces/{ns}/environments/default:resolve").status_code == 404  # no env yet
    assert rest("POST", "/v1/tokens:frobnicate", json={}).status_code == 404


# -- limits (items 12 and 16) -----------------------------------------------------------------


def test_an_over_long_path_is_414(rest: Rest) -> None:
    response = rest("GET", "/v1/namespaces/" + "a" * EDGE.max_path_bytes)
    assert response.status_code == 414, response.text
    body = response.json()
    assert body["code"] == 8 and _details(body, "ErrorInfo")[0]["reason"] == "PATH_TOO_LONG"
    at_limit = "/v1/namespaces?pageToken=" + "a" * (EDGE.max_path_bytes - 200)
    assert rest("GET", at_limit).status_code == 400  # the service's own answer to a bogus token


@pytest.mark.parametrize("size_kib", [70, 120], ids=["over-the-guard", "over-the-codec"])
def test_an_over_large_header_block_is_431(rest: Rest, size_kib: int) -> None:
    # Several headers: one value over 64 KiB is an HPACK error over HTTP/2 (a GOAWAY), whatever the limits.
    filler = {f"x-filler-{i}": "f" * 1024 * 10 for i in range(size_kib // 10)}
    response = rest("GET", "/v1/namespaces", headers=filler)
    assert response.status_code == 431, response.text
    body = response.json()
    assert body["code"] == 8 and _details(body, "ErrorInfo")[0]["reason"] == "HEADERS_TOO_LARGE"


def test_a_large_token_is_the_services_answer_not_a_metadata_overflow(rest: Rest) -> None:
    token = "Bearer " + "t" * 20_000
    response = rest("GET", "/v1/namespaces", headers={"authorization": token})
    assert response.status_code == 401, response.text
    assert _details(response.json(), "ErrorInfo")[0]["reason"] == "TOKEN_MALFORMED"


def test_native_grpc_metadata_between_the_guard_and_the_codec_limit_reaches_the_service(
    config_stub: config_pb2_grpc.ConfigServiceStub,
) -> None:
    filler = [(f"x-filler-{i}", "f" * 1024 * 10) for i in range(8)]  # 80 KiB: the guard is REST-only
    assert config_stub.ListNamespaces(pb.ListNamespacesRequest(page_size=1), metadata=filler, timeout=5)


def test_a_native_grpc_call_on_an_over_long_path_is_unimplemented(edge_channel: grpc.Channel) -> None:
    call = edge_channel.unary_unary("/devmesh.config.v1.ConfigService/" + "A" * EDGE.max_path_bytes)
    with pytest.raises(grpc.RpcError) as caught:
        call(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "no-content-length"])
def test_over_http2_the_413_arrives_whole_before_the_stream_is_reset(
    edge: str, operator: CertPaths, admin_key: str, declared: bool
) -> None:
    """RFC 9113 §8.1: a server may answer before the request ends, then reset the stream with
    NO_ERROR; clients must not drop the answer. curl 7.88 does (error 92); the 413 is there."""
    body = json.dumps({"description": "a" * (EDGE.max_body_bytes + 1)}).encode()
    headers = {"content-type": "application/json", "x-api-key": admin_key}
    if declared:
        headers["content-length"] = str(len(body))
    frames = h2_frames.request(edge, operator, "POST", "/v1/namespaces?namespace_id=too-big", headers, body)
    assert frames and frames[0].type == h2_frames.HEADERS, frames
    assert h2_frames.status_of(frames[0]) == 413
    data = [i for i, f in enumerate(frames) if f.type == h2_frames.DATA]
    assert data and frames[data[-1]].flags & h2_frames.END_STREAM  # the whole answer ...
    answer = json.loads(b"".join(frames[i].payload for i in data))
    assert _details(answer, "ErrorInfo")[0]["reason"] == "BODY_TOO_LARGE"
    after = frames[data[-1] + 1 :]  # ... and only then, at most, a reset that means "stop sending"
    assert [(f.type, h2_frames.rst_error_code(f)) for f in after] in ([], [(h2_frames.RST_STREAM, 0)])


# -- what answers carry (item 18) -------------------------------------------------------------


def test_rest_answers_carry_no_grpc_headers(rest: Rest, ns: str) -> None:
    for response in (rest("GET", f"/v1/namespaces/{ns}"), rest("GET", "/v1/namespaces/no-such-ns")):
        assert response.status_code in (200, 404)
        assert not set(GRPC_HEADERS) & set(response.headers), response.headers
        assert "x-ratelimit-limit" in response.headers  # the services' own headers stay


def test_native_grpc_answers_keep_their_grpc_status(config_stub: config_pb2_grpc.ConfigServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        config_stub.GetNamespace(pb.GetNamespaceRequest(name="namespaces/no-such-ns"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "grpc-status-details-bin" in dict(caught.value.trailing_metadata())


def test_the_edges_own_errors_expose_no_internals(rest: Rest) -> None:
    for response in (
        rest("GET", "/v1/namespaces", params={"page_size": "many"}),
        rest("GET", "/v1/nothing/here"),
        rest("POST", "/v1/namespaces", params={"namespace_id": "x"}, data=b"{not json"),
    ):
        assert response.status_code in (400, 404)
        assert "servingData" not in response.text and "early_grpc_json" not in response.text
        info = _details(response.json(), "ErrorInfo")[0]
        assert info["domain"] == "edge.devmesh" and info["reason"] in ("INVALID_ARGUMENT", "NOT_FOUND")


# -- query parameters (item 19) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "created"), [("yes", True), ("t", True), ("Y", True), ("no", False), ("f", False)]
)
def test_boolean_query_parameters_are_parsed_by_the_transcoder(
    rest: Rest, ns: str, word: str, created: bool
) -> None:
    """Envoy's transcoder (absl::SimpleAtob) takes true/false, t/f, yes/no, y/n, 1/0 in any case;
    the README says so. Anything else is 400."""
    path = f"/v1/namespaces/{ns}/environments/default"
    response = rest("PATCH", path, params={"allowMissing": word}, json={"content": {"a": 1}})
    assert response.status_code == (200 if created else 404), response.text
    refused = rest("PATCH", path, params={"allowMissing": "maybe"}, json={"content": {"a": 1}})
    assert refused.status_code == 400 and "TYPE_BOOL" in refused.json()["message"]
