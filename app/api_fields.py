"""Field types for request bodies: what every text and number an API client sends must satisfy before
it goes near the database (PostgreSQL refuses NUL in text; a float may be NaN or infinite)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(no_nul)]
"""Any text from a client: NUL characters are refused (422), everything else kept as sent."""


MAX_ID = 2**31 - 1  # SQL integer keys
MAX_OFFSET = 2**31 - 1
SID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # Twilio call sids (CA + 32 hex) and the like: no NUL, no 10 MB ids
