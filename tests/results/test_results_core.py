"""The pure parts of post-call results: strict schemas as the API takes them, the answer's validation, the
webhook signature a receiver checks, and the retry schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from app.results.extraction import (
    DEFAULT_SCHEMA,
    CallText,
    InvalidResult,
    has_conversation,
    parse_answer,
    request_body,
    schema_problems,
)
from app.results.schedule import JOB_ATTEMPTS, backoff_s, next_delivery_try, next_job_try
from app.results.signing import signature, verify
from app.results.strict import strict_problems

BOOKING = {
    "type": "object",
    "properties": {
        "booked": {"type": "boolean"},
        "slot": {"type": ["string", "null"], "description": "the time agreed, if any"},
        "party": {
            "type": "object",
            "properties": {"adults": {"type": "integer"}, "children": {"type": "integer"}},
            "required": ["adults", "children"],
            "additionalProperties": False,
        },
        "topics": {"type": "array", "items": {"type": "string", "enum": ["price", "hours", "parking"]}},
    },
    "required": ["booked", "slot", "party", "topics"],
    "additionalProperties": False,
}


def without(schema: dict[str, Any], *path: str) -> dict[str, Any]:
    copy = orjson.loads(orjson.dumps(schema))
    node = copy
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return copy


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        (DEFAULT_SCHEMA, None),
        (BOOKING, None),
        (without(BOOKING, "additionalProperties"), "In context=(), 'additionalProperties' is required to be supplied"),
        (without(BOOKING, "properties", "party", "additionalProperties"),
         "In context=('properties', 'party'), 'additionalProperties' is required"),
        ({**BOOKING, "required": ["booked", "party", "topics"]}, "Missing 'slot'"),
        ({"type": "array", "items": {"type": "string"}}, "must be a JSON Schema of 'type: \"object\"'"),
        ({**BOOKING, "properties": {**BOOKING["properties"], "when": {"type": "date"}},
          "required": [*BOOKING["required"], "when"]}, "schema must have a 'type' key"),
        ({**BOOKING, "properties": {**BOOKING["properties"], "x": {"$ref": "#/$defs/nope"}},
          "required": [*BOOKING["required"], "x"]}, "reference '#/$defs/nope' can't be resolved"),
    ],
)  # fmt: skip
def test_strict_schemas_are_refused_as_the_api_refuses_them(schema: dict[str, Any], problem: str | None) -> None:
    problems = strict_problems("call_results", schema)
    if problem is None:
        assert problems == []
    else:
        assert problems and problem in problems[0]
        assert problems[0].startswith("Invalid schema for response_format 'call_results': ")


def test_too_deep_or_badly_named_schemas_are_refused() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(12):
        deep = {"type": "object", "properties": {"x": deep}, "required": ["x"], "additionalProperties": False}
    assert any("nests more than 10 levels" in p for p in strict_problems("deep", deep))
    assert "does not match pattern" in strict_problems("has spaces", DEFAULT_SCHEMA)[0]


def test_an_operators_schema_must_be_an_object_and_valid_json_schema() -> None:
    assert schema_problems(BOOKING) == []
    assert "type object" in schema_problems({"type": "string"})[0]
    assert "type object" in schema_problems(["not", "a", "schema"])[0]
    broken = {**BOOKING, "properties": {**BOOKING["properties"], "n": {"type": "integer", "minimum": "zero"}},
              "required": [*BOOKING["required"], "n"]}  # fmt: skip
    assert any("not a valid JSON Schema" in p for p in schema_problems(broken))


def test_the_request_asks_for_a_summary_and_the_extraction_strictly_with_the_transcript() -> None:
    text = CallText("inbound", "2026-12-07T09:00:00+00:00", 42.0, "completed",
                    (("agent", "Hello"), ("caller", "Book me for two")))  # fmt: skip
    body = request_body("gpt-4.1-mini", text, BOOKING)
    spec = body["response_format"]["json_schema"]
    assert body["response_format"]["type"] == "json_schema" and spec["strict"] is True
    assert spec["schema"]["properties"]["extraction"] == BOOKING and spec["schema"]["required"] == [
        "summary",
        "extraction",
    ]
    assert strict_problems(spec["name"], spec["schema"]) == []
    assert body["messages"][-1]["content"].endswith("Transcript:\nagent: Hello\ncaller: Book me for two")
    assert has_conversation(text.lines) and not has_conversation((("agent", "Hello"), ("caller", "  ")))


def test_an_answer_is_accepted_only_in_the_schemas_shape() -> None:
    good = {"summary": " Booked a table. ", "extraction": {"booked": True, "slot": None,
            "party": {"adults": 2, "children": 0}, "topics": ["price"]}}  # fmt: skip
    assert parse_answer(orjson.dumps(good).decode(), BOOKING) == ("Booked a table.", good["extraction"])
    bad_enum = {**good, "extraction": {**good["extraction"], "topics": ["weather"]}}
    missing = {**good, "extraction": {k: v for k, v in good["extraction"].items() if k != "slot"}}
    extra = {**good, "extraction": {**good["extraction"], "mood": "fine"}}
    for answer, where in ((bad_enum, "extraction/topics/0"), (missing, "extraction"), (extra, "extraction")):
        with pytest.raises(InvalidResult, match=f"at {where}:"):
            parse_answer(orjson.dumps(answer).decode(), BOOKING)
    for content in (None, "", "not json", "[]"):
        with pytest.raises(InvalidResult):
            parse_answer(content, BOOKING)


def test_a_signature_verifies_only_with_its_secret_body_and_time() -> None:
    body = b'{"event":"call.results"}'
    header = signature("s3cret-s3cret-s3cret", 1_765_000_000, body)
    assert header.startswith("t=1765000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify("s3cret-s3cret-s3cret", header, body, now=1_765_000_100)
    assert not verify("s3cret-s3cret-s3cret", header, body + b" ", now=1_765_000_100)  # tampered
    assert not verify("another-secret-value", header, body, now=1_765_000_100)
    assert not verify("s3cret-s3cret-s3cret", header, body, now=1_765_000_000 + 301)  # replayed too late
    assert not verify("s3cret-s3cret-s3cret", "v1=abc", body, now=1_765_000_000)
    # a receiver rotating secrets may be sent several v1 values: any one that matches will do
    rotated = header + ",v1=" + "0" * 64
    assert verify("s3cret-s3cret-s3cret", rotated, body, now=1_765_000_000)


def test_jobs_back_off_six_tries_and_deliveries_for_24_hours_ending_on_the_deadline() -> None:
    assert [backoff_s(n, 10) for n in range(1, 9)] == [10, 30, 90, 270, 810, 2430, 3600, 3600]
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    assert next_job_try(1, now, 30) == now + timedelta(seconds=30)
    assert next_job_try(JOB_ATTEMPTS, now, 30) is None
    first = now - timedelta(hours=23, minutes=30)
    assert next_delivery_try(3, first, now, 10, 86_400) == now + timedelta(seconds=90)
    assert next_delivery_try(9, first, now, 10, 86_400) == first + timedelta(hours=24)  # the last try, at 24 h
    assert next_delivery_try(10, first, first + timedelta(hours=24), 10, 86_400) is None
