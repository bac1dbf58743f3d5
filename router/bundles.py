"""Bundles: one immutable, versioned agent (model snapshot, prompt, tools, params).

A bundle is a folder:

    bundles/refund-agent/v1.5/
        bundle.yaml     version, provider, model, prompt, tools, params, metadata
        prompt.txt      the system prompt, verbatim
        tools.yaml      a list of {name, description, input_schema}

The digest is a sha256 over the canonical content that changes what the model sees
(provider, model, prompt text, tools, params, prompt caching); metadata is not part of it.
Tool schemas are checked here, when the bundle loads, and compiled on their first tool call, so
that a large config loads in seconds; after that checking a call costs one function call.
Versions of a route usually share their tools file word for word, so a tools file is parsed
and checked once per distinct text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.config import YAML_LOADER
from router.errors import ConfigError, Problem

BUNDLE_FILE = "bundle.yaml"
# A pinned snapshot ends in a date: claude-opus-4-7-20260108, gpt-5.4-2026-03-05.
_DATED = re.compile(r"[-@](?:\d{8}|\d{4}-\d{2}-\d{2})$")


def pin_problem(model: str) -> str | None:
    """Why `model` is not a pinned snapshot, or None when it is."""
    if "latest" in model.lower():
        return f"model {model!r} is a moving 'latest' alias"
    if not _DATED.search(model):
        return f"model {model!r} is an alias, not a pinned dated snapshot"
    return None


PIN_FIX = (
    "pin the dated snapshot id the provider lists for it "
    "(e.g. claude-opus-4-7-20260108 or gpt-5.4-2026-03-05), "
    "or set environment: dev to allow aliases while developing"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    input_schema: dict[str, Any]


class BundleFile(_Strict):
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    provider: str
    model: str = Field(min_length=1)
    prompt: str
    tools: str | None = None
    params: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    prompt_caching: bool = False


class ArgumentCheck:
    """A tool's JSON Schema check: `check.run(arguments)` raises JsonSchemaValueException.

    Generating the check's code is what finds a bad schema, so that happens when the bundle
    loads; compiling the code (as long again) waits for the first call, so thousands of
    bundles load without compiling checks most of them may never run. After that, `run` is
    the compiled function itself."""

    __slots__ = ("run", "schema")

    def __init__(self, schema: Mapping[str, Any]) -> None:
        fastjsonschema.compile_to_code(dict(schema), detailed_exceptions=False)  # may raise
        self.schema = schema
        self.run: Callable[[Any], Any] = self._compile_and_run

    def _compile_and_run(self, arguments: Any) -> Any:
        self.run = fastjsonschema.compile(dict(self.schema), detailed_exceptions=False)
        return self.run(arguments)


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    input_schema: Mapping[str, Any]
    check: ArgumentCheck = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Bundle:
    route: str
    version: str
    provider: str
    model: str
    prompt: str
    tools: tuple[Tool, ...]
    params: Mapping[str, Any]
    metadata: Mapping[str, Any]
    prompt_caching: bool
    digest: str
    folder: Path

    @property
    def short_digest(self) -> str:
        return self.digest[:12]

    def tool(self, name: str) -> Tool | None:
        for tool in self.tools:
            if tool.name == name:
                return tool
        return None

    def check_tool_call(self, name: str, arguments: Any, *, raw: bool) -> str:
        """valid, unknown_tool, invalid_json or invalid_arguments (breaks the schema).

        `raw` arguments are JSON text (OpenAI, streamed Anthropic); others are parsed."""
        tool = self.tool(name)
        if tool is None:
            return "unknown_tool"
        if raw:
            try:
                arguments = orjson.loads(arguments)
            except orjson.JSONDecodeError:
                return "invalid_json"
        try:
            tool.check.run(arguments)
        except fastjsonschema.JsonSchemaValueException:
            return "invalid_arguments"
        return "valid"


def digest_of(
    provider: str,
    model: str,
    prompt: str,
    tools: list[ToolSpec],
    params: Mapping[str, Any],
    prompt_caching: bool,
) -> str:
    canonical = orjson.dumps(
        {
            "provider": provider,
            "model": model,
            "prompt": prompt,
            "tools": [t.model_dump() for t in tools],
            "params": params,
            "prompt_caching": prompt_caching,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


def _read_yaml(path: Path, problems: list[Problem]) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=YAML_LOADER)  # noqa: S506
    except FileNotFoundError:
        problems.append(Problem(str(path), "", "file not found", "create it or fix the name"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(path), "", f"not valid YAML: {exc}", "fix the syntax"))
    return None


# A problem in a tools file before it has a path: (key, message, fix).
_Found = tuple[str, str, str]


def _load_tools(path: Path, problems: list[Problem]) -> tuple[list[ToolSpec], list[Tool]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(Problem(str(path), "", "file not found", "create it or fix the name"))
        return [], []
    except UnicodeDecodeError as exc:
        problems.append(Problem(str(path), "", f"not valid YAML: {exc}", "fix the syntax"))
        return [], []
    specs, tools, found = _parse_tools(text)
    problems.extend(Problem(str(path), key, message, fix) for key, message, fix in found)
    return list(specs), list(tools)


@lru_cache(maxsize=4096)
def _parse_tools(text: str) -> tuple[tuple[ToolSpec, ...], tuple[Tool, ...], tuple[_Found, ...]]:
    """The tools of one tools.yaml text and the problems found in it. The same text gives the
    same (immutable) tools, so versions that share a tools file share one parse and check."""
    try:
        raw = yaml.load(text, Loader=YAML_LOADER)  # noqa: S506
    except yaml.YAMLError as exc:
        return (), (), (("", f"not valid YAML: {exc}", "fix the syntax"),)
    if raw is None:
        return (), (), ()
    if not isinstance(raw, list):
        return (), (), (("", "tools must be a list", "write - name: ... items"),)
    found: list[_Found] = []
    specs: list[ToolSpec] = []
    tools: list[Tool] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        try:
            spec = ToolSpec.model_validate(item)
        except ValidationError as exc:
            for err in exc.errors():
                key = ".".join(str(p) for p in (index, *err["loc"]))
                found.append((key, err["msg"], "see README: tools.yaml"))
            continue
        where = f"{index}.input_schema"
        if spec.name in seen:
            found.append(
                (
                    f"{index}.name",
                    f"tool {spec.name!r} is defined twice",
                    "give each tool a unique name",
                )
            )
        seen.add(spec.name)
        if spec.input_schema.get("type") != "object":
            found.append(
                (
                    where,
                    "a tool's input_schema must have type: object",
                    "wrap the arguments in {type: object, properties: ...}",
                )
            )
            continue
        try:
            check = ArgumentCheck(spec.input_schema)
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            found.append(
                (
                    where,
                    f"invalid JSON Schema for tool {spec.name!r}: {exc}",
                    "fix the schema (see json-schema.org)",
                )
            )
            continue
        specs.append(spec)
        tools.append(Tool(spec.name, spec.description, spec.input_schema, check))
    return tuple(specs), tuple(tools), tuple(found)


def load_bundle(folder: Path, route: str, environment: str) -> tuple[Bundle, list[str]]:
    """Load one bundle folder. Returns the bundle and any warnings; raises ConfigError."""
    problems: list[Problem] = []
    warnings: list[str] = []
    file = folder / BUNDLE_FILE
    raw = _read_yaml(file, problems)
    if problems:
        raise ConfigError(problems)
    try:
        spec = BundleFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            [
                Problem(
                    str(file),
                    ".".join(str(p) for p in e["loc"]),
                    e["msg"],
                    "add this key" if e["type"] == "missing" else "see README: bundle.yaml",
                )
                for e in exc.errors()
            ]
        ) from None

    reason = pin_problem(spec.model)
    if reason and environment == "prod":
        problems.append(
            Problem(str(file), "model", f"bundle {route}/{spec.version}: {reason}", PIN_FIX)
        )
    elif reason:
        warnings.append(f"{file}: model: {reason} (allowed because environment is dev)")

    prompt_path = folder / spec.prompt
    try:
        prompt = prompt_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(
            Problem(
                str(file),
                "prompt",
                f"prompt file {prompt_path} not found",
                "create it, or point prompt: at the right file",
            )
        )
        prompt = ""
    except UnicodeDecodeError:
        problems.append(
            Problem(str(prompt_path), "", "the prompt is not UTF-8 text", "save it as UTF-8")
        )
        prompt = ""
    specs: list[ToolSpec] = []
    tools: list[Tool] = []
    if spec.tools is not None:
        specs, tools = _load_tools(folder / spec.tools, problems)
    if problems:
        raise ConfigError(problems)

    bundle = Bundle(
        route=route,
        version=spec.version,
        provider=spec.provider,
        model=spec.model,
        prompt=prompt,
        tools=tuple(tools),
        params=spec.params,
        metadata=spec.metadata,
        prompt_caching=spec.prompt_caching,
        digest=digest_of(
            spec.provider, spec.model, prompt, specs, spec.params, spec.prompt_caching
        ),
        folder=folder,
    )
    return bundle, warnings


def load_route_bundles(
    route: str, folder: Path, environment: str
) -> tuple[dict[str, Bundle], list[str]]:
    """Load every bundle folder of a route. Collects all problems before raising."""
    if not folder.is_dir():
        raise ConfigError(
            [
                Problem(
                    str(folder),
                    "",
                    f"bundle folder of route {route} not found",
                    f"create {folder}/<version>/bundle.yaml or fix routes.{route}.bundles",
                )
            ]
        )
    bundles: dict[str, Bundle] = {}
    warnings: list[str] = []
    problems: list[Problem] = []
    for sub in sorted(p for p in folder.iterdir() if (p / BUNDLE_FILE).is_file()):
        try:
            bundle, found = load_bundle(sub, route, environment)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        warnings.extend(found)
        if bundle.version in bundles:
            other = bundles[bundle.version].folder / BUNDLE_FILE
            problems.append(
                Problem(
                    str(sub / BUNDLE_FILE),
                    "version",
                    f"version {bundle.version} is also declared by {other}",
                    "give every bundle folder its own version number",
                )
            )
            continue
        bundles[bundle.version] = bundle
    if problems:
        raise ConfigError(problems)
    return bundles, warnings
