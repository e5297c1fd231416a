"""TwilioRest against respx-mocked Twilio endpoints (real httpx, real requests on the wire)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from app.adapters.twilio_rest import (
    CallResource,
    TwilioAuthError,
    TwilioBadRequest,
    TwilioError,
    TwilioNotFound,
    TwilioRateLimited,
    TwilioRest,
    TwilioUnavailable,
)

BASE = "https://twilio.test"
ACCOUNT = "AC" + "a" * 32
TOKEN = "secret-token"
CALL_SID = "CA" + "0123456789abcdef" * 2
CALLS_PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json"
CALL_PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL_SID}.json"


def call_json(status: str = "queued", **extra: Any) -> dict[str, Any]:
    body = {
        "sid": CALL_SID,
        "account_sid": ACCOUNT,
        "status": status,
        "to": "+15558675310",
        "from": "+15017122661",
        "direction": "outbound-api",
    }
    body.update(extra)
    return body


def twilio_error(status: int, code: int, message: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


def form_of(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.content.decode(), keep_blank_values=True, strict_parsing=True)


class RecordingSleep:
    """Fake asyncio.sleep: records requested delays, never waits."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def make_rest(sleep: RecordingSleep) -> Callable[..., TwilioRest]:
    def make(**overrides: Any) -> TwilioRest:
        kwargs: dict[str, Any] = {
            "account_sid": ACCOUNT,
            "auth_token": TOKEN,
            "base_url": BASE,
            "sleep": sleep,
            "random": lambda: 1.0,  # jitter at its ceiling, so delays are exact
            "backoff_base_s": 0.2,
            "backoff_max_s": 0.5,
            "max_retries": 3,
        }
        kwargs.update(overrides)
        return TwilioRest(**kwargs)

    return make


# -- request shape ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_create_call_sends_twilio_form_fields_auth_and_user_agent(
    router: respx.MockRouter, make_rest: Callable[..., TwilioRest]
) -> None:
    route = router.post(CALLS_PATH).mock(return_value=httpx.Response(201, json=call_json()))

    async with make_rest() as rest:
        call = await rest.create_call(
            to="+15558675310",
            from_="+15017122661",
            url="https://switchboard.test/twilio/voice",
            status_callback="https://switchboard.test/twilio/status",
            timeout_s=25,
            machine_detection="DetectMessageEnd",
            async_amd=True,
            async_amd_status_callback="https://switchboard.test/twilio/amd",
            record=True,
            time_limit_s=600,
        )

    assert route.call_count == 1
    request = route.calls.last.request
    assert str(request.url) == BASE + CALLS_PATH
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    expected_auth = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected_auth}"
    assert request.headers["User-Agent"].startswith("switchboard/")
    assert form_of(request) == {
        "To": ["+15558675310"],
        "From": ["+15017122661"],
        "Url": ["https://switchboard.test/twilio/voice"],
        "StatusCallback": ["https://switchboard.test/twilio/status"],
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
        "StatusCallbackMethod": ["POST"],
        "Timeout": ["25"],
        "MachineDetection": ["DetectMessageEnd"],
        "AsyncAmd": ["true"],
        "AsyncAmdStatusCallback": ["https://switchboard.test/twilio/amd"],
        "Record": ["true"],
        "TimeLimit": ["600"],
    }
    assert call == CallResource(
        sid=CALL_SID,
        status="queued",
        to="+15558675310",
        from_="+15017122661",
        direction="outbound-api",
        raw=call_json(),
    )


@pytest.mark.asyncio
async def test_create_call_with_inline_twiml_sends_only_what_was_asked(
    router: respx.MockRouter, make_rest: Callable[..., TwilioRest]
) -> None:
    route = router.post(CALLS_PATH).mock(return_value=httpx.Response(201, json=call_json()))
    twiml = '<Response><Connect><Stream url="wss://h/twilio/media"/></Connect></Response>'

    async with make_rest() as rest:
        await rest.create_call(to="+15558675310", from_="+15017122661", twiml=twiml)

    assert form_of(route.calls.last.request) == {
        "To": ["+15558675310"],
        "From": ["+15017122661"],
        "Twiml": [twiml],
    }


