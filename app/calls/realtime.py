"""The Realtime engine's I/O: its upstream session is a Realtime speech-to-speech session, and the call's
machine is the bridge (``CallBridge``). Everything it sends upstream goes through the call's upstream socket;
it runs no tasks of its own."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence

from app.adapters.openai_realtime import RealtimeConnector, RealtimeUpstream
from app.core.bridge import BridgeConfig, CallBridge
from app.core.call_events import TranscriptLine
from app.core.transport import TransportAudio


class RealtimeEngine:
    name = "realtime"
    estimates_audio = True  # audio is metered as it streams, corrected by each response's usage
    serial_events = False  # its machine is fed only by the call: events are handled where they arrive

    def __init__(self, connector: RealtimeConnector, config: BridgeConfig) -> None:
        self.connector = connector
        self.config = config
        self.model = config.session.model

    def machine(
        self, *, started_at_ms: int, history: Sequence[TranscriptLine], greeted: bool, transport: TransportAudio
    ) -> CallBridge:
        config = self.config
        if transport.pcm24k and config.audio_format != "pcm24k":
            # The transport speaks PCM16 24 kHz (the page): so does its session, whatever AUDIO_FORMAT says
            # for Twilio, and nothing is converted either way.
            config = dataclasses.replace(config, session=dataclasses.replace(config.session, audio_format="pcm24k"))
        return CallBridge(config, started_at_ms=started_at_ms, history=history, greeted=greeted, transport=transport)

    def bind(self, feed: Callable[[object], Awaitable[None]]) -> None:
        """Nothing of its own feeds the machine: the upstream session's events do."""

    def announce(self, words: str) -> None:
        """The greeting starts with these words (the recording's announcement)."""
        greeting = f'Your very first words are: "{words}" Then: {self.config.greeting_instructions}'
        self.config = dataclasses.replace(self.config, greeting_instructions=greeting)

    async def connect(self) -> RealtimeUpstream:
        return await self.connector.connect()

    def execute(self, command: object) -> bool:
        return False  # every command of the bridge is the call's

    async def close(self) -> None:
        return None
