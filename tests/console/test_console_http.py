"""The console over plain HTTP against the real server: sign-in, cookies, CSRF, roles, audit, live JSON."""

from __future__ import annotations

import csv
import html
import io
import re
import secrets
import time
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from app.adapters.call_store import CallStore
from app.auth.keys import Role
from app.console.sessions import CSRF_COOKIE, SECRET_FILE, SESSION_COOKIE
from tests.console.support import (
    BILLING_SID,
    BOOKING_SID,
    CUT_OFF_TEXT,
    TRANSFER_SID,
    audit_log,
    console_settings,
    csrf_token,
    forget,
    revoke,
    seed_calls,
    sign_in,
)
from tests.support import key_for, serve

pytestmark = pytest.mark.asyncio


def set_cookie(response: httpx.Response, name: str) -> SimpleCookie:
    """The Set-Cookie header of ``response`` that sets ``name``, parsed with its attributes."""
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        if name in cookie:
            return cookie
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers.get_list('set-cookie')}")


async def test_session_cookie_is_httponly_strict_expiring_and_holds_the_key_id_not_its_secret(
    tmp_path: Path,
) -> None:
    settings = console_settings(tmp_path, console_session_ttl_s=1234)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        form = await client.get("/console/login")
        csrf = set_cookie(form, CSRF_COOKIE)[CSRF_COOKIE]
        assert csrf["httponly"] and csrf["samesite"].lower() == "strict" and not csrf["secure"]
        signed_in = await client.post(
            "/console/login", data={"api_key": key, "csrf_token": csrf_token(form.text), "next": "/console"}
        )
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/console"
        morsel = set_cookie(signed_in, SESSION_COOKIE)[SESSION_COOKIE]
        assert morsel["httponly"] is True
        assert morsel["samesite"].lower() == "strict"
        assert morsel["path"] == "/console"
        assert morsel["max-age"] == "1234"
        assert not morsel["secure"]  # PUBLIC_BASE_URL is http
        secret = key.split("_", 2)[2]
        assert secret not in morsel.value and key.split("_")[1] not in morsel.value.split(".")[-1]
        assert (await client.get("/console")).status_code == 200

        # A cookie whose signature does not match is no session.
        forged = morsel.value[:-3] + ("AAA" if not morsel.value.endswith("AAA") else "BBB")
        client.cookies.set(SESSION_COOKIE, forged, path="/console")
        refused = await client.get("/console")
        assert refused.status_code == 303 and refused.headers["location"].startswith("/console/login")


async def test_cookies_are_secure_when_the_public_base_url_is_https(tmp_path: Path) -> None:
    settings = console_settings(tmp_path, public_base_url="https://console.example.test")
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        form = await client.get("/console/login")
        assert set_cookie(form, CSRF_COOKIE)[CSRF_COOKIE]["secure"] is True
        # httpx keeps Secure cookies off plain http, so the CSRF cookie goes along by hand.
        token_cookie = set_cookie(form, CSRF_COOKIE)[CSRF_COOKIE].value
        signed_in = await client.post(
            "/console/login",
            data={"api_key": key, "csrf_token": csrf_token(form.text)},
            headers={"Cookie": f"{CSRF_COOKIE}={token_cookie}"},
        )
    assert signed_in.status_code == 303
    morsel = set_cookie(signed_in, SESSION_COOKIE)[SESSION_COOKIE]
    assert morsel["secure"] is True and morsel["httponly"] is True and morsel["samesite"].lower() == "strict"


