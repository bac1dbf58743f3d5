"""Injection rules of each dialect, on parsed bodies (the SDK tests cover the wire)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.bundles import Bundle, load_bundle
from router.dialects import ANTHROPIC, OPENAI
from router.errors import BadRequest
from tests.servers import EXAMPLE_BUNDLES


@pytest.fixture(scope="module")
def support() -> Bundle:
    return load_bundle(EXAMPLE_BUNDLES / "support-agent" / "v2.0", "support-agent", "prod")[0]


@pytest.fixture(scope="module")
def refund() -> Bundle:
    return load_bundle(EXAMPLE_BUNDLES / "refund-agent" / "v1.5", "refund-agent", "prod")[0]


def without_tools(bundle: Bundle) -> Bundle:
    return dataclasses.replace(bundle, tools=(), folder=Path("/nowhere"))


def test_openai_stream_keeps_client_stream_options(support: Bundle) -> None:
    body: dict[str, Any] = {
        "model": "support-agent",
        "stream": True,
        "stream_options": {"include_obfuscation": False},
        "messages": [{"role": "user", "content": "hi"}],
    }
    OPENAI.rewrite(body, OPENAI.prepare(support), "replace")
    assert body["stream_options"] == {"include_obfuscation": False, "include_usage": True}


def test_openai_replace_drops_developer_messages_too(support: Bundle) -> None:
    body: dict[str, Any] = {
        "model": "x",
        "messages": [
            {"role": "developer", "content": "dev"},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "late system"},
        ],
    }
    assert OPENAI.rewrite(body, OPENAI.prepare(support), "replace") is True
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][0]["content"] == support.prompt


def test_openai_bundle_without_tools_sends_none(support: Bundle) -> None:
    body: dict[str, Any] = {
        "model": "x",
        "tools": [{"type": "function"}],
        "tool_choice": "auto",
        "messages": [{"role": "user", "content": "hi"}],
    }
    OPENAI.rewrite(body, OPENAI.prepare(without_tools(support)), "replace")
    assert "tools" not in body and "tool_choice" not in body


def test_client_may_set_request_shaped_params(support: Bundle) -> None:
    body: dict[str, Any] = {
        "model": "x",
        "max_completion_tokens": 50,
        "temperature": 2,
        "tool_choice": "required",
        "messages": [{"role": "user", "content": "hi"}],
    }
    OPENAI.rewrite(body, OPENAI.prepare(support), "replace")
    assert body["max_completion_tokens"] == 50  # a default: the client wins
    assert body["temperature"] == 0.3  # pinned: the bundle wins
    assert body["tool_choice"] == "required"


def test_anthropic_append_turns_strings_into_blocks(refund: Bundle) -> None:
    body: dict[str, Any] = {
        "model": "x",
        "system": "client",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert ANTHROPIC.rewrite(body, ANTHROPIC.prepare(refund), "append") is True
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["system"][1] == {"type": "text", "text": "client"}


def test_anthropic_without_client_system_is_not_counted(refund: Bundle) -> None:
    body: dict[str, Any] = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
    assert ANTHROPIC.rewrite(body, ANTHROPIC.prepare(refund), "reject") is False
    assert body["max_tokens"] == 1024 and body["model"] == refund.model


def test_reject_policy(refund: Bundle, support: Bundle) -> None:
    with pytest.raises(BadRequest, match="refuses one from the client"):
        ANTHROPIC.rewrite({"system": "x", "messages": []}, ANTHROPIC.prepare(refund), "reject")
    with pytest.raises(BadRequest, match="refuses one from the client"):
        OPENAI.rewrite(
            {"messages": [{"role": "system", "content": "x"}]}, OPENAI.prepare(support), "reject"
        )


def test_openai_final_chunk_with_choices_and_usage() -> None:
    """Some providers put the finish reason, a last tool-call delta and the usage in one chunk."""
    reader = OPENAI.stream_reader(collect_text=False)
    reader.feed(
        b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},'
        b'"finish_reason":null}]}\n\n'
    )
    reader.feed(
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1",'
        b'"function":{"name":"search_help_center","arguments":"{\\"query\\":"}}]},'
        b'"finish_reason":null}]}\n\n'
    )
    reader.feed(
        b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
        b'"function":{"arguments":"\\"ship\\"}"}}]},"finish_reason":"tool_calls"}],'
        b'"usage":{"prompt_tokens":120,"completion_tokens":9,'
        b'"prompt_tokens_details":{"cached_tokens":100}}}\n\n'
    )
    reader.feed(b"data: [DONE]\n\n")
    reading = reader.finish()
    assert reading.finished and reading.started
    assert reading.usage is not None
    assert (reading.usage.input, reading.usage.cache_read, reading.usage.output) == (20, 100, 9)
    assert [(c.name, c.arguments) for c in reading.tool_calls] == [
        ("search_help_center", '{"query":"ship"}')
    ]


def test_anthropic_stream_cut_before_message_delta_has_partial_usage() -> None:
    reader = ANTHROPIC.stream_reader(collect_text=False)
    reader.feed(
        b'event: message_start\ndata: {"type":"message_start","message":'
        b'{"usage":{"input_tokens":50,"output_tokens":1}}}\n\n'
    )
    reader.feed(
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"Hel"}}\n\n'
    )
    reading = reader.finish()
    assert reading.started and not reading.finished
    assert reading.usage is not None and not reading.usage_complete
    assert (reading.usage.input, reading.usage.output) == (50, 1)  # what message_start told


def test_anthropic_stream_cut_before_message_start_has_no_usage() -> None:
    reader = ANTHROPIC.stream_reader(collect_text=False)
    reader.feed(b"event: ping\ndata: {}\n\n")
    assert reader.finish().usage is None


def test_anthropic_message_delta_usage_is_cumulative() -> None:
    reader = ANTHROPIC.stream_reader(collect_text=False)
    reader.feed(
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":'
        b'{"input_tokens":50,"cache_read_input_tokens":7,"output_tokens":1}}}\n\n'
    )
    reader.feed(
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"refusal"},'
        b'"usage":{"output_tokens":30}}\n\n'
    )
    reader.feed(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    reading = reader.finish()
    assert reading.refusal and reading.finished
    assert reading.usage is not None
    assert (reading.usage.input, reading.usage.cache_read, reading.usage.output) == (50, 7, 30)


# -- any valid request is still valid after injection (hypothesis) ------------------------

OPENAI_REQUEST = fastjsonschema.compile(
    {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {
                        "role": {"enum": ["system", "developer", "user", "assistant"]},
                        "content": {"type": "string"},
                    },
                },
            },
            "stream": {"type": "boolean"},
            "stream_options": {"type": "object"},
            "temperature": {"type": "number"},
            "tools": {
                "type": "array",
                "items": {"type": "object", "required": ["type", "function"]},
            },
        },
    }
)
ANTHROPIC_REQUEST = fastjsonschema.compile(
    {
        "type": "object",
        "required": ["model", "messages", "max_tokens"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "max_tokens": {"type": "integer", "minimum": 1},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {"role": {"enum": ["user", "assistant"]}},
                },
            },
            "system": {
                "anyOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "items": {"type": "object", "required": ["type", "text"]},
                    },
                ]
            },
            "tools": {
                "type": "array",
                "items": {"type": "object", "required": ["name", "input_schema"]},
            },
        },
    }
)
text = st.text(max_size=40)
turns = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": text}),
    min_size=1,
    max_size=6,
)
extras = st.fixed_dictionaries(
    {},
    optional={
        "stream": st.booleans(),
        "temperature": st.floats(0, 2),
        "tools": st.just([{"type": "function", "function": {"name": "client_tool"}}]),
    },
)


@given(
    turns=turns,
    system=st.one_of(st.none(), text),
    extra=extras,
    policy=st.sampled_from(["replace", "append"]),
)
def test_any_valid_openai_request_is_valid_after_injection(
    support: Bundle,
    turns: list[dict[str, Any]],
    system: str | None,
    extra: dict[str, Any],
    policy: Any,
) -> None:
    messages = ([{"role": "system", "content": system}] if system is not None else []) + turns
    body = {"model": "support-agent", "messages": messages, **extra}
    OPENAI_REQUEST(body)
    OPENAI.rewrite(body, OPENAI.prepare(support), policy)
    OPENAI_REQUEST(orjson.loads(orjson.dumps(body)))  # still valid, and still plain JSON
    assert body["model"] == support.model
    assert body["messages"][0]["role"] == "system"
    assert support.prompt in body["messages"][0]["content"]
    assert [m for m in body["messages"] if m["role"] != "system"] == turns  # the dialogue kept
    assert [t["function"]["name"] for t in body["tools"]] == [t.name for t in support.tools]
    if body.get("stream"):
        assert body["stream_options"]["include_usage"] is True


@given(
    turns=turns,
    system=st.one_of(st.none(), text),
    extra=extras,
    max_tokens=st.integers(1, 4096),
    policy=st.sampled_from(["replace", "append"]),
)
def test_any_valid_anthropic_request_is_valid_after_injection(
    refund: Bundle,
    turns: list[dict[str, Any]],
    system: str | None,
    extra: dict[str, Any],
    max_tokens: int,
    policy: Any,
) -> None:
    extra = {k: v for k, v in extra.items() if k != "tools"}
    body = {"model": "refund-agent", "messages": turns, "max_tokens": max_tokens, **extra}
    if system is not None:
        body["system"] = system
    ANTHROPIC_REQUEST(body)
    ANTHROPIC.rewrite(body, ANTHROPIC.prepare(refund), policy)
    ANTHROPIC_REQUEST(orjson.loads(orjson.dumps(body)))
    assert body["model"] == refund.model and body["messages"] == turns
    system_text = "".join(block["text"] for block in body["system"])  # v1.5 caches its prompt
    assert refund.prompt in system_text
    assert [t["name"] for t in body["tools"]] == [t.name for t in refund.tools]
