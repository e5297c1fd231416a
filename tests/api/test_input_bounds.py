"""Numbers, instants and strings past what the database or the code can hold are 4xx problems, on
both databases: offsets and ids past SQL integers, infinity and 1e308 as money, the year 1, NUL bytes
in path ids. Each of these answered 500 before it was bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.auth.keys import Role
from tests.dialer.test_api import make_campaign
from tests.support import key_for, make_settings, serve

pytestmark = pytest.mark.asyncio

PAST_INT64 = str(2**63)
PAST_INT32 = str(2**31)


@pytest.fixture(params=["sqlite", "postgres"])
async def admin(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    database_url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1", database_url=database_url)
    key = await key_for(settings.effective_database_url, Role.admin)
    async with (
        serve(settings) as base,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client,
    ):
        yield client


OUT_OF_BOUNDS = [
    "/api/v1/campaigns?offset=" + PAST_INT64,
    "/api/v1/campaigns?offset=" + PAST_INT32,
    "/api/v1/campaigns/" + PAST_INT64,
    "/api/v1/campaigns/" + PAST_INT32,
    "/api/v1/campaigns/1/contacts?offset=" + PAST_INT64,
    "/api/v1/budget/enforcements?offset=" + PAST_INT64,
    "/api/v1/calls?min_cost_usd=inf",
    "/api/v1/calls?min_cost_usd=nan",
    "/api/v1/calls?max_cost_usd=1e308",
    "/api/v1/calls?min_duration_s=1e308",
    "/api/v1/calls?campaign_id=" + PAST_INT64,
    "/api/v1/calls/CA%00" + "0" * 31,
    "/api/v1/calls/CA%00" + "0" * 31 + "/export",
    "/api/v1/budget/calls/CA%00" + "0" * 31,
    "/api/v1/dnc/%2B1212555%000123",
]


@pytest.mark.parametrize("path", OUT_OF_BOUNDS)
async def test_a_value_past_what_can_be_stored_is_a_4xx_problem(admin: httpx.AsyncClient, path: str) -> None:
    response = await admin.get(path)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == response.status_code


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-07-01T15:00:00"])
async def test_a_decision_instant_out_of_range_or_without_an_offset_is_a_422(admin: httpx.AsyncClient, at: str) -> None:
    cid = await make_campaign(admin)
    imported = await admin.post(f"/api/v1/campaigns/{cid}/contacts", json=[
        {"phone": "(212) 555-0123", "name": "Ada", "state": "NY", "consent": "written",
         "consent_at": "2026-05-01T10:00:00Z", "consent_source": "web form"}])  # fmt: skip
    assert imported.status_code == 200, imported.text
    (contact,) = (await admin.get(f"/api/v1/campaigns/{cid}/contacts")).json()["items"]
    response = await admin.get(f"/api/v1/campaigns/{cid}/contacts/{contact['id']}/decision", params={"at": at})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    fine = await admin.get(
        f"/api/v1/campaigns/{cid}/contacts/{contact['id']}/decision", params={"at": "2026-07-01T15:00:00Z"}
    )
    assert fine.status_code == 200, fine.text


NUL_BODIES = {
    "a key's name": ("/api/v1/keys", {"role": "ops", "name": "night\u0000shift"}),
    "a campaign's extraction schema": (
        "/api/v1/campaigns",
        {
            "name": "c",
            "purpose": "informational",
            "subject": "s",
            "caller_id": "+12125550100",
            "extraction_schema": {"type": "object", "properties": {"a\u0000b": {"type": "string"}}},
        },
    ),
    "a campaign's webhook secret": (
        "/api/v1/campaigns",
        {
            "name": "c",
            "purpose": "informational",
            "subject": "s",
            "caller_id": "+12125550100",
            "webhook_url": "https://results.example.com/hook",
            "webhook_secret": "s" * 15 + "\u0000",
        },
    ),
    "a campaign's webhook URL": (
        "/api/v1/campaigns",
        {
            "name": "c",
            "purpose": "informational",
            "subject": "s",
            "caller_id": "+12125550100",
            "webhook_url": "https://results.example.com/h\u0000ok",
            "webhook_secret": "s" * 16,
        },
    ),
    "a consent's source": ("/api/v1/consents", {"phone": "+12125550123", "kind": "written", "source": "w\u0000"}),
    "a DNC number": ("/api/v1/dnc", {"phones": ["+1212555\u00000123"]}),
}


@pytest.mark.parametrize("label", NUL_BODIES)
async def test_a_nul_in_a_request_bodys_text_is_a_422_problem(admin: httpx.AsyncClient, label: str) -> None:
    """PostgreSQL cannot store NUL in text (nor as \\u0000 in jsonb): refused before the database sees it.
    The key's name and a campaign's webhook secret and URL answered 500 on PostgreSQL (found by the API
    fuzzing)."""
    path, body = NUL_BODIES[label]
    response = await admin.post(path, json=body)
    assert response.status_code == 422, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
