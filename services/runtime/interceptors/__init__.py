"""The server side of every call: `CallPipeline` running each step in order around every method.

See `pipeline` for the order and why it is one object (the package keeps its old name, from
when each step was a grpc interceptor); each other module is one step.
"""

from __future__ import annotations

from services.runtime.interceptors.access import Access
from services.runtime.interceptors.audit import Audit
from services.runtime.interceptors.errors import end_call
from services.runtime.interceptors.pipeline import CallPipeline

__all__ = ["Access", "Audit", "CallPipeline", "end_call"]
