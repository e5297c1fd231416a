"""How the console shows things: times, money, offsets, highlighted search words, a call's sections.

Pure functions over plain values, so the templates stay simple and these are tested directly."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

from app.archive.facts import percentile
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


def when_html(value: datetime | str | None, *, zone: bool = True) -> Markup:
    """A moment as a ``<time>`` element: UTC as written (and on hover); the page's tz.js shows it in the
    viewer's chosen time zone."""
    text = when(value, zone=zone)
    if text == BLANK or value is None:
        return Markup("{}").format(BLANK)
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    iso = moment.astimezone(UTC).isoformat(timespec="seconds")
    utc = when(value)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso, utc, text)


ANSWERED_BY = {
    "human": "a person",
    "machine_start": "a machine",
    "machine_end_beep": "voicemail (after the beep)",
    "machine_end_silence": "voicemail (after silence)",
    "machine_end_other": "voicemail",
    "fax": "a fax",
    "unknown": "not told",
}


def answered_words(answered_by: str | None) -> str:
    """Answering-machine detection's verdict in words (a dash before it came, or without detection)."""
    if not answered_by:
        return "\N{EN DASH}"
    return ANSWERED_BY.get(answered_by, answered_by)


def short_sid(sid: str) -> Markup:
    """A call id short enough for a phone's screen (its start and end), the whole one for screen readers."""
    if len(sid) <= 14:
        return Markup("{}").format(sid)
    return Markup(
        '<span class="sid-short" aria-hidden="true" title="{}">{}…{}</span><span class="visually-hidden">{}</span>'
    ).format(sid, sid[:6], sid[-4:], sid)


def epoch_ms_html(ms: int | float | None) -> Markup:
    return when_html(None if ms is None else datetime.fromtimestamp(ms / 1000, UTC))


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


STAGE_NAMES = {
    "transcript": "final transcript",
    "chat_first_token": "first chat token",
    "speech_first_bytes": "first speech bytes",
    "response_created": "response created",
    "first_delta": "first audio delta",
    "first_audio": "first audio to the caller",
}


