"""One channel through the edge, as the admin, per test file of hostile requests."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tools.stack.certs import CertPaths
from tools.stack.channels import grpc_channel


@pytest.fixture(scope="module")
def channel(edge: str, operator: CertPaths, admin_key: str) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", 16 << 20), ("grpc.max_receive_message_length", 16 << 20)]
    with grpc_channel(edge, operator, admin_key, options=options) as ch:
        yield ch
