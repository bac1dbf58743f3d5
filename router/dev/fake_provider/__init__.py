"""A scripted local provider that speaks OpenAI Chat Completions, OpenAI Responses and
Anthropic Messages, JSON and SSE.

Behaviour is set per model snapshot by a profile (YAML or JSON):

    seed: 7
    default: {latency_ms: 20, stream_chunks: 5}
    models:
      claude-opus-4-7-20260108: {error_rate: 0.02, error_kind: "529"}

and can be changed while it runs, which is how tests and the demo inject regressions:

    POST /_fake/profile  {"model": "claude-opus-4-7-20260108", "behaviour": {"error_rate": 0.5}}
    POST /_fake/profile  {"reset": true}
    GET  /_fake/profile
    GET  /_fake/requests?n=20     the last requests received (path, headers, body, outcome)

Answers use the exact shapes of the real APIs and honour what agent frameworks ask of them:
tool_choice, several tool calls a turn, structured output, n, logprobs, thinking and
reasoning, usage where each API reports it, refusals and stop reasons. One module per
dialect (`chat`, `responses`, `messages`) reads its requests into a neutral `plan.Ask`;
`plan.Planner` decides the answer; the dialect draws it.
"""

from __future__ import annotations

from router.dev.fake_provider.app import FakeProvider
from router.dev.fake_provider.profile import Behaviour, Profile, load_profile
from router.dev.fake_provider.schema import broken_arguments, example_arguments, example_instance

__all__ = [
    "Behaviour",
    "FakeProvider",
    "Profile",
    "broken_arguments",
    "example_arguments",
    "example_instance",
    "load_profile",
]
