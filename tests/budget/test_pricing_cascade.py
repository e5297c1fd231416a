"""Prices of the cascaded engine's stages: the chat model per token, speech per audio minute or per
character. Figures by hand in the comments ($X per 1M = X µ$ per token or character)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.budget.pricing import DEFAULT_PRICES, chat_cost, load_price_table, speech_cost


def test_a_chat_completion_pays_its_prompt_the_cached_part_cheaper_and_its_completion() -> None:
    usage = {"prompt_tokens": 1_000, "completion_tokens": 50, "prompt_tokens_details": {"cached_tokens": 800}}
    cost = chat_cost(usage, "gpt-4.1-mini", DEFAULT_PRICES)
    # 200 x 0.40 = 80; 800 x 0.10 = 80; 50 x 1.60 = 80
    assert cost.detail == {"text_in": 80, "text_cached_in": 80, "text_out": 80}
    assert cost.micros == 240 and cost.kind == "chat" and cost.price_version == DEFAULT_PRICES.version


def test_cached_tokens_never_exceed_the_prompt_and_a_missing_detail_counts_nothing_cached() -> None:
    assert chat_cost({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 99}}, "gpt-4o-mini",
                     DEFAULT_PRICES).detail["text_in"] == 0  # fmt: skip
    assert chat_cost({"prompt_tokens": 1_000}, "gpt-4o-mini", DEFAULT_PRICES).detail == {
        "text_in": 150, "text_cached_in": 0, "text_out": 0,
    }  # fmt: skip


def test_speech_is_paid_by_the_audio_it_makes_or_by_the_characters_it_reads() -> None:
    # 12 s at $0.015 a minute: 12 / 60 x 15,000 µ$ = 3,000 µ$
    assert speech_cost("gpt-4o-mini-tts", characters=180, audio_seconds=12, table=DEFAULT_PRICES).micros == 3_000
    # 180 characters at $15 per 1M characters: 180 x 15 = 2,700 µ$
    assert speech_cost("tts-1", characters=180, audio_seconds=12, table=DEFAULT_PRICES).micros == 2_700
    with pytest.raises(ValueError, match="no speech price"):
        speech_cost("kokoro", characters=1, audio_seconds=1, table=DEFAULT_PRICES)


def test_a_deployment_prices_its_own_stages() -> None:
    table = load_price_table({"version": "site-1", "models": {"llama-3.1-8b": {
        "text_in": 0.05, "text_cached_in": 0.05, "text_out": 0.08, "audio_in": 0, "audio_cached_in": 0,
        "audio_out": 0}}, "speech": {"kokoro": {"per_minute": "0.001"}}})  # fmt: skip
    assert table.speech["kokoro"].per_minute == Decimal("0.001")
    assert "gpt-4o-mini-tts" in table.speech  # the list prices stay
    assert chat_cost({"prompt_tokens": 100, "completion_tokens": 100}, "llama-3.1-8b", table).micros == 13
    with pytest.raises(ValueError, match="exactly one"):
        load_price_table({"version": "x", "speech": {"kokoro": {"per_minute": 1, "per_million_characters": 2}}})
