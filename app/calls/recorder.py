"""A call's recording, written as the call goes: the I/O around the pure timeline (``app.core.recording``).

Per caller frame and per piece of agent audio, only bytes are appended to a buffer. Every
``RECORDING_SEGMENT_S`` a part (the stretch older than the hold-back) is encoded off the event loop, losslessly
(FLAC), and stored under ``{call_sid}/parts/{first sample:010d}.flac``, its first sample counted from the call's
start, so a node that dies loses what was not stored yet (the hold-back and at most one segment: under a second
by default, plus caller frames still on their way, which a part waits for), and the node that resumes the call adds its own parts to the same timeline, from its own start.
When the call ends, the parts are joined into ``{call_sid}/recording.ogg`` (Opus, compressed once; silence where
no part was written, reported as a gap) and removed.
"""

from __future__ import annotations

import asyncio
import audioop
from typing import Any

import numpy as np
import structlog

from app.core.recording import CallRecording, Chunk
from app.recording import codec
from app.recording.storage import RecordingStore

log = structlog.get_logger()

MAX_HOLD_MS = 60_000  # speech whose transcript never comes holds the recording back no longer than this


def _ulaw(audio: bytes) -> bytes:
    return audioop.ulaw2lin(audio, 2)


class CallRecorder:
    def __init__(
        self,
        store: RecordingStore,
        call_sid: str,
        *,
        rate: int,
        mulaw: bool,
        call_started_ms: int,
        now_ms: Any,
        segment_s: float,
        holdback_s: float,
        hold_from: Any = None,
    ) -> None:
        self.store = store
        self.call_sid = call_sid
        self.rate = rate
        self.timeline = CallRecording(
            rate, call_started_ms, int(holdback_s * 1000), sample_bytes=1 if mulaw else 2,
            decode=_ulaw if mulaw else None,
        )  # fmt: skip
        self._now_ms = now_ms
        self.segment_s = segment_s
        self.parts = 0
        self._writing: asyncio.Future[None] | None = None  # the part being encoded and stored
        # () -> ms from the call's start of the earliest caller speech not transcribed yet (its redaction may
        # yet come), or None; held back at most MAX_HOLD_MS
        self._hold_from = hold_from
        self.timeline.begin(now_ms())  # a resumed call: what came before this node is in the earlier parts
        self.first_sample = self.timeline.taken  # where this node's recording starts on the call's timeline

    # -- the hot path: bytes into a buffer -------------------------------------------------------------

    def caller(self, audio: bytes) -> None:
        self.timeline.caller(audio, self._now_ms())

    def agent(self, audio: bytes) -> None:
        self.timeline.agent(audio, self._now_ms())

    def clear(self) -> None:
        self.timeline.clear(self._now_ms())

    # -- parts -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Write a part every ``segment_s`` until cancelled. A part taken from the timeline is written even if
        this loop is cancelled meanwhile (the call's end waits for it): its audio exists nowhere else."""
        while True:
            await asyncio.sleep(self.segment_s)
            now = self._now_ms()
            hold = self._hold_from() if self._hold_from is not None else None
            if hold is not None:
                hold = max(hold, now - self.timeline.started_at_ms - MAX_HOLD_MS)
            self._writing = asyncio.ensure_future(self._write(self.timeline.take(now, hold_from_ms=hold)))
            await asyncio.shield(self._writing)

    async def _settled(self) -> None:
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)

    async def _write(self, chunk: Chunk | None) -> None:
        if chunk is None or not len(chunk.samples):
            return
        try:
            data = await asyncio.to_thread(codec.encode_part, chunk.samples, self.rate)
            await self.store.put(f"{self.call_sid}/parts/{chunk.start:010d}.flac", data, codec.PART_MEDIA_TYPE)
            self.parts += 1
        except Exception as exc:  # noqa: BLE001 - a store away (or a bug here) loses this part, never the call
            log.warning("recording.part_not_stored", error=repr(exc))

    async def detach(self) -> None:
        """The call goes on elsewhere: this node's last part is written; the next node writes its own."""
        await self._settled()
        await self._write(self.timeline.take(self._now_ms(), final=True))

    async def finish(self) -> dict[str, Any] | None:
        """The call is over: the last part, then every part (this node's and any other's) joined into one
        file. Returns what the archive records of it, or None when nothing was recorded or stored."""
        await self._settled()
        await self._write(self.timeline.take(self._now_ms(), final=True))
        try:
            keys = await self.store.keys(f"{self.call_sid}/parts/")
            parts = [(int(key.rsplit("/", 1)[1].split(".")[0]), await self.store.get(key)) for key in keys]
            joined = await asyncio.to_thread(self._join, [(start, data) for start, data in parts if data])
            if joined is None:
                return None
            data, length, holes = joined
            key = f"{self.call_sid}/recording.ogg"
            await self.store.put(key, data, codec.MEDIA_TYPE)
            await self.store.delete_prefix(f"{self.call_sid}/parts/")
        except Exception as exc:  # noqa: BLE001 - the parts stay; the archive says the recording is incomplete
            log.warning("recording.not_joined", error=repr(exc))
            return {"key": None, "parts": self.parts, "error": repr(exc)[:200]}
        ms = 1000 / self.rate
        gaps = [*self.timeline.gaps, *((round(a * ms), round(b * ms), "not recorded") for a, b in holes)]
        return {"key": key, "bytes": len(data), "seconds": round(length / self.rate, 2), "rate": self.rate,
                "gaps": sorted(gaps)}  # fmt: skip

    def _join(self, parts: list[tuple[int, bytes]]) -> tuple[bytes, int, list[tuple[int, int]]] | None:
        """The parts on one timeline, encoded once; and the stretches no part covers (samples), longer than a
        20 ms frame: a call handed from node to node, or what a node that died had not stored yet."""
        if not parts:
            return None
        decoded = sorted(((start, codec.decode(data)[0]) for start, data in parts), key=lambda part: part[0])
        length = max(start + len(samples) for start, samples in decoded)
        whole = np.zeros((length, 2), dtype=np.int16)
        holes: list[tuple[int, int]] = []
        # The file starts at the call's start; before its stream nothing was connected, so the gaps start where
        # the first node's recording did (this one's, or an earlier part's).
        covered = min(decoded[0][0], self.first_sample)
        for start, samples in decoded:
            if start - covered > self.rate // 50:
                holes.append((covered, start))
            whole[start : start + len(samples)] = samples
            covered = max(covered, start + len(samples))
        return codec.encode(whole, self.rate), length, holes
