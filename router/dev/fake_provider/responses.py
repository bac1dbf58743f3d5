"""OpenAI Responses (`POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}`), JSON and SSE.

Reads `input` (a string or a list of items: messages, `function_call` and
`function_call_output`), `instructions`, function `tools` with `tool_choice` and
`parallel_tool_calls`, `text.format` (json_schema, json_object), `reasoning` (a reasoning
item first, its summary when one is asked for), `previous_response_id`, `store` and
`include: ["message.output_text.logprobs"]` with `top_logprobs`. Answers are `response`
objects whose `output` holds `reasoning`, `message` (`output_text` or `refusal`) and
`function_call` items; a stream is the real event sequence, each event numbered. Stored
responses (the last `STORED`) can be continued with `previous_response_id` (their tokens then
count as input) and read back with GET.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import Any

import orjson
from aiohttp import web

from router.dev.fake_provider import openai_errors
from router.dev.fake_provider.chat import read_tools
from router.dev.fake_provider.plan import (
    Answer,
    Ask,
    Invalid,
    Plan,
    Tool,
    ToolMode,
    as_list,
    logprobs,
    pieces,
)
from router.dev.fake_provider.profile import Behaviour

STORED = 1000
LOGPROBS = "message.output_text.logprobs"


class Responses:
    not_json = openai_errors.NOT_JSON

    def __init__(self) -> None:
        self.stored: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def refused(self, problem: Invalid) -> dict[str, Any]:
        return openai_errors.refused(problem)

    def injected(self, status: int, request: web.Request) -> dict[str, Any]:
        return openai_errors.injected(status, request)

    # ---- stored responses --------------------------------------------------------------------
    async def retrieve(self, request: web.Request) -> web.Response:
        found = self.stored.get(request.match_info["id"])
        if found is None:
            return self.not_found(request.match_info["id"])
        return web.Response(body=orjson.dumps(found), content_type="application/json")

    async def delete(self, request: web.Request) -> web.Response:
        rid = request.match_info["id"]
        if self.stored.pop(rid, None) is None:
            return self.not_found(rid)
        deleted = {"id": rid, "object": "response", "deleted": True}
        return web.Response(body=orjson.dumps(deleted), content_type="application/json")

    def not_found(self, rid: str) -> web.Response:
        body = openai_errors.error_body(f"No response found with id '{rid}'.")
        return web.Response(status=404, body=orjson.dumps(body), content_type="application/json")

    # ---- the request -----------------------------------------------------------------------
    def read(self, body: dict[str, Any]) -> Ask:
        if not isinstance(body.get("model"), str):
            raise Invalid(
                "Missing required parameter: 'model'.",
                param="model",
                code="missing_required_parameter",
            )
        raw = body.get("tools")
        functions = (
            [t for t in raw if isinstance(t, dict) and t.get("type") == "function"]
            if isinstance(raw, list)
            else []
        )
        tools = read_tools(functions)
        mode, named, offered = tool_choice(body.get("tool_choice"), tools)
        items = body.get("input")
        instructions = body.get("instructions")
        ask = Ask(
            tools=offered,
            mode=mode,
            named=named,
            parallel=body.get("parallel_tool_calls") is not False,
            input_size=len(orjson.dumps(items)) + len(orjson.dumps(instructions)),
            after_tool_results=bool(items)
            and isinstance(items, list)
            and isinstance(items[-1], dict)
            and items[-1].get("type") == "function_call_output",
        )
        previous = self.previous(body.get("previous_response_id"))
        calls_known: set[str] = set()
        if previous is not None:
            usage = previous.get("usage") or {}
            ask.context_tokens = usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
            calls_known = {i["call_id"] for i in previous["output"] if "call_id" in i}
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            call_id = item.get("call_id")
            if item.get("type") == "function_call" and isinstance(call_id, str):
                calls_known.add(call_id)
            elif item.get("type") == "function_call_output" and (
                not isinstance(call_id, str) or call_id not in calls_known
            ):
                raise Invalid(
                    f"No tool call found for function call output with call_id {call_id}.",
                    param="input",
                )
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "json_schema":
            assert isinstance(fmt, dict)
            if not isinstance(fmt.get("name"), str):
                raise Invalid(
                    "Missing required parameter: 'text.format.name'.",
                    param="text.format.name",
                    code="missing_required_parameter",
                )
            schema = fmt.get("schema")
            ask.json_schema = schema if isinstance(schema, dict) else {"type": "object"}
        elif kind == "json_object":
            if b"json" not in (orjson.dumps(items) + orjson.dumps(instructions)).lower():
                raise Invalid(
                    "Response input messages must contain the word 'json' in some form to use "
                    "'text.format' of type 'json_object'.",
                    param="input",
                )
            ask.json_object = True
        reasoning = body.get("reasoning")
        ask.thinking = isinstance(reasoning, dict) and reasoning.get("effort") != "none"
        include = body.get("include")
        if isinstance(include, list) and LOGPROBS in include:
            top = body.get("top_logprobs")
            ask.logprobs = top if isinstance(top, int) and 0 <= top <= 20 else 0
        return ask

    def previous(self, rid: Any) -> dict[str, Any] | None:
        if rid is None:
            return None
        found = self.stored.get(rid) if isinstance(rid, str) else None
        if found is None:
            raise Invalid(
                f"Previous response with id '{rid}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return found

    # ---- the answer ------------------------------------------------------------------------
    def answer(self, body: dict[str, Any], ask: Ask, plan: Plan) -> dict[str, Any]:
        """The completed response, stored unless `store` is false."""
        answer = plan.first
        output = self.output(answer, ask, summary=summarised(body))
        now = time.time()
        response = {
            "id": "resp_" + uuid.uuid4().hex,
            "object": "response",
            "created_at": int(now),
            "status": "completed",
            "completed_at": int(now),
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": body.get("model"),
            "output": output,
            "parallel_tool_calls": ask.parallel,
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": None,
            "reasoning": reasoning_echo(body),
            "safety_identifier": None,
            "service_tier": "default",
            "store": body.get("store") is not False,
            "temperature": body.get("temperature", 1.0),
            "text": text_echo(body),
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": tools_echo(body),
            "top_logprobs": body.get("top_logprobs", 0),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": usage(plan),
            "user": None,
            "metadata": body.get("metadata") or {},
        }
        if response["store"]:
            self.stored[response["id"]] = response
            while len(self.stored) > STORED:
                self.stored.popitem(last=False)
        return response

    def output(self, answer: Answer, ask: Ask, summary: bool) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        if answer.thinking is not None:
            items.append(
                {
                    "id": "rs_" + uuid.uuid4().hex,
                    "type": "reasoning",
                    "summary": (
                        [{"type": "summary_text", "text": answer.thinking}] if summary else []
                    ),
                }
            )
        for call in answer.calls:
            items.append(
                {
                    "id": "fc_" + call.key,
                    "type": "function_call",
                    "status": "completed",
                    "arguments": call.text,
                    "call_id": "call_" + call.key,
                    "name": call.name,
                }
            )
        if not answer.calls:
            part: dict[str, Any] = (
                {"type": "refusal", "refusal": answer.text}
                if answer.refusal
                else {
                    "type": "output_text",
                    "text": answer.text,
                    "annotations": [],
                    "logprobs": logprobs(answer.text, ask.logprobs or 0)
                    if ask.logprobs is not None
                    else [],
                }
            )
            items.append(
                {
                    "id": "msg_" + uuid.uuid4().hex,
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [part],
                }
            )
        return items

    def events(self, body: dict[str, Any], ask: Ask, plan: Plan, how: Behaviour) -> list[bytes]:
        response = self.answer(body, ask, plan)
        stream = Events()
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        started["completed_at"] = None
        stream.add("response.created", response=started)
        stream.add("response.in_progress", response=started)
        for index, item in enumerate(response["output"]):
            draw = {"reasoning": draw_reasoning, "function_call": draw_call}.get(item["type"])
            (draw or draw_message)(stream, index, item, ask, how, plan.first)
        stream.add("response.completed", response=response)
        return stream.events


class Events:
    """Responses SSE: `event: <type>` and data carrying the type and a sequence number."""

    def __init__(self) -> None:
        self.events: list[bytes] = []

    def add(self, kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": len(self.events), **fields}
        self.events.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")


def draw_reasoning(
    stream: Events, index: int, item: dict[str, Any], ask: Ask, how: Behaviour, answer: Answer
) -> None:
    at = {"item_id": item["id"], "output_index": index}
    stream.add("response.output_item.added", output_index=index, item={**item, "summary": []})
    for n, part in enumerate(item["summary"]):
        empty = {"type": "summary_text", "text": ""}
        stream.add("response.reasoning_summary_part.added", **at, summary_index=n, part=empty)
        for piece in pieces(part["text"], how.stream_chunks):
            stream.add("response.reasoning_summary_text.delta", **at, summary_index=n, delta=piece)
        stream.add("response.reasoning_summary_text.done", **at, summary_index=n, text=part["text"])
        stream.add("response.reasoning_summary_part.done", **at, summary_index=n, part=part)
    stream.add("response.output_item.done", output_index=index, item=item)


def draw_call(
    stream: Events, index: int, item: dict[str, Any], ask: Ask, how: Behaviour, answer: Answer
) -> None:
    at = {"item_id": item["id"], "output_index": index}
    opened = {**item, "status": "in_progress", "arguments": ""}
    stream.add("response.output_item.added", output_index=index, item=opened)
    text = item["arguments"]
    step = max(1, -(-len(text) // how.stream_chunks))
    for i in range(0, len(text), step):
        stream.add("response.function_call_arguments.delta", **at, delta=text[i : i + step])
    stream.add("response.function_call_arguments.done", **at, arguments=text)
    stream.add("response.output_item.done", output_index=index, item=item)


def draw_message(
    stream: Events, index: int, item: dict[str, Any], ask: Ask, how: Behaviour, answer: Answer
) -> None:
    at = {"item_id": item["id"], "output_index": index, "content_index": 0}
    opened = {**item, "status": "in_progress", "content": []}
    stream.add("response.output_item.added", output_index=index, item=opened)
    part = item["content"][0]
    if part["type"] == "refusal":
        stream.add("response.content_part.added", **at, part={"type": "refusal", "refusal": ""})
        for piece in pieces(part["refusal"], how.stream_chunks):
            stream.add("response.refusal.delta", **at, delta=piece)
        stream.add("response.refusal.done", **at, refusal=part["refusal"])
    else:
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        stream.add("response.content_part.added", **at, part=empty)
        for piece in pieces(part["text"], how.stream_chunks, answer.json):
            tokens = logprobs(piece, ask.logprobs) if ask.logprobs is not None and piece else []
            stream.add("response.output_text.delta", **at, delta=piece, logprobs=tokens)
        stream.add("response.output_text.done", **at, text=part["text"], logprobs=part["logprobs"])
    stream.add("response.content_part.done", **at, part=part)
    stream.add("response.output_item.done", output_index=index, item=item)


def tool_choice(choice: Any, tools: list[Tool]) -> tuple[ToolMode, str | None, list[Tool]]:
    """(mode, the named tool, the tools it may call) for the Responses `tool_choice`."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice or "auto", None, tools
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function":
        assert isinstance(choice, dict)
        name = choice.get("name")
        if not isinstance(name, str) or name not in {t.name for t in tools}:
            raise Invalid(
                "Tool choice 'function' not found in 'tools' parameter.", param="tool_choice"
            )
        return "named", name, tools
    if kind == "allowed_tools":
        assert isinstance(choice, dict)
        named = {str(t.get("name")) for t in as_list(choice.get("tools")) if isinstance(t, dict)}
        subset = [t for t in tools if t.name in named]
        if choice.get("mode") in ("auto", "required") and subset:
            return choice["mode"], None, subset
    raise Invalid(
        f"Invalid value: {orjson.dumps(choice).decode()}. Supported values are: 'none', "
        "'auto', 'required', a function or allowed_tools.",
        param="tool_choice",
        code="invalid_value",
    )


