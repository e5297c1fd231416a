"""The TwiML verbs the local carrier carries out, parsed into plain values (pure: no I/O).

https://www.twilio.com/docs/voice/twiml: ``<Connect><Stream>`` (with ``<Parameter>``), ``<Say>``,
``<Pause>``, ``<Dial>`` (a number as text or ``<Number>`` children), ``<Redirect>``, ``<Hangup>`` and
``<Reject>``. Any other verb parses as ``Unsupported``: the carrier logs it as an application error and
goes on, as Twilio reports an unknown verb in its debugger.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

__all__ = [
    "Dial",
    "Hangup",
    "Pause",
    "Redirect",
    "Reject",
    "Say",
    "Stream",
    "TwimlError",
    "Unsupported",
    "Verb",
    "parse",
]


class TwimlError(ValueError):
    """Not a TwiML document (Twilio's error 12100, "Document parse failure")."""


@dataclass(frozen=True, slots=True)
class Stream:
    url: str
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    loop: int = 1


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class Dial:
    numbers: tuple[str, ...]
    caller_id: str | None = None
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class Redirect:
    url: str
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str = "rejected"


@dataclass(frozen=True, slots=True)
class Unsupported:
    name: str


Verb = Stream | Say | Pause | Dial | Redirect | Hangup | Reject | Unsupported


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


def parse(document: str) -> list[Verb]:
    """The verbs of a ``<Response>``, in order."""
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        raise TwimlError(f"not XML: {exc}") from exc
    if root.tag != "Response":
        raise TwimlError(f"the root element is <{root.tag}>, not <Response>")
    verbs: list[Verb] = []
    for el in root:
        text = (el.text or "").strip()
        if el.tag == "Connect":
            stream = el.find("Stream")
            if stream is None or not stream.get("url"):
                verbs.append(Unsupported("Connect without <Stream url>"))
                continue
            parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter") if p.get("name")}
            verbs.append(Stream(url=stream.get("url", ""), parameters=parameters))
        elif el.tag == "Say":
            verbs.append(Say(text=text, loop=max(1, int(_float(el.get("loop"), 1)))))
        elif el.tag == "Pause":
            verbs.append(Pause(seconds=max(0.0, _float(el.get("length"), 1.0))))
        elif el.tag == "Dial":
            numbers = tuple((n.text or "").strip() for n in el.findall("Number")) or ((text,) if text else ())
            verbs.append(Dial(numbers=numbers, caller_id=el.get("callerId"), timeout_s=_float(el.get("timeout"), 30)))
        elif el.tag == "Redirect":
            verbs.append(Redirect(url=text, method=(el.get("method") or "POST").upper()))
        elif el.tag == "Hangup":
            verbs.append(Hangup())
        elif el.tag == "Reject":
            verbs.append(Reject(reason=el.get("reason") or "rejected"))
        else:
            verbs.append(Unsupported(el.tag))
    return verbs
