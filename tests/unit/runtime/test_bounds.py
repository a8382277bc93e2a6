"""Clipping what answers quote of a caller's input, and delays a client can act on."""

from __future__ import annotations

from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from services.runtime import errors
from services.runtime.bounds import clip, clip_message


def test_a_short_text_is_kept_as_it_is() -> None:
    assert clip("namespaces/shop", 100) == "namespaces/shop"


def test_a_long_text_is_clipped_with_a_marker_saying_how_much_was_left_out() -> None:
    assert clip("a" * 105, 100) == "a" * 100 + "…[5 more characters]"


def test_every_string_list_and_map_of_a_message_is_clipped() -> None:
    info = error_details_pb2.ErrorInfo(reason="R" * 50, metadata={f"k{i}": "v" * 50 for i in range(30)})
    request = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="f" * 50) for _ in range(30)]
    )
    clip_message(info, text_limit=10, max_items=5)
    clip_message(request, text_limit=10, max_items=5)
    assert info.reason.startswith("R" * 10) and len(info.reason) < 40
    assert len(info.metadata) == 5 and all(v.startswith("v" * 10) for v in info.metadata.values())
    assert len(request.field_violations) == 5
    assert request.field_violations[0].field.startswith("f" * 10)


def _status(message: str, *details: object) -> status_pb2.Status:
    status = status_pb2.Status(code=3, message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)  # type: ignore[arg-type]
        status.details.append(packed)
    return status


def test_a_status_quoting_huge_input_is_bounded_and_keeps_what_clients_act_on() -> None:
    violations = [
        error_details_pb2.BadRequest.FieldViolation(field="x" * 5000, description="y" * 5000)
        for _ in range(500)
    ]
    status = errors.bounded(
        _status(
            "z" * 100_000,
            error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT", domain="config.devmesh"),
            error_details_pb2.BadRequest(field_violations=violations),
            error_details_pb2.RetryInfo(),
        )
    )
    assert status.ByteSize() <= errors.MAX_STATUS_BYTES
    assert status.message.endswith("more characters]")
    assert status.details[0].TypeName() == "google.rpc.ErrorInfo"
    assert "google.rpc.RetryInfo" in [d.TypeName() for d in status.details]


def test_a_message_of_non_ascii_text_fits_the_grpc_message_header() -> None:
    message = errors.fit_message("ﬀ" * 10_000)
    encoded = sum(1 if " " <= c <= "~" and c != "%" else 3 * len(c.encode()) for c in message)
    assert encoded <= errors.MAX_MESSAGE_WIRE_BYTES


def test_a_small_status_is_left_alone() -> None:
    original = _status("namespace 'shop' does not exist", error_details_pb2.ErrorInfo(reason="NOT_FOUND"))
    copy = status_pb2.Status()
    copy.CopyFrom(original)
    assert errors.bounded(copy) == original


def test_a_retry_delay_is_at_least_ten_milliseconds_in_whole_milliseconds() -> None:
    assert errors.retry_delay(0.000177) == 0.01
    assert errors.retry_delay(0.2501) == 0.251
    assert errors.retry_delay(3) == 3


def test_a_retry_delay_reads_sensibly() -> None:
    assert errors.describe_delay(0.000177) == "10 ms"
    assert errors.describe_delay(0.25) == "250 ms"
    assert errors.describe_delay(1.5) == "1.5 s"
    assert errors.describe_delay(3.0) == "3 s"


def test_retry_info_carries_the_advised_delay() -> None:
    status = errors.ResourceExhausted("slow down", retry_after=0.000177).to_status("config.devmesh")
    info = error_details_pb2.RetryInfo()
    next(d for d in status.details if d.Is(info.DESCRIPTOR)).Unpack(info)
    assert info.retry_delay.ToMilliseconds() == 10
