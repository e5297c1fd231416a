"""TwiML documents we answer Twilio with (twilio.twiml builds and escapes the XML)."""

from __future__ import annotations

from twilio.twiml.voice_response import Connect, Dial, VoiceResponse


def connect_stream(*, stream_url: str, parameters: dict[str, str], resume_url: str) -> str:
    """<Connect><Stream> to our media socket; the <Redirect> runs if our server closes the stream."""
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in parameters.items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    response.redirect(resume_url, method="POST")
    return str(response)


def apologise_and_hang_up(message: str) -> str:
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)


def apologise_and_dial(message: str, number: str) -> str:
    response = VoiceResponse()
    response.say(message)
    d = Dial()
    d.number(number)
    response.append(d)
    return str(response)


def dial(number: str, *, caller_id: str | None = None) -> str:
    response = VoiceResponse()
    d = Dial(caller_id=caller_id) if caller_id else Dial()
    d.number(number)
    response.append(d)
    return str(response)


def voicemail(message: str) -> str:
    response = VoiceResponse()
    response.say(message)
    response.hangup()
    return str(response)


def hang_up() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)
