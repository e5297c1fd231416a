"""A campaign run locally, end to end, through the local carrier (`switchboard carrier`): made over the REST
API, its contacts imported as CSV, started; the in-process dialer decides and dials each contact through the
carrier's Calls API; the carrier rings the people of its people file and carries out the server's TwiML on a
real media stream (the person's words told to the emulator), with signed status and AMD callbacks."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from app.auth.keys import Role
from app.carrier.people import People
from app.carrier.server import Carrier, CarrierConfig
from app.emulator.config import LOCAL_FUNCTION_CALLS, EmulatorConfig
from app.emulator.server import RealtimeEmulator
from app.main import create_app
from tests.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PUBLIC_BASE,
    DialerClock,
    archived,
    key_for,
    lawful_instant,
    make_settings,
    serve_asgi,
    until,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.e2e]

DANA, SAM, LEE, MAX, PAT = "+12125550101", "+12125550102", "+12125550103", "+12125550105", "+12125550106"
DESK = "+12125550199"  # TRANSFER_NUMBER: where a person asking for a person is put through
# Lines of distinct lengths, said at different moments: the emulator tells apart the words of concurrent calls
# by their length and timing (app.emulator.said).
DANA_SAYS = ["Hi, yes, this is Dana speaking.", "Thursday morning works for me, thank you very much."]
LEE_SAYS = ["Sorry, I was on the other line."]
PEOPLE = {
    DANA: {"kind": "person", "name": "Dana", "ring_s": 0.5, "lines": DANA_SAYS},
    SAM: {
        "kind": "voicemail",
        "name": "Sam",
        "ring_s": 0.5,
        "greeting": "Hi, this is Sam. I cannot take your call right now, please leave a message after the tone.",
    },
    LEE: ["busy", {"kind": "person", "name": "Lee", "ring_s": 0.5, "lines": LEE_SAYS}],
    MAX: {"kind": "person", "name": "Max", "ring_s": 1.5, "lines": ["Please stop calling me, I am not interested."]},
    PAT: {"kind": "person", "name": "Pat", "ring_s": 2.5, "lines": ["Representative, please."]},
}
CSV = (
    "phone;name;consent;consent_at\n"
    f"{DANA};Dana Reyes;express;2026-05-01T10:00:00Z\n"
    f"{SAM};Sam Okafor;express;2026-05-01T10:00:00Z\n"
    f"{LEE};Lee Chen;express;2026-05-01T10:00:00Z\n"
    f"{MAX};Max Berg;express;2026-05-01T10:00:00Z\n"
    f"{PAT};Pat Kim;express;2026-05-01T10:00:00Z\n"
)


async def test_a_local_campaign_dials_is_answered_talks_leaves_voicemail_retries_and_finishes(
    tmp_path: Path,
) -> None:
    clock = DialerClock(lawful_instant())
    # The emulator as scripts/dev runs it: asking not to be called calls opt_out, asking for a person transfers.
    async with RealtimeEmulator(EmulatorConfig(tts="synthetic", function_calls=dict(LOCAL_FUNCTION_CALLS))) as emulator:
        carrier = Carrier(CarrierConfig(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, people=People.from_json(PEOPLE),
                                        emulator=emulator.url, say_chars_per_s=200))  # fmt: skip
        async with serve_asgi(carrier.app) as carrier_base:
            settings = make_settings(tmp_path, realtime_url=emulator.url, twilio_api_base_url=carrier_base,
                                     transfer_number=DESK)  # fmt: skip
            key = await key_for(settings.effective_database_url, Role.admin)
            async with serve_asgi(create_app(settings, clock=clock)) as base:
                carrier.config.server = base  # the server's public URLs name PUBLIC_BASE; it listens here
                headers = {"Authorization": f"Bearer {key}"}
                async with httpx.AsyncClient(base_url=base + "/api/v1", headers=headers, timeout=30) as api:
                    made = await api.post("/campaigns", json={
                        "name": "Cleaning reminders", "purpose": "informational", "subject": "reminders",
                        "caller_id": "+12125550100", "instructions": "Remind them their cleaning is due.",
                        "max_attempts": 2, "retry_spacing_min": 1, "daily_attempt_limit": 2,
                    })  # fmt: skip
                    assert made.status_code == 201, made.text
                    cid = made.json()["id"]
                    sheet = ("contacts.csv", CSV.encode("cp1252"), "text/csv")
                    imported = await api.post(f"/campaigns/{cid}/contacts/csv", files={"file": sheet})
                    assert imported.status_code == 200, imported.text
                    assert imported.json()["created"] == 5, imported.json()
                    assert (await api.post(f"/campaigns/{cid}/start")).status_code == 200

                    async def attempts() -> list[dict[str, Any]]:
                        got = await api.get(f"/campaigns/{cid}/attempts", params={"limit": 100})
                        return list(got.json()["items"])

                    def by(items: list[dict[str, Any]], phone: str) -> list[dict[str, Any]]:
                        return sorted((a for a in items if a["phone"] == phone), key=lambda a: a["id"])

                    async def first_round_over() -> list[dict[str, Any]] | None:
                        items = await attempts()
                        ended = [a for a in items if a["ended_at"] is not None]
                        return items if len(ended) == 5 else None

                    first = await until(first_round_over, "every first attempt to end", 90, carrier.describe_all)
                    (dana,), (sam,), (lee,), (max_,), (pat,) = (by(first, n) for n in (DANA, SAM, LEE, MAX, PAT))
                    contacts = {c["phone"]: c for c in (await api.get(f"/campaigns/{cid}/contacts")).json()["items"]}
                    # Nobody is called again before the retry spacing has passed on the dialer's clock.
                    assert len(await attempts()) == 5
                    assert contacts[LEE]["status"] == "pending" and contacts[SAM]["status"] == "pending"
                    assert contacts[DANA]["status"] == "done"
                    clock.moved = timedelta(seconds=61)

                    async def all_done() -> bool:
                        got = (await api.get(f"/campaigns/{cid}/contacts")).json()["items"]
                        return all(c["status"] == "done" for c in got)

                    await until(all_done, "every contact to be done", 90, carrier.describe_all)
                    everything = await attempts()
                    decisions = (await api.get(f"/campaigns/{cid}/decisions", params={"limit": 100})).json()["items"]
                    progress = (await api.get(f"/campaigns/{cid}/progress")).json()
                    dnc = (await api.get(f"/dnc/{MAX}")).json()
                    others = [(await api.get(f"/dnc/{n}")).json()["internal"] for n in (DANA, SAM, LEE, PAT)]
                dana_call = await archived(base, settings, dana["call_sid"])
                lee_second = by(everything, LEE)[1]
                lee_call = await archived(base, settings, lee_second["call_sid"])
            calls = {c["sid"]: c for c in carrier.describe_all()}

    # The person who answered and spoke: a human, answered, and the transcript holds exactly their words.
    assert (dana["answered_by"], dana["disposition"]) == ("human", "answered"), dana
    assert [line["text"] for line in dana_call["transcript"] if line["speaker"] == "caller"] == DANA_SAYS
    assert any(line["speaker"] == "agent" for line in dana_call["transcript"])
    # The voicemail: the machine detected at the beep's end, the server's message left after the beep.
    assert (sam["answered_by"], sam["disposition"]) == ("machine_end_beep", "machine"), sam
    for attempt in by(everything, SAM):
        events = [e["event"] for e in calls[attempt["call_sid"]]["log"]]
        assert (
            events.index("greeting")
            < events.index("beep")
            < events.index("amd_callback")
            < events.index("message_left")
        ), events
        (left,) = [e for e in calls[attempt["call_sid"]]["log"] if e["event"] == "message_left"]
        assert "Acme Dental" in left["text"] and "2 1 2 5 5 5 0 1 0 0" in left["text"] and left["after_beep_s"] > 0
    assert len(by(everything, SAM)) == 2  # retried once (machine is retryable), then out of attempts
    # Busy, then answered on the retry: the first call never answered, the second spoke.
    assert lee["disposition"] == "busy" and "answered" not in [e["event"] for e in calls[lee["call_sid"]]["log"]]
    assert lee_second["disposition"] == "answered"
    assert [line["text"] for line in lee_call["transcript"] if line["speaker"] == "caller"] == LEE_SAYS
    # Every attempt was decided first, and the campaign is finished.
    assert {d["attempt_id"] for d in decisions if d["outcome"] == "allow"} >= {a["id"] for a in everything}
    assert len(everything) == 7 and progress["finished"] is True, progress
    # Saying "stop calling me" is an opt-out by voice: the number is on the internal do-not-call list.
    assert max_["disposition"] == "answered" and dnc["internal"] is True, dnc
    assert others == [False, False, False, False]  # nobody else's words were taken for Max's
    # Asking for a person: the server puts the live call through to the desk, and the carrier dials it.
    pat_log = calls[pat["call_sid"]]["log"]
    (dialed,) = [e for e in pat_log if e["event"] == "dial"]
    assert dialed["numbers"] == [DESK] and "updated" in [e["event"] for e in pat_log], pat_log


async def test_the_carrier_signs_its_requests_and_answers_the_official_client_as_twilio_does(
    tmp_path: Path,
) -> None:
    """The official twilio client creates, fetches, lists and hangs up a call on the carrier; the carrier's
    TwiML request is signed over the public URL the server gave."""
    import twilio.rest
    from twilio.base.exceptions import TwilioRestException
    from twilio.http.async_http_client import AsyncTwilioHttpClient

    seen: list[tuple[str, dict[str, str], str]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:  # the "server": records, answers TwiML
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        form = {k: v[-1] for k, v in __import__("urllib.parse").parse.parse_qs(body.decode()).items()}
        seen.append((scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else ""), form,
                     headers.get("x-twilio-signature", "")))  # fmt: skip
        twiml = b"<Response><Pause length='30'/></Response>"
        if scope["path"] == "/twilio/outbound":  # first a redirect by GET: its query string is signed too
            twiml = f"<Response><Redirect method='GET'>{PUBLIC_BASE}/twilio/next?step=2</Redirect></Response>".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/xml")]})
        await send({"type": "http.response.body", "body": twiml})

    people = People.from_json({"*": {"kind": "person", "ring_s": 0.2, "lines": ["Hello?"]}})
    carrier = Carrier(CarrierConfig(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, people=people, emulator=None))
    async with serve_asgi(app) as server, serve_asgi(carrier.app) as carrier_base:
        carrier.config.server = server
        client = twilio.rest.Client(ACCOUNT_SID, AUTH_TOKEN, http_client=AsyncTwilioHttpClient())
        client.api.base_url = carrier_base
        bad = twilio.rest.Client(ACCOUNT_SID, "wrong", http_client=AsyncTwilioHttpClient())
        bad.api.base_url = carrier_base
        try:
            call = await client.calls.create_async(
                to="+12125550123", from_="+12125550100", url=f"{PUBLIC_BASE}/twilio/outbound?attempt=7",
                status_callback=f"{PUBLIC_BASE}/twilio/status?attempt=7",
                status_callback_event=["initiated", "ringing", "answered", "completed"],
            )  # fmt: skip
            assert call.status == "queued" and call.sid.startswith("CA") and call.to == "+12125550123"

            async def answered() -> bool:
                return (await client.calls(call.sid).fetch_async()).status == "in-progress"

            await until(answered, "the call to be answered", timeout=10)
            listed = await client.calls.list_async(to="+12125550123")
            assert [c.sid for c in listed] == [call.sid]
            ended = await client.calls(call.sid).update_async(status="completed")
            assert ended.sid == call.sid

            async def completed() -> bool:
                return any(f.get("CallStatus") == "completed" for _, f, _ in seen)

            await until(completed, "the completed callback", timeout=10)
            with pytest.raises(TwilioRestException) as missing:
                await client.calls("CA" + "0" * 32).fetch_async()
            assert missing.value.status == 404 and missing.value.code == 20404
            with pytest.raises(TwilioRestException) as refused:
                await bad.calls.create_async(to="+12125550123", from_="+12125550100", url=f"{PUBLIC_BASE}/x")
            assert refused.value.status == 401 and refused.value.code == 20003
            with pytest.raises(TwilioRestException) as invalid:
                await client.calls.create_async(to="12", from_="+12125550100", url=f"{PUBLIC_BASE}/x")
            assert invalid.value.status == 400 and invalid.value.code == 21211
        finally:
            await carrier.aclose()
            await client.http_client.close()  # type: ignore[attr-defined]
            await bad.http_client.close()  # type: ignore[attr-defined]
    validator = RequestValidator(AUTH_TOKEN)
    statuses = [f["CallStatus"] for path, f, _ in seen if path.startswith("/twilio/status")]
    assert statuses == ["initiated", "ringing", "in-progress", "completed"]
    assert [int(f["SequenceNumber"]) for path, f, _ in seen if path.startswith("/twilio/status")] == [0, 1, 2, 3]
    for path, form, signature in seen:
        assert validator.validate(PUBLIC_BASE + path, form, signature), path
    (redirected,) = [path for path, _, _ in seen if path.startswith("/twilio/next")]
    assert "step=2" in redirected and f"CallSid={call.sid}" in redirected and "To=%2B12125550123" in redirected
    (fetch,) = [form for path, form, _ in seen if path.startswith("/twilio/outbound")]
    assert fetch["CallSid"] == call.sid and fetch["Direction"] == "outbound-api" and fetch["To"] == "+12125550123"
