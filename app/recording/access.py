"""Which bytes of a recording a request asks for (HTTP ``Range``, RFC 9110 §14): pure.

A browser's audio element asks for ranges to seek; a download asks for everything.
"""

from __future__ import annotations

import re

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class RangeNotSatisfiable(ValueError):
    """The range lies wholly past the end (416, with ``Content-Range: bytes */size``)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte to send, or None for the whole representation: no ``Range``, one
    this does not parse, or several ranges (a server may answer those with the whole, RFC 9110 §14.2)."""
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size:
        raise RangeNotSatisfiable(header)
    if end < start:
        return None  # invalid: ignored, the whole is sent
    return start, end
