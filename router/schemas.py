"""Tool input schemas, compiled once into validators whose every regex runs on RE2.

Tool-call arguments are validated on the event loop, with values a model chose, so no regex
in a schema may backtrack (see `router.patterns`). fastjsonschema generates Python code for
a schema and keeps the regexes of `pattern` and `patternProperties` in one dict,
REGEX_PATTERNS, among the generated code's globals, keyed by the schema's own pattern; the
code calls `.search(value)` on them. `compile_schema` replaces each with its RE2 twin,
compiled from that key (JSON Schema's `$` is the end of the text, as in RE2; fastjsonschema
rewrote it to Python's `\\Z`). The built-in formats (email, date-time, ...) are regexes too:
they are passed in as RE2-backed checks under the same names, which fastjsonschema uses
before its own.

Before compiling, the schema is walked once, so that a pattern RE2 cannot run, or a `$ref`
that leaves the schema (fastjsonschema would fetch it from a URL or a file), is reported
with its key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import fastjsonschema
from fastjsonschema.draft2019 import CodeGeneratorDraft2019

from router.patterns import RE2_FIX, Regex, RegexError, compile_pattern

Validator = Callable[[Any], Any]

# Where a schema holds other schemas (draft 4 to 2019-09).
_ONE = (
    "additionalProperties",
    "additionalItems",
    "items",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedProperties",
    "unevaluatedItems",
)
_LISTS = ("allOf", "anyOf", "oneOf", "items", "prefixItems")
_MAPS = ("properties", "patternProperties", "definitions", "$defs", "dependentSchemas")


class SchemaError(Exception):
    """What is wrong with a schema, where (a dotted key inside it), and the fix."""

    def __init__(self, key: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        self.fix = fix


def _format(pattern: str, also: Callable[[str], bool] | None = None) -> Callable[[str], bool]:
    regex = compile_pattern(pattern.replace(r"\Z", r"\z").replace("{,", "{0,"))
    if also is None:
        return lambda value: regex.search(value) is not None
    return lambda value: regex.search(value) is not None and also(value)


def _email_local_part(value: str) -> bool:
    local = value.partition("@")[0]
    return ".." not in local and not local.endswith(".")


# fastjsonschema's format regexes on RE2. Three use look-around; their RE2 forms leave it
# out and check the same thing in plain Python, which is linear too.
FORMATS: dict[str, Callable[[str], bool]] = {
    name: _format(pattern)
    for name, pattern in CodeGeneratorDraft2019.FORMAT_REGEXS.items()
    if name not in ("email", "duration", "idn-hostname")
}
FORMATS["email"] = _format(r"^[^@.][^@]*@[^@]+\.[^@]+\z", _email_local_part)
FORMATS["duration"] = _format(
    r"^P(?:[0-9]+W|(?:[0-9]+Y)?(?:[0-9]+M)?(?:[0-9]+D)?"
    r"(?:T(?:[0-9]+H)?(?:[0-9]+M)?(?:[0-9]+S)?)?)\z",
    lambda value: value != "P" and not value.endswith("T"),
)
FORMATS["idn-hostname"] = _format(
    r"^(xn--)?[a-zA-Z0-9][a-zA-Z0-9-_]{0,61}[a-zA-Z0-9]{0,1}\.(xn--)?"
    r"([a-zA-Z0-9\-]{1,50}|[a-zA-Z0-9-]{1,30}\.[a-zA-Z]{2,})\z",
    lambda value: not value.partition(".")[2].startswith("-"),
)


def _refuse_remote(uri: str) -> Any:
    raise fastjsonschema.JsonSchemaDefinitionException(f"$ref {uri!r} leaves the schema")


_NO_REMOTE = {scheme: _refuse_remote for scheme in ("http", "https", "file", "ftp", "data")}


def _subschemas(schema: Any) -> Iterator[tuple[tuple[str, ...], Mapping[str, Any]]]:
    """Every schema inside `schema` (itself included), with its path of keys."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue  # true/false are schemas too, with nothing inside
        yield path, node
        stack.extend(((*path, word), node[word]) for word in _ONE if word in node)
        for word in _LISTS:
            if isinstance(node.get(word), list):
                stack.extend(((*path, word, str(i)), item) for i, item in enumerate(node[word]))
        for word in _MAPS:
            if isinstance(node.get(word), dict):
                stack.extend(((*path, word, str(k)), item) for k, item in node[word].items())


def _check(schema: Mapping[str, Any]) -> None:
    for path, node in _subschemas(schema):
        regexes = [((*path, "pattern"), node.get("pattern"))]
        if isinstance(node.get("patternProperties"), dict):
            regexes += [((*path, "patternProperties", k), k) for k in node["patternProperties"]]
        for where, pattern in regexes:
            if not isinstance(pattern, str):
                continue
            try:
                compile_pattern(pattern)
            except RegexError as exc:
                raise SchemaError(".".join(where), f"pattern '{pattern}': {exc}", RE2_FIX) from None
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            raise SchemaError(
                ".".join((*path, "$ref")),
                f"$ref {ref!r} leaves the schema; only local references (#...) are allowed, "
                "so loading a bundle never reads a file or a URL",
                "copy what it names under definitions and refer to it as #/definitions/NAME",
            )


def _regex_table(validate: Validator) -> dict[str, Any]:
    """fastjsonschema's compiled regexes, by pattern: a global of the generated code."""
    function = getattr(validate, "func", validate)  # a partial when formats are given
    table: dict[str, Any] = function.__globals__["REGEX_PATTERNS"]
    return table


def schema_regexes(validate: Validator) -> list[Regex]:
    """The regexes a compiled validator runs (for tests: all RE2)."""
    return list(_regex_table(validate).values())


def check_schema(schema: Mapping[str, Any]) -> None:
    """What `compile_schema` would refuse, without compiling: every regex tried on RE2,
    every `$ref` local, and the code generated (which is what finds an invalid schema).
    Raises SchemaError."""
    _check(schema)
    try:
        fastjsonschema.compile_to_code(dict(schema), handlers=_NO_REMOTE, formats=FORMATS)
    except Exception as exc:  # the generator raises what it meets, not only its own error
        raise SchemaError(
            "", f"invalid JSON Schema: {exc}", "fix the schema (see json-schema.org)"
        ) from None


def compile_schema(schema: Mapping[str, Any]) -> Validator:
    """A validator for `schema` whose regexes all run on RE2. Raises SchemaError."""
    _check(schema)
    try:
        validate: Validator = fastjsonschema.compile(
            dict(schema), handlers=_NO_REMOTE, formats=FORMATS
        )
    except Exception as exc:  # the generator raises what it meets, not only its own error
        raise SchemaError(
            "", f"invalid JSON Schema: {exc}", "fix the schema (see json-schema.org)"
        ) from None
    table = _regex_table(validate)
    for pattern in list(table):
        try:
            table[pattern] = compile_pattern(pattern)
        except RegexError as exc:  # a pattern somewhere the walk does not look
            raise SchemaError("", f"pattern '{pattern}': {exc}", RE2_FIX) from None
    return validate
