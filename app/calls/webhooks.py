"""Twilio voice webhooks: signed form POSTs answered with TwiML."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import structlog
from fastapi import APIRouter, Request, Response
from redis.exceptions import RedisError
from starlette.datastructures import FormData

from app.adapters.twilio_rest import TwilioError
from app.adapters.twilio_signatures import SETTINGS_HEADER
from app.archive.service import record_call_event
from app.budget.policy import Action
from app.core import twiml
from app.core.stream_token import RESUME, STREAM, issue_stream_token
from app.dialer import outcomes
from app.dialer.models import Campaign
from app.problems import ProblemError
from app.runtime import Runtime

router = APIRouter(prefix="/twilio", tags=["twilio"])
log = structlog.get_logger()

TWIML = "application/xml"
BUDGET_MESSAGE = "Thank you for calling. Our automated assistant is not available right now."
APOLOGY = "We're sorry, we could not continue this call. Please call back in a moment. Goodbye."
HANDOFF_APOLOGY = "We're sorry, we are having technical trouble. Let me connect you with a colleague."


def public_url(rt: Runtime, request: Request) -> str:
    """The URL Twilio signed: our public base + the path (+ query), not the proxy-facing URL."""
    url = rt.settings.public_base_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    return url


async def signed_form(request: Request) -> FormData:
    rt: Runtime = request.app.state.runtime
    form = await request.form()
    signature = request.headers.get("x-twilio-signature", "")
    settings_header = request.headers.get(SETTINGS_HEADER)
    if not rt.twilio_signatures.validate(public_url(rt, request), form, signature, settings_header):
        rt.metrics.webhooks_rejected.labels(request.url.path).inc()
        raise ProblemError(
            403, "Invalid Twilio signature", "X-Twilio-Signature does not match this request's URL and parameters."
        )
    return form


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def stream_twiml(rt: Runtime, *, call_sid: str, direction: str, kind: str = STREAM) -> str:
    token = issue_stream_token(
        secret=rt.settings.stream_secret,
        call_sid=call_sid,
        now_s=time.time(),
        ttl_s=rt.settings.stream_token_ttl_s,
        kind=kind,
    )
    params = {"token": token, "direction": direction}
    return twiml.connect_stream(
        stream_url=rt.settings.public_ws_base + "/twilio/media",
        parameters=params,
        resume_url=rt.settings.public_base_url + "/twilio/resume",
    )


@router.post("/voice")
async def voice(request: Request) -> Response:
    """Incoming call: remember it and connect its audio to our media socket."""
    rt: Runtime = request.app.state.runtime
    form = await signed_form(request)
    call_sid = _field(form, "CallSid")
    if not call_sid.startswith("CA"):
        raise ProblemError(400, "Missing CallSid", "The webhook carried no CallSid.")
    direction = "inbound" if _field(form, "Direction") in ("", "inbound") else "outbound"
    try:
        verdict = await rt.budget.admit(now=datetime.now(UTC), call_sid=call_sid, direction=direction)
    except (RedisError, OSError) as exc:  # the ledger is away: take the call (callers first), say so
        log.warning("budget.unavailable", call_sid=call_sid, error=repr(exc))
        verdict = None
    if verdict is not None and verdict.action is not Action.ok:
        # The day's budget is spent: a polite message, then a person or goodbye; no Realtime session.
        number = rt.settings.transfer_number
        doc = (
            twiml.apologise_and_dial(BUDGET_MESSAGE, number) if number else twiml.apologise_and_hang_up(BUDGET_MESSAGE)
        )
        return Response(doc, media_type=TWIML)
    try:
        await rt.call_store.put_meta(
            call_sid,
            {
                "call_sid": call_sid,
                "direction": direction,
                "from": _field(form, "From"),
                "to": _field(form, "To"),
                "webhook_at": datetime.now(UTC).isoformat(),
            },
        )
    except (RedisError, OSError) as exc:  # live state away: the stream still admits the call
        log.warning("call.live_state_unavailable", call_sid=call_sid, error=repr(exc))
    log.info("call.webhook", call_sid=call_sid, direction=direction)
    return Response(stream_twiml(rt, call_sid=call_sid, direction=direction), media_type=TWIML)


@router.post("/resume")
async def resume(request: Request) -> Response:
    """Twilio runs this after our server closes the stream. The resilience issue resumes the call here."""
    rt: Runtime = request.app.state.runtime
    form = await signed_form(request)
    call_sid = _field(form, "CallSid")
    try:
        meta = await rt.call_store.get_meta(call_sid) if call_sid else {}
    except (RedisError, OSError) as exc:
        log.warning("call.resume_without_live_state", call_sid=call_sid, error=repr(exc))
        meta = {}
    if resumable(meta) and not await _lease_free(rt, call_sid):
        # A stream still drives this call (it renews the lease): no second stream gets a token for it.
        log.warning("call.resume_refused_stream_active", call_sid=call_sid)
        raise ProblemError(409, "Call has an active stream", "This call's media stream is live; it cannot be resumed.")
    return Response(resume_twiml(rt, call_sid, meta), media_type=TWIML)


LEASE_POLL_S = 0.2


async def _lease_free(rt: Runtime, call_sid: str) -> bool:
    """Wait (up to the lease's TTL and a second) for the call's lease to be released, as a handed-over
    or lost stream's node does at once, or to lapse, as a dead node's does. Redis away: free."""
    deadline = time.monotonic() + rt.settings.lease_ttl_s + 1.0
    while True:
        try:
            if await rt.call_store.lease_holder(call_sid) is None:
                return True
        except (RedisError, OSError):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(LEASE_POLL_S)


def resumable(meta: dict[str, object]) -> bool:
    """Live state of a call that a new stream would take over (not ended, no end requested)."""
    return bool(meta) and not meta.get("end_requested") and meta.get("status") != "ended"


def resume_twiml(rt: Runtime, call_sid: str, meta: dict[str, object]) -> str:
    """What a call whose stream closed does next, from its live state."""
    end = meta.get("end_requested")
    log.info("call.resume_requested", call_sid=call_sid, end_requested=end, status=meta.get("status"))
    transfer_to = meta.get("transfer_to")
    if end == "transfer" and transfer_to:
        return twiml.dial(str(transfer_to))
    if end == "hangup":
        return twiml.hang_up()
    if end == "upstream_failed":
        return (
            twiml.apologise_and_dial(HANDOFF_APOLOGY, str(transfer_to))
            if transfer_to
            else twiml.apologise_and_hang_up(APOLOGY)
        )
    if not resumable(meta):
        return twiml.apologise_and_hang_up(APOLOGY)
    # The stream was lost (a node died, a network blip): a new stream on any node takes the call over.
    direction = str(meta.get("direction") or "inbound")
    return stream_twiml(rt, call_sid=call_sid, direction=direction, kind=RESUME)


@router.post("/status", status_code=204)
async def status(request: Request) -> Response:
    """Call status callbacks: recorded as call events."""
    rt: Runtime = request.app.state.runtime
    form = await signed_form(request)
    call_sid = _field(form, "CallSid")
    keep = ("CallStatus", "CallDuration", "Direction", "Timestamp", "SequenceNumber", "AnsweredBy", "ErrorCode")
    detail = {k: _field(form, k) for k in keep if _field(form, k)}
    now = rt.clock()
    await record_call_event(rt.sessionmaker, call_sid=call_sid, kind="status_callback", detail=detail, at=now)
    async with rt.sessionmaker() as session:
        attempt = await outcomes.attempt_for(session, attempt_id=request.query_params.get("attempt"), call_sid=call_sid)
        if attempt is not None:
            if attempt.call_sid is None:
                attempt.call_sid = call_sid
            status = _field(form, "CallStatus")
            await outcomes.record_status(session, attempt=attempt, status=status, answered_by=None, now=now)
            await session.commit()
    return Response(status_code=204)


@router.post("/outbound")
async def outbound(request: Request) -> Response:
    """An outbound call was answered: connect it to the media socket with its attempt."""
    rt: Runtime = request.app.state.runtime
    form = await signed_form(request)
    call_sid = _field(form, "CallSid")
    attempt_id = request.query_params.get("attempt", "")
    async with rt.sessionmaker() as session:
        attempt = await outcomes.attempt_for(session, attempt_id=attempt_id, call_sid=call_sid)
    if attempt is None:
        raise ProblemError(404, "Unknown attempt", f"No dial attempt {attempt_id!r} for call {call_sid}.")
    await rt.call_store.put_meta(
        call_sid,
        {
            "call_sid": call_sid,
            "direction": "outbound",
            "from": _field(form, "From"),
            "to": attempt.phone,
            "attempt_id": attempt.id,
            "campaign_id": attempt.campaign_id,
            "webhook_at": datetime.now(UTC).isoformat(),
        },
    )
    log.info("call.outbound_answered", call_sid=call_sid, attempt=attempt.id)
    return Response(stream_twiml(rt, call_sid=call_sid, direction="outbound"), media_type=TWIML)


@router.post("/amd", status_code=204)
async def answering_machine(request: Request) -> Response:
    """Async AMD result: a machine gets the campaign's voicemail (or a hang-up), a fax a hang-up; a
    person, nothing."""
    rt: Runtime = request.app.state.runtime
    form = await signed_form(request)
    call_sid = _field(form, "CallSid")
    answered_by = _field(form, "AnsweredBy")
    async with rt.sessionmaker() as session:
        attempt = await outcomes.attempt_for(session, attempt_id=request.query_params.get("attempt"), call_sid=call_sid)
        if attempt is None:
            return Response(status_code=204)
        attempt.answered_by = answered_by
        campaign = await session.get(Campaign, attempt.campaign_id)
        await session.commit()
    if campaign is None or not (answered_by.startswith("machine") or answered_by == "fax"):
        return Response(status_code=204)
    try:
        if answered_by == "fax":  # nobody will hear a word: the line is freed (and counted as a machine)
            await rt.twilio.hangup(call_sid)
        elif campaign.machine_action == "voicemail":
            await rt.twilio.update_twiml(call_sid, twiml.voicemail(voicemail_text(rt, campaign.caller_id)))
        else:
            await rt.twilio.hangup(call_sid)
    except TwilioError as exc:
        log.warning("call.amd_action_failed", call_sid=call_sid, status=exc.status, code=exc.code)
    return Response(status_code=204)


def voicemail_text(rt: Runtime, callback_number: str) -> str:
    spoken = " ".join(callback_number.removeprefix("+1"))
    return (
        f"Hello, this is {rt.settings.business_name}. Please call us back at {spoken}. "
        "To stop these calls, call that number and ask to be removed. Goodbye."
    )
