"""`switchboard carrier`: a local stand-in for Twilio's Calls API and for the people it rings.

The server talks to it as to Twilio (``TWILIO_API_BASE_URL``): it creates calls, updates live ones (hang up,
new TwiML, a new Url) and reads them. Each call then lives as a Twilio call does: it rings, is answered (or
is busy, rings out, fails) as the people file says (``app.carrier.people``), fetches its TwiML from the
call's Url and carries it out (``app.carrier.twiml``): a ``<Connect><Stream>`` opens a real media stream
against the server, on which the person speaks (their words told to the emulator, ``app.emulator.said``) or
the voicemail plays its greeting and beep. Every request to the server is signed as Twilio signs
(``X-Twilio-Signature`` over the public URL); the status callbacks go out in order for the events the call
asked for, and the asynchronous answering-machine detection's callback too.

``GET /carrier/calls`` (and ``/carrier/calls/{sid}``) shows each call's log: what happened, when (seconds
since the call was created), and what the server said.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import numpy as np
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from twilio.request_validator import RequestValidator

from app.carrier import twiml
from app.carrier.people import Behaviour, People
from app.carrier.resource import (
    FINAL,
    CallRecord,
    CreateRequest,
    RestError,
    error_body,
    new_sid,
    parse_create,
    rfc2822,
)
from app.simulator.audio import SAMPLE_RATE, synth_speech_mulaw
from app.simulator.conversation import CallScript
from app.simulator.said import SaidTeller
from app.simulator.twilio_caller import CallSetupError, MediaStreamCall, StreamInstruction, open_media_stream

__all__ = ["Carrier", "CarrierConfig", "beep_mulaw"]

log = structlog.get_logger(__name__)

BEEP_S = 0.5
GAP_BEFORE_BEEP_S = 0.3
HUMAN_DETECTED_AFTER_S = 1.2  # async AMD's verdict on a person, after their first words
AMD_AFTER_BEEP_S = 0.2  # DetectMessageEnd answers once the beep has ended and silence follows


@dataclass(slots=True)
class CarrierConfig:
    account_sid: str
    auth_token: str
    people: People
    # Where the server listens when its public URLs (which the carrier signs) name another host; None: as named
    server: str | None = None
    emulator: str | None = None  # the Realtime emulator's URL: people's words are told to it
    say_chars_per_s: float = 15.0  # how fast <Say> speaks (about 150 words a minute)
    dial_talk_s: float = 2.0  # how long a <Dial>ed party talks before the call ends


def beep_mulaw(seconds: float = BEEP_S, hz: float = 1000.0) -> bytes:
    """A voicemail's beep: a pure tone, mu-law 8 kHz."""
    from app.simulator.audio import pcm16_to_mulaw

    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pcm = (np.sin(2 * math.pi * hz * t) * 12000).astype("<i2").tobytes()
    return pcm16_to_mulaw(pcm)


@dataclass(slots=True)
class _Live:
    """A call's live state: the updates the server sent while it runs, and the stream it has open."""

    record: CallRecord
    behaviour: Behaviour
    loop: asyncio.AbstractEventLoop
    t0: float
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    pending: list[tuple[str, str]] = field(default_factory=list)  # ("hangup"|"twiml"|"url", value)
    stream: MediaStreamCall | None = None
    sequence: int = 0
    beep_end: float | None = None
    extra: list[asyncio.Task[None]] = field(default_factory=list)

    def note(self, event: str, **detail: Any) -> None:
        self.record.log.append({"t": round(self.loop.time() - self.t0, 3), "event": event, **detail})


MAX_FORM_BYTES = 64 * 1024  # a call request is a few hundred bytes; Twilio's TwiML parameter is capped at 4,000


