"""The recording's timeline, driven with plain values: frames, agent audio, a clear, a pause, a redaction."""

from __future__ import annotations

import itertools

import numpy as np

from app.core.recording import AGENT, CALLER, CallRecording

RATE = 8000


def tone(ms: int, value: int) -> bytes:
    return np.full(RATE * ms // 1000, value, dtype=np.int16).tobytes()


def whole(rec: CallRecording, now_ms: int) -> np.ndarray:
    chunks = []
    while (chunk := rec.take(now_ms)) is not None:
        chunks.append(chunk.samples)
    final = rec.take(now_ms, final=True)
    if final is not None:
        chunks.append(final.samples)
    return np.concatenate(chunks)


def ms(samples: np.ndarray, channel: int, value: int) -> list[tuple[int, int]]:
    """Runs of ``value`` in a channel, as (start ms, end ms)."""
    hit = np.flatnonzero(samples[:, channel] == value)
    if not len(hit):
        return []
    runs, start = [], hit[0]
    for a, b in itertools.pairwise(hit):
        if b != a + 1:
            runs.append((int(start) * 1000 // RATE, (int(a) + 1) * 1000 // RATE))
            start = b
    runs.append((int(start) * 1000 // RATE, (int(hit[-1]) + 1) * 1000 // RATE))
    return runs


def test_the_caller_follows_their_frames_and_the_agent_queues_behind_what_plays() -> None:
    rec = CallRecording(RATE, started_at_ms=1_000, holdback_ms=0)
    for n in range(50):  # one second of caller frames from 1.2 s
        rec.caller(tone(20, 100), 1_200 + 20 * n)
    rec.agent(tone(300, 7), 1_500)  # sent at once: 300 ms of audio...
    rec.agent(tone(200, 9), 1_550)  # ...and more, queued behind it
    samples = whole(rec, 3_000)
    assert ms(samples, CALLER, 100) == [(200, 1_200)]
    assert ms(samples, AGENT, 7) == [(500, 800)] and ms(samples, AGENT, 9) == [(800, 1_000)]


def test_a_clear_cuts_the_agent_where_the_caller_stopped_hearing_it() -> None:
    rec = CallRecording(RATE, started_at_ms=0, holdback_ms=0)
    rec.agent(tone(2_000, 7), 100)  # two seconds queued at 0.1 s
    rec.clear(600)  # the caller spoke at 0.6 s
    rec.agent(tone(100, 9), 900)  # the next answer plays from when it was sent
    samples = whole(rec, 2_000)
    assert ms(samples, AGENT, 7) == [(100, 600)] and ms(samples, AGENT, 9) == [(900, 1_000)]


def test_a_pause_silences_both_channels_and_is_kept_as_a_gap() -> None:
    rec = CallRecording(RATE, started_at_ms=0, holdback_ms=0)
    for n in range(100):
        rec.caller(tone(20, 100), 20 * n)
    rec.agent(tone(2_000, 7), 0)
    rec.pause(500, "collect_card")
    rec.resume(1_200)
    samples = whole(rec, 2_000)
    assert ms(samples, CALLER, 100) == [(0, 500), (1_200, 2_000)]
    assert ms(samples, AGENT, 7) == [(0, 500), (1_200, 2_000)]
    assert rec.gaps == [(500, 1_200, "collect_card")]


def test_a_redacted_span_is_silenced_while_it_is_held_back_and_said_when_too_late() -> None:
    rec = CallRecording(RATE, started_at_ms=0, holdback_ms=5_000)
    for n in range(150):
        rec.caller(tone(20, 100), 20 * n)
    assert rec.take(3_000) is None  # nothing is five seconds old yet
    assert rec.silence(CALLER, 1_000, 2_000, "card")  # the transcript came: in time
    samples = whole(rec, 10_000)
    assert ms(samples, CALLER, 100) == [(0, 1_000), (2_000, 3_000)]
    assert not rec.silence(CALLER, 100, 200, "late")  # handed out already


def test_chunks_join_up_exactly_whatever_the_moments_they_are_taken() -> None:
    frames = [np.random.default_rng(n).integers(-3000, 3000, 160, dtype=np.int16).tobytes() for n in range(250)]
    at_once, in_pieces = (CallRecording(RATE, started_at_ms=0, holdback_ms=1_000) for _ in range(2))
    for rec in (at_once, in_pieces):
        for n, frame in enumerate(frames):
            rec.caller(frame, 20 * n)
        rec.agent(tone(700, 9), 1_900)
    pieces = [c.samples for t in (1_700, 2_300, 4_100) if (c := in_pieces.take(t)) is not None]
    final = in_pieces.take(6_000, final=True)
    assert final is not None and len(pieces) == 3
    joined = np.concatenate([*pieces, final.samples])
    assert np.array_equal(joined, whole(at_once, 6_000))
    assert joined[:, 0].tobytes() == b"".join(frames)


def test_mu_law_is_kept_as_it_came_and_decoded_only_when_handed_out() -> None:
    import audioop

    rec = CallRecording(RATE, started_at_ms=0, holdback_ms=0, sample_bytes=1, decode=lambda b: audioop.ulaw2lin(b, 2))
    frame = audioop.lin2ulaw(np.full(160, 1000, dtype=np.int16).tobytes(), 2)
    for n in range(10):
        rec.caller(frame, 20 * n)
    rec.agent(frame * 5, 100)
    rec.clear(150)  # 50 ms of it played
    samples = whole(rec, 1_000)
    decoded = np.frombuffer(audioop.ulaw2lin(frame, 2), dtype=np.int16)[0]
    assert ms(samples, CALLER, decoded) == [(0, 200)] and ms(samples, AGENT, decoded) == [(100, 150)]


def test_caller_frames_that_come_late_to_a_take_are_all_in_the_recording() -> None:
    """Frames arrive on the network's time, not the caller's: a part taken while the last frames are still on
    their way waits for them (up to a bound), so no frame is lost and no silence is put in their place."""
    frames = [np.random.default_rng(n).integers(-3000, 3000, 160, dtype=np.int16).tobytes() for n in range(100)]
    rec = CallRecording(RATE, started_at_ms=0, holdback_ms=0)
    pieces = []
    for n, frame in enumerate(frames):
        late = 60 if n % 25 >= 20 else 0  # every half second, the last 100 ms of frames arrive 60 ms late
        arrived = 20 * n + late
        if n % 25 == 22:  # a part is taken every half second, while those frames are on their way
            if (chunk := rec.take(arrived - 10)) is not None:
                pieces.append(chunk.samples)
        rec.caller(frame, arrived)
    final = rec.take(2_100, final=True)
    assert final is not None
    assert np.concatenate([*pieces, final.samples])[:, CALLER].tobytes() == b"".join(frames)


def test_a_caller_who_stops_sending_does_not_hold_the_recording_back_for_long() -> None:
    rec = CallRecording(RATE, started_at_ms=0, holdback_ms=0)
    for n in range(10):
        rec.caller(tone(20, 100), 20 * n)  # 200 ms, then nothing (a stream that stalled)
    rec.agent(tone(3_000, 7), 200)  # the agent talks on
    assert (chunk := rec.take(1_000)) is not None and len(chunk.samples) == 200 * RATE // 1000  # waits...
    later = rec.take(5_000)  # ...but not past the bound: the agent's audio is written, the caller silent
    assert later is not None and len(later.samples) == (5_000 - 200) * RATE // 1000
    assert ms(later.samples, AGENT, 7) == [(0, 3_000)] and not later.samples[:, CALLER].any()
