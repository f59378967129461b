"""Deterministic JSON values for a JSON schema: the mock's tool arguments and structured outputs.

sample(schema) follows, in order: "const", the first of "enum", the first of "anyOf" / "oneOf" /
"allOf", a local "$ref" ("#/$defs/X", "#/definitions/X"), then "type" (the first non-null one
of a list). An object holds its *required* properties only, each sampled from its schema (a
property without a schema is the string below); a string is "mock-<property name>" ("mock" at
the top level), an integer 1, a number 1.5, a boolean true, an array one sampled item, null
None. Past MAX_DEPTH levels (a recursive schema) the value is None.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 8


def sample(schema: Any) -> Any:
    """The mock's value for `schema`; a non-object schema at the top gives {"value": ...}."""
    return _sample(schema, schema, "", 0)


def sample_object(schema: Any) -> dict:
    """Always a JSON object, as tool arguments and json_object replies must be."""
    value = sample(schema)
    return value if isinstance(value, dict) else {"value": value}


def _sample(schema: Any, root: Any, name: str, depth: int) -> Any:
    if depth > MAX_DEPTH or not isinstance(schema, dict):
        return None if depth > MAX_DEPTH else _string(name)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _sample(options[0], root, name, depth + 1)
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _sample(_resolve(ref, root), root, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        required = required if isinstance(required, list) else []
        return {
            key: _sample(properties.get(key), root, key, depth + 1)
            for key in required
            if isinstance(key, str)
        }
    if kind == "array":
        return [_sample(schema.get("items", {}), root, name, depth + 1)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(name)


def _string(name: str) -> str:
    return f"mock-{name}" if name else "mock"


def _resolve(ref: str, root: Any) -> Any:
    node = root
    if not ref.startswith("#/"):
        return None
    for part in ref[2:].split("/"):
        if not isinstance(node, dict):
            return None
        node = node.get(part.replace("~1", "/").replace("~0", "~"))
    return node