async def _form(request: Request) -> dict[str, list[str]]:
    """The form-encoded body of an authorised request; Twilio's 400 for one that is too large or not text."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise RestError(413, 21617, f"The request body is larger than {MAX_FORM_BYTES} bytes")
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise RestError(400, 21626, f"The request body is not UTF-8 form data: {exc.reason}") from exc


class _HungUp(Exception):
    """The person hung up, or the call was ended from the API."""


class Carrier:
    def __init__(self, config: CarrierConfig, *, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.calls: dict[str, CallRecord] = {}
        self._live: dict[str, _Live] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=15.0)
        self._teller: SaidTeller | None = None
        self._validator = RequestValidator(config.auth_token)
        self._utterances: dict[str, bytes] = {}
        self.app = self._build_app()

    # -- the REST API --------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Switchboard local carrier", docs_url=None, redoc_url=None, lifespan=self._lifespan)
        prefix = "/2010-04-01/Accounts/{account}/Calls"

        @app.exception_handler(RestError)
        async def rest_error(_: Request, exc: RestError) -> JSONResponse:
            return JSONResponse(error_body(exc), status_code=exc.status)

        @app.post(prefix + ".json", status_code=201)
        async def create(account: str, request: Request) -> JSONResponse:
            self._authorise(account, request)
            call = self._start(account, parse_create(await _form(request)))
            return JSONResponse(call.to_json(), status_code=201)

        @app.get(prefix + ".json")
        async def list_calls(account: str, request: Request) -> JSONResponse:
            self._authorise(account, request)
            q = request.query_params
            calls = [
                c.to_json()
                for c in reversed(self.calls.values())
                if (not q.get("To") or c.request.to == q["To"])
                and (not q.get("From") or c.request.from_ == q["From"])
                and (not q.get("Status") or c.status == q["Status"])
            ]
            uri = f"/2010-04-01/Accounts/{account}/Calls.json"
            page = {"first_page_uri": uri, "next_page_uri": None, "previous_page_uri": None, "uri": uri}
            return JSONResponse({"calls": calls, "page": 0, "page_size": max(50, len(calls)), "start": 0,
                                 "end": max(0, len(calls) - 1), **page})  # fmt: skip

        @app.get(prefix + "/{sid}.json")
        async def fetch(account: str, sid: str, request: Request) -> JSONResponse:
            self._authorise(account, request)
            return JSONResponse(self._call(sid).to_json())

        @app.post(prefix + "/{sid}.json")
        async def update(account: str, sid: str, request: Request) -> JSONResponse:
            self._authorise(account, request)
            form = await _form(request)
            call = self._call(sid)
            self._update(call, {k: v[-1] for k, v in form.items() if v})
            return JSONResponse(call.to_json())

        @app.get("/carrier/calls")
        async def logs() -> JSONResponse:
            return JSONResponse({"calls": self.describe_all()})

        @app.get("/carrier/calls/{sid}")
        async def call_log(sid: str) -> JSONResponse:
            return JSONResponse(self.describe(self._call(sid)))

        return app

    def describe_all(self) -> list[dict[str, Any]]:
        return [self.describe(c) for c in self.calls.values()]

    def describe(self, call: CallRecord) -> dict[str, Any]:
        return {
            "sid": call.sid, "to": call.request.to, "from": call.request.from_, "person": call.person,
            "status": call.status, "answered_by": call.answered_by, "duration": call.duration_s,
            "created": call.created.isoformat(), "log": call.log,
        }  # fmt: skip

    @asynccontextmanager
    async def _lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        await self.open_teller()
        try:
            yield
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Hang up every call still going (each ends with its final callback) and close the clients."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with suppress(asyncio.CancelledError):
                await task
        if self._teller is not None:
            await self._teller.close()
            self._teller = None
        if self._owns_http:
            await self._http.aclose()

    def _authorise(self, account: str, request: Request) -> None:
        """HTTP Basic with the account SID and auth token, as Twilio's API (20003 otherwise)."""
        auth = request.headers.get("authorization", "")
        credentials = f"{self.config.account_sid}:{self.config.auth_token}".encode()
        wanted = "Basic " + base64.b64encode(credentials).decode()
        if not hmac.compare_digest(auth.encode(), wanted.encode()) or account != self.config.account_sid:
            raise RestError(401, 20003, "Authenticate")

    def _call(self, sid: str) -> CallRecord:
        call = self.calls.get(sid)
        if call is None:
            raise RestError(404, 20404, f"The requested resource /Calls/{sid}.json was not found")
        return call

    def _start(self, account: str, request: CreateRequest) -> CallRecord:
        behaviour = self.config.people.next_for(request.to)
        call = CallRecord(sid=new_sid("CA"), account_sid=account, request=request, created=datetime.now(UTC),
                          person=behaviour.name or behaviour.kind)  # fmt: skip
        self.calls[call.sid] = call
        loop = asyncio.get_running_loop()
        live = _Live(record=call, behaviour=behaviour, loop=loop, t0=loop.time())
        self._live[call.sid] = live
        live.note("created", behaviour=behaviour.kind, url=request.url)
        task = asyncio.create_task(self._run(live), name=f"carrier-call-{call.sid}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("carrier.call_created", call_sid=call.sid, to=request.to, behaviour=behaviour.kind)
        return call

    def _update(self, call: CallRecord, form: Mapping[str, str]) -> None:
        """A live-call update: Status (completed ends a live call, canceled or completed a ringing one),
        Twiml or Url (the call leaves what it is doing, a stream included, and carries out the new TwiML)."""
        live = self._live.get(call.sid)
        status = form.get("Status")
        if status is not None and status not in ("completed", "canceled"):
            raise RestError(400, 21218, f"Invalid value for Status: {status}")
        if call.status in FINAL or live is None:
            if status is not None:
                return  # ending an ended call: Twilio answers with the call as it is
            raise RestError(400, 21220, "Call is not in-progress. Cannot redirect.")
        if status == "canceled" and call.status == "in-progress":
            return  # Twilio: canceling only affects queued or ringing calls
        if status is not None:
            live.pending.append(("hangup", status))
        elif form.get("Twiml"):
            live.pending.append(("twiml", form["Twiml"]))
        elif form.get("Url"):
            live.pending.append(("url", form["Url"]))
        else:
            raise RestError(400, 21205, "Either a Url, Twiml or Status must be provided")
        live.note("updated", **{k: v for k, v in form.items() if k in ("Status", "Twiml", "Url")})
        live.changed.set()

    # -- a call's life -------------------------------------------------------------------------

    async def _run(self, live: _Live) -> None:
        call, behaviour = live.record, live.behaviour
        final = "completed"
        try:
            await self._callback(live, "initiated", "initiated")
            if behaviour.kind in ("busy", "failed"):  # the line never rings
                await self._wait(live, behaviour.ring_s)
                final = behaviour.kind
                return
            call.status = "ringing"
            await self._callback(live, "ringing", "ringing")
            live.note("ringing")
            if behaviour.kind == "no-answer":
                await self._wait(live, call.request.timeout_s)
                final = "no-answer"
                return
            await self._wait(live, min(behaviour.ring_s, call.request.timeout_s))
            if behaviour.ring_s >= call.request.timeout_s:
                final = "no-answer"
                return
            call.status, call.start_time = "in-progress", datetime.now(UTC)
            live.note("answered")
            await self._callback(live, "answered", "in-progress")
            if call.request.machine_detection and not call.request.async_amd:
                await self._detect_synchronously(live)
            document = call.request.twiml or await self._fetch(live, call.request.url or "", call.request.method)
            await self._carry_out(live, document)
        except _HungUp:
            final = "canceled" if call.start_time is None else "completed"  # ended from the API
        except Exception as exc:  # the carrier's own failure: logged on the call, never the whole carrier
            live.note("carrier_error", error=repr(exc))
            log.exception("carrier.call_failed", call_sid=call.sid)
            final = "failed" if call.start_time is None else "completed"
        finally:
            for task in live.extra:
                task.cancel()
            if live.stream is not None:
                with suppress(Exception):
                    await live.stream.stop()
            await self._finish(live, final)

    async def _finish(self, live: _Live, status: str) -> None:
        call = live.record
        call.status, call.end_time = status, datetime.now(UTC)
        if call.start_time is not None:
            call.duration_s = max(0, round((call.end_time - call.start_time).total_seconds()))
        else:
            call.duration_s = 0
        live.note(status)
        self._live.pop(call.sid, None)
        await self._callback(live, "completed", status)

    async def _wait(self, live: _Live, seconds: float) -> None:
        """Sleep, unless the call is ended or updated first (an update of a ringing call cancels it)."""
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await live.changed.wait()
        if live.pending:
            kind, value = live.pending[0]
            if kind == "hangup":
                live.note("hung_up_by_api")
                raise _HungUp(value)

    async def _carry_out(self, live: _Live, document: str) -> None:
        """Carry out the verbs in order; an update (new TwiML or Url, or a hang-up) leaves the verb being
        carried out (a stream is stopped as Twilio stops it) and the call goes on as it says."""
        verbs, i = self._parse(live, document), 0
        while True:
            if live.pending:
                kind, value = live.pending.pop(0)
                live.pending.clear()
                if kind == "hangup":
                    live.note("hung_up_by_api")
                    raise _HungUp(value)
                document = value if kind == "twiml" else await self._fetch(live, value, "POST")
                verbs, i = self._parse(live, document), 0
                continue
            if i >= len(verbs):
                return  # no verbs left: the call ends
            verb = verbs[i]
            i += 1
            if isinstance(verb, twiml.Redirect):
                verbs, i = self._parse(live, await self._fetch(live, verb.url, verb.method)), 0
                continue
            live.changed.clear()
            if live.pending:
                continue
            task: asyncio.Task[str] = asyncio.create_task(self._verb(live, verb))
            changed = asyncio.create_task(live.changed.wait())
            done, _ = await asyncio.wait({task, changed}, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if task not in done:
                if live.stream is not None:
                    await live.stream.stop()
                    await asyncio.wait({task}, timeout=5)
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            elif task.result() == "end":
                return

    def _parse(self, live: _Live, document: str) -> list[twiml.Verb]:
        try:
            return twiml.parse(document)
        except twiml.TwimlError as exc:
            live.note("application_error", code=12100, error=str(exc))
            return [twiml.Say("We are sorry, an application error has occurred. Goodbye.")]

    async def _verb(self, live: _Live, verb: twiml.Verb) -> str:
        """Carry out one verb; "end" when the call is over, "next" to go on."""
        match verb:
            case twiml.Stream():
                return await self._stream(live, verb)
            case twiml.Say(text=text, loop=loop):
                start = live.loop.time()
                detail: dict[str, Any] = {"text": text}
                if live.beep_end is not None:
                    detail["after_beep_s"] = round(start - live.beep_end, 3)
                live.note("say" if live.behaviour.kind != "voicemail" else "message_left", **detail)
                await asyncio.sleep(len(text) * loop / self.config.say_chars_per_s)
            case twiml.Pause(seconds=seconds):
                await asyncio.sleep(seconds)
            case twiml.Dial(numbers=numbers):
                live.note("dial", numbers=list(numbers))
                await asyncio.sleep(self.config.dial_talk_s)
                return "end"
            case twiml.Hangup():
                live.note("hangup_verb")
                return "end"
            case twiml.Reject():
                return "end"
            case twiml.Unsupported(name=name):
                live.note("application_error", code=12100, error=f"verb <{name}> is not modelled by the carrier")
        return "next"

    async def _stream(self, live: _Live, verb: twiml.Stream) -> str:
        behaviour, call = live.behaviour, live.record
        script = await self._script(live)
        server = self._map(verb.url)
        live.note("stream_started", url=verb.url)
        try:
            stream = await open_media_stream(
                server_url=server, stream=StreamInstruction(url=verb.url, parameters=dict(verb.parameters)),
                auth_token=self.config.auth_token, call_sid=call.sid, account_sid=call.account_sid, script=script,
            )  # fmt: skip
        except CallSetupError as exc:
            live.note("application_error", code=31920, error=str(exc))
            return "next"
        live.stream = stream
        if call.request.machine_detection and call.request.async_amd and behaviour.kind == "person":
            live.extra.append(asyncio.create_task(self._amd_later(live, "human", HUMAN_DETECTED_AFTER_S)))
        try:
            result = await stream.run(twiml="")
        finally:
            live.stream = None
            await stream.close()
        live.note("stream_ended", by=result.hung_up_by, frames_sent=result.frames_sent,
                  agent_audio_s=round(len(result.agent_audio) / SAMPLE_RATE, 2), dtmf="".join(result.dtmf_sent))  # fmt: skip
        if result.hung_up_by == "caller" and not live.pending:
            live.note("hung_up_by_callee")
            return "end"
        return "next"

    async def _script(self, live: _Live) -> CallScript:
        behaviour = live.behaviour
        if behaviour.kind == "voicemail":
            greeting = await self._speech(behaviour.greeting)
            gap = b"\xff" * int(GAP_BEFORE_BEEP_S * SAMPLE_RATE)
            beep_at = (len(greeting) + len(gap)) / SAMPLE_RATE

            def greeting_begins(_: int, __: float) -> None:
                now = live.loop.time()
                self._tell(behaviour.greeting, len(greeting) / SAMPLE_RATE)
                live.note("greeting", text=behaviour.greeting)
                live.beep_end = now + beep_at + BEEP_S
                live.extra.append(asyncio.create_task(self._beep(live, now + beep_at)))

            return CallScript(
                utterances=[greeting + gap + beep_mulaw()], pause_before_first_s=0.5, wait_for_greeting=False,
                hangup_when_done=False, max_duration_s=behaviour.max_s, on_speak=greeting_begins,
            )  # fmt: skip
        lines = list(behaviour.lines)
        utterances = [await self._speech(line) for line in lines]

        def speaks(index: int, seconds: float) -> None:
            self._tell(lines[index], seconds)
            live.note("said", text=lines[index])

        return CallScript(utterances=utterances, dtmf=list(behaviour.dtmf), max_duration_s=behaviour.max_s,
                          on_speak=speaks)  # fmt: skip

    async def _speech(self, text: str) -> bytes:
        if text not in self._utterances:
            self._utterances[text] = await asyncio.to_thread(synth_speech_mulaw, text)
        return self._utterances[text]

    async def _beep(self, live: _Live, at: float) -> None:
        await asyncio.sleep(max(0.0, at - live.loop.time()))
        # Told too: a beep alone is a turn of its own to the server's VAD, which must not take someone's words
        self._tell("(beep)", BEEP_S)
        live.note("beep")
        request = live.record.request
        if request.machine_detection == "DetectMessageEnd" and request.async_amd:
            await asyncio.sleep(BEEP_S + AMD_AFTER_BEEP_S)
            await self._amd(live, "machine_end_beep")

    async def _amd_later(self, live: _Live, answered_by: str, after_s: float) -> None:
        await asyncio.sleep(after_s)
        await self._amd(live, answered_by)

    async def _detect_synchronously(self, live: _Live) -> None:
        """Synchronous AMD: Twilio listens before it fetches the TwiML, which then carries AnsweredBy."""
        if live.behaviour.kind == "person":
            await asyncio.sleep(HUMAN_DETECTED_AFTER_S)
            live.record.answered_by = "human"
        else:
            greeting_s = len(await self._speech(live.behaviour.greeting)) / SAMPLE_RATE
            await asyncio.sleep(greeting_s + GAP_BEFORE_BEEP_S + BEEP_S + AMD_AFTER_BEEP_S)
            end = live.record.request.machine_detection == "DetectMessageEnd"
            live.record.answered_by = "machine_end_beep" if end else "machine_start"
        live.note("amd", answered_by=live.record.answered_by)

    async def _amd(self, live: _Live, answered_by: str) -> None:
        call = live.record
        if call.status != "in-progress" or call.request.async_amd_callback is None:
            return
        call.answered_by = answered_by
        took_ms = round((live.loop.time() - live.t0) * 1000)
        live.note("amd_callback", answered_by=answered_by)
        params = self._params(live) | {"AnsweredBy": answered_by, "MachineDetectionDuration": str(took_ms)}
        await self._post(live, call.request.async_amd_callback, params, what="amd_callback")

    # -- talking to the server -----------------------------------------------------------------

    def _tell(self, text: str, seconds: float) -> None:
        if self._teller is not None:
            self._teller.tell(text, seconds)

    async def open_teller(self) -> None:
        """Connect the control channel to the emulator, when one is configured (best effort)."""
        if self.config.emulator and self._teller is None:
            teller = SaidTeller(self.config.emulator)
            if await teller.open():
                self._teller = teller
            else:
                log.warning("carrier.no_emulator", url=teller.url, detail="people's words are not told")

    def _params(self, live: _Live) -> dict[str, str]:
        call = live.record
        return {
            "AccountSid": call.account_sid, "ApiVersion": "2010-04-01", "CallSid": call.sid,
            "CallStatus": call.status, "Direction": "outbound-api", "From": call.request.from_,
            "To": call.request.to, "Called": call.request.to, "Caller": call.request.from_,
        }  # fmt: skip

    async def _callback(self, live: _Live, event: str, status: str) -> None:
        request = live.record.request
        if request.status_callback is None or event not in request.status_callback_events:
            return
        params = self._params(live) | {
            "CallStatus": status, "SequenceNumber": str(live.sequence), "CallbackSource": "call-progress-events",
            "Timestamp": rfc2822(datetime.now(UTC)) or "",
        }  # fmt: skip
        live.sequence += 1
        if event == "completed":
            params["CallDuration"] = str(live.record.duration_s or 0)
            params["Duration"] = str(math.ceil((live.record.duration_s or 0) / 60))
            if live.record.answered_by:
                params["AnsweredBy"] = live.record.answered_by
        await self._post(live, request.status_callback, params, what=f"status_{status}")

    async def _fetch(self, live: _Live, url: str, method: str) -> str:
        """The TwiML at ``url`` (Twilio's request, signed); an application error's TwiML if it fails."""
        params = self._params(live)
        if live.record.answered_by:
            params["AnsweredBy"] = live.record.answered_by
        response = await self._post(live, url, params, what="twiml", method=method)
        if response is None or response.status_code != 200:
            status = None if response is None else response.status_code
            live.note("application_error", code=11200, url=url, status=status)
            return "<Response><Say>We are sorry, an application error has occurred. Goodbye.</Say></Response>"
        live.note("twiml", url=url, twiml=response.text)
        return response.text

    async def _post(self, live: _Live, url: str, params: dict[str, str], *, what: str,
                    method: str = "POST") -> httpx.Response | None:  # fmt: skip
        """A signed request to the server (a callback or a TwiML fetch); None, noted on the call, if it failed."""
        if method == "GET":  # the parameters go in the query string, and the signature covers the whole URL
            url = url + ("&" if "?" in url else "?") + urlencode(params)
            signature = self._validator.compute_signature(url, {})
        else:
            signature = self._validator.compute_signature(url, params)
        headers = {"X-Twilio-Signature": str(signature), "User-Agent": "TwilioProxy/1.1"}
        try:
            if method == "GET":
                response = await self._http.get(self._map(url), headers=headers)
            else:
                response = await self._http.post(self._map(url), data=params, headers=headers)
        except httpx.HTTPError as exc:
            live.note("request_failed", what=what, url=url, error=repr(exc))
            return None
        if response.status_code >= 400:
            live.note("request_refused", what=what, url=url, status=response.status_code, body=response.text[:300])
        return response

    def _map(self, url: str) -> str:
        """The server's own address for one of its public URLs (the path and query kept)."""
        if not self.config.server:
            return url
        server, parts = urlsplit(self.config.server), urlsplit(url)
        scheme = server.scheme
        if parts.scheme in ("ws", "wss"):
            scheme = "wss" if server.scheme == "https" else "ws"
        return urlunsplit((scheme, server.netloc, parts.path, parts.query, ""))
