"""instructor on its default modes (a forced tool: TOOLS for OpenAI, ANTHROPIC_TOOLS for
Anthropic), over SDK clients made with only base_url and a key."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import instructor
import openai
import pytest
from pydantic import BaseModel, field_validator

from tests.compat.harness import Answer, Compat, assert_one_version_per_run


@pytest.fixture
def gpt(compat: Compat) -> Iterator[instructor.Instructor]:
    with openai.OpenAI(base_url=compat.openai_url, api_key="sk-anything") as client:
        yield instructor.from_openai(client)


@pytest.fixture
def claude(compat: Compat) -> Iterator[instructor.Instructor]:
    with anthropic.Anthropic(base_url=compat.anthropic_url, api_key="sk-ant") as client:
        yield instructor.from_anthropic(client)


def forced_tool(compat: Compat) -> object:
    return compat.sent()[0].get("tool_choice")


def test_openai_structured_output(compat: Compat, gpt: instructor.Instructor) -> None:
    answer = gpt.chat.completions.create(
        model="support-agent",
        response_model=Answer,
        messages=[{"role": "user", "content": "How long does shipping take?"}],
    )
    assert isinstance(answer, Answer)
    assert forced_tool(compat) == {"type": "function", "function": {"name": "Answer"}}


def test_anthropic_structured_output(compat: Compat, claude: instructor.Instructor) -> None:
    answer = claude.messages.create(
        model="refund-agent",
        max_tokens=512,
        response_model=Answer,
        messages=[{"role": "user", "content": "How long does a refund take?"}],
    )
    assert isinstance(answer, Answer)
    assert forced_tool(compat) == {
        "type": "tool",
        "name": "Answer",
        "disable_parallel_tool_use": True,
    }


def test_partial_stream(gpt: instructor.Instructor) -> None:
    partials = list(
        gpt.chat.completions.create_partial(
            model="support-agent",
            response_model=Answer,
            messages=[{"role": "user", "content": "How long does shipping take?"}],
        )
    )
    assert len(partials) > 1 and Answer.model_validate(partials[-1].model_dump())


def test_validation_retries_stay_on_one_version(
    compat: Compat, claude: instructor.Instructor
) -> None:
    """instructor's multi-call flow: an answer that fails validation is sent back with the
    error, in the same conversation, until one passes."""
    seen: list[str] = []

    class Checked(BaseModel):
        answer: str

        @field_validator("answer")
        @classmethod
        def twice_rejected(cls, value: str) -> str:
            seen.append(value)
            if len(seen) % 3:  # the first two answers of each run fail
                raise ValueError("answer in a full sentence")
            return value

    def run(opening: str) -> None:
        claude.messages.create(
            model="refund-agent",
            max_tokens=512,
            max_retries=2,
            response_model=Checked,
            messages=[{"role": "user", "content": opening}],
        )

    assert_one_version_per_run(compat.sticky_runs("refund-agent", run), calls=3)