async def test_login_without_or_with_a_wrong_csrf_token_is_refused(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        form = await client.get("/console/login")
        token = csrf_token(form.text)
        missing = await client.post("/console/login", data={"api_key": key})
        wrong = await client.post("/console/login", data={"api_key": key, "csrf_token": token[:-2] + "xx"})
        for refused in (missing, wrong):
            assert refused.status_code == 403
            assert "Form refused" in refused.text
            assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")
        # The token alone is not enough either: it must match the cookie this browser was given.
        async with httpx.AsyncClient(base_url=base) as stranger:
            other = await stranger.post("/console/login", data={"api_key": key, "csrf_token": token})
        assert other.status_code == 403
        assert (await client.get("/console")).status_code == 303  # still signed out
        accepted = await client.post("/console/login", data={"api_key": key, "csrf_token": token})
        assert accepted.status_code == 303


async def test_logout_is_a_post_that_needs_the_session_csrf_token(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        await sign_in(client, key)
        page = await client.get("/console")
        token = csrf_token(page.text)
        assert (await client.get("/console/logout")).status_code == 405
        assert (await client.post("/console/logout", data={})).status_code == 403
        assert (await client.post("/console/logout", data={"csrf_token": "not-it"})).status_code == 403
        assert (await client.get("/console")).status_code == 200  # the refused logouts changed nothing
        out = await client.post("/console/logout", data={"csrf_token": token})
        assert out.status_code == 303 and out.headers["location"] == "/console/login?reason=signed_out"
        after = await client.get("/console")
    assert after.status_code == 303 and after.headers["location"].startswith("/console/login")


async def test_a_copy_of_the_session_cookie_stops_working_once_its_session_signed_out(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        await sign_in(client, key)
        token = csrf_token((await client.get("/console")).text)
        copied = client.cookies[SESSION_COOKIE]  # another tab, or a cookie taken from this browser
        out = await client.post("/console/logout", data={"csrf_token": token})
        assert out.status_code == 303
        async with httpx.AsyncClient(base_url=base, cookies={SESSION_COOKIE: copied}) as other:
            replayed = await other.get("/console")
            json_replayed = await other.get("/console/live.json")
        # A new sign-in is a new session, unaffected by the old one's sign-out.
        assert (await sign_in(client, key)).status_code == 303
        fresh = await client.get("/console")
    assert replayed.status_code == 303 and replayed.headers["location"].startswith("/console/login")
    assert json_replayed.status_code in (303, 401)
    assert fresh.status_code == 200


async def test_failed_sign_ins_from_one_address_are_throttled(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        failures = [(await sign_in(client, f"sb_guess{i:04d}_nope")).status_code for i in range(20)]
        throttled = await sign_in(client, key)  # even the right key waits now
        api = await client.get("/api/v1/calls", headers={"Authorization": f"Bearer {key}"})  # one budget for both
    assert failures == [401] * 20
    assert throttled.status_code == 429 and "Too many failed sign-ins" in throttled.text
    assert api.status_code == 429


async def test_a_revoked_key_is_signed_out_at_its_next_request_and_cannot_sign_in(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        assert (await sign_in(client, key)).status_code == 303
        assert (await client.get("/console")).status_code == 200
        await revoke(settings, key)
        signed_out = await client.get("/console")
        assert signed_out.status_code == 303
        assert signed_out.headers["location"] == "/console/login?next=/console&reason=revoked"
        assert f'{SESSION_COOKIE}=""' in signed_out.headers["set-cookie"]  # the session cookie is dropped
        notice = await client.get(signed_out.headers["location"])
        assert "Your API key was revoked, so you were signed out." in notice.text
        again = await sign_in(client, key)
    assert again.status_code == 401
    assert "This API key was revoked on" in again.text


async def test_unknown_and_malformed_keys_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    wrong_secret = key[: key.rindex("_") + 1] + "not-the-secret"
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        unknown = await sign_in(client, "sb_0123456789ab_" + "x" * 43)
        guessed = await sign_in(client, wrong_secret)
        malformed = await sign_in(client, "hunter2")
        still_out = await client.get("/console")
    assert unknown.status_code == guessed.status_code == malformed.status_code == 401
    assert "This API key is not known." in unknown.text and "This API key is not known." in guessed.text
    assert "That is not a Switchboard API key." in malformed.text
    assert still_out.status_code == 303


async def test_ops_without_the_transcripts_grant_sees_the_list_but_no_search_and_a_403_call_page(
    tmp_path: Path,
) -> None:
    settings = console_settings(tmp_path)
    await seed_calls(settings)
    ops = await key_for(settings.effective_database_url, Role.ops)
    ops_granted = await key_for(settings.effective_database_url, Role.ops, grants=("transcripts",))
    async with serve(settings) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            await sign_in(client, ops)
            listing = await client.get("/console")
            searched = await client.get("/console", params={"q": "cleaning"})
            call_page = await client.get(f"/console/calls/{BOOKING_SID}")
            exported = await client.get(f"/console/calls/{BOOKING_SID}/export", params={"format": "csv"})
            search_export = await client.get("/console/export.csv")
            live = await client.get("/console/live")
            live_json = await client.get("/console/live.json")
        async with httpx.AsyncClient(base_url=base) as client:
            await sign_in(client, ops_granted)
            granted_listing = await client.get("/console")
            granted_call = await client.get(f"/console/calls/{BOOKING_SID}")

    assert listing.status_code == 200
    for sid in (BOOKING_SID, BILLING_SID, TRANSFER_SID):
        assert sid in listing.text
    assert 'id="q"' not in listing.text and "Phrase said in the call" not in listing.text
    assert f'href="/console/calls/{BOOKING_SID}"' not in listing.text and "Export CSV" not in listing.text
    assert 'href="/console/live"' not in listing.text
    # A search typed into the URL is left out, and said so; no transcript line leaks.
    assert "Phrase search needs the transcripts grant" in searched.text
    assert "book a cleaning" not in searched.text and BILLING_SID in searched.text
    for forbidden in (call_page, exported, search_export, live):
        assert forbidden.status_code == 403
        assert "Not allowed: transcripts" in forbidden.text
        assert "role ops" in forbidden.text and "'transcripts' grant" in html.unescape(forbidden.text)
    assert CUT_OFF_TEXT not in call_page.text
    assert live_json.status_code == 403

    assert 'id="q"' in granted_listing.text and f'href="/console/calls/{BOOKING_SID}"' in granted_listing.text
    assert granted_call.status_code == 200 and CUT_OFF_TEXT in granted_call.text


async def test_search_shows_matching_lines_with_the_words_highlighted_and_markup_escaped(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    await seed_calls(settings)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        await sign_in(client, key)
        bill = await client.get("/console", params={"q": "bill"})
        cleaning = await client.get("/console", params={"q": "cleaning", "direction": "inbound"})
        bad = await client.get("/console", params={"q": "-cleaning"})
    assert bill.status_code == 200
    assert BILLING_SID in bill.text and BOOKING_SID not in bill.text
    assert "<script>alert(1)</script>" not in bill.text
    assert "Why is my &lt;script&gt;alert(1)&lt;/script&gt; <mark>bill</mark> so high?" in bill.text
    assert BOOKING_SID in cleaning.text and BILLING_SID not in cleaning.text
    assert "book a <mark>cleaning</mark> next week." in cleaning.text
    assert "booked for your <mark>cleaning</mark>." in cleaning.text
    assert 'href="/console/export.csv?direction=inbound&amp;q=cleaning"' in cleaning.text
    assert bad.status_code == 400 and "the search has no word to look for" in bad.text


async def test_the_next_page_link_carries_the_filters_and_the_cursor(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    await seed_calls(settings)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        await sign_in(client, key)
        first = await client.get("/console", params={"direction": "inbound", "limit": "1"})
        link = re.search(r'<a href="(/console\?[^"]+)" rel="next">Next page</a>', first.text)
        assert link is not None, first.text
        second = await client.get(html.unescape(link.group(1)))
    assert BILLING_SID in first.text and BOOKING_SID not in first.text
    assert html.unescape(link.group(1)).startswith("/console?direction=inbound&limit=1&cursor=")
    assert BOOKING_SID in second.text and BILLING_SID not in second.text and TRANSFER_SID not in second.text
    assert 'rel="next"' not in second.text


async def test_call_page_shows_the_header_timeline_with_the_cut_off_line_and_sections(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    await seed_calls(settings)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        await sign_in(client, key)
        page = await client.get(f"/console/calls/{BOOKING_SID}")
        transferred = await client.get(f"/console/calls/{TRANSFER_SID}")
        missing = await client.get("/console/calls/CA" + "0" * 32)
    assert page.status_code == 200
    body = page.text
    for expected in ("+15005550006", "+15005550001", "inbound", "completed", "01:14", "$0.1234", "2026-01-list"):
        assert expected in body
    assert "420 ms / 900 ms" in body  # latency p50 / p95 of 380, 420, 900
    # Per-turn stages (nearest-rank p50 of two turns: the first), in the order a turn reaches them
    assert ("final transcript 300 ms · first chat token 650 ms · first speech bytes 860 ms · "
            "first audio to the caller 870 ms") in body  # fmt: skip
    lines = re.findall(r'<li class="line ([a-z ]+)" data-offset-ms="\d+">', body)
    assert lines == ["agent", "caller", "agent interrupted", "caller", "agent"]
    cut = body[body.index('<li class="line agent interrupted"') :]
    cut = cut[: cut.index("</li>")]
    assert "00:07" in cut and CUT_OFF_TEXT in cut and "cut off" in cut and 'class="visually-hidden"' in cut
    assert "01:01" in body  # the last line's offset, mm:ss
    assert f'href="/console/calls/{BOOKING_SID}/export?format=csv"' in body
    assert f'href="/console/calls/{BOOKING_SID}/export?format=json"' in body
    assert "transferred (asked for a person)" in transferred.text and "outbound" in transferred.text
    assert missing.status_code == 404 and "No archived call" in missing.text


async def test_console_reads_and_exports_are_audited_via_console(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    await seed_calls(settings)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    key_id = key.split("_")[1]
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        await sign_in(client, key)
        assert (await client.get("/console")).status_code == 200  # a plain listing shows no transcript
        assert (await client.get("/console", params={"q": "cleaning"})).status_code == 200
        assert (await client.get(f"/console/calls/{BOOKING_SID}")).status_code == 200
        csv_export = await client.get(f"/console/calls/{BOOKING_SID}/export", params={"format": "csv"})
        json_export = await client.get(f"/console/calls/{BOOKING_SID}/export", params={"format": "json"})
        search_export = await client.get("/console/export.csv", params={"q": "cleaning"})

    rows = list(csv.DictReader(io.StringIO(csv_export.text)))
    assert [r["interrupted"] for r in rows] == ["False", "False", "True", "False", "False"]
    assert rows[2]["text"] == CUT_OFF_TEXT
    assert csv_export.headers["content-disposition"] == f'attachment; filename="{BOOKING_SID}.csv"'
    assert json_export.json()["call_sid"] == BOOKING_SID
    exported = list(csv.DictReader(io.StringIO(search_export.text)))
    assert [r["call_sid"] for r in exported] == [BOOKING_SID]

    entries = await audit_log(settings)
    assert {e.via for e in entries} == {"console"}
    assert {e.key_id for e in entries} == {key_id} and {e.role for e in entries} == {"supervisor"}
    assert [(e.action, e.target) for e in entries] == [
        ("login", None),
        ("search", None),
        ("read_call", BOOKING_SID),
        ("export_call", BOOKING_SID),
        ("export_call", BOOKING_SID),
        ("export_search", None),
    ]
    assert entries[1].detail == {"filters": {"q": "cleaning"}, "results": 1}
    assert [e.detail.get("format") for e in entries[3:5]] == ["csv", "json"]
    assert entries[5].detail["filters"] == {"q": "cleaning"} and entries[5].detail["format"] == "csv"


async def test_sessions_survive_a_restart_with_the_secret_kept_in_data_dir(tmp_path: Path) -> None:
    settings = console_settings(tmp_path)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        await sign_in(client, key)
        cookie = client.cookies[SESSION_COOKIE]
    secret_file = tmp_path / SECRET_FILE
    assert secret_file.stat().st_mode & 0o777 == 0o600
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        client.cookies.set(SESSION_COOKIE, cookie, path="/console")
        assert (await client.get("/console")).status_code == 200
    # Another secret (as CONSOLE_SECRET on every node) does not accept that cookie.
    other = console_settings(tmp_path, console_secret="x" * 40)
    async with serve(other) as base, httpx.AsyncClient(base_url=base) as client:
        client.cookies.set(SESSION_COOKIE, cookie, path="/console")
        assert (await client.get("/console")).status_code == 303


async def test_live_json_shows_a_call_put_into_redis_through_the_call_store(tmp_path: Path, redis_url: str) -> None:
    settings = console_settings(tmp_path, redis_url=redis_url)
    key = await key_for(settings.effective_database_url, Role.supervisor)
    sid = "CA" + secrets.token_hex(16)  # a fresh call: the Redis server outlives this test
    redis = Redis.from_url(redis_url)
    store = CallStore(redis)
    try:
        await store.put_meta(
            sid,
            {"call_sid": sid, "direction": "inbound", "from": "+15005550009", "to": "+15005550001",
             "started_at_ms": 1_772_463_845_000, "status": "in-progress"},
        )  # fmt: skip
        epoch, _ = await store.acquire_lease(sid, node="test-node", ttl_ms=60_000, now_ms=_now_ms(), takeover=False)
        await store.put_line(
            sid, f"{epoch:06d}-000001", {"seq": 1, "speaker": "agent", "text": "Hello, Acme Dental.", "offset_ms": 40}
        )
        await store.put_line(
            sid,
            f"{epoch:06d}-000002",
            {"seq": 2, "speaker": "agent", "text": "We open at", "offset_ms": 3_000, "interrupted": True},
        )
        async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/console/live.json")).status_code == 401  # no session
            await sign_in(client, key)
            live = (await client.get("/console/live.json")).json()
            page = await client.get("/console/live")
            await store.finish(sid)
            after = (await client.get("/console/live.json")).json()
            # Another session (another tab, another supervisor) is audited on its own.
            async with httpx.AsyncClient(base_url=base) as other:
                await sign_in(other, key)
                await other.get("/console/live.json")
    finally:
        await forget(store, sid)
        await redis.aclose()
    call = next(c for c in live["calls"] if c["call_sid"] == sid)
    assert call["direction"] == "inbound" and call["from"] == "+15005550009" and call["stale"] is False
    assert call["lines"] == [
        {"offset_ms": 40, "speaker": "agent", "text": "Hello, Acme Dental.", "interrupted": False},
        {"offset_ms": 3_000, "speaker": "agent", "text": "We open at", "interrupted": True},
    ]
    assert "Hello, Acme Dental." in page.text and '<li class="line agent interrupted">' in page.text
    assert sid not in {c["call_sid"] for c in after["calls"]}
    entries = await audit_log(settings)
    # The JSON the page polls is audited too: once per session per minute, naming the calls watched.
    watched = [e for e in entries if e.action == "read_live"]
    assert [(e.action, e.via) for e in watched] == [("read_live", "console")] * 2
    assert sid in watched[0].detail["calls"]


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_call_page_shows_the_summary_extraction_and_each_deliverys_attempts(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import update

    from app.archive.models import Call
    from app.db import make_engine, make_sessionmaker
    from app.results.models import WebhookAttempt, WebhookDelivery

    settings = console_settings(tmp_path)
    await seed_calls(settings)
    now = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    engine = make_engine(settings.effective_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await session.execute(update(Call).where(Call.call_sid == BOOKING_SID).values(
                results_status="done", summary="The caller booked a <b>cleaning</b> for Tuesday.",
                extraction={"callback_requested": False, "reason": "book a cleaning"}, results_at=now))  # fmt: skip
            await session.execute(update(Call).where(Call.call_sid == BILLING_SID).values(
                results_status="skipped", results_detail="budget: the day's cap is spent"))  # fmt: skip
            delivery = WebhookDelivery(call_sid=BOOKING_SID, url="https://crm.example.test/hook", body="{}",
                                       status="delivered", attempts=2, created_at=now, first_due_at=now, next_at=now,
                                       delivered_at=now)  # fmt: skip
            session.add(delivery)
            await session.flush()
            session.add_all([
                WebhookAttempt(delivery_id=delivery.id, at=now, status_code=503, response="busy", duration_ms=12),
                WebhookAttempt(delivery_id=delivery.id, at=now, status_code=200, response="ok", duration_ms=9),
            ])  # fmt: skip
    finally:
        await engine.dispose()
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        await sign_in(client, key)
        booking = (await client.get(f"/console/calls/{BOOKING_SID}")).text
        billing = (await client.get(f"/console/calls/{BILLING_SID}")).text
    assert "The caller booked a &lt;b&gt;cleaning&lt;/b&gt; for Tuesday." in booking  # escaped, not markup
    assert "<dt>callback_requested</dt><dd><code>false</code></dd>" in booking
    assert "<dt>reason</dt><dd>book a cleaning</dd>" in booking
    assert "https://crm.example.test/hook" in booking and ": 503 <code>busy</code>" in booking
    assert "No results (skipped): budget: the day&#39;s cap is spent." in billing
    assert "<audio" not in booking and "Recording" not in booking  # not recorded: no player


async def test_a_dialed_call_shows_its_campaign_and_contact_by_name_and_its_events_in_words(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import update

    from app.archive.models import Call
    from app.db import make_engine, make_sessionmaker
    from app.dialer.models import Attempt, Campaign, Contact

    settings = console_settings(tmp_path)
    await seed_calls(settings)
    now = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    engine = make_engine(settings.effective_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            campaign = Campaign(name="March recalls", purpose="informational", subject="recall",
                                caller_id="+12125550100", created_at=now, updated_at=now)  # fmt: skip
            session.add(campaign)
            await session.flush()
            contact = Contact(campaign_id=campaign.id, phone="+15005550001", name="Ada Lovelace", location={},
                              created_at=now)  # fmt: skip
            session.add(contact)
            await session.flush()
            session.add(Attempt(campaign_id=campaign.id, contact_id=contact.id, phone=contact.phone, subject="recall",
                                purpose="informational", placed_at=now, call_sid=BILLING_SID))  # fmt: skip
            await session.execute(update(Call).where(Call.call_sid == BILLING_SID).values(campaign_id=campaign.id))
    finally:
        await engine.dispose()
    key = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        await sign_in(client, key)
        listing = (await client.get("/console")).text
        page = (await client.get(f"/console/calls/{BILLING_SID}")).text
        booking = (await client.get(f"/console/calls/{BOOKING_SID}")).text
    assert "· March recalls" in listing and "(Ada Lovelace)" in listing
    assert "<dt>Campaign</dt><dd>March recalls" in page and "<dt>Contact</dt><dd>Ada Lovelace</dd>" in page
    assert "The caller spoke over the agent" in booking  # the barge-in, in words (its raw detail alongside)


async def test_the_budget_page_shows_caps_and_todays_spend_to_admins_only(tmp_path: Path) -> None:
    settings = console_settings(tmp_path, budget_per_day_usd=25.0, budget_per_call_usd=1.5)
    admin = await key_for(settings.effective_database_url, Role.admin)
    ops = await key_for(settings.effective_database_url, Role.ops)
    async with serve(settings) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            await sign_in(client, admin)
            page = await client.get("/console/budget")
        async with httpx.AsyncClient(base_url=base) as client:
            await sign_in(client, ops)
            refused = await client.get("/console/budget")
    assert page.status_code == 200
    assert "<dt>Daily cap</dt><dd>$25.00</dd>" in page.text and "<dt>Per-call cap</dt><dd>$1.50</dd>" in page.text
    assert "Spent today" in page.text and "Held for closing lines" in page.text
    assert refused.status_code == 403 and "admins only" in refused.text
