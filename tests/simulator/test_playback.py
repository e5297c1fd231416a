"""Twilio playback emulation, on a hand-driven clock."""

from __future__ import annotations

import pytest

from app.simulator.playback import TwilioPlayback


def test_audio_plays_in_real_time_from_arrival_and_queues_behind_earlier_audio() -> None:
    playback = TwilioPlayback()
    playback.audio_received(b"a" * 800, now=10.0)  # 100 ms
    playback.audio_received(b"b" * 400, now=10.05)  # queued behind: plays 10.1 .. 10.15
    assert playback.busy_until == pytest.approx(10.15)
    assert playback.idle_for(10.1) is None
    assert playback.idle_for(10.25) == pytest.approx(0.1)
    assert playback.played_audio(until=10.125) == b"a" * 800 + b"b" * 200


def test_a_mark_falls_due_when_everything_sent_before_it_has_played() -> None:
    playback = TwilioPlayback()
    playback.mark_received("nothing-queued", now=1.0)
    playback.audio_received(b"x" * 1600, now=1.0)
    assert playback.mark_received("after-200ms", now=1.01) == pytest.approx(1.2)
    assert playback.pop_due_marks(1.0) == ["nothing-queued"]
    assert playback.pop_due_marks(1.199) == []
    assert playback.pop_due_marks(1.2) == ["after-200ms"]


def test_audio_after_an_idle_gap_starts_playing_on_arrival() -> None:
    playback = TwilioPlayback()
    playback.audio_received(b"x" * 80, now=0.0)  # plays 0 .. 0.01
    playback.audio_received(b"y" * 80, now=5.0)
    assert playback.mark_received("m", now=5.0) == pytest.approx(5.01)


def test_clear_drops_unplayed_audio_and_returns_pending_marks_in_order() -> None:
    playback = TwilioPlayback()
    playback.audio_received(b"a" * 8000, now=0.0)  # one second
    playback.mark_received("m1", now=0.0)
    playback.audio_received(b"b" * 8000, now=0.0)
    playback.mark_received("m2", now=0.0)
    assert playback.clear(now=0.25) == ["m1", "m2"]
    assert playback.next_mark_due() is None
    assert playback.idle_for(0.25) == 0.0
    playback.audio_received(b"c" * 80, now=0.5)
    assert playback.mark_received("m3", now=0.5) == pytest.approx(0.51)
    assert playback.played_audio(until=10.0) == b"a" * 2000 + b"c" * 80
    assert playback.received_audio == b"a" * 8000 + b"b" * 8000 + b"c" * 80


def test_audio_that_arrives_with_the_clear_is_not_heard() -> None:
    playback = TwilioPlayback()
    playback.audio_received(b"a" * 800, now=3.0)
    assert playback.clear(now=3.0) == []
    assert playback.played_audio(until=9.0) == b""
