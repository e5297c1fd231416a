"""What a call costs, in integer micro-dollars (µ$), from the usage the providers report.

Pure: no I/O, no clock. A price of $X per 1M tokens is X µ$ per token, so ``tokens * X`` is the cost in
µ$, computed exactly with ``Decimal`` and rounded half-up to the whole µ$ once per component; a cost's
``micros`` is always the sum of its ``detail`` components. Per-minute rates (transcription, telephony)
are converted the same way.

Usage figures follow PROTOCOLS.md. A missing or ``null`` field counts as 0. Two conservative rules keep
a partial or surprising usage object from under-billing:

* cached tokens are a subset of the input tokens; when ``cached_tokens_details`` is missing but
  ``cached_tokens > 0``, the cached tokens are taken as text first, then audio (text is where prompt
  caching usually lands: instructions, tools, earlier transcripts);
* input (or output) tokens that the details do not attribute to text or audio (image tokens, or a usage
  without details) are billed at the audio rate, the dearest one, under ``other_in`` / ``other_out``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

MICROS_PER_DOLLAR = 1_000_000
# PROTOCOLS.md: roughly 10 input and 20 output audio tokens per second of audio.
AUDIO_IN_TOKENS_PER_SECOND = 10
AUDIO_OUT_TOKENS_PER_SECOND = 20

PRICE_FIELDS = ("text_in", "text_cached_in", "text_out", "audio_in", "audio_cached_in", "audio_out")
DIRECTIONS = ("inbound", "outbound")


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """USD per 1M tokens (= µ$ per token)."""

    text_in: Decimal
    text_cached_in: Decimal
    text_out: Decimal
    audio_in: Decimal
    audio_cached_in: Decimal
    audio_out: Decimal


@dataclass(frozen=True, slots=True)
class SpeechPrice:
    """Text-to-speech: the gpt-4o TTS models are billed by audio output (quoted per minute here), the
    older tts-1 models per character of input."""

    per_minute: Decimal | None = None
    per_million_characters: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PriceTable:
    version: str  # every cost record carries it
    source: str  # where the figures come from
    models: Mapping[str, ModelPrices]
    transcription_per_minute: Decimal  # USD per audio minute, for usage {"type": "duration", "seconds": s}
    transcription_tokens: ModelPrices | None  # for usage {"type": "tokens", ...}; None: not priced
    telephony_per_minute: Mapping[str, Decimal]  # direction -> USD per started minute
    # The cascaded engine's speech stage: model -> its price, per audio minute or per 1M characters.
    speech: Mapping[str, SpeechPrice] = field(default_factory=lambda: MappingProxyType({}))


def _d(text: str) -> Decimal:
    return Decimal(text)


def _chat(text_in: str, text_cached_in: str, text_out: str) -> ModelPrices:
    zero = Decimal(0)
    return ModelPrices(
        text_in=_d(text_in), text_cached_in=_d(text_cached_in), text_out=_d(text_out),
        audio_in=zero, audio_cached_in=zero, audio_out=zero,
    )  # fmt: skip


_REALTIME = ModelPrices(
    text_in=_d("4"),
    text_cached_in=_d("0.40"),
    text_out=_d("16"),
    audio_in=_d("32"),
    audio_cached_in=_d("0.40"),
    audio_out=_d("64"),
)

DEFAULT_PRICES = PriceTable(
    version="2026-list-1",
    source=(
        "Realtime models: OpenAI 2026 list prices per 1M tokens (docs/PROTOCOLS.md). "
        "Input transcription: gpt-4o-transcribe list prices, $0.006/min by duration; by tokens audio in $6, "
        "text in $2.50, text out $10 per 1M (operator to confirm). "
        "Telephony: Twilio US voice list prices, inbound $0.0085/min, outbound $0.014/min, per started "
        "minute (operator to confirm against the account's rates). "
        "Cascaded engine: chat models per 1M tokens (gpt-4.1-mini $0.40/$0.10 cached/$1.60 out, gpt-4.1-nano "
        "$0.10/$0.025/$0.40, gpt-4o-mini $0.15/$0.075/$0.60); speech gpt-4o-mini-tts ~$0.015 per audio minute "
        "(its audio output tokens), tts-1 $15 and tts-1-hd $30 per 1M characters (operator to confirm)."
    ),
    models=MappingProxyType(
        {
            "gpt-realtime": _REALTIME,
            "gpt-realtime-1.5": _REALTIME,
            "gpt-realtime-mini": ModelPrices(
                text_in=_d("0.60"),
                text_cached_in=_d("0.06"),
                text_out=_d("2.40"),
                audio_in=_d("10"),
                audio_cached_in=_d("0.30"),
                audio_out=_d("20"),
            ),
            # The cascaded engine's chat stage: text only (audio fields 0).
            "gpt-4.1-mini": _chat("0.40", "0.10", "1.60"),
            "gpt-4.1-nano": _chat("0.10", "0.025", "0.40"),
            "gpt-4o-mini": _chat("0.15", "0.075", "0.60"),
            "gpt-realtime-2": ModelPrices(
                text_in=_d("4"),
                text_cached_in=_d("0.40"),
                text_out=_d("24"),
                audio_in=_d("32"),
                audio_cached_in=_d("0.40"),
                audio_out=_d("64"),
            ),
        }
    ),
    transcription_per_minute=_d("0.006"),
    # No caching discount and no audio output for transcription: cached rates equal the uncached ones.
    transcription_tokens=ModelPrices(
        text_in=_d("2.50"),
        text_cached_in=_d("2.50"),
        text_out=_d("10"),
        audio_in=_d("6"),
        audio_cached_in=_d("6"),
        audio_out=_d("0"),
    ),
    telephony_per_minute=MappingProxyType({"inbound": _d("0.0085"), "outbound": _d("0.014")}),
    speech=MappingProxyType(
        {
            "gpt-4o-mini-tts": SpeechPrice(per_minute=_d("0.015")),
            "tts-1": SpeechPrice(per_million_characters=_d("15")),
            "tts-1-hd": SpeechPrice(per_million_characters=_d("30")),
        }
    ),
)


@dataclass(frozen=True, slots=True)
class Cost:
    micros: int
    kind: str  # "response" | "transcription" | "telephony" | "estimate" | "chat" | "speech"
    detail: dict[str, int] = field(default_factory=dict)  # per component µ$; sums to micros
    price_version: str = ""


# -- loading a per-deployment table ----------------------------------------------------------------


def _price(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ValueError(f"{where}: a price must be a number, got {value!r}")
    try:
        # str() of a float is its shortest repr: 0.0085 stays 0.0085, not its binary expansion.
        price = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{where}: not a number: {value!r}") from None
    if not price.is_finite():
        raise ValueError(f"{where}: a price must be finite, got {value!r}")
    if price < 0:
        raise ValueError(f"{where}: a price cannot be negative, got {value!r}")
    return price


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _model_prices(value: Any, where: str, defaults: Mapping[str, Decimal] | None = None) -> ModelPrices:
    obj = _object(value, where)
    unknown = sorted(set(obj) - set(PRICE_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown price fields {unknown} (expected {list(PRICE_FIELDS)})")
    prices: dict[str, Decimal] = {}
    for name in PRICE_FIELDS:
        if name in obj:
            prices[name] = _price(obj[name], f"{where}.{name}")
        elif defaults is not None and name in defaults:
            prices[name] = defaults[name]
        else:
            raise ValueError(f"{where}: missing price field {name!r}")
    return ModelPrices(**prices)


_TOP_LEVEL = frozenset(
    {"version", "source", "models", "transcription_per_minute", "transcription_tokens", "telephony_per_minute",
     "speech"}
)  # fmt: skip


def load_price_table(data: Mapping[str, Any], *, base: PriceTable = DEFAULT_PRICES) -> PriceTable:
    """A deployment's price table: ``data`` (parsed JSON) laid over ``base`` (the 2026 list by default).

    ``version`` is required, so cost records never claim list prices they were not computed with. Every
    other key is optional and falls back to ``base``. ``models`` entries are merged by name over the base
    models (names not in the base are allowed); each entry gives all six price fields. In
    ``transcription_tokens`` (or ``null`` to leave token-billed transcription unpriced) only ``audio_in``,
    ``text_in`` and ``text_out`` are needed: cached rates default to the uncached ones, ``audio_out`` to
    0. ``telephony_per_minute`` entries are merged by direction. Prices are numbers or decimal strings
    in USD; negative, non-finite or non-numeric prices, unknown keys and unknown price fields raise
    ``ValueError``.
    """
    obj = _object(data, "price table")
    unknown = sorted(set(obj) - _TOP_LEVEL)
    if unknown:
        raise ValueError(f"price table: unknown keys {unknown}")
    version = obj.get("version")
    if not isinstance(version, str) or not version.strip():
        raise ValueError("price table: 'version' must be a non-empty string")
    source = obj.get("source", f"deployment override of {base.version}")
    if not isinstance(source, str):
        raise ValueError("price table: 'source' must be a string")

    models = dict(base.models)
    for name, prices in _object(obj.get("models", {}), "models").items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"models: bad model name {name!r}")
        models[name] = _model_prices(prices, f"models.{name}")

    per_minute = base.transcription_per_minute
    if "transcription_per_minute" in obj:
        per_minute = _price(obj["transcription_per_minute"], "transcription_per_minute")

    tokens = base.transcription_tokens
    if "transcription_tokens" in obj:
        raw = obj["transcription_tokens"]
        if raw is None:
            tokens = None
        else:
            raw_obj = _object(raw, "transcription_tokens")
            defaults: dict[str, Decimal] = {"audio_out": Decimal(0)}
            for cached, uncached in (("text_cached_in", "text_in"), ("audio_cached_in", "audio_in")):
                if uncached in raw_obj:
                    defaults[cached] = _price(raw_obj[uncached], f"transcription_tokens.{uncached}")
            tokens = _model_prices(raw_obj, "transcription_tokens", defaults)

    telephony = dict(base.telephony_per_minute)
    for direction, rate in _object(obj.get("telephony_per_minute", {}), "telephony_per_minute").items():
        if direction not in DIRECTIONS:
            raise ValueError(f"telephony_per_minute: unknown direction {direction!r} (expected {list(DIRECTIONS)})")
        telephony[direction] = _price(rate, f"telephony_per_minute.{direction}")

    speech = dict(base.speech)
    for name, raw_price in _object(obj.get("speech", {}), "speech").items():
        price = _object(raw_price, f"speech.{name}")
        units = sorted(set(price))
        if units not in (["per_minute"], ["per_million_characters"]):
            raise ValueError(f"speech.{name}: give exactly one of 'per_minute' and 'per_million_characters'")
        speech[name] = SpeechPrice(**{units[0]: _price(price[units[0]], f"speech.{name}.{units[0]}")})

    return PriceTable(
        version=version.strip(),
        source=source,
        models=MappingProxyType(models),
        transcription_per_minute=per_minute,
        transcription_tokens=tokens,
        telephony_per_minute=MappingProxyType(telephony),
        speech=MappingProxyType(speech),
    )


# -- costing -----------------------------------------------------------------------------------------


def _micros(amount: Decimal) -> int:
    """Round a µ$ amount half-up to a whole µ$."""
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _tokens(prices_per_million: Decimal, tokens: int | Decimal) -> int:
    return _micros(prices_per_million * tokens)  # $X per 1M tokens = X µ$ per token


def _count(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{where}.{key}: a token count must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{where}.{key}: a token count cannot be negative, got {value}")
    return value


def _sub(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, Mapping) else {}


def _seconds(value: float, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError(f"{where}: seconds must be a number, got {value!r}")
    seconds = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not seconds.is_finite() or seconds < 0:
        raise ValueError(f"{where}: seconds must be finite and non-negative, got {value!r}")
    return seconds


def _model(model: str, table: PriceTable) -> ModelPrices:
    prices = table.models.get(model)
    if prices is None:
        raise ValueError(
            f"no prices for model {model!r} in price table {table.version} (known: {sorted(table.models)})"
        )
    return prices


def _cost(kind: str, detail: dict[str, int], table: PriceTable) -> Cost:
    return Cost(micros=sum(detail.values()), kind=kind, detail=detail, price_version=table.version)


def response_cost(usage: Mapping[str, Any], model: str, table: PriceTable) -> Cost:
    """The cost of one response from ``response.done``'s ``response.usage``.

    Bills whatever the usage reports, whatever the response's status: a cancelled or incomplete response
    still pays for its input and for the output generated before it stopped.
    """
    prices = _model(model, table)
    ind = _sub(usage, "input_token_details")
    outd = _sub(usage, "output_token_details")
    input_tokens = _count(usage, "input_tokens", "usage")
    output_tokens = _count(usage, "output_tokens", "usage")
    text_in = _count(ind, "text_tokens", "input_token_details")
    audio_in = _count(ind, "audio_tokens", "input_token_details")
    cached = _count(ind, "cached_tokens", "input_token_details")
    if isinstance(ind.get("cached_tokens_details"), Mapping):
        cd = _sub(ind, "cached_tokens_details")
        cached_text = _count(cd, "text_tokens", "cached_tokens_details")
        cached_audio = _count(cd, "audio_tokens", "cached_tokens_details")
    else:
        # No breakdown: text first, then audio. Any excess (e.g. cached image tokens) stays billed at
        # the uncached rate, which over- rather than under-counts.
        cached_text = min(cached, text_in)
        cached_audio = min(cached - cached_text, audio_in)
    text_out = _count(outd, "text_tokens", "output_token_details")
    audio_out = _count(outd, "audio_tokens", "output_token_details")

    detail = {
        "text_in": _tokens(prices.text_in, max(0, text_in - cached_text)),
        "text_cached_in": _tokens(prices.text_cached_in, cached_text),
        "audio_in": _tokens(prices.audio_in, max(0, audio_in - cached_audio)),
        "audio_cached_in": _tokens(prices.audio_cached_in, cached_audio),
        "text_out": _tokens(prices.text_out, text_out),
        "audio_out": _tokens(prices.audio_out, audio_out),
    }
    other_in = input_tokens - text_in - audio_in
    if other_in > 0:
        detail["other_in"] = _tokens(prices.audio_in, other_in)
    other_out = output_tokens - text_out - audio_out
    if other_out > 0:
        detail["other_out"] = _tokens(prices.audio_out, other_out)
    return _cost("response", detail, table)


def transcription_cost(usage: Mapping[str, Any], table: PriceTable) -> Cost:
    """The cost of one input transcription from ``conversation.item.input_audio_transcription.completed``.

    ``{"type": "duration", "seconds": s}`` is billed pro rata at ``transcription_per_minute`` (detail
    ``transcription_audio``); ``{"type": "tokens", ...}`` at ``transcription_tokens`` (detail ``audio_in``,
    ``text_in``, ``text_out`` and ``other_in`` for input tokens the details leave unattributed, at the
    audio rate). Without ``type``, a usage with ``seconds`` is a duration, anything else tokens. An
    unknown type, or token usage with ``transcription_tokens`` unset, raises ``ValueError``.
    """
    kind = usage.get("type")
    if kind is None:
        kind = "duration" if "seconds" in usage else "tokens"
    if kind == "duration":
        seconds = _seconds(usage.get("seconds") or 0, "transcription usage seconds")
        amount = seconds * table.transcription_per_minute * MICROS_PER_DOLLAR / 60
        return _cost("transcription", {"transcription_audio": _micros(amount)}, table)
    if kind != "tokens":
        raise ValueError(f"unknown transcription usage type {kind!r}")
    prices = table.transcription_tokens
    if prices is None:
        raise ValueError(f"price table {table.version} has no token prices for transcription")
    details = _sub(usage, "input_token_details")
    input_tokens = _count(usage, "input_tokens", "usage")
    audio = _count(details, "audio_tokens", "input_token_details")
    text = _count(details, "text_tokens", "input_token_details")
    detail = {
        "audio_in": _tokens(prices.audio_in, audio),
        "text_in": _tokens(prices.text_in, text),
        "text_out": _tokens(prices.text_out, _count(usage, "output_tokens", "usage")),
    }
    if input_tokens - audio - text > 0:
        detail["other_in"] = _tokens(prices.audio_in, input_tokens - audio - text)
    return _cost("transcription", detail, table)


def chat_cost(usage: Mapping[str, Any], model: str, table: PriceTable) -> Cost:
    """The cost of one chat completion from its usage (the last chunk of a stream with
    ``include_usage``): prompt tokens, the cached ones at the cached rate, and completion tokens."""
    prices = _model(model, table)
    prompt = _count(usage, "prompt_tokens", "usage")
    cached = min(prompt, _count(_sub(usage, "prompt_tokens_details"), "cached_tokens", "prompt_tokens_details"))
    detail = {
        "text_in": _tokens(prices.text_in, prompt - cached),
        "text_cached_in": _tokens(prices.text_cached_in, cached),
        "text_out": _tokens(prices.text_out, _count(usage, "completion_tokens", "usage")),
    }
    return _cost("chat", detail, table)


def speech_cost(model: str, *, characters: int, audio_seconds: float, table: PriceTable) -> Cost:
    """The cost of one speech request: by the audio it made (gpt-4o TTS models) or by the characters it
    was given (tts-1)."""
    price = table.speech.get(model)
    if price is None:
        raise ValueError(
            f"no speech price for model {model!r} in price table {table.version} (known: {sorted(table.speech)})"
        )
    if price.per_minute is not None:
        amount = _seconds(audio_seconds, "audio_seconds") * price.per_minute * MICROS_PER_DOLLAR / 60
        return _cost("speech", {"speech_audio": _micros(amount)}, table)
    assert price.per_million_characters is not None
    if characters < 0:
        raise ValueError(f"characters cannot be negative, got {characters}")
    return _cost("speech", {"speech_characters": _tokens(price.per_million_characters, characters)}, table)


WEB = "web"  # a call from the console's browser page: no carrier, no telephony minutes


def telephony_cost(seconds: float, direction: str, table: PriceTable) -> Cost:
    """Carrier cost of a call leg: every started minute is billed in full (0 s bills nothing)."""
    rate = table.telephony_per_minute.get(direction, Decimal(0) if direction == WEB else None)
    if rate is None:
        raise ValueError(f"no telephony rate for direction {direction!r} (known: {sorted(table.telephony_per_minute)})")
    minutes = math.ceil(_seconds(seconds, "call duration") / 60)
    return _cost("telephony", {direction: _micros(rate * minutes * MICROS_PER_DOLLAR)}, table)


def audio_estimate(seconds_in: float, seconds_out: float, model: str, table: PriceTable) -> Cost:
    """A running estimate between usage events: ~10 input and ~20 output audio tokens per second,
    billed at the model's uncached audio rates. It covers the newly spoken audio only; each response
    also re-reads the earlier conversation (mostly cached), which the next ``response.done`` usage
    accounts for, so replace the estimate with the real cost when that arrives."""
    prices = _model(model, table)
    tokens_in = _seconds(seconds_in, "seconds_in") * AUDIO_IN_TOKENS_PER_SECOND
    tokens_out = _seconds(seconds_out, "seconds_out") * AUDIO_OUT_TOKENS_PER_SECOND
    detail = {"audio_in": _tokens(prices.audio_in, tokens_in), "audio_out": _tokens(prices.audio_out, tokens_out)}
    return _cost("estimate", detail, table)


# The wrap-up response is sent with this max_output_tokens, so a closing line cannot cost more than it:
# about 8 s of speech at the audio rate (the dearer output rate), enough for a polite goodbye.
CLOSING_MAX_OUTPUT_TOKENS = 160
INPUT_KINDS = ("text_in", "text_cached_in", "audio_in", "audio_cached_in", "other_in")


def input_micros(cost: Cost) -> int:
    """What a response's input (the conversation it re-read) cost, out of its whole cost."""
    return sum(cost.detail.get(kind, 0) for kind in INPUT_KINDS)


def closing_reserve(model: str, table: PriceTable, *, direction: str, context_micros: int, listen_s: float) -> Cost:
    """What a call's closing line can cost at most, held out of the day's budget while the call lasts.

    The closing response re-reads the conversation (``context_micros``: the input cost of the call's
    last response, or 0 before the first), listens for up to ``listen_s`` seconds while it speaks, says
    at most :data:`CLOSING_MAX_OUTPUT_TOKENS` tokens at the audio output rate, and may start one more
    telephony minute.
    """
    prices = _model(model, table)
    rate = table.telephony_per_minute.get(direction, Decimal(0) if direction == WEB else None)
    if rate is None:
        raise ValueError(f"no telephony rate for direction {direction!r} (known: {sorted(table.telephony_per_minute)})")
    detail = {
        "context": int(context_micros),
        "audio_in": _tokens(prices.audio_in, _seconds(listen_s, "listen_s") * AUDIO_IN_TOKENS_PER_SECOND),
        "audio_out": _tokens(max(prices.audio_out, prices.text_out), CLOSING_MAX_OUTPUT_TOKENS),
        "telephony": _micros(rate * MICROS_PER_DOLLAR),
    }
    return _cost("closing_reserve", detail, table)