@pytest.mark.asyncio
async def test_create_call_custom_status_callback_events_are_repeated_fields(
    router: respx.MockRouter, make_rest: Callable[..., TwilioRest]
) -> None:
    route = router.post(CALLS_PATH).mock(return_value=httpx.Response(201, json=call_json()))

    async with make_rest() as rest:
        await rest.create_call(
            to="+15558675310",
            from_="+15017122661",
            url="https://switchboard.test/v",
            status_callback="https://switchboard.test/s",
            status_callback_event=["answered", "completed"],
        )

    assert form_of(route.calls.last.request)["StatusCallbackEvent"] == [
        "answered",
        "completed",
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # neither url nor twiml
        {"url": "https://switchboard.test/v", "twiml": "<Response/>"},
        {
            "url": "https://switchboard.test/v",
            "async_amd": True,
        },  # AMD without detection
    ],
)
async def test_create_call_rejects_invalid_arguments_without_calling_twilio(
    router: respx.MockRouter,
    make_rest: Callable[..., TwilioRest],
    kwargs: dict[str, Any],
) -> None:
    route = router.post(CALLS_PATH).mock(return_value=httpx.Response(201, json=call_json()))

    async with make_rest() as rest:
        with pytest.raises(ValueError):
            await rest.create_call(to="+15558675310", from_="+15017122661", **kwargs)

    assert route.call_count == 0


@pytest.mark.asyncio
async def test_hangup_posts_status_completed_to_the_call(
    router: respx.MockRouter, make_rest: Callable[..., TwilioRest]
) -> None:
    route = router.post(CALL_PATH).mock(return_value=httpx.Response(200, json=call_json("completed")))

    async with make_rest() as rest:
        call = await rest.hangup(CALL_SID)

    assert form_of(route.calls.last.request) == {"Status": ["completed"]}
    assert call.status == "completed"


@pytest.mark.asyncio
async def test_update_twiml_posts_twiml(router: respx.MockRouter, make_rest: Callable[..., TwilioRest]) -> None:
    route = router.post(CALL_PATH).mock(return_value=httpx.Response(200, json=call_json("in-progress")))
    twiml = "<Response><Dial>+15551230000</Dial></Response>"

    async with make_rest() as rest:
        await rest.update_twiml(CALL_SID, twiml)

    assert form_of(route.calls.last.request) == {"Twiml": [twiml]}


@pytest.mark.asyncio
async def test_redirect_posts_url_with_method_post(
    router: respx.MockRouter, make_rest: Callable[..., TwilioRest]
) -> None:
    route = router.post(CALL_PATH).mock(return_value=httpx.Response(200, json=call_json("in-progress")))

    async with make_rest() as rest:
        await rest.redirect(CALL_SID, "https://switchboard.test/twilio/next")

    assert form_of(route.calls.last.request) == {
        "Url": ["https://switchboard.test/twilio/next"],
        "Method": ["POST"],
    }


@pytest.mark.asyncio
async def test_fetch_call_gets_the_call_resource(
    router: respx.MockRouter, make_rest: Callable[..., TwilioRest]
) -> None:
    route = router.get(CALL_PATH).mock(return_value=httpx.Response(200, json=call_json("ringing", direction="inbound")))

    async with make_rest() as rest:
        call = await rest.fetch_call(CALL_SID)

    assert route.call_count == 1
    assert (call.sid, call.status, call.direction) == (CALL_SID, "ringing", "inbound")
    assert call.raw["account_sid"] == ACCOUNT


