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

A bundle may come from someone other than the operator, and its files go upstream with every
request: every file it names must resolve (symlinks and '..' followed) to a place inside its
own folder, and every file and document has a size limit, checked before it is read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
import yaml
from pydantic import Field, ValidationError

from router.config import Strict
from router.errors import ConfigError, Problem
from router.files import FileRefused, KiB, MiB, human, load_yaml, parse_yaml, read_bytes
from router.schemas import SchemaError, check_schema, compile_schema

BUNDLE_FILE = "bundle.yaml"
# What one bundle may hold. The prompt and the tools go upstream with every request.
MAX_BUNDLE_FILE_BYTES = 256 * KiB  # bundle.yaml
MAX_BUNDLE_NODES = 10_000  # bundle.yaml's values, aliases expanded
MAX_TOOLS_FILE_BYTES = 4 * MiB  # tools.yaml
MAX_TOOLS_NODES = 1_000_000  # tools.yaml's values, aliases expanded
MAX_PROMPT_BYTES = 1 * MiB
MAX_TOOLS = 128  # tools per bundle, as OpenAI allows per request
MAX_SCHEMA_BYTES = 64 * KiB  # one tool's input_schema, as JSON
INSIDE_FIX = (
    "keep the file inside the bundle folder and name it by a relative path "
    "(e.g. prompt: prompt.txt); symlinks and '..' may not lead out of it"
)
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


class ToolSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    input_schema: dict[str, Any]


class BundleFile(Strict):
    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    provider: str
    model: str = Field(min_length=1)
    prompt: str
    tools: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    prompt_caching: bool = False


class ArgumentCheck:
    """A tool's JSON Schema check: `check.run(arguments)` raises JsonSchemaValueException.

    Generating the check's code is what finds a bad schema (and every regex in it is tried
    on RE2), so that happens when the bundle loads; compiling the code (as long again) waits
    for the first call, so thousands of bundles load without compiling checks most of them
    may never run. After that, `run` is the compiled function itself, its regexes on RE2."""

    __slots__ = ("run", "schema")

    def __init__(self, schema: Mapping[str, Any]) -> None:
        check_schema(schema)  # raises SchemaError
        self.schema = schema
        self.run: Callable[[Any], Any] = self._compile_and_run

    def _compile_and_run(self, arguments: Any) -> Any:
        try:
            self.run = compile_schema(self.schema)
        except SchemaError as exc:  # a regex the load-time walk could not see: judged invalid
            logging.getLogger("router.bundles").error("a tool schema cannot compile: %s", exc)
            self.run = _refuse_all
        return self.run(arguments)


def _refuse_all(arguments: Any) -> Any:
    raise fastjsonschema.JsonSchemaValueException("the tool's schema could not be compiled")


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


def thinking_clash(params: Mapping[str, Any]) -> str | None:
    """What clashes with Anthropic's extended thinking: a temperature other than 1, top_k,
    top_p under 0.95, a tool_choice that forces a tool use."""
    thinking = params.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    clashes = []
    if params.get("temperature", 1) != 1:
        clashes.append(f"temperature {params['temperature']}")
    if "top_k" in params:
        clashes.append(f"top_k {params['top_k']}")
    top_p = params.get("top_p")
    if isinstance(top_p, int | float) and top_p < 0.95:
        clashes.append(f"top_p {top_p} (under 0.95)")
    choice = params.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        clashes.append(f"a forced tool_choice ({choice['type']})")
    return " and ".join(clashes) or None


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


def _inside(home: Path, file: Path, key: str, name: str, problems: list[Problem]) -> Path | None:
    """The real path of `name`, a file of the bundle in folder `home` (named by `key` in
    bundle.yaml), or None with a problem if it is absolute or resolves outside `home`."""
    what = f"{key} {name!r}" if key else name
    if Path(name).is_absolute():
        problems.append(
            Problem(
                str(file),
                key,
                f"{what} is an absolute path; a bundle reads only files inside its own "
                f"folder {home}",
                INSIDE_FIX,
            )
        )
        return None
    plain = "/" not in name and name not in ("", ".", "..") and "\0" not in name
    if plain and not os.path.islink(home / name):  # the usual case: one lstat, not realpath
        return home / name
    try:
        real = (home / name).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL in the name
        problems.append(Problem(str(file), key, f"{what} cannot be resolved: {exc}", INSIDE_FIX))
        return None
    if not real.is_relative_to(home):
        problems.append(
            Problem(
                str(file),
                key,
                f"{what} resolves to {real}, outside the bundle folder {home}",
                INSIDE_FIX,
            )
        )
        return None
    return real


def _read_yaml(path: Path, max_bytes: int, max_nodes: int, problems: list[Problem]) -> Any:
    try:
        return load_yaml(path, max_bytes, max_nodes)
    except ConfigError as exc:
        problems.extend(exc.problems)
    return None


# A problem in a tools file before it has a path: (key, message, fix).
_Found = tuple[str, str, str]


