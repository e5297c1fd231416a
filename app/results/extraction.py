"""A call's summary and extraction: the chat request, and what is accepted back (pure).

One structured-outputs request asks for both: ``{"summary": str, "extraction": <the operator's schema>}``,
strict, so the model must answer in that shape; what comes back is still validated against the schema (JSON
Schema 2020-12) before it is stored, as a proxy or another OpenAI-compatible server may not hold to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from app.results.strict import strict_problems

RESPONSE_NAME = "call_results"
SUMMARY_MAX = 2000  # characters: "short", and what the call page and the webhook carry

# The deployment's default, for inbound calls and campaigns that define none.
DEFAULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "description": "why the caller called, in a few words"},
        "resolved": {"type": "boolean", "description": "whether the caller got what they called for"},
        "callback_requested": {"type": "boolean", "description": "whether the caller asked to be called back"},
        "sentiment": {
            "type": "string",
            "enum": ["positive", "neutral", "negative", "upset"],
            "description": "the caller's mood by the end of the call",
        },
    },
    "required": ["reason", "resolved", "callback_requested", "sentiment"],
    "additionalProperties": False,
}

INSTRUCTIONS = (
    "You review a finished phone call between a business's voice agent and a caller. Write a short summary "
    "(at most three sentences: who called, what they wanted, how it ended) and fill in the extraction from "
    "what was said in the call only. Where the call does not say, choose the most cautious value the schema "
    "allows (false, null, the neutral option)."
)


class InvalidResult(ValueError):
    """The model's answer is not the shape asked for (retried: another answer may be)."""


def schema_problems(schema: Any) -> list[str]:
    """Why an operator's extraction schema cannot be used (strict mode, and JSON Schema itself)."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return ["the extraction schema must be a JSON Schema of type object (its fields are what is filtered on)"]
    problems = strict_problems(RESPONSE_NAME, _wrapped(schema))
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        problems.append(f"not a valid JSON Schema: {exc.message}")
    return problems


def _wrapped(extraction: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "summary": {"type": "string", "description": "a short summary of the call, at most three sentences"},
            "extraction": dict(extraction),
        },
        "required": ["summary", "extraction"],
        "additionalProperties": False,
    }


@dataclass(frozen=True, slots=True)
class CallText:
    """What the model reads: the call's facts and its transcript lines (speaker, text)."""

    direction: str
    started_at: str
    duration_s: float | None
    disposition: str | None
    lines: tuple[tuple[str, str], ...]


def request_body(model: str, call: CallText, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The chat completions request (non-streaming, structured outputs, strict)."""
    transcript = "\n".join(f"{speaker}: {text}" for speaker, text in call.lines)
    facts = (
        f"Direction: {call.direction}. Started: {call.started_at}. Duration: {call.duration_s or 0:.0f} s. "
        f"Ended: {call.disposition or 'unknown'}."
    )
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": f"{facts}\n\nTranscript:\n{transcript}"},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": RESPONSE_NAME, "strict": True, "schema": _wrapped(schema)},
        },
    }


def parse_answer(content: str | None, schema: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The summary and the extraction from the model's message, validated; InvalidResult otherwise."""
    if not content:
        raise InvalidResult("the answer was empty")
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise InvalidResult(f"the answer is not JSON: {exc}") from None
    errors = sorted(Draft202012Validator(_wrapped(schema)).iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        raise InvalidResult(f"the answer does not match the schema at {where}: {first.message}")
    summary = str(value["summary"]).strip()[:SUMMARY_MAX]
    return summary, dict(value["extraction"])


def has_conversation(lines: Iterable[tuple[str, str]]) -> bool:
    """Anything for the model to read: at least one line from the caller."""
    return any(speaker == "caller" and text.strip() for speaker, text in lines)