@pytest.mark.asyncio
@pytest.mark.parametrize("bad_sid", ["", "CA123", "../Messages", "CA" + "0" * 31 + "/"])
async def test_malformed_call_sid_is_rejected_before_any_request(
    router: respx.MockRouter, make_rest: Callable[..., TwilioRest], bad_sid: str
) -> None:
    async with make_rest() as rest:
        with pytest.raises(ValueError):
            await rest.hangup(bad_sid)

    assert len(router.calls) == 0


# -- retries ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rate_limited_create_call_is_retried_after_retry_after(
    router: respx.MockRouter,
    make_rest: Callable[..., TwilioRest],
    sleep: RecordingSleep,
) -> None:
    route = router.post(CALLS_PATH).mock(
        side_effect=[
            httpx.Response(
                429,
                headers={"Retry-After": "1.5"},
                json={"code": 20429, "message": "Too Many Requests", "status": 429},
            ),
            httpx.Response(201, json=call_json()),
        ]
    )

    async with make_rest() as rest:
        call = await rest.create_call(to="+15558675310", from_="+15017122661", url="https://switchboard.test/v")

    assert route.call_count == 2
    assert sleep.delays == [1.5]
    assert call.sid == CALL_SID


@pytest.mark.asyncio
async def test_retry_after_beyond_cap_gives_up_instead_of_retrying_early(
    router: respx.MockRouter,
    make_rest: Callable[..., TwilioRest],
    sleep: RecordingSleep,
) -> None:
    route = router.post(CALL_PATH).mock(
        return_value=httpx.Response(429, headers={"Retry-After": "60"}, text="slow down")
    )

    async with make_rest(retry_after_max_s=5.0) as rest:
        with pytest.raises(TwilioRateLimited):
            await rest.hangup(CALL_SID)

    assert route.call_count == 1
    assert sleep.delays == []


@pytest.mark.asyncio
async def test_rate_limit_without_retry_after_exhausts_retries(
    router: respx.MockRouter,
    make_rest: Callable[..., TwilioRest],
    sleep: RecordingSleep,
) -> None:
    route = router.post(CALL_PATH).mock(return_value=twilio_error(429, 20429, "Too Many Requests"))

    async with make_rest(max_retries=2) as rest:
        with pytest.raises(TwilioRateLimited) as caught:
            await rest.hangup(CALL_SID)

    assert route.call_count == 3
    assert sleep.delays == [0.2, 0.4]
    assert caught.value.code == 20429


@pytest.mark.asyncio
async def test_hangup_503s_exhaust_retries_with_growing_capped_backoff(
    router: respx.MockRouter,
    make_rest: Callable[..., TwilioRest],
    sleep: RecordingSleep,
) -> None:
    route = router.post(CALL_PATH).mock(return_value=twilio_error(503, 20503, "Service Unavailable"))

    async with make_rest(max_retries=3, backoff_base_s=0.2, backoff_max_s=0.5) as rest:
        with pytest.raises(TwilioUnavailable) as caught:
            await rest.hangup(CALL_SID)

    assert route.call_count == 4  # max_retries + 1
    assert sleep.delays == [0.2, 0.4, 0.5]  # doubles, then held at backoff_max_s
    err = caught.value
    assert (err.status, err.code, err.message) == (503, 20503, "Service Unavailable")
    assert err.more_info == "https://www.twilio.com/docs/errors/20503"


@pytest.mark.asyncio
async def test_backoff_uses_full_jitter_from_the_injected_random(
    router: respx.MockRouter,
    make_rest: Callable[..., TwilioRest],
    sleep: RecordingSleep,
) -> None:
    router.post(CALL_PATH).mock(
        side_effect=[
            httpx.Response(500),
            httpx.Response(502),
            httpx.Response(200, json=call_json("completed")),
        ]
    )
    draws = iter([0.5, 0.25])

    async with make_rest(random=lambda: next(draws), backoff_base_s=1.0, backoff_max_s=10) as rest:
        await rest.hangup(CALL_SID)

    assert sleep.delays == [0.5 * 1.0, 0.25 * 2.0]


