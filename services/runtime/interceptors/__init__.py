"""The server side of every call: one interceptor (`CallPipeline`) running each step in order.

See `pipeline` for the order and why it is one interceptor; each other module is one step.
"""

from __future__ import annotations

from services.runtime.interceptors.access import Access
from services.runtime.interceptors.audit import Audit
from services.runtime.interceptors.errors import abort_with
from services.runtime.interceptors.pipeline import CallPipeline

__all__ = ["Access", "Audit", "CallPipeline", "abort_with"]
