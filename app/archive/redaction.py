"""Redaction of card numbers, US social security numbers and similar patterns in transcript text.

Pure. Applied before a line is stored anywhere (Redis as the call goes, SQL at archive), so with
redaction on the original is never kept. Card numbers are only redacted when they pass the Luhn
check, so a phone number or an order number of the same length is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

CARD = "[card]"
SSN = "[ssn]"
EMAIL = "[email]"
CVV = "[cvv]"

# 13-19 digits, optionally grouped by spaces or dashes ("4111 1111 1111 1111", "4111-1111-1111-1111").
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
# 123-45-6789 or 123 45 6789; never 000, 666 or 9xx area numbers, never 00 group or 0000 serial.
_SSN = re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?!\d)")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
# "security code is 123", "CVV 1234", "CVC: 123"
_CVV = re.compile(r"(?i)\b(cvv|cvc|cvv2|security code)(\s*(?:is|:)?\s*)\d{3,4}\b")

PATTERNS = ("card", "ssn", "email", "cvv")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return CARD if 13 <= len(digits) <= 19 and luhn_ok(digits) else match.group(0)


_RULES: dict[str, Callable[[str], str]] = {
    "card": lambda text: _CARD.sub(_card, text),
    "ssn": lambda text: _SSN.sub(SSN, text),
    "email": lambda text: _EMAIL.sub(EMAIL, text),
    "cvv": lambda text: _CVV.sub(lambda m: f"{m.group(1)}{m.group(2)}{CVV}", text),
}


def redactor(patterns: Iterable[str]) -> Callable[[str], str]:
    """A function that redacts the named ``patterns`` (see :data:`PATTERNS`); unknown names raise."""
    chosen = list(dict.fromkeys(patterns))
    unknown = [p for p in chosen if p not in _RULES]
    if unknown:
        raise ValueError(f"unknown redaction pattern(s) {unknown}; known: {list(PATTERNS)}")
    rules = [_RULES[p] for p in chosen]

    def redact(text: str) -> str:
        for rule in rules:
            text = rule(text)
        return text

    return redact


def redact_values(value: Any, redact: Callable[[str], str]) -> Any:
    """Every text in a JSON-like value redacted (dict keys kept): a tool's arguments, an event's detail."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_values(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v, redact) for v in value]
    return value


def reason_category(end_reason: str | None) -> str | None:
    """What kind of end it was, without the free text after it: "agent hung up: the caller said their
    card is 4111..." -> "agent hung up". For readers who may not see what was said."""
    if end_reason is None:
        return None
    return end_reason.split(":", 1)[0].strip()[:80]
