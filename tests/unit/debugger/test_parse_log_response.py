"""ParseLog's response: one entry per line, in order, whatever the batch repeats."""

from __future__ import annotations

from services.debugger.domain import template_name
from services.debugger.servicer import parse_log_response
from services.debugger.template_miner import Template


def test_every_line_gets_its_own_entry_in_order_with_repeats_and_gaps() -> None:
    first, second = Template("a1", ["connected", "to", "<*>"]), Template("b2", ["closed"])
    found = [first, second, first, None, first, second]
    response = parse_log_response("s", found)
    assert [(p.template_name, p.template) for p in response.lines] == [
        (template_name("s", t.id), t.text) if t is not None else ("", "") for t in found
    ]
