"""Bounds on what the runtime copies from a caller's input into what it sends back or keeps.

Error messages and details quote names, keys and etags the caller sent, and the audit trail
records the resource a request named: unbounded, a 3 MiB name sent without credentials
grows the audit stream by megabytes, and a 100 KB label key echoed in an error's trailers
is more than the edge accepts in a header (it answers with a reset, which clients retry).
Everything quoted is clipped here, visibly: the marker says how much was left out.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message


def clip(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and a marker saying how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text) - limit} more characters]"


def clip_message(message: Message, *, text_limit: int, max_items: int) -> None:
    """Clip every string of `message` (nested messages included) to `text_limit` characters,
    and keep at most `max_items` entries of every repeated field and map, in place."""
    for field, value in message.ListFields():
        if not field.is_repeated:
            if field.type == FieldDescriptor.TYPE_STRING:
                setattr(message, field.name, clip(value, text_limit))
            elif field.message_type is not None:
                clip_message(value, text_limit=text_limit, max_items=max_items)
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            _clip_map(value, field.message_type.fields_by_name["value"], text_limit, max_items)
        else:
            del value[max_items:]
            if field.type == FieldDescriptor.TYPE_STRING:
                value[:] = [clip(item, text_limit) for item in value]
            elif field.message_type is not None:
                for item in value:
                    clip_message(item, text_limit=text_limit, max_items=max_items)


def _clip_map(container: Any, value_field: FieldDescriptor, text_limit: int, max_items: int) -> None:
    entries = []
    for key, value in list(container.items())[:max_items]:
        if value_field.message_type is not None:
            copied = type(value)()
            copied.CopyFrom(value)
            clip_message(copied, text_limit=text_limit, max_items=max_items)
            value = copied
        elif isinstance(value, str):
            value = clip(value, text_limit)
        entries.append((clip(key, text_limit) if isinstance(key, str) else key, value))
    container.clear()
    for key, value in entries:
        if value_field.message_type is not None:
            container[key].CopyFrom(value)
        else:
            container[key] = value