def summarised(body: dict[str, Any]) -> bool:
    reasoning = body.get("reasoning")
    return isinstance(reasoning, dict) and reasoning.get("summary") is not None


def reasoning_echo(body: dict[str, Any]) -> dict[str, Any]:
    reasoning = body.get("reasoning")
    if not isinstance(reasoning, dict):
        return {"effort": None, "summary": None}
    return {"effort": reasoning.get("effort", "medium"), "summary": reasoning.get("summary")}


def text_echo(body: dict[str, Any]) -> dict[str, Any]:
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    return {"format": fmt if isinstance(fmt, dict) else {"type": "text"}, "verbosity": "medium"}


def tools_echo(body: dict[str, Any]) -> list[Any]:
    tools = body.get("tools")
    return [
        {"strict": True, **t} if isinstance(t, dict) and t.get("type") == "function" else t
        for t in (tools if isinstance(tools, list) else [])
    ]


def usage(plan: Plan) -> dict[str, Any]:
    total_input = plan.input_tokens + plan.cache_read
    return {
        "input_tokens": total_input,
        "input_tokens_details": {
            "cached_tokens": plan.cache_read,
            "cache_write_tokens": plan.cache_write,
        },
        "output_tokens": plan.output_tokens,
        "output_tokens_details": {"reasoning_tokens": plan.reasoning_tokens},
        "total_tokens": total_input + plan.output_tokens,
    }
