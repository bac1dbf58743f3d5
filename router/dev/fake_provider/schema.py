"""A small valid instance of a JSON Schema: tool arguments and structured output.

A value the schema suggests comes first (`const`, `examples`, `example`, `enum`, `default`),
then a plain value of the schema's type that meets its bounds. `$ref` (local), `allOf`,
`anyOf`/`oneOf` (the first branch that is not null), nested objects and arrays are followed.
`pattern` is honoured only through `examples`: a regular expression has no cheap instance.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 12  # below this, objects keep their required properties only and arrays are empty
MAX_ITEMS = 1000  # bounds from a schema are trusted only up to these sizes
MAX_LENGTH = 10_000
FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "12:00:00Z",
    "duration": "P1D",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/",
    "iri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def example_instance(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value that `schema` accepts. Never raises, whatever `schema` is."""
    if not isinstance(schema, dict):
        return None if schema is False else "example"
    root = schema if root is None else root
    if isinstance(schema.get("$ref"), str) and depth < MAX_DEPTH:
        target = _resolve(root, schema["$ref"])
        if target is not None:
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return example_instance({**target, **rest}, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    for key in ("examples", "enum"):
        if isinstance(schema.get(key), list) and schema[key]:
            return schema[key][0]
    for key in ("example", "default"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("allOf"), list):
        return example_instance(_merge(schema), root, depth + 1)
    for key in ("anyOf", "oneOf"):
        branches = [b for b in _list(schema.get(key)) if isinstance(b, dict)]
        if isinstance(schema.get(key), list) and branches:
            rest = {k: v for k, v in schema.items() if k != key}
            chosen = next((b for b in branches if b.get("type") != "null"), branches[0])
            return example_instance({**rest, **chosen}, root, depth + 1)
    kind = _kind(schema)
    if kind == "object":
        return _object(schema, root, depth)
    if kind == "array":
        return _array(schema, root, depth)
    if kind == "integer":
        return _integer(schema)
    if kind == "number":
        return _number(schema)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema)


def example_arguments(schema: Any) -> dict[str, Any]:
    """Tool arguments: an instance of the tool's schema, which is always an object."""
    value = example_instance(schema)
    return value if isinstance(value, dict) else {}


def broken_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments that break the schema: each property gets a value of the wrong type, and
    an object without properties gets one it does not expect."""
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else None
    if not props:
        return {"unexpected": [1, 2, 3]}
    wrong: dict[Any, Any] = {
        "string": 12345,
        "integer": "twelve",
        "number": "many",
        "boolean": "yes",
    }
    return {
        name: wrong.get(prop.get("type") if isinstance(prop, dict) else "")
        for name, prop in props.items()
    }


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _resolve(root: Any, ref: str) -> dict[str, Any] | None:
    """A local reference such as `#/$defs/Line`; None for anything else."""
    if not ref.startswith("#"):
        return None
    node = root
    for part in filter(None, ref[1:].split("/")):
        key = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, dict) else None


def _merge(schema: dict[str, Any]) -> dict[str, Any]:
    """allOf flattened into one schema: properties and required united, the rest layered."""
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**(merged.get("properties") or {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*_list(merged.get("required")), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _kind(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null" if kind else None)
    if isinstance(kind, str):
        return kind
    if any(k in schema for k in ("properties", "required", "additionalProperties")):
        return "object"
    if any(k in schema for k in ("items", "prefixItems", "minItems")):
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "multipleOf")):
        return "number"
    return None


def _object(schema: dict[str, Any], root: Any, depth: int) -> dict[str, Any]:
    found = schema.get("properties")
    props: dict[str, Any] = found if isinstance(found, dict) else {}
    required = [r for r in _list(schema.get("required")) if isinstance(r, str)]
    extra = schema.get("additionalProperties")
    extra_schema = extra if isinstance(extra, dict) else {"type": "string"}
    names = list(dict.fromkeys(required if depth >= MAX_DEPTH else [*props, *required]))
    limit = schema.get("maxProperties")
    if isinstance(limit, int):  # optional properties go first when there are too many
        optional = [n for n in names if n not in required]
        names = [n for n in names if n in required] + optional[: max(0, limit - len(required))]
    out = {name: example_instance(props.get(name, extra_schema), root, depth + 1) for name in names}
    least = schema.get("minProperties")
    if isinstance(least, int) and extra is not False:
        while len(out) < min(least, MAX_ITEMS):
            out[f"key{len(out)}"] = example_instance(extra_schema, root, depth + 1)
    return out


def _array(schema: dict[str, Any], root: Any, depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    if isinstance(prefix, list):
        return [example_instance(s, root, depth + 1) for s in prefix]
    least, most = _integer_at(schema, "minItems"), _integer_at(schema, "maxItems")
    count = min(max(least or 0, 0 if depth >= MAX_DEPTH else 1), MAX_ITEMS)
    if most is not None:
        count = max(0, min(count, most))
    items = [example_instance(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    if schema.get("uniqueItems") is True:
        items = [_distinct(item, i) for i, item in enumerate(items)]
    return items


def _integer_at(schema: dict[str, Any], key: str) -> int | None:
    value = schema.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _distinct(value: Any, i: int) -> Any:
    """The i-th of several items that must differ: numbers counted up, strings suffixed."""
    if i == 0:
        return value
    if isinstance(value, bool) or value is None:
        return value  # cannot vary; the schema asked for the impossible
    if isinstance(value, int | float):
        return value + i
    if isinstance(value, str):
        return f"{value}{i}"
    return value


def _bounds(schema: dict[str, Any]) -> tuple[float | None, float | None, bool, bool]:
    def number(key: str) -> float | None:
        value = schema.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return None

    low, high = number("minimum"), number("maximum")
    low_x, high_x = number("exclusiveMinimum"), number("exclusiveMaximum")
    if low_x is not None and (low is None or low_x >= low):
        low, open_low = low_x, True
    else:
        open_low = False
    if high_x is not None and (high is None or high_x <= high):
        high, open_high = high_x, True
    else:
        open_high = False
    return low, high, open_low, open_high


def _integer(schema: dict[str, Any]) -> int:
    low, high, open_low, open_high = _bounds(schema)
    lowest = None if low is None else int(low) + 1 if open_low or low != int(low) else int(low)
    highest = (
        None if high is None else int(high) - 1 if open_high and high == int(high) else int(high)
    )
    value = max(1, lowest) if lowest is not None else 1
    if highest is not None and value > highest:
        value = highest if lowest is None else max(lowest, highest)
    step = schema.get("multipleOf")
    if isinstance(step, int) and not isinstance(step, bool) and step > 0 and value % step:
        value += step - value % step
    return value


def _number(schema: dict[str, Any]) -> float:
    low, high, open_low, open_high = _bounds(schema)
    value = 1.5
    if low is not None and (value < low or (open_low and value <= low)):
        value = low + 1 if high is None else (low + high) / 2 if open_low else low
    if high is not None and (value > high or (open_high and value >= high)):
        value = high - 1 if low is None else (low + high) / 2 if open_high else high
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
        value = step * max(1, -(-value // step))
    return value


def _string(schema: dict[str, Any]) -> str:
    fmt = schema.get("format")
    text = FORMATS.get(fmt, "example") if isinstance(fmt, str) else "example"
    least = schema.get("minLength")
    if isinstance(least, int) and len(text) < least:
        text += "x" * (min(least, MAX_LENGTH) - len(text))
    most = schema.get("maxLength")
    if isinstance(most, int) and len(text) > most:
        text = text[: max(0, most)]
    return text
