"""What OpenAI's structured outputs accept as a strict JSON schema (``response_format`` of type
``json_schema`` with ``strict: true``): pure.

The rules, from OpenAI's structured-outputs guide: the root is an object (not ``anyOf``); every object sets
``additionalProperties: false`` and lists every one of its properties in ``required`` (an optional field is a
required one whose type admits null); types are string, number, integer, boolean, object, array, null, with
``enum``, ``const``, ``anyOf`` and ``$ref`` to ``$defs``; at most 5,000 properties and 10 levels of nesting.
Messages follow the API's own (``Invalid schema for response_format '<name>': In context=(...), ...``). The
operator's schema is checked here when a campaign is saved (422) and the emulator refuses with the same.
"""

from __future__ import annotations

import re
from typing import Any

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
MAX_PROPERTIES = 5000
MAX_DEPTH = 10


def strict_problems(name: str, schema: Any) -> list[str]:
    """Why the API would refuse this schema in strict mode; empty when it would not."""
    if not isinstance(name, str) or not NAME.match(name):
        return [f"Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string "
                f"that matches the pattern '{NAME.pattern}'."]  # fmt: skip
    prefix = f"Invalid schema for response_format '{name}': "
    if not isinstance(schema, dict):
        return [prefix + "schema must be a JSON Schema of 'type: \"object\"', got 'type: \"None\"'."]
    if schema.get("type") != "object" or "anyOf" in schema:
        return [prefix + f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{schema.get('type')}\"'."]
    problems: list[str] = []
    count = [0]
    _check(schema, (), 0, problems, count, prefix, schema.get("$defs") or {})
    if count[0] > MAX_PROPERTIES:
        problems.append(prefix + f"a schema may have at most {MAX_PROPERTIES} properties in all, not {count[0]}.")
    return problems


def _context(path: tuple[str, ...]) -> str:
    return "In context=(" + ", ".join(repr(p) for p in path) + ("," if len(path) == 1 else "") + "), "


def _check(
    node: Any, path: tuple[str, ...], depth: int, problems: list[str], count: list[int], prefix: str, defs: Any
) -> None:
    where = prefix + _context(path)
    if not isinstance(node, dict):
        problems.append(where + "schema must be an object.")
        return
    if depth > MAX_DEPTH:
        problems.append(where + f"the schema nests more than {MAX_DEPTH} levels.")
        return
    if "$ref" in node:
        ref = node["$ref"]
        if not (isinstance(ref, str) and (ref == "#" or ref.startswith("#/$defs/"))):
            problems.append(where + f"reference '{ref}' is not supported: use '#' or '#/$defs/...'.")
        elif ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") not in defs:
            problems.append(where + f"reference '{ref}' can't be resolved.")
        return
    if "anyOf" in node:
        options = node["anyOf"]
        if not isinstance(options, list) or not options:
            problems.append(where + "'anyOf' must be a non-empty array.")
            return
        for i, option in enumerate(options):
            _check(option, (*path, "anyOf", str(i)), depth + 1, problems, count, prefix, defs)
        return
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "enum" in node or "const" in node:
        if kind is None:
            return
    if not kinds or any(k not in TYPES for k in kinds):
        problems.append(where + f"schema must have a 'type' key, one of {sorted(TYPES)}.")
        return
    if "object" in kinds:
        properties = node.get("properties", {})
        if not isinstance(properties, dict):
            problems.append(where + "'properties' must be an object.")
            return
        if node.get("additionalProperties") is not False:
            problems.append(where + "'additionalProperties' is required to be supplied and to be false.")
        required = node.get("required", [])
        missing = [key for key in properties if not isinstance(required, list) or key not in required]
        if missing:
            problems.append(where + "'required' is required to be supplied and to be an array including every "
                            f"key in properties. Missing '{missing[0]}'.")  # fmt: skip
        extra = [key for key in required if key not in properties] if isinstance(required, list) else []
        if extra:
            problems.append(where + f"'required' names '{extra[0]}', which is not in properties.")
        count[0] += len(properties)
        for key, sub in properties.items():
            _check(sub, (*path, "properties", key), depth + 1, problems, count, prefix, defs)
    if "array" in kinds and "items" in node:
        _check(node["items"], (*path, "items"), depth + 1, problems, count, prefix, defs)
    for key, sub in (node.get("$defs") or {}).items() if not path else ():
        _check(sub, ("$defs", key), depth + 1, problems, count, prefix, defs)
