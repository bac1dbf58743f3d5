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
from router.errors import BadRequest
from router.proxy.dialects import ANTHROPIC, OPENAI
from router.proxy.dialects.base import Policy
from testing.servers import EXAMPLE_BUNDLES


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
    OPENAI.rewrite(body, OPENAI.prepare(support), Policy("r", "replace"))
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
    assert (
        OPENAI.rewrite(body, OPENAI.prepare(support), Policy("r", "replace")).client_system is True
    )
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][0]["content"] == support.prompt


def test_openai_bundle_without_tools_sends_none(support: Bundle) -> None:
    body: dict[str, Any] = {
        "model": "x",
        "tools": [{"type": "function"}],
        "tool_choice": "auto",
        "messages": [{"role": "user", "content": "hi"}],
    }
    OPENAI.rewrite(body, OPENAI.prepare(without_tools(support)), Policy("r", "replace", "replace"))
    assert "tools" not in body and "tool_choice" not in body


def test_client_may_set_request_shaped_params(support: Bundle) -> None:
    body: dict[str, Any] = {
        "model": "x",
        "max_completion_tokens": 50,
        "temperature": 2,
        "tool_choice": "required",
        "messages": [{"role": "user", "content": "hi"}],
    }
    OPENAI.rewrite(body, OPENAI.prepare(support), Policy("r", "replace"))
    assert body["max_completion_tokens"] == 50  # a default: the client wins
    assert body["temperature"] == 0.3  # pinned: the bundle wins
    assert body["tool_choice"] == "required"


def test_anthropic_append_turns_strings_into_blocks(refund: Bundle) -> None:
    body: dict[str, Any] = {
        "model": "x",
        "system": "client",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert (
        ANTHROPIC.rewrite(body, ANTHROPIC.prepare(refund), Policy("r", "append")).client_system
        is True
    )
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["system"][1] == {"type": "text", "text": "client"}


def test_anthropic_without_client_system_is_not_counted(refund: Bundle) -> None:
    body: dict[str, Any] = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
    assert (
        ANTHROPIC.rewrite(body, ANTHROPIC.prepare(refund), Policy("r", "reject")).client_system
        is False
    )
    assert body["max_tokens"] == 1024 and body["model"] == refund.model


def test_reject_policy(refund: Bundle, support: Bundle) -> None:
    with pytest.raises(BadRequest, match="refuses one from the client"):
        ANTHROPIC.rewrite(
            {"system": "x", "messages": []}, ANTHROPIC.prepare(refund), Policy("r", "reject")
        )
    with pytest.raises(BadRequest, match="refuses one from the client"):
        OPENAI.rewrite(
            {"messages": [{"role": "system", "content": "x"}]},
            OPENAI.prepare(support),
            Policy("r", "reject"),
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
    OPENAI.rewrite(body, OPENAI.prepare(support), Policy("r", policy, "replace"))
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
    ANTHROPIC.rewrite(body, ANTHROPIC.prepare(refund), Policy("r", policy, "replace"))
    ANTHROPIC_REQUEST(orjson.loads(orjson.dumps(body)))
    assert body["model"] == refund.model and body["messages"] == turns
    system_text = "".join(block["text"] for block in body["system"])  # v1.5 caches its prompt
    assert refund.prompt in system_text
    assert [t["name"] for t in body["tools"]] == [t.name for t in refund.tools]


def _openai_tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


OUTPUT = {"name": "FinalAnswer", "input_schema": {"type": "object"}}  # structured output


@pytest.mark.parametrize(
    ("policy", "own_tool", "goes_upstream"),
    [("merge", "FinalAnswer", True), ("merge", None, False), ("replace", "FinalAnswer", False)],
    ids=["merge", "merge_clash", "replace"],
)
def test_client_tools_policy_openai(
    support: Bundle, policy: Any, own_tool: str | None, goes_upstream: bool
) -> None:
    """`own_tool` None: the client sends a tool named like the bundle's (a clash)."""
    injection = OPENAI.prepare(support)
    bundle_tool = support.tools[0].name
    sent = own_tool or bundle_tool
    body: dict[str, Any] = {"messages": [], "tools": [_openai_tool(sent)]}
    rewritten = OPENAI.rewrite(body, injection, Policy("r", "replace", policy))
    names = [t["function"]["name"] for t in body["tools"]]
    assert names == [t.name for t in support.tools] + ([sent] if goes_upstream else [])
    assert rewritten.client_tools == ({sent} if goes_upstream else set())
    assert body["tools"][0] == injection.tools[0]  # the bundle's schema wins a clash


def test_a_forced_tool_that_does_not_go_upstream_is_a_clear_400(
    refund: Bundle, support: Bundle
) -> None:
    choice = {"type": "tool", "name": "FinalAnswer"}
    body: dict[str, Any] = {"messages": [], "tools": [OUTPUT], "tool_choice": choice}
    with pytest.raises(BadRequest, match="client_tools: replace") as caught:
        ANTHROPIC.rewrite(body, ANTHROPIC.prepare(refund), Policy("refund", "replace", "replace"))
    assert caught.value.code == "tool_not_offered"
    body = {"messages": [], "tools": [OUTPUT], "tool_choice": choice}
    merged = ANTHROPIC.rewrite(body, ANTHROPIC.prepare(refund), Policy("refund"))
    assert body["tool_choice"] == choice and merged.client_tools == {"FinalAnswer"}
    forced = {"type": "function", "function": {"name": "Nowhere"}}
    with pytest.raises(BadRequest, match="neither the bundle nor the request"):
        OPENAI.rewrite(
            {"messages": [], "tool_choice": forced}, OPENAI.prepare(support), Policy("s")
        )
    with pytest.raises(BadRequest, match="refuses tools the bundle does not define") as refused:
        ANTHROPIC.rewrite(
            {"messages": [], "tools": [OUTPUT]},
            ANTHROPIC.prepare(refund),
            Policy("r", "replace", "reject"),
        )
    assert refused.value.code == "client_tools_rejected"


def test_max_tokens_is_one_param_under_two_names(support: Bundle) -> None:
    injection = OPENAI.prepare(support)
    assert "max_completion_tokens" in injection.defaults  # the bundle's default
    body: dict[str, Any] = {"messages": [], "max_tokens": 50}
    OPENAI.rewrite(body, injection, Policy("s"))
    assert body["max_tokens"] == 50 and "max_completion_tokens" not in body
    body = {"messages": []}
    OPENAI.rewrite(body, injection, Policy("s"))
    assert body["max_completion_tokens"] == injection.defaults["max_completion_tokens"]


def test_thinking_meets_a_pinned_temperature_with_a_clear_400(refund: Bundle) -> None:
    injection = ANTHROPIC.prepare(refund)
    assert injection.pinned["temperature"] != 1
    body: dict[str, Any] = {
        "messages": [],
        "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    with pytest.raises(BadRequest, match=r"temperature 0\.2.*the bundle .* pins temperature") as e:
        ANTHROPIC.rewrite(body, injection, Policy("refund-agent"))
    assert e.value.code == "incompatible_params"
