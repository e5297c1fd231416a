"""The console's pure parts: the filter form, what pages show, and the session cookie codec."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from app.console.filters import read_filter_form
from app.console.present import clock, highlight, opt_outs, search_words, transfers, usd
from app.console.sessions import SECRET_FILE, SessionCodec, load_secret, tokens_match
from app.settings import Settings


def test_blank_fields_are_no_filter_and_filled_ones_become_the_call_filter() -> None:
    assert read_filter_form({name: "" for name in ("q", "number", "min_cost_usd")}, allow_search=True).filters == (
        read_filter_form({}, allow_search=True).filters
    )
    form = read_filter_form(
        {
            "started_from": "2026-03-02T15:00", "started_to": "2026-03-03T00:00", "direction": "outbound",
            "number": "+15005550006", "campaign": "7", "disposition": "transferred", "min_duration_s": "1.5",
            "max_duration_s": "90", "min_cost_usd": "0.01", "max_cost_usd": "2", "transferred": "yes",
            "opted_out": "no", "q": ' "a cleaning" ',
        },
        allow_search=True,
    )  # fmt: skip
    f = form.filters
    assert form.errors == []
    assert f.started_from == datetime(2026, 3, 2, 15, 0, tzinfo=UTC) and f.started_to == datetime(
        2026, 3, 3, tzinfo=UTC
    )
    assert (f.direction, f.number, f.campaign_id, f.dispositions) == ("outbound", "+15005550006", 7, ("transferred",))
    assert (f.min_duration_ms, f.max_duration_ms, f.min_cost_micros, f.max_cost_micros) == (
        1500,
        90_000,
        10_000,
        2_000_000,
    )
    assert (f.transferred, f.opted_out, f.q) == (True, False, '"a cleaning"')
    assert form.query(cursor="abc").endswith("&q=%22a+cleaning%22&cursor=abc")


def test_unusable_filter_values_are_named_and_left_out() -> None:
    form = read_filter_form(
        {"number": "555-1234", "min_cost_usd": "-1", "max_duration_s": "nan", "disposition": "happy",
         "started_from": "yesterday", "campaign": "0", "transferred": "maybe"},
        allow_search=True,
    )  # fmt: skip
    assert form.filters == read_filter_form({}, allow_search=True).filters
    assert len(form.errors) == 7
    assert any(e.startswith("Number: an E.164 number") for e in form.errors)
    assert any(e.startswith("Disposition: one of failed, opted_out") for e in form.errors)


def test_a_search_is_dropped_and_said_so_for_a_key_that_may_not_read_transcripts() -> None:
    form = read_filter_form({"q": "cleaning", "direction": "inbound"}, allow_search=False)
    assert form.filters.q is None and form.filters.direction == "inbound" and form.values["q"] == ""
    assert form.errors == ["Phrase search needs the transcripts grant; the search was left out."]


def test_highlight_marks_searched_words_and_escapes_everything_else() -> None:
    words = search_words('booking "next week" -tuesday')
    out = highlight("<b>Book</b> it next week, not Tuesday & booked", words)
    assert str(out) == (
        "&lt;b&gt;<mark>Book</mark>&lt;/b&gt; it <mark>next</mark> <mark>week</mark>, not Tuesday &amp; <mark>booked</mark>"
    )
    assert str(highlight("<i>x</i>", frozenset())) == "&lt;i&gt;x&lt;/i&gt;"
    assert search_words("-only") == frozenset()  # a search with nothing to find highlights nothing


def test_offsets_money_and_call_sections() -> None:
    assert (clock(0), clock(7_999), clock(61_500), clock(3_725_000), clock(None)) == (
        "00:00", "00:07", "01:01", "1:02:05", "\u2013",
    )  # fmt: skip
    assert usd(123_400) == "$0.1234" and usd(None) == "\u2013"
    events = [
        {"kind": "call_ending", "detail": {"action": "TransferCall", "reason": "asked"}, "offset_ms": 5_000},
        {"kind": "call_ending", "detail": {"action": "HangUp", "reason": "bye"}, "offset_ms": 6_000},
        {"kind": "opted_out", "detail": {"phone": "+15005550006", "source": "dtmf", "reason": "9"}, "offset_ms": 7},
    ]
    assert transfers(events) == [{"offset_ms": 5_000, "to": None, "reason": "asked"}]
    assert [(o["phone"], o["recorded"]) for o in opt_outs(events)] == [("+15005550006", True)]


def test_a_session_cookie_expires_and_cannot_be_forged_or_moved_between_secrets() -> None:
    codec = SessionCodec(b"k" * 40, ttl_s=60, secure=False)
    session = codec.new_session("abc123", now=1_000.0)
    cookie = codec.dump_session(session)
    assert codec.load_session(cookie, now=1_059.0) == session
    assert codec.load_session(cookie, now=1_060.0) is None  # expired after ttl_s
    # Tamper with the signature's first character: every bit of it counts (the last character of a
    # base64 text may carry padding bits only, so changing it can leave the bytes as they were).
    head, _, signature = cookie.rpartition(".")
    forged = f"{head}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    assert codec.load_session(forged, now=1_000.0) is None
    assert SessionCodec(b"o" * 40, ttl_s=60, secure=False).load_session(cookie, now=1_000.0) is None
    assert codec.load_session("garbage", now=1_000.0) is None and codec.load_session(None, now=1_000.0) is None
    token, login_cookie = codec.new_login_token(now=1_000.0)
    assert codec.login_token(login_cookie, now=1_000.0) == token
    assert codec.login_token(cookie, now=1_000.0) is None  # a session cookie is no login token (salts differ)
    assert tokens_match(token, token) and not tokens_match(token, "") and not tokens_match(None, token)


def test_the_secret_is_made_once_in_data_dir_even_by_racing_processes(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(load_secret(settings))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and len(results[0]) >= 32
    path = tmp_path / SECRET_FILE
    assert path.read_text().strip().encode() == results[0]
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [SECRET_FILE]  # no temporary files left
    assert load_secret(Settings(data_dir=tmp_path, console_secret="s" * 40)) == b"s" * 40
