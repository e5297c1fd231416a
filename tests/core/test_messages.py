"""Twilio media messages, Realtime events and stream tokens."""

from __future__ import annotations

import base64

import orjson
import pytest

from app.core import realtime_events as rt
from app.core.playback import PlaybackTracker
from app.core.stream_token import StreamTokenError, issue_stream_token, verify_stream_token
from app.core.twilio_media import (
    DtmfReceived,
    MarkAcknowledged,
    MediaReceived,
    StreamStarted,
    StreamStopped,
    TwilioMessageError,
    TwilioOutbound,
    parse_twilio_message,
)

SECRET = b"k" * 32


def test_a_token_admits_only_its_own_call_before_expiry() -> None:
    token = issue_stream_token(secret=SECRET, call_sid="CA1", now_s=1000, ttl_s=60)
    assert verify_stream_token(token, secret=SECRET, call_sid="CA1", now_s=1059) == "stream"
    resume = issue_stream_token(secret=SECRET, call_sid="CA1", now_s=1000, ttl_s=60, kind="resume")
    assert verify_stream_token(resume, secret=SECRET, call_sid="CA1", now_s=1001) == "resume"
    with pytest.raises(StreamTokenError, match="expired"):
        verify_stream_token(token, secret=SECRET, call_sid="CA1", now_s=1060)
    with pytest.raises(StreamTokenError, match="another call"):
        verify_stream_token(token, secret=SECRET, call_sid="CA2", now_s=1001)
    with pytest.raises(StreamTokenError, match="signature"):
        verify_stream_token(token, secret=b"other", call_sid="CA1", now_s=1001)
    with pytest.raises(StreamTokenError, match="missing"):
        verify_stream_token(None, secret=SECRET, call_sid="CA1", now_s=1001)
    with pytest.raises(StreamTokenError, match="malformed"):
        verify_stream_token("garbage", secret=SECRET, call_sid="CA1", now_s=1001)


def test_a_token_whose_payload_was_edited_is_refused() -> None:
    token = issue_stream_token(secret=SECRET, call_sid="CA1", now_s=1000, ttl_s=60)
    _payload, sig = token.split(".")
    forged = base64.urlsafe_b64encode(b"CA1.99999999.resume").rstrip(b"=").decode()
    with pytest.raises(StreamTokenError, match="signature"):
        verify_stream_token(f"{forged}.{sig}", secret=SECRET, call_sid="CA1", now_s=1001)


def test_twilio_messages_parse_into_events() -> None:
    payload = base64.b64encode(b"\xff" * 160).decode()
    media = parse_twilio_message(orjson.dumps({"event": "media", "media": {"payload": payload, "timestamp": "40"}}))
    assert media == MediaReceived(b"\xff" * 160)
    start = parse_twilio_message(
        orjson.dumps(
            {
                "event": "start",
                "start": {
                    "streamSid": "MZ1",
                    "callSid": "CA1",
                    "accountSid": "AC1",
                    "customParameters": {"token": "t"},
                },
            }
        )
    )
    assert isinstance(start, StreamStarted) and start.custom_parameters == {"token": "t"}
    assert (start.encoding, start.sample_rate) == ("audio/x-mulaw", 8000)  # Twilio's one format, when unsaid
    quoted = parse_twilio_message(
        '{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1",'
        '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":"8000","channels":1}}}'
    )
    assert isinstance(quoted, StreamStarted) and quoted.sample_rate == 8000
    assert parse_twilio_message('{"event":"mark","mark":{"name":"m1"}}') == MarkAcknowledged("m1")
    assert parse_twilio_message('{"event":"dtmf","dtmf":{"digit":"#"}}') == DtmfReceived("#")
    assert isinstance(parse_twilio_message('{"event":"stop"}'), StreamStopped)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("{not json", "malformed JSON"),
        ("[1,2]", "not a JSON object"),
        ('{"event":"dance"}', "unknown event"),
        ('{"event":"media","media":{"payload":"!!!"}}', "base64"),
        ('{"event":"media"}', "without media"),
        ('{"event":"start","start":{"streamSid":"MZ\\"1","callSid":"CA1"}}', "malformed sids"),
        ('{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1","mediaFormat":"x"}}', "not an object"),
        (
            '{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1","mediaFormat":{"sampleRate":"abc"}}}',
            "not a whole number",
        ),
        (
            '{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1","mediaFormat":{"sampleRate":1e400}}}',
            "malformed JSON",
        ),
        (
            '{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1","mediaFormat":{"sampleRate":8000.5}}}',
            "not a whole number",
        ),
        (
            '{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1","mediaFormat":{"sampleRate":true}}}',
            "not a whole number",
        ),
        ('{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1","mediaFormat":{"encoding":7}}}', "not a string"),
        (
            '{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1","mediaFormat":{"sampleRate":16000}}}',
            "not mu-law 8 kHz",
        ),
    ],
)
def test_unusable_twilio_frames_raise_a_precise_reason(frame: str, reason: str) -> None:
    with pytest.raises(TwilioMessageError, match=reason):
        parse_twilio_message(frame)


