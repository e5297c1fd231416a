"""A phone call as Twilio would place it against the Switchboard server.

Plays Twilio's part end to end: the signed voice webhook, the `<Connect><Stream>` TwiML, the
signed WebSocket upgrade, the Media Streams messages on an absolute 20 ms clock, and the
playback of the server's audio with mark echoes and clears
(https://www.twilio.com/docs/voice/media-streams/websocket-messages). Built to run hundreds
of calls in one process: payloads are base64-encoded once per script and media messages are
spliced from a bytes template; nothing is logged per frame.
"""

from __future__ import annotations

import asyncio
import binascii
import math
import secrets
import xml.etree.ElementTree as ET
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import structlog
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from app.simulator.audio import FRAME_MS, FRAME_S, SAMPLE_RATE
from app.simulator.conversation import CallerConversation, CallScript, TurnTiming
from app.simulator.playback import TwilioPlayback

__all__ = [
    "CallResult",
    "CallScript",
    "CallSetupError",
    "MediaStreamCall",
    "StreamInstruction",
    "TurnTiming",
    "new_call_sid",
    "open_media_stream",
    "parse_connect_stream",
    "simulate_call",
]

SIGNATURE_HEADER = "X-Twilio-Signature"
VOICE_WEBHOOK_PATH = "/twilio/voice"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 32

# Field order follows Twilio's own messages. %d: sequenceNumber, chunk, timestamp;
# %s: base64 payload, streamSid.
_MEDIA_TEMPLATE = (
    b'{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
    b'"timestamp":"%d","payload":"%s"},"streamSid":"%s"}'
)

_log = structlog.get_logger(__name__)


