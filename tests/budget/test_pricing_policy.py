"""Pricing and cap policy: pure functions, figures computed by hand in the comments.

Prices are USD per 1M tokens, i.e. µ$ per token: 600 text tokens at $4/1M cost 600 * 4 = 2,400 µ$.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.budget.policy import (
    Action,
    Caps,
    Spend,
    admit_call,
    check_call,
    crossed_thresholds,
    dollars,
    next_midnight,
    operator_day,
)
from app.budget.pricing import (
    DEFAULT_PRICES,
    Cost,
    audio_estimate,
    closing_reserve,
    input_micros,
    load_price_table,
    response_cost,
    telephony_cost,
    transcription_cost,
)

T = DEFAULT_PRICES

# 1,500 input tokens = 1,000 text (400 of them cached) + 500 audio (200 cached); 300 output = 100 text + 200 audio.
USAGE: dict[str, Any] = {
    "total_tokens": 1800,
    "input_tokens": 1500,
    "output_tokens": 300,
    "input_token_details": {
        "text_tokens": 1000,
        "audio_tokens": 500,
        "cached_tokens": 600,
        "cached_tokens_details": {"text_tokens": 400, "audio_tokens": 200},
    },
    "output_token_details": {"text_tokens": 100, "audio_tokens": 200},
}


def _sums(cost: Cost) -> None:
    assert cost.micros == sum(cost.detail.values())


# -- response_cost -----------------------------------------------------------------------------------


def test_response_cost_gpt_realtime_subset_semantics() -> None:
    cost = response_cost(USAGE, "gpt-realtime", T)
    assert cost.detail == {
        "text_in": 2_400,  # (1000 - 400) uncached text * $4
        "text_cached_in": 160,  # 400 * $0.40
        "audio_in": 9_600,  # (500 - 200) uncached audio * $32
        "audio_cached_in": 80,  # 200 * $0.40
        "text_out": 1_600,  # 100 * $16
        "audio_out": 12_800,  # 200 * $64
    }
    assert cost.micros == 26_640  # 2400 + 160 + 9600 + 80 + 1600 + 12800
    assert cost.kind == "response"
    assert cost.price_version == "2026-list-1"
    _sums(cost)
    # gpt-realtime-1.5 has the same list prices
    assert response_cost(USAGE, "gpt-realtime-1.5", T).micros == 26_640


def test_response_cost_gpt_realtime_mini() -> None:
    cost = response_cost(USAGE, "gpt-realtime-mini", T)
    assert cost.detail == {
        "text_in": 360,  # 600 * $0.60
        "text_cached_in": 24,  # 400 * $0.06
        "audio_in": 3_000,  # 300 * $10
        "audio_cached_in": 60,  # 200 * $0.30
        "text_out": 240,  # 100 * $2.40
        "audio_out": 4_000,  # 200 * $20
    }
    assert cost.micros == 7_684
    _sums(cost)


def test_response_cost_gpt_realtime_2_output_price() -> None:
    # same as gpt-realtime except text out $24: 100 * 24 = 2,400 instead of 1,600
    assert response_cost(USAGE, "gpt-realtime-2", T).micros == 26_640 - 1_600 + 2_400


def test_fractional_micros_round_half_up_per_component() -> None:
    # mini cached text is $0.06/1M: 25 tokens = 1.5 µ$ -> 2; 5 tokens = 0.3 µ$ -> 0
    usage = {"input_token_details": {"text_tokens": 25, "cached_tokens": 25}}
    assert response_cost(usage, "gpt-realtime-mini", T).detail["text_cached_in"] == 2
    usage = {"input_token_details": {"text_tokens": 5, "cached_tokens": 5}}
    assert response_cost(usage, "gpt-realtime-mini", T).micros == 0


def test_cached_without_breakdown_counts_as_text_first() -> None:
    usage = {
        "input_tokens": 1500,
        "input_token_details": {"text_tokens": 1000, "audio_tokens": 500, "cached_tokens": 1200},
    }
    cost = response_cost(usage, "gpt-realtime", T)
    # 1,200 cached -> 1,000 text (all of it) + 200 audio
    assert cost.detail["text_in"] == 0
    assert cost.detail["text_cached_in"] == 400  # 1000 * $0.40
    assert cost.detail["audio_in"] == 9_600  # 300 * $32
    assert cost.detail["audio_cached_in"] == 80  # 200 * $0.40
    assert cost.micros == 10_080


def test_cancelled_response_still_bills_partial_output() -> None:
    # response.done with status "cancelled" after a barge-in: 60 output tokens were generated
    usage = {
        "input_tokens": 300,
        "output_tokens": 60,
        "input_token_details": {"text_tokens": 200, "audio_tokens": 100, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 10, "audio_tokens": 50},
    }
    cost = response_cost(usage, "gpt-realtime", T)
    # 200*4 + 100*32 + 10*16 + 50*64 = 800 + 3200 + 160 + 3200
    assert cost.micros == 7_360


def test_unknown_model_raises() -> None:
    with pytest.raises(ValueError, match="gpt-4o-realtime-preview"):
        response_cost(USAGE, "gpt-4o-realtime-preview", T)


def test_missing_fields_are_zero() -> None:
    empty = response_cost({}, "gpt-realtime", T)
    assert empty.micros == 0 and set(empty.detail.values()) == {0}
    # only output details, no input at all, null details: 100 audio out * $64
    cost = response_cost(
        {"input_token_details": None, "output_token_details": {"audio_tokens": 100}}, "gpt-realtime", T
    )
    assert cost.micros == 6_400


def test_unattributed_tokens_bill_at_the_audio_rate() -> None:
    # totals without details (or image tokens): billed at the dearest (audio) rate, never dropped
    cost = response_cost({"input_tokens": 100, "output_tokens": 10}, "gpt-realtime", T)
    assert cost.detail["other_in"] == 3_200  # 100 * $32
    assert cost.detail["other_out"] == 640  # 10 * $64
    assert cost.micros == 3_840


def test_bad_counts_raise() -> None:
    with pytest.raises(ValueError):
        response_cost({"input_tokens": -1}, "gpt-realtime", T)
    with pytest.raises(ValueError):
        response_cost({"input_tokens": "12"}, "gpt-realtime", T)


# -- transcription, telephony, estimate ------------------------------------------------------------


def test_transcription_by_duration() -> None:
    # $0.006/min = 100 µ$ per second
    assert transcription_cost({"type": "duration", "seconds": 30}, T).micros == 3_000
    cost = transcription_cost({"type": "duration", "seconds": 7.25}, T)
    assert cost.micros == 725 and cost.kind == "transcription"
    assert cost.detail == {"transcription_audio": 725}
    assert transcription_cost({"type": "duration", "seconds": 0.005}, T).micros == 1  # 0.5 µ$ rounds up
    assert transcription_cost({"seconds": 3}, T).micros == 300  # no type: seconds means duration


def test_transcription_by_tokens() -> None:
    usage = {
        "type": "tokens",
        "input_tokens": 120,
        "output_tokens": 30,
        "total_tokens": 150,
        "input_token_details": {"audio_tokens": 100, "text_tokens": 20},
    }
    cost = transcription_cost(usage, T)
    # 100 audio * $6 + 20 text * $2.50 + 30 out * $10
    assert cost.detail == {"audio_in": 600, "text_in": 50, "text_out": 300}
    assert cost.micros == 950
    # no details: the 120 input tokens are billed as audio (120 * $6 = 720) + 300
    assert transcription_cost({"type": "tokens", "input_tokens": 120, "output_tokens": 30}, T).micros == 1_020


def test_transcription_unknown_type_raises() -> None:
    with pytest.raises(ValueError):
        transcription_cost({"type": "characters", "count": 3}, T)


def test_telephony_rounds_up_per_started_minute() -> None:
    # inbound $0.0085/min = 8,500 µ$; outbound $0.014/min = 14,000 µ$
    assert telephony_cost(0, "inbound", T).micros == 0
    assert telephony_cost(1, "inbound", T).micros == 8_500
    assert telephony_cost(60.0, "inbound", T).micros == 8_500
    assert telephony_cost(60.01, "inbound", T).micros == 17_000
    assert telephony_cost(61, "outbound", T).micros == 28_000
    cost = telephony_cost(125, "outbound", T)  # 3 started minutes
    assert cost.micros == 42_000 and cost.kind == "telephony" and cost.detail == {"outbound": 42_000}
    with pytest.raises(ValueError):
        telephony_cost(10, "sideways", T)
    with pytest.raises(ValueError):
        telephony_cost(-1, "inbound", T)


def test_audio_estimate_10s_in_5s_out() -> None:
    # 10 s in = 100 audio tokens, 5 s out = 100 audio tokens
    cost = audio_estimate(10, 5, "gpt-realtime", T)
    assert cost.detail == {"audio_in": 3_200, "audio_out": 6_400}  # 100 * $32, 100 * $64
    assert cost.micros == 9_600 and cost.kind == "estimate"
    assert audio_estimate(10, 5, "gpt-realtime-mini", T).micros == 3_000  # 100 * $10 + 100 * $20
    with pytest.raises(ValueError):
        audio_estimate(1, 1, "nope", T)


def test_closing_reserve_gpt_realtime_inbound() -> None:
    # context $0.0123 (the last response's input), 8 s listening = 80 audio tokens * $32/M = 2,560 µ$,
    # 160 output tokens * $64/M = 10,240 µ$, one inbound minute $0.0085 = 8,500 µ$
    cost = closing_reserve("gpt-realtime", T, direction="inbound", context_micros=12_300, listen_s=8)
    assert cost.detail == {"context": 12_300, "audio_in": 2_560, "audio_out": 10_240, "telephony": 8_500}
    assert cost.micros == 33_600 and cost.kind == "closing_reserve"
    outbound = closing_reserve("gpt-realtime", T, direction="outbound", context_micros=0, listen_s=0)
    assert outbound.micros == 10_240 + 14_000
    with pytest.raises(ValueError):
        closing_reserve("gpt-realtime", T, direction="sideways", context_micros=0, listen_s=0)


def test_input_micros_is_the_reread_conversation() -> None:
    usage = {"input_tokens": 2_000, "output_tokens": 100,
             "input_token_details": {"text_tokens": 1_000, "audio_tokens": 1_000, "cached_tokens": 1_024,
                                     "cached_tokens_details": {"text_tokens": 512, "audio_tokens": 512}},
             "output_token_details": {"text_tokens": 0, "audio_tokens": 100}}  # fmt: skip
    cost = response_cost(usage, "gpt-realtime", T)
    # text: 488 * $4 + 512 * $0.4; audio: 488 * $32 + 512 * $0.4 (rounded per component)
    assert input_micros(cost) == 1_952 + 205 + 15_616 + 205
    assert cost.micros - input_micros(cost) == 6_400


# -- load_price_table ------------------------------------------------------------------------------


def test_load_price_table_overlays_defaults() -> None:
    table = load_price_table(
        {
            "version": "acme-2026-07",
            "source": "contract rates",
            "models": {
                "gpt-realtime-mini": {
                    "text_in": "0.5",
                    "text_cached_in": 0.05,
                    "text_out": 2,
                    "audio_in": 8,
                    "audio_cached_in": 0.25,
                    "audio_out": 16,
                },
                "my-fine-tune": {f: 1 for f in ("text_in", "text_cached_in", "text_out")}
                | {f: 2 for f in ("audio_in", "audio_cached_in", "audio_out")},
            },
            "telephony_per_minute": {"outbound": 0.013},
            "transcription_tokens": {"audio_in": 3, "text_in": 1, "text_out": 5},
        }
    )
    assert table.version == "acme-2026-07"
    assert table.models["gpt-realtime"] == T.models["gpt-realtime"]
    assert table.models["gpt-realtime-mini"].text_cached_in == Decimal("0.05")  # float read exactly
    assert table.telephony_per_minute == {"inbound": Decimal("0.0085"), "outbound": Decimal("0.013")}
    assert table.transcription_per_minute == Decimal("0.006")
    assert table.transcription_tokens is not None
    assert table.transcription_tokens.audio_cached_in == Decimal(3)
    assert table.transcription_tokens.audio_out == 0
    cost = response_cost({"output_token_details": {"audio_tokens": 100}}, "my-fine-tune", table)
    assert cost.micros == 200 and cost.price_version == "acme-2026-07"
    assert telephony_cost(30, "outbound", table).micros == 13_000


@pytest.mark.parametrize(
    "data",
    [
        {"version": "x", "telephony_per_minute": {"inbound": -0.01}},
        {"version": "x", "transcription_per_minute": "-1"},
        {"version": "x", "models": {"m": dict.fromkeys(("text_in", "text_cached_in", "text_out"), 1)}},
        {"version": "x", "models": {"gpt-realtime": {"text_input": 1}}},
        {"version": "x", "transcription_per_minute": "NaN"},
        {"version": "x", "transcription_per_minute": True},
        {"version": "x", "telephony_per_minute": {"sip": 0.004}},
        {"version": "x", "colour": "blue"},
        {"version": ""},
        {"models": {}},
    ],
)
def test_load_price_table_refuses(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        load_price_table(data)


def test_transcription_tokens_unpriced() -> None:
    table = load_price_table({"version": "no-tokens", "transcription_tokens": None})
    assert transcription_cost({"type": "duration", "seconds": 60}, table).micros == 6_000
    with pytest.raises(ValueError):
        transcription_cost({"type": "tokens", "input_tokens": 1}, table)


# -- check_call ------------------------------------------------------------------------------------

CALL_CAP = 2_000_000  # $2.00
CAPS = Caps(per_call=CALL_CAP, per_day=50_000_000)  # $50.00 a day


def _check(call: int, day: int = 0, *, started: float | None = None, now: float = 100.0, caps: Caps = CAPS) -> Any:
    return check_call(Spend(call=call, day=day), caps, wrap_up_started_s=started, now_s=now)


def test_check_call_half_is_ok() -> None:
    v = _check(1_000_000)
    assert v.action is Action.ok
    assert v.cap == "per_call" and v.spent == 1_000_000 and v.limit == CALL_CAP


def test_check_call_wrap_up_from_ninety_percent() -> None:
    assert _check(1_799_999).action is Action.ok
    v = _check(1_800_000)  # exactly 0.9 * $2.00
    assert v.action is Action.wrap_up and v.cap == "per_call"
    assert "$1.80 of the $2.00 per-call cap" in v.reason
    assert "$1.83 of the $2.00 per-call cap" in _check(1_830_000).reason


def test_check_call_at_cap_within_grace_is_wrap_up() -> None:
    assert _check(CALL_CAP).action is Action.wrap_up  # wrap-up not started yet
    assert _check(CALL_CAP, started=97.0, now=100.0).action is Action.wrap_up  # began 3 s ago < 8 s
    assert _check(CALL_CAP, started=100.0, now=100.0).action is Action.wrap_up  # just began


def test_check_call_at_cap_after_grace_is_hard_stop() -> None:
    v = _check(CALL_CAP, started=92.0, now=100.0)  # began 8 s ago
    assert v.action is Action.hard_stop and v.cap == "per_call"
    assert "$2.00 of the $2.00 per-call cap" in v.reason
    # below the cap, the grace running out changes nothing: the agent keeps closing
    assert _check(1_900_000, started=0.0, now=100.0).action is Action.wrap_up


def test_check_call_runaway_stops_at_once() -> None:
    v = _check(2_220_000)  # 1.11 of the cap, wrap-up never started
    assert v.action is Action.hard_stop and "runaway" in v.reason
    assert _check(2_200_000).action is Action.wrap_up  # exactly 1.10 is not yet a runaway


def test_check_call_day_cap_binds_before_call_cap() -> None:
    # the call is at 25% of its cap; the day has $0.80 left and this call wants $1.00 held for closing
    spend = Spend(call=500_000, day=49_200_000, closing_reserve=1_000_000)
    v = check_call(spend, CAPS, wrap_up_started_s=None, now_s=100.0)
    assert v.action is Action.wrap_up and v.cap == "per_day"
    assert v.spent == 49_200_000 and v.limit == 50_000_000
    assert "$49.20 of the $50.00 per-day cap" in v.reason and "closing lines" in v.reason
    # with its whole reserve still held, the call goes on: the reserve is what closing needs
    held = Spend(call=500_000, day=49_000_000, closing_reserve=1_000_000)
    assert check_call(held, CAPS, wrap_up_started_s=None, now_s=100.0).action is Action.ok


def test_day_pool_wraps_up_when_the_ledger_holds_less_than_the_reserve() -> None:
    # other calls hold most of what is left: the ledger gave this call only $0.40 of its $1.00
    spend = Spend(call=100_000, day=40_000_000, closing_reserve=1_000_000, reserve_left=400_000)
    assert check_call(spend, CAPS, wrap_up_started_s=None, now_s=0.0).action is Action.wrap_up
    whole = Spend(call=100_000, day=40_000_000, closing_reserve=1_000_000, reserve_left=1_000_000)
    assert check_call(whole, CAPS, wrap_up_started_s=None, now_s=0.0).action is Action.ok


def test_day_pool_hard_stops_at_once_on_overrun_or_past_the_cap() -> None:
    # no grace for the day: every call had its closing line's worth held before the pool ran dry
    overrun = Spend(call=100_000, day=49_990_000, closing_reserve=1_000_000, reserve_left=0, overrun=12_345)
    v = check_call(overrun, CAPS, wrap_up_started_s=99.9, now_s=100.0)
    assert v.action is Action.hard_stop and v.cap == "per_day"
    assert "$0.01 past this call's closing reserve" in v.reason
    past = check_call(Spend(call=0, day=50_000_001), CAPS, wrap_up_started_s=None, now_s=0.0)
    assert past.action is Action.hard_stop and "over the cap" in past.reason
    at = check_call(Spend(call=0, day=50_000_000), CAPS, wrap_up_started_s=None, now_s=0.0)
    assert at.action is Action.wrap_up


def test_check_call_most_severe_then_most_used_wins() -> None:
    # call at 95% (wrap up), day at 100% (wrap up): the day is nearer its cap
    assert _check(1_900_000, day=50_000_000).cap == "per_day"
    # a day at 92% with room for the call's closing is no reason to close
    assert _check(1_900_000, day=46_000_000).cap == "per_call"
    # call runaway (hard stop) beats the day at 99% (wrap up)
    v = _check(2_300_000, day=49_500_000)
    assert v.action is Action.hard_stop and v.cap == "per_call"


def test_check_call_campaign_day_and_no_caps() -> None:
    caps = Caps(per_call=None, per_day=None, per_campaign_day=10_000_000)
    v = check_call(Spend(call=0, day=0, campaign_day=9_500_000), caps, wrap_up_started_s=None, now_s=0.0)
    assert v.action is Action.wrap_up and v.cap == "per_campaign_day"
    assert "per-campaign-day cap" in v.reason
    none = check_call(Spend(10**9, 10**9, 10**9), Caps(None, None), wrap_up_started_s=None, now_s=0.0)
    assert none.action is Action.ok and none.cap is None and none.limit is None


# -- admit_call ------------------------------------------------------------------------------------


def test_admit_call_day_cap() -> None:
    assert admit_call(49_999_999, CAPS).action is Action.ok
    at = admit_call(50_000_000, CAPS)
    assert at.action is Action.hard_stop and at.cap == "per_day"
    assert "$50.00 of the $50.00 per-day cap" in at.reason
    assert admit_call(60_000_000, CAPS).action is Action.hard_stop
    assert admit_call(10**12, Caps(per_call=1, per_day=None)).action is Action.ok


def test_admit_call_counts_closing_reserves() -> None:
    # $48.00 spent, $1.50 held by calls in progress: a call needing $0.50 to close would reach the cap
    refused = admit_call(48_000_000, CAPS, day_reserved=1_500_000, closing_reserve=500_000)
    assert refused.action is Action.hard_stop and refused.cap == "per_day" and refused.spent == 48_000_000
    assert "$1.50 held for closing lines" in refused.reason and "$0.50 needed" in refused.reason
    assert admit_call(48_000_000, CAPS, day_reserved=1_499_999, closing_reserve=500_000).action is Action.ok


def test_admit_call_campaign_day_cap() -> None:
    caps = Caps(per_call=CALL_CAP, per_day=50_000_000, per_campaign_day=10_000_000)
    assert admit_call(1_000_000, caps, campaign_day_spent=9_999_999).action is Action.ok
    at = admit_call(1_000_000, caps, campaign_day_spent=10_000_000)
    assert at.action is Action.hard_stop and at.cap == "per_campaign_day"
    assert admit_call(1_000_000, caps, campaign_day_spent=12_000_000).action is Action.hard_stop
    # a call outside any campaign is not held to a campaign's cap
    assert admit_call(1_000_000, caps).action is Action.ok


# -- crossed_thresholds ----------------------------------------------------------------------------


def test_crossed_thresholds() -> None:
    cap = 1_000_000
    # 0.8 * cap = 800,000 and 1.0 * cap = 1,000,000 both inside (700,000, 1,050,000]
    assert crossed_thresholds(700_000, 1_050_000, cap, (0.8, 1.0)) == [0.8, 1.0]
    assert crossed_thresholds(700_000, 1_050_000, cap, (1.0, 0.8)) == [0.8, 1.0]  # ascending
    assert crossed_thresholds(810_000, 900_000, cap, (0.8, 1.0)) == []
    assert crossed_thresholds(799_999, 800_000, cap, (0.8, 1.0)) == [0.8]  # landing exactly on it crosses
    assert crossed_thresholds(800_000, 900_000, cap, (0.8, 1.0)) == []  # already crossed by the last charge
    assert crossed_thresholds(0, 10**9, None, (0.8, 1.0)) == []
    # exact fractions: 0.15 * 100 is 15.000000000000002 in floats, exactly 15 here
    assert crossed_thresholds(14, 15, 100, (0.15,)) == [0.15]


# -- operator day ----------------------------------------------------------------------------------

NY = "America/New_York"


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_spring_forward_day_is_23_hours() -> None:
    # 2026-03-08: New York jumps 02:00 EST -> 03:00 EDT
    before = _utc(2026, 3, 8, 4, 30)  # 2026-03-07 23:30 EST
    assert operator_day(before, NY) == date(2026, 3, 7)
    assert next_midnight(before, NY) == _utc(2026, 3, 8, 5)  # 00:00 EST = 05:00 UTC
    after = datetime(2026, 3, 8, 3, 30, tzinfo=ZoneInfo(NY))  # 03:30 EDT = 07:30 UTC
    assert operator_day(after, NY) == date(2026, 3, 8)
    assert next_midnight(after, NY) == _utc(2026, 3, 9, 4)  # 00:00 EDT = 04:00 UTC
    assert next_midnight(_utc(2026, 3, 8, 5), NY) - _utc(2026, 3, 8, 5) == timedelta(hours=23)


def test_fall_back_day_is_25_hours() -> None:
    # 2026-11-01: New York falls back 02:00 EDT -> 01:00 EST; 01:30 happens twice
    first = _utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    second = _utc(2026, 11, 1, 6, 30)  # 01:30 EST
    for now in (first, second):
        assert operator_day(now, NY) == date(2026, 11, 1)
        assert next_midnight(now, NY) == _utc(2026, 11, 2, 5)  # 00:00 EST = 05:00 UTC
    start = _utc(2026, 11, 1, 4)  # 00:00 EDT
    assert next_midnight(start, NY) - start == timedelta(hours=25)
    assert next_midnight(_utc(2026, 11, 1, 3, 59), NY) == start  # a minute before: tonight's midnight


def test_zone_west_of_utc_at_2330_local() -> None:
    # 23:30 PDT on 15 July is already 06:30 UTC on the 16th: still the operator's 15th
    now = _utc(2026, 7, 16, 6, 30)
    assert operator_day(now, "America/Los_Angeles") == date(2026, 7, 15)
    midnight = next_midnight(now, "America/Los_Angeles")
    assert midnight == _utc(2026, 7, 16, 7) and midnight.tzinfo is UTC
    # Honolulu (UTC-10, no DST): 23:30 on 15 July = 09:30 UTC on the 16th
    assert operator_day(_utc(2026, 7, 16, 9, 30), "Pacific/Honolulu") == date(2026, 7, 15)
    assert next_midnight(_utc(2026, 7, 16, 9, 30), "Pacific/Honolulu") == _utc(2026, 7, 16, 10)


def test_midnight_skipped_by_dst() -> None:
    # Santiago springs forward at local midnight on 2026-09-06 (00:00 -04 -> 01:00 -03): the day
    # begins at the transition, 04:00 UTC
    assert next_midnight(_utc(2026, 9, 5, 16), "America/Santiago") == _utc(2026, 9, 6, 4)


def test_next_midnight_is_strictly_later() -> None:
    midnight = _utc(2026, 7, 16, 4)  # 00:00 EDT
    assert next_midnight(midnight, NY) == _utc(2026, 7, 17, 4)


def test_naive_datetimes_and_unknown_zones_refused() -> None:
    with pytest.raises(ValueError):
        operator_day(datetime(2026, 7, 15, 12), NY)
    with pytest.raises(ValueError):
        next_midnight(datetime(2026, 7, 15, 12), NY)
    with pytest.raises(ValueError):
        operator_day(_utc(2026, 7, 15), "Mars/Olympus_Mons")


def test_dollars() -> None:
    assert dollars(1_830_000) == "$1.83"
    assert dollars(2_000_000) == "$2.00"
    assert dollars(1_834_999) == "$1.83"
    assert dollars(1_835_000) == "$1.84"  # half-up to the cent
    assert dollars(0) == "$0.00"
    assert dollars(1_234_567_890) == "$1,234.57"
    assert dollars(-1_830_000) == "-$1.83"
