"""How the console shows things: times, money, offsets, highlighted search words, a call's sections.

Pure functions over plain values, so the templates stay simple and these are tested directly."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

from app.archive.search import BadQuery, parse_query

_WORD = re.compile(r"\w+", re.UNICODE)
BLANK = "\u2013"  # an en dash: no value
_ENDINGS = ("ing", "ed", "es", "s")  # a rough stand-in for the search's English stemming


def clock(ms: int | None) -> str:
    """An offset into a call as mm:ss (h:mm:ss past an hour)."""
    if ms is None:
        return BLANK
    seconds = max(0, ms) // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def duration(ms: int | None) -> str:
    if ms is None:
        return BLANK
    return clock(ms) if ms >= 60_000 else f"{ms / 1000:.1f} s"


def usd(micros: int | None) -> str:
    if micros is None:
        return BLANK
    return f"${micros / 1_000_000:,.4f}"


def millis(ms: int | float | None) -> str:
    return BLANK if ms is None else f"{int(ms)} ms"


def when(value: datetime | str | None, *, zone: bool = True) -> str:
    """A moment in UTC, to the second; ``zone=False`` where a heading already says UTC."""
    if value is None:
        return BLANK
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC" if zone else "%Y-%m-%d %H:%M:%S")


def epoch_ms(ms: int | float | None) -> str:
    return BLANK if ms is None else when(datetime.fromtimestamp(ms / 1000, UTC))


def _stem(word: str) -> str:
    for ending in _ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            return word[: -len(ending)]
    return word


def search_words(q: str | None) -> frozenset[str]:
    """The (roughly stemmed) words a search looks for; excluded words are not highlighted."""
    if not q:
        return frozenset()
    try:
        terms = parse_query(q)
    except BadQuery:
        return frozenset()
    return frozenset(_stem(word) for term in terms if not term.negated for word in term.words)


def highlight(text: str, words: frozenset[str]) -> Markup:
    """``text`` escaped, with the words a search looked for wrapped in <mark>."""
    if not words:
        return escape(text)
    out: list[str] = []
    last = 0
    for match in _WORD.finditer(text):
        if _stem(match.group().lower()) in words:
            out.append(escape(text[last : match.start()]))
            out.append(Markup("<mark>%s</mark>") % match.group())
            last = match.end()
    out.append(escape(text[last:]))
    return Markup("").join(out)


# -- a call's sections -----------------------------------------------------------------------------


def transfers(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Hand-offs to a person: the agent's transfers and the ones made after a lost upstream."""
    out = []
    for event in events:
        detail = event.get("detail") or {}
        if event["kind"] == "call_ending" and detail.get("action") == "TransferCall":
            out.append({"offset_ms": event.get("offset_ms"), "to": None, "reason": detail.get("reason")})
        elif event["kind"] == "upstream_failed" and detail.get("transfer_to"):
            out.append(
                {"offset_ms": event.get("offset_ms"), "to": detail["transfer_to"], "reason": "the agent was lost"}
            )
    return out


def opt_outs(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for event in events:
        detail = event.get("detail") or {}
        if event["kind"] in ("opted_out", "opt_out_failed"):
            out.append(
                {
                    "offset_ms": event.get("offset_ms"),
                    "recorded": event["kind"] == "opted_out",
                    "phone": detail.get("phone"),
                    "source": detail.get("source"),
                    "reason": detail.get("reason"),
                }
            )
    return out


def speaker_label(speaker: str) -> str:
    return {"agent": "Agent", "caller": "Caller"}.get(speaker, speaker.capitalize())


def reasons(value: Any) -> list[str]:
    """A dial decision's reasons as lines of text, whatever shape they were stored in."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [f"{k}: {v}" for k, v in value.items()]
    if isinstance(value, Sequence):
        return [r if isinstance(r, str) else _reason_text(r) for r in value]
    return [str(value)]


def _reason_text(reason: Any) -> str:
    """Stored as {"code", "message", "source"} by the dialer."""
    if isinstance(reason, dict):
        message = reason.get("message")
        code = reason.get("code")
        if message:
            return f"{message} ({code})" if code else str(message)
        return ", ".join(f"{k}: {v}" for k, v in reason.items())
    return str(reason)