def test_outbound_messages_are_the_json_twilio_expects() -> None:
    out = TwilioOutbound("MZabc")
    assert orjson.loads(out.media(b"\x01\x02")) == {
        "event": "media",
        "streamSid": "MZabc",
        "media": {"payload": base64.b64encode(b"\x01\x02").decode()},
    }
    assert orjson.loads(out.mark("m7")) == {"event": "mark", "streamSid": "MZabc", "mark": {"name": "m7"}}
    assert orjson.loads(out.clear()) == {"event": "clear", "streamSid": "MZabc"}


def test_audio_append_is_valid_json_with_the_audio() -> None:
    event = orjson.loads(rt.audio_append(b"\x00\x01\x02"))
    assert event == {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00\x01\x02").decode()}


def test_server_events_parse_and_unknown_types_pass_through() -> None:
    delta = rt.parse_server_event(
        orjson.dumps(
            {
                "type": "response.output_audio.delta",
                "response_id": "r",
                "item_id": "i",
                "delta": base64.b64encode(b"ab").decode(),
            }
        )
    )
    assert delta == rt.AudioDelta("r", "i", b"ab")
    assert rt.parse_server_event(b'{"type":"rate_limits.updated"}') == rt.OtherServerEvent("rate_limits.updated")
    with pytest.raises(rt.RealtimeEventError):
        rt.parse_server_event(b'{"type":"response.done"}')


def test_playback_position_follows_acknowledged_marks_only() -> None:
    tracker = PlaybackTracker()
    m1 = tracker.audio_sent("a", 160)
    m2 = tracker.audio_sent("a", 160)
    assert tracker.played_ms("a") == 0
    tracker.mark_acknowledged(m1)
    assert tracker.played_ms("a") == 20 and tracker.unplayed
    assert tracker.clear() == [("a", 20)]
    assert tracker.mark_acknowledged(m2) is None  # echoed by the clear: not played
    assert tracker.played_ms("a") == 20 and not tracker.unplayed


def test_a_token_with_non_ascii_characters_is_refused_not_crashed_on() -> None:
    token = issue_stream_token(secret=SECRET, call_sid="CA1", now_s=1000, ttl_s=60)
    payload, _sig = token.split(".")
    with pytest.raises(StreamTokenError, match="signature"):
        verify_stream_token(f"{payload}.é", secret=SECRET, call_sid="CA1", now_s=1001)


def test_frame_errors_carry_a_fixed_category_whatever_the_peer_sent() -> None:
    with pytest.raises(TwilioMessageError) as caught:
        parse_twilio_message('{"event":"' + "x" * 500 + '"}')
    assert caught.value.code == "unknown_event" and len(caught.value.reason) < 80