class CallSetupError(RuntimeError):
    """The server refused the call before media flowed: webhook, TwiML or WebSocket upgrade."""

    def __init__(self, message: str, *, status_code: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


@dataclass(frozen=True, slots=True)
class StreamInstruction:
    """The `<Connect><Stream>` of a TwiML answer."""

    url: str
    parameters: dict[str, str]


@dataclass(slots=True)
class CallResult:
    """Everything the phone side observed during one simulated call."""

    call_sid: str
    stream_sid: str
    agent_audio: bytes  # all mu-law 8 kHz audio the server sent, as received
    agent_audio_played: bytes  # what the caller heard: parts dropped by clear or hang-up excluded
    frames_sent: int
    frames_expected: int  # 20 ms slots that elapsed before the call ended
    marks_acked: list[str]  # mark names echoed back, in order
    clears: int
    turns: list[TurnTiming]
    close_code: int | None
    close_reason: str | None
    hung_up_by: Literal["caller", "server"]
    # the caller hung up at max_duration_s with its script unfinished (still speaking, or awaiting a reply)
    cut_at_max_duration: bool
    started_at: float  # loop time of the start message; frame k is due at started_at + (k+1)*20 ms
    ended_at: float  # loop time the caller hung up or saw the server close
    custom_parameters: dict[str, str]
    twiml: str
    dtmf_sent: list[str]
    max_send_lag_ms: float  # worst lateness of a frame against its slot: simulator health
    protocol_errors: list[str]  # server messages Twilio would reject
    # Stretches of uninterrupted playback, (start, end) in loop time: a reply whose audio came late (the
    # queue ran dry mid-answer) shows as two stretches with a gap between them
    playback_stretches: list[tuple[float, float]] = field(default_factory=list)
    max_duration_s: float | None = None  # the script's cap (the caller hangs up there whatever happens)


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def parse_connect_stream(twiml: str) -> StreamInstruction:
    """Extract the stream url and its `<Parameter>`s; raise CallSetupError if there is none."""
    try:
        root = ET.fromstring(twiml)
    except ET.ParseError as exc:
        raise CallSetupError(f"webhook answer is not TwiML: {exc}", body=twiml) from exc
    stream = root.find("./Connect/Stream")
    url = stream.get("url") if stream is not None else None
    if stream is None or not url:
        raise CallSetupError("TwiML has no <Connect><Stream url=...>", body=twiml)
    parameters = {
        name: param.get("value", "") for param in stream.findall("Parameter") if (name := param.get("name")) is not None
    }
    return StreamInstruction(url=url, parameters=parameters)


async def simulate_call(
    *,
    server_url: str,
    public_base_url: str,
    auth_token: str,
    script: CallScript,
    call_sid: str | None = None,
    from_: str = "+15005550006",
    to: str = "+15005550001",
    account_sid: str = DEFAULT_ACCOUNT_SID,
    http: httpx.AsyncClient | None = None,
    vad_silence_ms: int = 500,
) -> CallResult:
    """Place one inbound call against the server and play the caller's script to the end.

    Requests go to `server_url`; signatures are computed over `public_base_url` (and over the
    stream url exactly as the TwiML gives it), as Twilio signs what it was told to call.
    Raises CallSetupError when the webhook or the WebSocket upgrade fails.
    """
    call_sid = call_sid or new_call_sid()
    validator = RequestValidator(auth_token)
    params = {
        "CallSid": call_sid,
        "AccountSid": account_sid,
        "From": from_,
        "To": to,
        "Direction": "inbound",
        "CallStatus": "ringing",
        "ApiVersion": "2010-04-01",
    }
    signature = str(validator.compute_signature(public_base_url.rstrip("/") + VOICE_WEBHOOK_PATH, params))
    headers = {SIGNATURE_HEADER: signature, "User-Agent": "TwilioProxy/1.1"}
    webhook_url = server_url.rstrip("/") + VOICE_WEBHOOK_PATH
    try:
        if http is None:
            async with httpx.AsyncClient(timeout=10.0) as client:
                response = await client.post(webhook_url, data=params, headers=headers)
        else:
            response = await http.post(webhook_url, data=params, headers=headers)
    except httpx.HTTPError as exc:
        raise CallSetupError(f"voice webhook failed: {exc!r}") from exc
    if response.status_code != 200:
        raise CallSetupError(
            f"voice webhook answered {response.status_code}",
            status_code=response.status_code,
            body=response.text,
        )
    twiml = response.text
    stream = parse_connect_stream(twiml)
    call = await open_media_stream(
        server_url=server_url, stream=stream, auth_token=auth_token, call_sid=call_sid, account_sid=account_sid,
        script=script, vad_silence_ms=vad_silence_ms,
    )  # fmt: skip
    try:
        result = await call.run(twiml=twiml)
    finally:
        await call.close()
    if result.protocol_errors:
        _log.warning(
            "simulated_call_protocol_errors",
            call_sid=call_sid,
            count=len(result.protocol_errors),
            first=result.protocol_errors[0],
        )
    return result


def _server_ws_url(server_url: str, stream_url: str) -> str:
    """The server's own address with the stream url's path (Twilio drops any query string)."""
    server = urlsplit(server_url)
    scheme = "wss" if server.scheme in ("https", "wss") else "ws"
    return urlunsplit((scheme, server.netloc, urlsplit(stream_url).path or "/", "", ""))


async def open_media_stream(
    *,
    server_url: str,
    stream: StreamInstruction,
    auth_token: str,
    call_sid: str,
    account_sid: str,
    script: CallScript,
    vad_silence_ms: int = 500,
) -> MediaStreamCall:
    """Open the media stream a `<Connect><Stream>` asks for, as Twilio does: the upgrade goes to the server's
    own address (`server_url`), signed over the stream url exactly as the TwiML gives it. Then `run()` plays
    the caller's script; `stop()` ends the stream from the phone side (a live-call update, a hang-up)."""
    ws_url = _server_ws_url(server_url, stream.url)
    ws_signature = str(RequestValidator(auth_token).compute_signature(stream.url, {}))
    try:
        ws = await connect(
            ws_url,
            additional_headers={SIGNATURE_HEADER: ws_signature},
            user_agent_header="Twilio.TmeWs/1.0",
            compression=None,
            ping_interval=None,
            max_size=None,
            open_timeout=10,
            close_timeout=5,
        )
    except (InvalidHandshake, InvalidURI, OSError, TimeoutError) as exc:
        raise CallSetupError(f"media stream upgrade to {ws_url} failed: {exc!r}") from exc
    return MediaStreamCall(
        ws=ws,
        script=script,
        call_sid=call_sid,
        account_sid=account_sid,
        custom_parameters=stream.parameters,
        vad_silence_ms=vad_silence_ms,
    )


class MediaStreamCall:
    """One open media stream: a sender pump, a receiver pump and a mark echoer."""

    def __init__(
        self,
        *,
        ws: ClientConnection,
        script: CallScript,
        call_sid: str,
        account_sid: str,
        custom_parameters: dict[str, str],
        vad_silence_ms: int,
    ) -> None:
        self._ws = ws
        self._loop = asyncio.get_running_loop()
        self._script = script
        self._call_sid = call_sid
        self._account_sid = account_sid
        self._stream_sid = "MZ" + secrets.token_hex(16)
        self._stream_sid_bytes = self._stream_sid.encode()
        self._custom_parameters = custom_parameters
        self._vad_silence_ms = vad_silence_ms
        self._playback = TwilioPlayback()
        self._sequence = 0
        self._started_at = 0.0
        self._frames_sent = 0
        self._slots_elapsed = 0
        self._max_lag_s = 0.0
        self._dtmf_sent: list[str] = []
        self._script_done = False
        self._marks_acked: list[str] = []
        self._clears = 0
        self._protocol_errors: list[str] = []
        self._echo_queue: asyncio.Queue[str] = asyncio.Queue()
        self._mark_timer: asyncio.TimerHandle | None = None
        self._server_closed_at: float | None = None
        self._hung_up_at: float | None = None

    async def run(self, *, twiml: str) -> CallResult:
        try:
            await self._ws.send(
                orjson.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
                text=True,
            )
            self._started_at = self._loop.time()
            conversation = CallerConversation(
                script=self._script,
                playback=self._playback,
                started_at=self._started_at,
                vad_silence_ms=self._vad_silence_ms,
            )
            await self._send_event(
                {
                    "event": "start",
                    "sequenceNumber": "",
                    "start": {
                        "accountSid": self._account_sid,
                        "streamSid": self._stream_sid,
                        "callSid": self._call_sid,
                        "tracks": ["inbound"],
                        "customParameters": self._custom_parameters,
                        "mediaFormat": {
                            "encoding": "audio/x-mulaw",
                            "sampleRate": SAMPLE_RATE,
                            "channels": 1,
                        },
                    },
                    "streamSid": "",
                }
            )
        except ConnectionClosed:  # the server hung up before the stream started
            self._server_closed_at = self._loop.time()
            return self._result(twiml=twiml, hung_up_by="server", conversation=None)

        receiver = asyncio.create_task(self._pump_server_messages(conversation))
        echoer = asyncio.create_task(self._echo_marks())
        sender = asyncio.create_task(self._pump_caller_audio(conversation))
        hung_up_by: Literal["caller", "server"] = "server"
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done() and self._server_closed_at is None:
                error = sender.exception()
                if error is not None and not isinstance(error, ConnectionClosed):
                    raise error
                if error is None:
                    hung_up_by = "caller"
                    await self._hang_up()
            await receiver
        finally:
            if self._mark_timer is not None:
                self._mark_timer.cancel()
            for task in (sender, receiver, echoer):
                task.cancel()
            for task in (sender, receiver, echoer):
                with suppress(asyncio.CancelledError, ConnectionClosed):
                    await task
        return self._result(twiml=twiml, hung_up_by=hung_up_by, conversation=conversation)

    async def stop(self) -> None:
        """End the stream from the phone side (a live-call update or a hang-up), as Twilio does."""
        if self._hung_up_at is None and self._server_closed_at is None:
            await self._hang_up()

    async def close(self) -> None:
        await self._ws.close()

    async def _hang_up(self) -> None:
        """Twilio ends a stream with a stop message, then closes the socket."""
        self._hung_up_at = self._loop.time()
        if self._mark_timer is not None:  # no echoes after stop
            self._mark_timer.cancel()
            self._mark_timer = None
        with suppress(ConnectionClosed):
            await self._send_event(
                {
                    "event": "stop",
                    "sequenceNumber": "",
                    "streamSid": "",
                    "stop": {"accountSid": self._account_sid, "callSid": self._call_sid},
                }
            )
        await self._ws.close()

    def _result(
        self,
        *,
        twiml: str,
        hung_up_by: Literal["caller", "server"],
        conversation: CallerConversation | None,
    ) -> CallResult:
        if hung_up_by == "caller" and self._hung_up_at is not None:
            ended_at = self._hung_up_at
        else:
            ended_at = self._server_closed_at or self._loop.time()
            slots_by_clock = math.floor((ended_at - self._started_at) / FRAME_S)
            self._slots_elapsed = max(self._slots_elapsed, min(self._total_slots(), slots_by_clock))
        return CallResult(
            call_sid=self._call_sid,
            stream_sid=self._stream_sid,
            agent_audio=self._playback.received_audio,
            agent_audio_played=self._playback.played_audio(until=ended_at),
            frames_sent=self._frames_sent,
            frames_expected=self._slots_elapsed,
            marks_acked=self._marks_acked,
            clears=self._clears,
            turns=conversation.turn_timings() if conversation is not None else [],
            close_code=self._ws.close_code,
            close_reason=self._ws.close_reason,
            hung_up_by=hung_up_by,
            cut_at_max_duration=hung_up_by == "caller" and not self._script_done,
            started_at=self._started_at,
            ended_at=ended_at,
            custom_parameters=self._custom_parameters,
            twiml=twiml,
            dtmf_sent=self._dtmf_sent,
            max_send_lag_ms=self._max_lag_s * 1000,
            protocol_errors=self._protocol_errors,
            playback_stretches=self._playback.stretches(),
            max_duration_s=self._script.max_duration_s,
        )

    def _total_slots(self) -> int:
        return max(0, round(self._script.max_duration_s / FRAME_S))

    async def _send_event(self, message: dict[str, Any]) -> None:
        """Number and send one non-media message; numbering and write happen without yielding.

        `message` lists "sequenceNumber" and "streamSid" (any value) where Twilio puts them.
        """
        self._sequence += 1
        message["sequenceNumber"] = str(self._sequence)
        message["streamSid"] = self._stream_sid
        await self._ws.send(orjson.dumps(message), text=True)

    async def _pump_caller_audio(self, conversation: CallerConversation) -> None:
        """Send frame k at started_at + (k+1)*20 ms by the loop clock; late frames catch up."""
        loop = self._loop
        ws = self._ws
        started_at = self._started_at
        stream_sid = self._stream_sid_bytes
        dtmf = sorted(self._script.dtmf)
        next_dtmf = 0
        for slot in range(self._total_slots()):
            due = started_at + (slot + 1) * FRAME_S
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            if now - due > self._max_lag_s:
                self._max_lag_s = now - due
            self._slots_elapsed = slot
            while next_dtmf < len(dtmf) and dtmf[next_dtmf][0] <= now - started_at:
                digit = dtmf[next_dtmf][1]
                next_dtmf += 1
                await self._send_event(
                    {
                        "event": "dtmf",
                        "streamSid": "",
                        "sequenceNumber": "",
                        "dtmf": {"track": "inbound_track", "digit": digit},
                    }
                )
                self._dtmf_sent.append(digit)
            payload = conversation.payload_for_slot(slot, now)
            if payload is None:
                self._script_done = True
                return  # the caller hangs up: its script is done
            self._sequence += 1
            await ws.send(
                _MEDIA_TEMPLATE % (self._sequence, slot + 1, slot * FRAME_MS, payload, stream_sid),
                text=True,
            )
            self._frames_sent += 1
            self._slots_elapsed = slot + 1
            conversation.slot_sent(slot, now)

    async def _pump_server_messages(self, conversation: CallerConversation) -> None:
        loop = self._loop
        playback = self._playback
        while True:
            try:
                raw = await self._ws.recv(decode=False)
            except ConnectionClosed:
                break
            now = loop.time()
            try:
                message = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self._protocol_errors.append(f"not JSON: {raw[:80]!r}")
                continue
            if not isinstance(message, dict):
                self._protocol_errors.append(f"not a JSON object: {raw[:80]!r}")
                continue
            if message.get("streamSid") != self._stream_sid:
                self._protocol_errors.append(f"wrong streamSid {message.get('streamSid')!r}")
            event = message.get("event")
            if event == "media":
                try:
                    audio = binascii.a2b_base64(message["media"]["payload"])
                except (KeyError, TypeError, binascii.Error, ValueError):
                    self._protocol_errors.append("media without a base64 payload")
                    continue
                playback.audio_received(audio, now)
                conversation.agent_audio_arrived(now)
            elif event == "mark":
                try:
                    name = str(message["mark"]["name"])
                except (KeyError, TypeError):
                    self._protocol_errors.append("mark without a name")
                    continue
                playback.mark_received(name, now)
                if self._mark_timer is None:
                    self._arm_mark_timer()
            elif event == "clear":
                self._clears += 1
                if self._mark_timer is not None:
                    self._mark_timer.cancel()
                    self._mark_timer = None
                for name in playback.clear(now):
                    self._echo_queue.put_nowait(name)
            else:
                self._protocol_errors.append(f"unexpected event {event!r}")
        if self._hung_up_at is None:
            self._server_closed_at = loop.time()

    def _arm_mark_timer(self) -> None:
        due = self._playback.next_mark_due()
        self._mark_timer = None if due is None else self._loop.call_at(due, self._marks_fall_due, due)

    def _marks_fall_due(self, due: float) -> None:
        # call_at may run a hair before `due` (clock resolution): the timer stands for `due`.
        for name in self._playback.pop_due_marks(max(due, self._loop.time())):
            self._echo_queue.put_nowait(name)
        self._arm_mark_timer()

    async def _echo_marks(self) -> None:
        """Echo marks in the order they fell due, numbered in the call's one sequence."""
        while True:
            name = await self._echo_queue.get()
            if self._hung_up_at is not None:
                return  # Twilio echoes nothing after stop
            await self._send_event({"event": "mark", "streamSid": "", "sequenceNumber": "", "mark": {"name": name}})
            self._marks_acked.append(name)