@pytest.mark.asyncio
async def test_create_call_is_not_retried_after_503_to_avoid_double_dialling(
    router: respx.MockRouter,
    make_rest: Callable[..., TwilioRest],
    sleep: RecordingSleep,
) -> None:
    route = router.post(CALLS_PATH).mock(return_value=twilio_error(503, 20503, "Service Unavailable"))

    async with make_rest() as rest:
        with pytest.raises(TwilioUnavailable) as caught:
            await rest.create_call(
                to="+15558675310",
                from_="+15017122661",
                url="https://switchboard.test/v",
            )

    assert route.call_count == 1
    assert sleep.delays == []
    assert caught.value.code == 20503


@pytest.mark.asyncio
async def test_create_call_is_not_retried_after_read_timeout(
    router: respx.MockRouter,
    make_rest: Callable[..., TwilioRest],
    sleep: RecordingSleep,
) -> None:
    route = router.post(CALLS_PATH).mock(side_effect=httpx.ReadTimeout)

    async with make_rest() as rest:
        with pytest.raises(TwilioUnavailable) as caught:
            await rest.create_call(
                to="+15558675310",
                from_="+15017122661",
                url="https://switchboard.test/v",
            )

    assert route.call_count == 1
    assert sleep.delays == []
    assert caught.value.status == 0
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)


@pytest.mark.asyncio
@pytest.mark.parametrize("not_sent", [httpx.ConnectError, httpx.ConnectTimeout])
async def test_create_call_is_retried_when_the_request_never_left(
    router: respx.MockRouter,
    make_rest: Callable[..., TwilioRest],
    sleep: RecordingSleep,
    not_sent: type[httpx.TransportError],
) -> None:
    route = router.post(CALLS_PATH).mock(side_effect=[not_sent, httpx.Response(201, json=call_json())])

    async with make_rest() as rest:
        call = await rest.create_call(to="+15558675310", from_="+15017122661", url="https://switchboard.test/v")

    assert route.call_count == 2
    assert sleep.delays == [0.2]
    assert call.sid == CALL_SID


@pytest.mark.asyncio
async def test_persistent_connect_errors_raise_unavailable_after_retries(
    router: respx.MockRouter,
    make_rest: Callable[..., TwilioRest],
    sleep: RecordingSleep,
) -> None:
    route = router.post(CALLS_PATH).mock(side_effect=httpx.ConnectError)

    async with make_rest(max_retries=2) as rest:
        with pytest.raises(TwilioUnavailable):
            await rest.create_call(
                to="+15558675310",
                from_="+15017122661",
                url="https://switchboard.test/v",
            )

    assert route.call_count == 3
    assert sleep.delays == [0.2, 0.4]


@pytest.mark.asyncio
async def test_hangup_is_retried_after_read_timeout(
    router: respx.MockRouter,
    make_rest: Callable[..., TwilioRest],
    sleep: RecordingSleep,
) -> None:
    route = router.post(CALL_PATH).mock(
        side_effect=[
            httpx.ReadTimeout,
            httpx.Response(200, json=call_json("completed")),
        ]
    )

    async with make_rest() as rest:
        call = await rest.hangup(CALL_SID)

    assert route.call_count == 2
    assert call.status == "completed"


# -- error mapping ---------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (401, 20003, TwilioAuthError),
        (403, 20003, TwilioAuthError),
        (404, 20404, TwilioNotFound),
        (400, 21220, TwilioBadRequest),
        (409, 20409, TwilioBadRequest),
    ],
)
async def test_client_errors_map_to_exceptions_and_are_not_retried(
    router: respx.MockRouter,
    make_rest: Callable[..., TwilioRest],
    sleep: RecordingSleep,
    status: int,
    code: int,
    expected: type[TwilioError],
) -> None:
    route = router.post(CALL_PATH).mock(return_value=twilio_error(status, code, "nope"))

    async with make_rest() as rest:
        with pytest.raises(expected) as caught:
            await rest.hangup(CALL_SID)

    assert type(caught.value) is expected
    assert (caught.value.status, caught.value.code) == (status, code)
    assert route.call_count == 1
    assert sleep.delays == []


