"""Who answers when the local carrier dials a number: the people file, as data (pure: no I/O).

The file is a JSON object from a phone number (E.164) to a behaviour, or to a list of behaviours, one per
call placed to that number in order (the last one repeats); ``"*"`` is everyone else. A behaviour is an
object with ``kind`` and the fields of that kind:

- ``person``: answers after ``ring_s`` seconds and says ``lines``, one per turn, each after the agent's reply
  has played out; presses ``dtmf`` keys (``[[seconds, "9"], ...]``); hangs up when done or at ``max_s``.
- ``voicemail``: answers after ``ring_s``, plays ``greeting`` then a beep, and takes a message until the
  caller hangs up or ``max_s`` passes.
- ``busy``, ``failed``: the call ends so after ``ring_s``.
- ``no-answer``: rings until the call's ``Timeout`` (Twilio's, 60 s by default) and ends unanswered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = ["KINDS", "Behaviour", "People", "PeopleError"]

Kind = Literal["person", "voicemail", "busy", "no-answer", "failed"]
KINDS: Final[tuple[str, ...]] = ("person", "voicemail", "busy", "no-answer", "failed")
_E164: Final = re.compile(r"\+[1-9]\d{6,14}")
_DIGITS: Final = frozenset("0123456789*#w")
DEFAULT_GREETING: Final = "Hi, you have reached my voicemail. Please leave a message after the tone."


class PeopleError(ValueError):
    """The people file is not what this module documents; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Behaviour:
    kind: Kind
    name: str = ""
    ring_s: float = 1.0
    lines: tuple[str, ...] = ()
    dtmf: tuple[tuple[float, str], ...] = ()
    greeting: str = DEFAULT_GREETING
    max_s: float = 60.0

    @property
    def answers(self) -> bool:
        return self.kind in ("person", "voicemail")


_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "person": frozenset({"kind", "name", "ring_s", "lines", "dtmf", "max_s"}),
    "voicemail": frozenset({"kind", "name", "ring_s", "greeting", "max_s"}),
    "busy": frozenset({"kind", "name", "ring_s"}),
    "failed": frozenset({"kind", "name", "ring_s"}),
    "no-answer": frozenset({"kind", "name"}),
}


def _number(value: object, where: str, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise PeopleError(f"{where}: a number of seconds from {low:g} to {high:g}, not {value!r}")
    return float(value)


def behaviour(raw: object, where: str) -> Behaviour:
    """One behaviour from its JSON form (a kind's name alone stands for that kind with its defaults)."""
    if isinstance(raw, str):
        raw = {"kind": raw}
    if not isinstance(raw, dict):
        raise PeopleError(f"{where}: an object with a kind, or one of {', '.join(KINDS)}")
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise PeopleError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    unknown = sorted(set(raw) - _FIELDS[kind])
    if unknown:
        raise PeopleError(f"{where}: {kind} has no field {', '.join(map(repr, unknown))}")
    values: dict[str, Any] = {"kind": kind}
    if "name" in raw:
        if not isinstance(raw["name"], str):
            raise PeopleError(f"{where}.name: a string")
        values["name"] = raw["name"]
    if "ring_s" in raw:
        values["ring_s"] = _number(raw["ring_s"], f"{where}.ring_s", low=0, high=120)
    if "max_s" in raw:
        values["max_s"] = _number(raw["max_s"], f"{where}.max_s", low=1, high=3600)
    if "lines" in raw:
        lines = raw["lines"]
        if not isinstance(lines, list) or not all(isinstance(x, str) and x.strip() for x in lines):
            raise PeopleError(f"{where}.lines: a list of things to say (non-empty strings)")
        values["lines"] = tuple(lines)
    if "greeting" in raw:
        if not isinstance(raw["greeting"], str) or not raw["greeting"].strip():
            raise PeopleError(f"{where}.greeting: the words of the greeting")
        values["greeting"] = raw["greeting"]
    if "dtmf" in raw:
        presses: list[tuple[float, str]] = []
        for i, press in enumerate(raw["dtmf"] if isinstance(raw["dtmf"], list) else [None]):
            ok = isinstance(press, list) and len(press) == 2 and isinstance(press[1], str) and press[1]
            if not ok or not set(press[1]) <= _DIGITS:
                raise PeopleError(f"{where}.dtmf[{i}]: [seconds after answering, keys (0-9, *, #)]")
            at = _number(press[0], f"{where}.dtmf[{i}][0]", low=0, high=3600)
            presses.extend((at, digit) for digit in press[1] if digit != "w")
        values["dtmf"] = tuple(sorted(presses))
    return Behaviour(**values)


@dataclass(slots=True)
class People:
    """The people file, and how many calls each number has had (each call takes the next behaviour)."""

    table: dict[str, tuple[Behaviour, ...]]
    default: tuple[Behaviour, ...] = (Behaviour("no-answer"),)
    _calls: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: object) -> People:
        if not isinstance(data, dict):
            raise PeopleError("the people file is a JSON object from phone numbers (and '*') to behaviours")
        table: dict[str, tuple[Behaviour, ...]] = {}
        for number, raw in data.items():
            if number != "*" and not _E164.fullmatch(number):
                raise PeopleError(f"{number!r}: a phone number in E.164 form (+12125550100) or '*'")
            items = raw if isinstance(raw, list) else [raw]
            if not items:
                raise PeopleError(f"{number}: at least one behaviour")
            table[number] = tuple(behaviour(item, f"{number}[{i}]") for i, item in enumerate(items))
        default = table.pop("*", (Behaviour("no-answer"),))
        return cls(table=table, default=default)

    def next_for(self, number: str) -> Behaviour:
        """The behaviour of the next call to ``number``: one per call in order, the last one repeating."""
        n = self._calls.get(number, 0)
        self._calls[number] = n + 1
        behaviours = self.table.get(number, self.default)
        return behaviours[min(n, len(behaviours) - 1)]
