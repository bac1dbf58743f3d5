"""A provider's answer in a shape its API never documents (null where an object belongs, a
string for a list, a number for a name) is still relayed: reading it for the telemetry never
raises. Before, `{"choices": [null]}` made the router answer 500 in place of the provider's
answer."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from router.proxy.dialects import ANTHROPIC, OPENAI, RESPONSES, Dialect

DIALECTS = (OPENAI, ANTHROPIC, RESPONSES)
# The keys each API's answers and events are read by, so that fuzzed values land where the
# readers look instead of being ignored at the top.
KEYS = [
    "choices",
    "message",
    "delta",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "index",
    "content",
    "refusal",
    "finish_reason",
    "usage",
    "type",
    "text",
    "input",
    "id",
    "content_block",
    "partial_json",
    "stop_reason",
    "response",
    "output",
    "item",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "prompt_tokens_details",
    "cached_tokens",
    "input_tokens_details",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "call_id",
    "error",
]
TYPES = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "message_delta",
    "message_stop",
    "tool_use",
    "text_delta",
    "input_json_delta",
    "response.created",
    "response.completed",
    "response.output_item.added",
    "response.output_item.done",
    "response.function_call_arguments.delta",
    "response.output_text.delta",
    "function_call",
    "message",
    "refusal",
    "error",
]
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.sampled_from(TYPES),
    st.text(max_size=8),
)
values: st.SearchStrategy[Any] = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)
answers = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


def read_all(dialect: Dialect, answer: dict[str, Any]) -> None:
    data = orjson.dumps(answer)
    for collect_text in (False, True):
        dialect.read_json(data, collect_text)
        reader = dialect.stream_reader(collect_text)
        reader.feed(b"data: " + data + b"\n\n")
        reader.feed(b"event: x\ndata: " + data + b"\n\n")
        reader.finish()


@settings(max_examples=300, deadline=None)
@given(answers)
def test_no_answer_shape_makes_a_reader_raise(answer: dict[str, Any]) -> None:
    for dialect in DIALECTS:
        read_all(dialect, answer)


def test_the_shapes_seen_to_break_a_reader() -> None:
    shapes: list[dict[str, Any]] = [
        {"choices": [None]},
        {"choices": [{"message": "text"}]},
        {"choices": [{"message": {"tool_calls": [None]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": "0", "function": None}]}}]},
        {"content": [None]},
        {"content": [{"type": "tool_use", "name": None, "input": []}]},
        {"type": "content_block_delta", "delta": "x"},
        {"type": "content_block_start", "content_block": None},
        {"type": "message_delta", "usage": {"output_tokens": "many"}},
        {"output": [None]},
        {"type": "response.completed", "response": {"output": [None]}},
        {"type": "response.output_item.added", "item": None},
        {"usage": None},
        {"usage": {"prompt_tokens": None, "completion_tokens": [1]}},
    ]
    for answer in shapes:
        for dialect in DIALECTS:
            read_all(dialect, answer)
