"""Structured outputs in the emulator: an answer that fits a JSON schema, derived from the conversation.

Strings are the caller's first words (a ``summary`` says what was said); a boolean is true when the words of
its name are in the conversation (``callback_requested``: "call back" or "callback"); an enum is the option the
conversation names, else a neutral one, else the first; numbers are the first number said, else 0; arrays are
empty; a nullable field is filled; objects recursively. Deterministic, so tests can say what to expect.
"""

from __future__ import annotations

import re
from typing import Any

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_QUIET_WORDS = frozenset({"requested", "is", "has", "was", "did", "the", "a", "an", "of", "to", "wants", "asked"})


def caller_words(conversation: str) -> str:
    """The caller's lines of a ``speaker: text`` transcript (all of it when none is marked)."""
    said = [line.split(":", 1)[1].strip() for line in conversation.splitlines() if line.startswith("caller:")]
    return " ".join(said) if said else conversation


def fill(schema: Any, conversation: str, name: str = "", defs: dict[str, Any] | None = None) -> Any:
    defs = defs if defs is not None else (schema.get("$defs") or {} if isinstance(schema, dict) else {})
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        ref = str(schema["$ref"])
        return fill(defs.get(ref.removeprefix("#/$defs/"), {}), conversation, name, defs)
    if "const" in schema:
        return schema["const"]
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if not (isinstance(o, dict) and o.get("type") == "null")]
        return fill(options[0], conversation, name, defs) if options else None
    said = caller_words(conversation)
    lowered = said.lower()
    if "enum" in schema:
        options = list(schema["enum"])
        for option in options:
            if isinstance(option, str) and option.lower() in lowered:
                return option
        return "neutral" if "neutral" in options else options[0]
    kind = schema.get("type")
    kinds = [k for k in (kind if isinstance(kind, list) else [kind]) if k != "null"] or ["null"]
    kind = kinds[0]
    if kind == "object":
        return {key: fill(sub, conversation, key, defs) for key, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return []
    if kind == "boolean":
        words = [w for w in name.lower().split("_") if w and w not in _QUIET_WORDS]
        squashed = lowered.replace(" ", "")
        return bool(words) and all(w in lowered or w in squashed for w in words)
    if kind in ("integer", "number"):
        match = _NUMBER.search(said)
        if match is None:
            return 0
        value = float(match.group())
        return int(value) if kind == "integer" else value
    if kind == "string":
        first = said.strip().split(". ")[0][:200]
        return f"The caller said: {first}" if name == "summary" else first
    return None
