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