@pytest.mark.asyncio
async def test_invalid_to_number_raises_bad_request_with_twilio_fields(
    router: respx.MockRouter, make_rest: Callable[..., TwilioRest]
) -> None:
    route = router.post(CALLS_PATH).mock(
        return_value=httpx.Response(
            400,
            json={
                "code": 21211,
                "message": "Invalid 'To' Phone Number",
                "more_info": "https://www.twilio.com/docs/errors/21211",
                "status": 400,
            },
        )
    )

    async with make_rest() as rest:
        with pytest.raises(TwilioBadRequest) as caught:
            await rest.create_call(to="+1555", from_="+15017122661", url="https://switchboard.test/v")

    err = caught.value
    assert err.status == 400
    assert err.code == 21211
    assert err.message == "Invalid 'To' Phone Number"
    assert err.more_info == "https://www.twilio.com/docs/errors/21211"
    assert "21211" in str(err)
    assert route.call_count == 1


@pytest.mark.asyncio
async def test_non_json_error_body_keeps_its_text_as_the_message(
    router: respx.MockRouter, make_rest: Callable[..., TwilioRest]
) -> None:
    router.post(CALLS_PATH).mock(
        return_value=httpx.Response(
            502,
            text="<html><body>Bad Gateway</body></html>",
            headers={"Content-Type": "text/html"},
        )
    )

    async with make_rest() as rest:
        with pytest.raises(TwilioUnavailable) as caught:
            await rest.create_call(
                to="+15558675310",
                from_="+15017122661",
                url="https://switchboard.test/v",
            )

    assert caught.value.status == 502
    assert caught.value.code is None
    assert caught.value.more_info is None
    assert "Bad Gateway" in caught.value.message


@pytest.mark.asyncio
async def test_empty_error_body_falls_back_to_reason_phrase(
    router: respx.MockRouter, make_rest: Callable[..., TwilioRest]
) -> None:
    router.post(CALL_PATH).mock(return_value=httpx.Response(404))

    async with make_rest() as rest:
        with pytest.raises(TwilioNotFound) as caught:
            await rest.hangup(CALL_SID)

    assert caught.value.message == "Not Found"
    assert caught.value.code is None


@pytest.mark.asyncio
async def test_success_without_a_json_object_is_an_error_not_a_crash(
    router: respx.MockRouter, make_rest: Callable[..., TwilioRest]
) -> None:
    router.get(CALL_PATH).mock(return_value=httpx.Response(200, text="ok"))

    async with make_rest() as rest:
        with pytest.raises(TwilioError) as caught:
            await rest.fetch_call(CALL_SID)

    assert caught.value.status == 200


# -- lifecycle -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_aclose_leaves_an_injected_client_open_but_closes_its_own(
    make_rest: Callable[..., TwilioRest],
) -> None:
    shared = httpx.AsyncClient()
    rest = make_rest(client=shared)
    await rest.aclose()
    assert not shared.is_closed
    await shared.aclose()

    own = make_rest()
    await own.aclose()
    assert own._client.is_closed


@pytest.mark.asyncio
async def test_injected_client_is_used_for_requests(
    router: respx.MockRouter, make_rest: Callable[..., TwilioRest]
) -> None:
    seen: list[httpx.Request] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append(request)

    route = router.get(CALL_PATH).mock(return_value=httpx.Response(200, json=call_json()))
    async with httpx.AsyncClient(event_hooks={"request": [on_request]}) as shared:
        await make_rest(client=shared).fetch_call(CALL_SID)

    assert route.call_count == 1
    assert len(seen) == 1
