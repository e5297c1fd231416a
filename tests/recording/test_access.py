"""HTTP Range for recordings (what a browser's audio element asks when it seeks)."""

from __future__ import annotations

import pytest

from app.recording.access import RangeNotSatisfiable, byte_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("bytes=0-", (0, 999)),
        ("bytes=0-99", (0, 99)),
        ("bytes=500-", (500, 999)),
        ("bytes=900-5000", (900, 999)),  # past the end: up to the end
        ("bytes=-100", (900, 999)),  # the last 100
        ("bytes=-5000", (0, 999)),
        ("Bytes = 10 - 20", (10, 20)),
        ("bytes=0-1,5-9", None),  # several ranges: the whole
        ("items=0-9", None),  # another unit: the whole
        ("bytes=20-10", None),  # invalid: ignored
        ("bytes=-", None),
    ],
)
def test_a_range_header_selects_the_bytes_a_browser_asked_for(header: str | None, expected: object) -> None:
    assert byte_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_wholly_past_the_end_is_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, 1000)