def turn_stages(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per latency stage, in the order a turn reaches them: its median and worst over the call's turns, in ms
    from the end of the caller's speech (the ``turn_stage`` events either engine records)."""
    by_stage: dict[str, list[int]] = {}
    for event in events:
        detail = event.get("detail") or {}
        ms = detail.get("ms")
        if event["kind"] == "turn_stage" and detail.get("stage") in STAGE_NAMES and isinstance(ms, int | float):
            by_stage.setdefault(detail["stage"], []).append(int(ms))
    rows = []
    for stage, values in by_stage.items():
        rows.append({"stage": STAGE_NAMES[stage], "p50_ms": percentile(values, 50), "max_ms": max(values),
                     "turns": len(values)})  # fmt: skip
    return sorted(rows, key=lambda r: r["p50_ms"] or 0)


def recording_marks(events: Iterable[dict[str, Any]], tools: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the player marks on its timeline, in time order: barge-ins (the caller spoke over the agent), tool
    calls, and the recording's pauses (a sensitive tool) and silenced spans."""
    marks: list[dict[str, Any]] = []
    for e in events:
        at = e.get("offset_ms")
        if at is None:
            continue
        if e["kind"] == "barge_in":
            marks.append({"kind": "barge_in", "at_ms": at, "label": "Barge-in: the caller spoke over the agent"})
        elif e["kind"] == "recording_paused":
            tool = e["detail"].get("tool")
            marks.append({"kind": "paused", "at_ms": at, "label": f"Recording paused ({tool}: sensitive)"})
        elif e["kind"] == "recording_silenced":
            marks.append({"kind": "silenced", "at_ms": e["detail"].get("from_ms", at),
                          "label": f"Silenced: redacted {e['detail'].get('speaker', '')} speech".rstrip()})  # fmt: skip
    for t in tools:
        if t.get("offset_ms") is not None:
            marks.append({"kind": "tool", "at_ms": t["offset_ms"], "label": f"Tool: {t['name']} ({t['status']})"})
    return sorted(marks, key=lambda m: m["at_ms"])


CUT_REASONS = {
    "barge_in": ("barge-in", "the caller spoke over this line, so the rest was not heard"),
    "budget": ("budget", "the call's budget ran out, so the call was ended before the rest was said"),
    "ended": ("call ended", "the call ended before the rest of this line was said"),
}


def cut_reasons(transcript: Sequence[Mapping[str, Any]], events: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    """Why each interrupted line was cut (seq -> barge_in | budget | ended): a line someone spoke after was
    spoken over (a barge-in); the last ones were cut by the call's end, by its budget when it had a hard stop."""
    kinds = {e["kind"] for e in events}
    budget = bool(kinds & {"budget_hard_stop", "budget_wrap_up"})
    reasons: dict[int, str] = {}
    for i, line in enumerate(transcript):
        if not line.get("interrupted"):
            continue
        spoken_over = any(later["speaker"] != line["speaker"] for later in transcript[i + 1 :])
        reasons[line["seq"]] = "barge_in" if spoken_over else ("budget" if budget else "ended")
    return reasons


def _seconds(ms: Any) -> str:
    return f"{ms / 1000:.1f} s" if isinstance(ms, int | float) else "?"


_EVENT_WORDS: dict[str, Any] = {
    "stream_started": lambda d: "The call's audio stream began" + (" (resumed)" if d.get("resumed") else ""),
    "stream_resumed": lambda d: f"The call resumed on another stream with {d.get('lines_restored', 0)} lines restored",
    "stream_stopped": lambda d: "The caller's side ended the stream",
    "barge_in": lambda d: (
        "The caller spoke over the agent, whose audio was cut"
        + (f" after {_seconds(d['audio_end_ms'])}" if "audio_end_ms" in d else "")
    ),
    "turn_latency": lambda d: f"The agent answered {d.get('ms', '?')} ms after the caller stopped speaking",
    "tool_called": lambda d: f"The agent used the tool {d.get('name', '?')}",
    "tool_result": lambda d: f"The tool {d.get('name', '?')} " + ("did its work" if d.get("ok", True) else "failed"),
    "tool_skipped": lambda d: f"The tool {d.get('name', '?')} was not run: {d.get('reason', '')}".rstrip(": "),
    "dtmf": lambda d: f"The caller pressed {d.get('digit', '?')}",
    "call_ending": lambda d: (
        {"HangUp": "The agent ended the call", "TransferCall": "The agent transferred the call"}.get(
            str(d.get("action")), "The call is ending"
        )
        + (f": {d['reason']}" if d.get("reason") else "")
    ),
    "opted_out": lambda d: "The caller opted out: their number is on the do-not-call list",
    "upstream_lost": lambda d: "The connection to the model was lost; a new one was opened",
    "upstream_error": lambda d: f"The model reported an error: {d.get('message') or d.get('code') or ''}".rstrip(": "),
    "recording_decision": lambda d: (
        ("Recorded" if d.get("record") else "Not recorded")
        + (" after an announcement" if d.get("announce") else "")
        + (f": {d['reason']}" if d.get("reason") else "")
    ),
    "recording": lambda d: f"Recording stored ({d.get('seconds', '?')} s)" if d.get("key") else "No recording stored",
    "recording_paused": lambda d: f"Recording paused while the sensitive tool {d.get('tool', '?')} ran",
    "recording_resumed": lambda d: "Recording resumed",
    "recording_silenced": lambda d: f"Redacted {d.get('speaker', '')} speech silenced in the recording".replace(
        "  ", " "
    ),
    "budget_wrap_up": lambda d: "The call's budget is nearly spent: the agent was asked to wrap up",
    "budget_hard_stop": lambda d: "The call's budget was spent: the call was ended",
    "engine": lambda d: f"Answered by the {d.get('engine', '?')} engine ({d.get('model', '?')})",
    "cost": lambda d: f"Cost: {usd(d.get('micros'))} ({d.get('kind', '?')})",
    "web_call": lambda d: "A call from the console's Talk to the agent page",
    "hangup_cancelled": lambda d: "A hang-up was cancelled: the caller spoke again",
    "wrap_up": lambda d: "The agent was asked to wrap up",
    "transcription_failed": lambda d: "A caller turn could not be transcribed",
}


def event_text(kind: str, detail: Mapping[str, Any]) -> str:
    """An event in plain words (the raw detail stays alongside for whoever needs it)."""
    words = _EVENT_WORDS.get(kind)
    if words is not None:
        try:
            return str(words(detail))
        except (KeyError, TypeError, ValueError):
            pass
    return kind.replace("_", " ").capitalize()
