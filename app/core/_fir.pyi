"""Types of the C kernel built from _fir.c (see its header and app/core/resample.py)."""

from typing import TypeAlias

Buffer: TypeAlias = bytes | bytearray | memoryview

UP_STATE: int
DOWN_STATE: int
DOWN_HIST: int
TAPS: int

def set_taps(taps: Buffer, /) -> None: ...
def up(state: bytearray, pcm8: Buffer, /) -> bytes: ...
def down(state: bytearray, pcm24: Buffer, /) -> bytes: ...
