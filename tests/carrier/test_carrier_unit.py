"""The local carrier's pure parts: the people file, the TwiML it carries out, Twilio's request checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.carrier import twiml
from app.carrier.people import Behaviour, People, PeopleError
from app.carrier.resource import RestError, parse_create

ROOT = Path(__file__).resolve().parents[2]


def test_each_call_to_a_number_takes_the_next_behaviour_and_the_last_repeats() -> None:
    people = People.from_json({"+12125550103": ["busy", {"kind": "person", "lines": ["Yes?"]}], "*": "no-answer"})
    kinds = [people.next_for("+12125550103").kind for _ in range(3)]
    assert kinds == ["busy", "person", "person"]
    assert people.next_for("+13125550100") == Behaviour("no-answer")


def test_without_a_default_nobody_answers() -> None:
    assert People.from_json({}).next_for("+12125550100").kind == "no-answer"


def test_the_example_people_file_parses() -> None:
    people = People.from_json(json.loads((ROOT / "examples/carrier/people.json").read_text()))
    assert people.next_for("+12125550102").kind == "voicemail"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "JSON object"),
        ({"2125550100": "busy"}, "E.164"),
        ({"+12125550100": []}, "at least one"),
        ({"+12125550100": "shouting"}, "kind must be one of"),
        ({"+12125550100": {"kind": "busy", "lines": ["hi"]}}, "busy has no field 'lines'"),
        ({"+12125550100": {"kind": "person", "lines": "hello"}}, "lines: a list"),
        ({"+12125550100": {"kind": "person", "lines": [""]}}, "lines: a list"),
        ({"+12125550100": {"kind": "person", "ring_s": -1}}, "ring_s: a number"),
        ({"+12125550100": {"kind": "person", "ring_s": True}}, "ring_s: a number"),
        ({"+12125550100": {"kind": "person", "dtmf": [[1, "x"]]}}, "dtmf[0]"),
        ({"+12125550100": {"kind": "voicemail", "greeting": " "}}, "greeting"),
    ],
)
def test_a_bad_people_file_is_refused_saying_where_and_why(data: object, message: str) -> None:
    with pytest.raises(PeopleError, match=message.replace("[", r"\[").replace("(", r"\(")):
        People.from_json(data)


def test_keys_pressed_are_split_into_digits_in_time_order() -> None:
    people = People.from_json({"*": {"kind": "person", "dtmf": [[4.5, "9"], [1, "12"]]}})
    assert people.next_for("+12125550100").dtmf == ((1.0, "1"), (1.0, "2"), (4.5, "9"))


def test_twiml_verbs_parse_into_values() -> None:
    document = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://x.test/twilio/media">'
        '<Parameter name="token" value="t"/></Stream></Connect><Say loop="2">Hello</Say><Pause length="3"/>'
        "<Dial callerId='+12125550100'><Number>+12125550199</Number></Dial><Dial>+12125550198</Dial>"
        '<Redirect method="GET">https://x.test/next</Redirect><Gather/><Reject reason="busy"/><Hangup/></Response>'
    )
    assert twiml.parse(document) == [
        twiml.Stream("wss://x.test/twilio/media", {"token": "t"}),
        twiml.Say("Hello", loop=2),
        twiml.Pause(3.0),
        twiml.Dial(("+12125550199",), caller_id="+12125550100"),
        twiml.Dial(("+12125550198",)),
        twiml.Redirect("https://x.test/next", "GET"),
        twiml.Unsupported("Gather"),
        twiml.Reject("busy"),
        twiml.Hangup(),
    ]


@pytest.mark.parametrize("document", ["", "<Response>", "<Say>hi</Say>"])
def test_what_is_not_a_twiml_response_is_refused(document: str) -> None:
    with pytest.raises(twiml.TwimlError):
        twiml.parse(document)


BASE = {"To": ["+12125550123"], "From": ["+12125550100"], "Url": ["https://x.test/twilio/outbound"]}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"To": []}, 21201),
        ({"To": ["555"]}, 21211),
        ({"From": []}, 21213),
        ({"From": ["abc"]}, 21212),
        ({"Url": []}, 21205),
        ({"Url": ["ftp://x.test/a"]}, 21205),
        ({"StatusCallbackEvent": ["initiated bogus"]}, 21626),
        ({"MachineDetection": ["Sometimes"]}, 21626),
        ({"Timeout": ["soon"]}, 21626),
    ],
)
def test_a_call_request_twilio_would_refuse_is_refused_with_its_code(change: dict[str, list[str]], code: int) -> None:
    with pytest.raises(RestError) as refused:
        parse_create(BASE | change)
    assert refused.value.status == 400 and refused.value.code == code


def test_a_call_request_is_read_as_twilio_reads_it() -> None:
    request = parse_create(
        BASE
        | {
            "StatusCallbackEvent": ["initiated", "ringing answered", "completed"],
            "Timeout": ["2"],
            "MachineDetection": ["DetectMessageEnd"],
            "AsyncAmd": ["true"],
        }
    )
    assert request.status_callback_events == {"initiated", "ringing", "answered", "completed"}
    assert request.timeout_s == 5.0  # Twilio's floor
    assert request.machine_detection == "DetectMessageEnd" and request.async_amd
    assert parse_create(BASE).status_callback_events == {"completed"}


async def test_the_api_refuses_bad_credentials_and_bodies_with_twilios_errors_and_no_call_is_made() -> None:
    import httpx

    from app.carrier.server import Carrier, CarrierConfig

    carrier = Carrier(CarrierConfig(account_sid="AC" + "1" * 32, auth_token="token", people=People.from_json({})))
    url = f"/2010-04-01/Accounts/AC{'1' * 32}/Calls.json"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=carrier.app), base_url="http://carrier") as api:
        anonymous = await api.post(url, data={"To": "+12125550123"})
        wrong = await api.post(url, data={"To": "+12125550123"}, auth=("AC" + "1" * 32, "nope"))
        other = await api.get(f"/2010-04-01/Accounts/AC{'2' * 32}/Calls.json", auth=("AC" + "1" * 32, "token"))
        binary = await api.post(url, content=b"To=\xff\xfe", auth=("AC" + "1" * 32, "token"),
                                headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        huge = await api.post(url, content=b"Twiml=" + b"x" * 70_000, auth=("AC" + "1" * 32, "token"),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        missing = await api.post(url.replace("Calls.json", "Calls/CA" + "0" * 32 + ".json"),
                                 data={"Status": "completed"}, auth=("AC" + "1" * 32, "token"))  # fmt: skip
    assert [r.status_code for r in (anonymous, wrong, other)] == [401, 401, 401]
    assert anonymous.json()["code"] == 20003 and anonymous.json()["more_info"].endswith("/20003")
    assert binary.status_code == 400 and binary.json()["code"] == 21626
    assert huge.status_code == 413 and missing.status_code == 404 and missing.json()["code"] == 20404
    assert carrier.calls == {}