def _load_tools(path: Path, problems: list[Problem]) -> tuple[list[ToolSpec], list[Tool]]:
    try:
        text = read_bytes(path, MAX_TOOLS_FILE_BYTES).decode("utf-8")
    except FileNotFoundError:
        problems.append(Problem(str(path), "", "file not found", "create it or fix the name"))
        return [], []
    except FileRefused as exc:
        problems.append(Problem(str(path), "", exc.message, exc.fix))
        return [], []
    except OSError as exc:
        problems.append(
            Problem(
                str(path), "", f"cannot read it: {exc.strerror}", "let the router's user read it"
            )
        )
        return [], []
    except UnicodeDecodeError:
        problems.append(Problem(str(path), "", "the file is not UTF-8 text", "save it as UTF-8"))
        return [], []
    specs, tools, found = _parse_tools(text)
    problems.extend(Problem(str(path), key, message, fix) for key, message, fix in found)
    return list(specs), list(tools)


@lru_cache(maxsize=4096)
def _parse_tools(text: str) -> tuple[tuple[ToolSpec, ...], tuple[Tool, ...], tuple[_Found, ...]]:
    """The tools of one tools.yaml text and the problems found in it. The same text gives the
    same (immutable) tools, so versions that share a tools file share one parse and check."""
    try:
        raw = parse_yaml(text, MAX_TOOLS_NODES)
    except FileRefused as exc:
        return (), (), (("", exc.message, exc.fix),)
    except yaml.YAMLError as exc:
        return (), (), (("", f"not valid YAML: {exc}", "fix the syntax"),)
    if raw is None:
        return (), (), ()
    if not isinstance(raw, list):
        return (), (), (("", "tools must be a list", "write - name: ... items"),)
    if len(raw) > MAX_TOOLS:
        too_many = f"{len(raw)} tools, over the limit of {MAX_TOOLS}"
        return (), (), (("", too_many, "drop the tools this agent does not need, or split it"),)
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
                found.append((key, err["msg"], "see docs/configuration.md, Bundles: tools.yaml"))
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
            size = len(orjson.dumps(spec.input_schema))
        except orjson.JSONEncodeError as exc:
            found.append(
                (
                    where,
                    f"the input_schema of tool {spec.name!r} is not JSON: {exc}",
                    "use string keys, JSON values",
                )
            )
            continue
        if size > MAX_SCHEMA_BYTES:
            found.append(
                (
                    where,
                    f"the input_schema of tool {spec.name!r} is {human(size)} as JSON, "
                    f"over the limit of {human(MAX_SCHEMA_BYTES)}",
                    "describe the arguments more briefly; it goes upstream with every request",
                )
            )
            continue
        try:
            check = ArgumentCheck(spec.input_schema)
        except SchemaError as exc:
            found.append(
                (
                    ".".join(filter(None, (where, exc.key))),
                    f"tool {spec.name!r}: {exc.message}",
                    exc.fix,
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
    home = folder.resolve()
    file = folder / BUNDLE_FILE
    real = _inside(home, file, "", BUNDLE_FILE, problems)
    if real is not None:
        raw = _read_yaml(real, MAX_BUNDLE_FILE_BYTES, MAX_BUNDLE_NODES, problems)
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
                    "add this key"
                    if e["type"] == "missing"
                    else "see docs/configuration.md, Bundles: bundle.yaml",
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
    clash = thinking_clash(spec.params)
    if clash:
        problems.append(
            Problem(
                str(file),
                "params",
                f"bundle {route}/{spec.version} pins extended thinking with {clash}, which "
                "Anthropic refuses",
                "drop the temperature (or set it to 1) and top_k, or drop thinking",
            )
        )
    try:
        orjson.dumps(spec.params)
    except orjson.JSONEncodeError as exc:
        problems.append(
            Problem(
                str(file), "params", f"params are not JSON: {exc}", "use string keys, JSON values"
            )
        )

    prompt = ""
    prompt_path = _inside(home, file, "prompt", spec.prompt, problems)
    try:
        if prompt_path is not None:
            prompt = read_bytes(prompt_path, MAX_PROMPT_BYTES).decode("utf-8")
    except FileNotFoundError:
        problems.append(
            Problem(
                str(file),
                "prompt",
                f"prompt file {prompt_path} not found",
                "create it, or point prompt: at the right file",
            )
        )
    except FileRefused as exc:
        problems.append(
            Problem(
                str(file),
                "prompt",
                exc.message,
                f"{exc.fix}: the prompt goes upstream with every request",
            )
        )
    except OSError as exc:
        problems.append(
            Problem(
                str(file),
                "prompt",
                f"cannot read {prompt_path}: {exc.strerror}",
                "let the router's user read it",
            )
        )
    except UnicodeDecodeError:
        problems.append(
            Problem(str(prompt_path), "", "the prompt is not UTF-8 text", "save it as UTF-8")
        )
    specs: list[ToolSpec] = []
    tools: list[Tool] = []
    if spec.tools is not None:
        tools_path = _inside(home, file, "tools", spec.tools, problems)
        if tools_path is not None:
            specs, tools = _load_tools(tools_path, problems)
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
