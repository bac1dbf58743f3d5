"""What an answer will be, decided once in no dialect's words, then drawn in each dialect's.

A dialect reads its request into an `Ask` (the offered tools, the tool choice, structured
output, n, logprobs, thinking), or refuses it with `Invalid`. The `Planner` rolls the
behaviour's dice against the `Ask` and returns a `Plan`: one `Answer` per choice (text,
refusal or tool calls, with thinking before them) and the token counts.
"""

from __future__ import annotations

import random
import re
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from router.dev.fake_provider.profile import Behaviour
from router.dev.fake_provider.schema import broken_arguments, example_arguments, example_instance

ToolMode = Literal["auto", "none", "required", "named"]
REFUSAL = "I can't help with that request."
ALTERNATIVES = (" the", " a", " it", " and", " to", " of", " in", " is")
TOKEN = re.compile(r"\s*\S{1,4}|\s+")  # lossless: the tokens of a text join back into it


@dataclass(frozen=True)
class Tool:
    name: str
    schema: dict[str, Any]


@dataclass
class Ask:
    """What a request asks of the model."""

    tools: list[Tool] = field(default_factory=list)
    mode: ToolMode = "auto"
    named: str | None = None  # the tool a named choice forces
    parallel: bool = True  # several tool calls in one turn allowed
    choices: int = 1  # OpenAI's n
    json_schema: dict[str, Any] | None = None  # structured output
    json_object: bool = False
    thinking: bool = False
    logprobs: int | None = None  # None: not asked; else the alternatives per token
    input_size: int = 0  # bytes of the conversation, for the token estimate
    context_tokens: int = 0  # tokens of the stored conversation this request continues
    after_tool_results: bool = False  # the conversation ends with tool results


class Invalid(Exception):
    """A request the real API would refuse with a 400 (or `status`), in its words."""

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


@dataclass
class Call:
    key: str  # 24 hex digits; each dialect makes its ids from it
    name: str
    arguments: Any
    text: str  # the arguments as sent, broken when the call is meant to be invalid


@dataclass
class Answer:
    text: str
    refusal: bool = False
    json: bool = False  # text is JSON: streamed in slices, not words
    calls: list[Call] = field(default_factory=list)
    thinking: str | None = None
    output_tokens: int = 0
    thinking_tokens: int = 0


@dataclass
class Plan:
    answers: list[Answer]
    input_tokens: int
    cache_read: int
    cache_write: int

    @property
    def first(self) -> Answer:
        return self.answers[0]

    @property
    def output_tokens(self) -> int:
        return sum(a.output_tokens for a in self.answers)

    @property
    def reasoning_tokens(self) -> int:
        return sum(a.thinking_tokens for a in self.answers)


class Planner:
    def __init__(self, rng: random.Random) -> None:
        self.random = rng
        self.turn = 0  # where tool_pick "cycle" goes on from

    def plan(self, ask: Ask, how: Behaviour) -> Plan:
        answers = [self.answer(ask, how) for _ in range(ask.choices)]
        estimate = ask.context_tokens + max(1, ask.input_size // 4)
        return Plan(
            answers=answers,
            input_tokens=how.input_tokens if how.input_tokens is not None else estimate,
            cache_read=how.cache_read_tokens,
            cache_write=how.cache_write_tokens,
        )

    def answer(self, ask: Ask, how: Behaviour) -> Answer:
        answer = Answer(text=how.text, thinking=how.thinking_text if ask.thinking else None)
        forced = bool(ask.tools) and ask.mode in ("required", "named")
        if forced:  # a forced choice is always a call, as the real APIs constrain it
            answer.calls = [self.call(tool, how) for tool in self.pick(ask, how)]
        elif self.random.random() < how.refusal_rate:
            answer.refusal, answer.text = True, REFUSAL
        elif (
            ask.tools
            and ask.mode == "auto"
            and not (how.answer_tool_results and ask.after_tool_results)
            and self.random.random() < how.tool_call_rate
        ):
            answer.calls = [self.call(tool, how) for tool in self.pick(ask, how)]
        elif ask.json_schema is not None:
            answer.text = orjson.dumps(example_instance(ask.json_schema)).decode()
            answer.json = True
        elif ask.json_object:
            answer.text, answer.json = orjson.dumps({"answer": how.text}).decode(), True
        if answer.calls:
            answer.text = ""
        thought = len(answer.thinking.split()) if answer.thinking else 0
        if how.output_tokens is not None:
            answer.output_tokens = how.output_tokens
        elif answer.calls:
            answer.output_tokens = thought + sum(max(1, len(c.text) // 4) for c in answer.calls)
        else:
            words = len(TOKEN.findall(answer.text)) if answer.json else len(answer.text.split())
            answer.output_tokens = thought + words
        answer.thinking_tokens = min(thought, answer.output_tokens)
        return answer

    def pick(self, ask: Ask, how: Behaviour) -> list[Tool]:
        """The tools this turn calls: the named one once, else `tool_calls_per_turn` of the
        offered ones (one when parallel calls are off), in the behaviour's order."""
        if ask.mode == "named":
            return [t for t in ask.tools if t.name == ask.named][:1]
        count = how.tool_calls_per_turn if ask.parallel else 1
        offered = ask.tools
        if how.tool_pick == "random":
            return [self.random.choice(offered) for _ in range(count)]
        start = 0
        if how.tool_pick == "cycle":
            start, self.turn = self.turn, self.turn + count
        return [offered[(start + i) % len(offered)] for i in range(count)]

    def call(self, tool: Tool, how: Behaviour) -> Call:
        name, schema = tool.name, tool.schema
        args: Any = example_arguments(schema)
        text = orjson.dumps(args).decode()
        if self.random.random() < how.invalid_tool_call_rate:
            if how.invalid_tool_call_kind == "schema":
                args = broken_arguments(schema)
                text = orjson.dumps(args).decode()
            elif how.invalid_tool_call_kind == "unknown_tool":
                name = "no_such_tool"
            else:  # not_json: a JSON object broken off half way
                text = text[: max(1, len(text) // 2)]
        return Call(key=uuid.uuid4().hex[:24], name=name, arguments=args, text=text)


# ---- helpers every dialect uses ----------------------------------------------------------
def pieces(text: str, parts: int, json: bool = False) -> list[str]:
    """`text` cut into about `parts` pieces that join back into it: at spaces for prose,
    anywhere for JSON."""
    if json or " " not in text:
        step = max(1, -(-len(text) // parts))
        return [text[i : i + step] for i in range(0, len(text), step)] or [""]
    words = text.split(" ")
    size = max(1, -(-len(words) // parts))
    cut = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [p if i == 0 else " " + p for i, p in enumerate(cut)]


def logprobs(text: str, top: int) -> list[dict[str, Any]]:
    """Per-token log probabilities, shaped like OpenAI's: each token of `text` with a
    plausible (stable) logprob and `top` alternatives, the token itself first."""
    out = []
    for token in TOKEN.findall(text):
        best = -(zlib.crc32(token.encode()) % 1000) / 2000
        alternatives = [token, *(a for a in ALTERNATIVES if a != token)][:top]
        out.append(
            {
                "token": token,
                "logprob": best,
                "bytes": list(token.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": best - 1.5 * i, "bytes": list(t.encode())}
                    for i, t in enumerate(alternatives)
                ],
            }
        )
    return out


def as_list(value: Any) -> list[Any]:
    """A request field that should be a list; anything else reads as empty."""
    return value if isinstance(value, list) else []
