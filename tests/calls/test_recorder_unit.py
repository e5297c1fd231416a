"""The recorder's shell with a store that fails: a lost part never fails the call, and the end still joins
what was stored; a part being written when the loop is cancelled is still written."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from app.calls.recorder import CallRecorder
from app.recording.codec import decode
from app.recording.storage import DirectoryStore

pytestmark = pytest.mark.asyncio


class Clock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:
        return self.ms


class FlakyStore(DirectoryStore):
    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        if "/parts/" in key and self.failures > 0:
            self.failures -= 1
            raise OSError("the store is away")
        await super().put(key, data, content_type)


def frame(n: int) -> bytes:
    """The n-th 20 ms of a 440 Hz tone (a steady level would be filtered out by the codec as DC)."""
    t = (np.arange(160) + 160 * n) / 8000
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).tobytes()


async def test_a_part_the_store_refused_is_a_gap_not_a_failed_call(tmp_path: Path) -> None:
    clock = Clock()
    store = FlakyStore(tmp_path, failures=1)
    rec = CallRecorder(store, "CA" + "1" * 32, rate=8000, mulaw=False, call_started_ms=0, now_ms=clock,
                       segment_s=0.01, holdback_s=0)  # fmt: skip
    for n in range(100):
        clock.ms = 20 * n
        rec.caller(frame(n))
        if n == 49:
            await rec._write(rec.timeline.take(clock.ms))  # the first second: refused by the store
    info = await rec.finish()
    assert info is not None and info["key"] == "CA" + "1" * 32 + "/recording.ogg"
    samples, _ = decode((tmp_path / info["key"]).read_bytes())
    first, second = samples[: 8000 - 400, 0], samples[8000 + 400 : 16000 - 400, 0]
    assert np.abs(first).max() < 100 and np.abs(second).mean() > 2000  # the lost second is silence
    assert info["gaps"] == [(0, 980, "not recorded")]  # and said to be (taken at 980 ms)


async def test_a_part_being_written_when_the_loop_is_cancelled_is_still_written(tmp_path: Path) -> None:
    clock = Clock()
    store = DirectoryStore(tmp_path)
    rec = CallRecorder(store, "CA" + "2" * 32, rate=8000, mulaw=False, call_started_ms=0, now_ms=clock,
                       segment_s=0.01, holdback_s=0)  # fmt: skip
    for n in range(50):
        clock.ms = 20 * n
        rec.caller(frame(n))
    loop_task = asyncio.create_task(rec.run())
    async with asyncio.timeout(5):
        while rec._writing is None:  # until the loop has taken its part and is writing it (a yield, no wait)
            await asyncio.sleep(0)
    loop_task.cancel()
    await asyncio.gather(loop_task, return_exceptions=True)
    info = await rec.finish()
    assert info is not None and info["seconds"] >= 0.98
    assert info["gaps"] == []


async def test_a_call_resumed_on_another_node_is_one_recording_its_parts_in_place_the_handover_a_gap(
    tmp_path: Path,
) -> None:
    sid, store = "CA" + "3" * 32, DirectoryStore(tmp_path)
    clock_a = Clock()
    clock_a.ms = 1_000
    node_a = CallRecorder(store, sid, rate=8000, mulaw=False, call_started_ms=1_000, now_ms=clock_a,
                          segment_s=0.5, holdback_s=0.5)  # fmt: skip
    for n in range(100):  # two seconds of the caller
        clock_a.ms = 1_000 + 20 * n
        node_a.caller(frame(n))
        if n % 25 == 24:
            await node_a._write(node_a.timeline.take(clock_a.ms))  # a part each half second, 0.5 s held back
    # node A dies here: what it held back (its last half second) is lost with it
    clock_b = Clock()
    clock_b.ms = 4_000  # the call resumes on node B three seconds into the call
    node_b = CallRecorder(store, sid, rate=8000, mulaw=False, call_started_ms=1_000, now_ms=clock_b,
                          segment_s=0.5, holdback_s=0.5)  # fmt: skip
    for n in range(50):
        clock_b.ms = 4_000 + 20 * n
        node_b.caller(frame(n))
    info = await node_b.finish()
    assert info is not None and info["key"] == sid + "/recording.ogg"
    assert await store.keys(sid + "/parts/") == []  # both nodes' parts joined and removed
    samples, rate = decode((tmp_path / info["key"]).read_bytes())
    assert rate == 8000 and abs(len(samples) - 4 * 8000) <= 160  # one file on the call's timeline: 0 to 4 s
    level = [int(np.abs(samples[i * 800 + 200 : (i + 1) * 800 - 200, 0]).mean()) for i in range(40)]
    assert (
        all(x > 2000 for x in level[:15]) and all(x < 100 for x in level[16:30]) and all(x > 2000 for x in level[31:])
    )
    ((start, end, reason),) = info["gaps"]
    assert reason == "not recorded" and abs(start - 1500) <= 25 and abs(end - 3000) <= 25
