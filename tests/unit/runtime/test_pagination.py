import base64
import hashlib
import hmac
import json

import pytest

from services.runtime import pagination
from services.runtime.errors import InvalidArgument


def test_page_size_defaults_and_coerces() -> None:
    assert pagination.page_size(0) == pagination.DEFAULT_PAGE_SIZE
    assert pagination.page_size(10**6) == pagination.MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument):
        pagination.page_size(-1)


def test_a_token_resumes_the_query_that_made_it() -> None:
    token = pagination.encode_token("shop", ("envs", "a"))
    assert pagination.decode_token(token, ("envs", "a")) == "shop"


@pytest.mark.parametrize("token", ["garbage", "e30", "!!!"])
def test_corrupt_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidArgument):
        pagination.decode_token(token, ("q",))


def test_a_token_from_another_query_is_refused() -> None:
    token = pagination.encode_token("shop", ("envs", "a"))
    with pytest.raises(InvalidArgument, match="different query"):
        pagination.decode_token(token, ("envs", "b"))


def test_an_edited_token_is_refused() -> None:
    token = pagination.encode_token("shop", ("envs", "a"))
    edited = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(InvalidArgument, match="not a token this service issued"):
        pagination.decode_token(edited, ("envs", "a"))


def test_a_token_forged_without_the_key_is_refused() -> None:
    payload = json.dumps({"c": "zzz", "q": pagination._fingerprint(("envs", "a"))}).encode()
    forged = base64.urlsafe_b64encode(b"\0" * 16 + payload).decode().rstrip("=")
    with pytest.raises(InvalidArgument, match="not a token this service issued"):
        pagination.decode_token(forged, ("envs", "a"))


def test_a_token_sealed_with_a_key_this_process_never_had_is_refused() -> None:
    payload = json.dumps({"c": "zzz", "q": pagination._fingerprint(("envs", "a"))}).encode()
    mac = hmac.new(b"another mesh's key", payload, hashlib.sha256).digest()[:16]
    foreign = base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")
    with pytest.raises(InvalidArgument, match="not a token this service issued"):
        pagination.decode_token(foreign, ("envs", "a"))


def test_the_shared_key_seals_from_when_it_is_installed() -> None:
    before = pagination.encode_token("shop", ("envs", "a"))
    pagination.use_key(b"k" * 32)
    after = pagination.encode_token("shop", ("envs", "a"))
    assert before != after
    assert pagination.decode_token(before, ("envs", "a")) == pagination.decode_token(after, ("envs", "a"))


def test_an_enormous_token_is_refused_without_decoding() -> None:
    with pytest.raises(InvalidArgument):
        pagination.decode_token("A" * 10_000_000, ("q",))
