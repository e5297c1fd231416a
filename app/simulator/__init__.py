"""Twilio-side call simulator: places signed calls against Switchboard and plays the caller.

Used by ``switchboard simulate-call`` and by the benchmarks (hundreds of concurrent calls).
"""

from app.simulator.audio import load_wav_as_mulaw, synth_speech_mulaw, write_mulaw_wav
from app.simulator.conversation import CallScript, TurnTiming
from app.simulator.playback import TwilioPlayback
from app.simulator.twilio_caller import (
    CallResult,
    CallSetupError,
    StreamInstruction,
    new_call_sid,
    parse_connect_stream,
    simulate_call,
)

__all__ = [
    "CallResult",
    "CallScript",
    "CallSetupError",
    "StreamInstruction",
    "TurnTiming",
    "TwilioPlayback",
    "load_wav_as_mulaw",
    "new_call_sid",
    "parse_connect_stream",
    "simulate_call",
    "synth_speech_mulaw",
    "write_mulaw_wav",
]
