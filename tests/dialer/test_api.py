"""The ops API through the real server: campaigns, contact imports, consent, DNC, and the explain endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from app.archive.models import AuditEntry
from app.auth.keys import Role
from app.db import make_engine, make_sessionmaker
from tests.support import key_for, make_settings, serve

pytestmark = pytest.mark.asyncio

CAMPAIGN = {
    "name": "July reminders",
    "purpose": "informational",
    "subject": "appointment reminders",
    "caller_id": "+12125550100",
    "window_start": "10:00",
    "window_end": "18:00",
}
CSV = (
    b"phone,name,state,consent,consent_at,consent_source\n"
    b"(212) 555-0123,Ada,NY,written,2026-05-01T10:00:00Z,web form\n"
    b"+1 512 555 0123,Bob,TX,express,2026-05-02T10:00:00+00:00,call\n"
    b"not a number,Eve,,written,2026-05-01T10:00:00Z,web\n"
    b"212-555-0123,Ada again,NY,written,2026-05-01T10:00:00Z,web form\n"
    b"+1 800 555 0123,Tollfree,,written,2026-05-01T10:00:00Z,web\n"
)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1")
    key = await key_for(settings.effective_database_url, Role.ops)
    async with (
        serve(settings) as base,
        httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client,
    ):
        yield client


async def make_campaign(api: httpx.AsyncClient, **overrides: object) -> int:
    response = await api.post("/api/v1/campaigns", json={**CAMPAIGN, **overrides})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def test_campaign_lifecycle_and_validation(api: httpx.AsyncClient) -> None:
    cid = await make_campaign(api)
    got = (await api.get(f"/api/v1/campaigns/{cid}")).json()
    assert (got["status"], got["window_start"], got["window_end"], got["caller_id"]) == (
        "draft",
        "10:00",
        "18:00",
        "+12125550100",
    )
    assert (await api.post(f"/api/v1/campaigns/{cid}/pause")).status_code == 409
    assert (await api.post(f"/api/v1/campaigns/{cid}/start")).json()["status"] == "running"
    assert (await api.post(f"/api/v1/campaigns/{cid}/pause")).json()["status"] == "paused"
    assert (await api.post(f"/api/v1/campaigns/{cid}/resume")).json()["status"] == "running"
    patched = await api.patch(
        f"/api/v1/campaigns/{cid}", json={"concurrency": 9, "window_start": "11:00", "window_end": "17:00"}
    )
    assert (patched.json()["concurrency"], patched.json()["window_start"]) == (9, "11:00")
    assert (await api.post(f"/api/v1/campaigns/{cid}/stop")).json()["status"] == "stopped"
    bad = await api.post("/api/v1/campaigns", json={**CAMPAIGN, "purpose": "spam"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    backwards = await api.post("/api/v1/campaigns", json={**CAMPAIGN, "window_start": "18:00", "window_end": "10:00"})
    assert backwards.status_code == 422
    assert (await api.get("/api/v1/campaigns/999")).status_code == 404
    # every instant carries its offset, SQLite included
    assert got["created_at"].endswith(("+00:00", "Z")) and got["updated_at"].endswith(("+00:00", "Z"))
    listing = (await api.get("/api/v1/campaigns", params={"limit": 1})).json()
    assert listing["total"] >= 1 and len(listing["items"]) == 1


async def test_a_campaign_chooses_its_engine_or_leaves_it_to_the_deployment(api: httpx.AsyncClient) -> None:
    default = (await api.get(f"/api/v1/campaigns/{await make_campaign(api)}")).json()
    assert default["engine"] is None  # the deployment's ENGINE
    cid = await make_campaign(api, engine="cascaded")
    assert (await api.get(f"/api/v1/campaigns/{cid}")).json()["engine"] == "cascaded"
    assert (await api.patch(f"/api/v1/campaigns/{cid}", json={"engine": "realtime"})).json()["engine"] == "realtime"
    assert (await api.patch(f"/api/v1/campaigns/{cid}", json={"engine": None})).json()["engine"] is None
    refused = await api.patch(f"/api/v1/campaigns/{cid}", json={"engine": "gpt-5"})
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"


async def test_a_campaign_defines_its_extraction_schema_and_a_signed_webhook(api: httpx.AsyncClient) -> None:
    schema = {"type": "object", "properties": {"appointment_kept": {"type": "boolean"}},
              "required": ["appointment_kept"], "additionalProperties": False}  # fmt: skip
    cid = await make_campaign(api, extraction_schema=schema, webhook_url="https://crm.example.test/hooks/calls",
                              webhook_secret="0123456789abcdef-secret")  # fmt: skip
    made = (await api.get(f"/api/v1/campaigns/{cid}")).json()
    assert made["extraction_schema"] == schema and made["webhook_url"] == "https://crm.example.test/hooks/calls"
    assert made["webhook_secret_set"] is True and "webhook_secret" not in made  # write-only
    loose = {"type": "object", "properties": {"kept": {"type": "boolean"}}}
    refused = await api.patch(f"/api/v1/campaigns/{cid}", json={"extraction_schema": loose})
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    assert "'additionalProperties' is required to be supplied and to be false" in refused.json()["detail"]
    unsigned = await api.post("/api/v1/campaigns", json={**CAMPAIGN, "webhook_url": "https://crm.example.test/h"})
    assert unsigned.status_code == 422 and "webhook_secret" in unsigned.json()["detail"]
    dropped = await api.patch(f"/api/v1/campaigns/{cid}", json={"webhook_secret": None})
    assert dropped.status_code == 422  # the URL stays: deliveries would be unsigned
    cleared = (await api.patch(f"/api/v1/campaigns/{cid}", json={"webhook_url": None, "webhook_secret": None,
                                                                 "extraction_schema": None})).json()  # fmt: skip
    assert (cleared["webhook_url"], cleared["webhook_secret_set"], cleared["extraction_schema"]) == (None, False, None)


async def test_csv_import_reports_bad_rows_and_reimport_changes_nothing(api: httpx.AsyncClient) -> None:
    cid = await make_campaign(api)
    first = (await api.post(f"/api/v1/campaigns/{cid}/contacts/csv", files={"file": ("c.csv", CSV, "text/csv")})).json()
    assert (first["total"], first["accepted"], first["created"], first["held"]) == (5, 3, 3, 1)
    # rows as the spreadsheet numbers them (the header is row 1)
    assert sorted((e["line"], e["code"]) for e in first["errors"]) == [(4, "phone.invalid"), (5, "row.duplicate")]
    assert (first["encoding"], first["delimiter"]) == ("utf-8", ",")
    again = (await api.post(f"/api/v1/campaigns/{cid}/contacts/csv", files={"file": ("c.csv", CSV, "text/csv")})).json()
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 3)
    contacts = (await api.get(f"/api/v1/campaigns/{cid}/contacts")).json()["items"]
    by_phone = {c["phone"]: c for c in contacts}
    assert set(by_phone) == {"+12125550123", "+15125550123", "+18005550123"}
    assert by_phone["+18005550123"]["status"] == "held"  # toll-free: held for review, never dialed
    assert "America/Chicago" in by_phone["+15125550123"]["location"]["zones"]
    # each accepted row with its contact's id, what happened to it, and why it is held when it is
    assert [(r["line"], r["phone"], r["outcome"], r["status"]) for r in first["rows"]] == [
        (2, "+12125550123", "created", "pending"), (3, "+15125550123", "created", "pending"),
        (6, "+18005550123", "created", "held"),
    ]  # fmt: skip
    assert {r["phone"]: r["contact_id"] for r in first["rows"]} == {p: c["id"] for p, c in by_phone.items()}
    assert "toll-free" in first["rows"][2]["held_reason"] and first["rows"][0]["held_reason"] is None
    assert [r["outcome"] for r in again["rows"]] == ["unchanged"] * 3


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"", "file.empty"), ("phone\n212-555-0123\n".encode("utf-16")[:-1], "file.encoding"),
     (b"name;zip\nAda;10001\n", "file.no_phone_column"), (b"phone\n", "file.no_rows")],
)  # fmt: skip
async def test_a_file_that_cannot_be_imported_is_refused_with_422_and_nothing_stored(
    api: httpx.AsyncClient, data: bytes, code: str
) -> None:
    cid = await make_campaign(api)
    refused = await api.post(f"/api/v1/campaigns/{cid}/contacts/csv", files={"file": ("c.csv", data, "text/csv")})
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == code and refused.json()["title"] == "File not imported"
    assert (await api.get(f"/api/v1/campaigns/{cid}/contacts")).json()["items"] == []


async def test_the_template_imports_as_it_is_and_a_semicolon_utf16_sheet_is_read(api: httpx.AsyncClient) -> None:
    template = await api.get("/api/v1/contacts/template.csv")
    assert template.status_code == 200 and template.headers["content-type"].startswith("text/csv")
    cid = await make_campaign(api)
    imported = (await api.post(f"/api/v1/campaigns/{cid}/contacts/csv",
                               files={"file": ("t.csv", template.content, "text/csv")})).json()  # fmt: skip
    assert (imported["created"], imported["rejected"]) == (2, 0)
    sheet = "Phone;Name\r\n(212) 555-0177;Zoë\r\n".encode("utf-16")
    read = (await api.post(f"/api/v1/campaigns/{cid}/contacts/csv",
                           files={"file": ("s.csv", sheet, "text/csv")})).json()  # fmt: skip
    assert (read["encoding"], read["delimiter"], read["created"]) == ("utf-16", ";", 1)


async def test_the_documented_json_contact_import_is_reachable(api: httpx.AsyncClient) -> None:
    cid = await make_campaign(api)
    imported = await api.post(f"/api/v1/campaigns/{cid}/contacts", json=[
        {"phone": "(212) 555-0123", "name": "Ada", "state": "NY", "consent": "written",
         "consent_at": "2026-05-01T10:00:00Z", "consent_source": "web form"}])  # fmt: skip
    assert imported.status_code == 200, imported.text
    assert imported.json()["created"] == 1
    assert [c["phone"] for c in (await api.get(f"/api/v1/campaigns/{cid}/contacts")).json()["items"]] == [
        "+12125550123"
    ]


async def test_campaign_fields_it_will_not_apply_or_cannot_store_are_refused_with_the_reason(
    api: httpx.AsyncClient,
) -> None:
    cid = await make_campaign(api)
    await api.post(f"/api/v1/campaigns/{cid}/start")
    cases = {
        "purpose on a running campaign": {"purpose": "marketing"},
        "unknown field": {"colour": "blue"},
        "null name": {"name": None},
        "null concurrency": {"concurrency": None},
        "name over its column": {"name": "x" * 201},
        "NUL in a name": {"name": "July\u0000reminders"},
        "retry spacing of 1e20 minutes": {"retry_spacing_min": 10**20},
        "calls per second past the top": {"calls_per_second": 1e308},
    }
    answers = {name: await api.patch(f"/api/v1/campaigns/{cid}", json=body) for name, body in cases.items()}
    created = {
        "unknown field": await api.post("/api/v1/campaigns", json={**CAMPAIGN, "colour": "blue"}),
        "NUL in the subject": await api.post("/api/v1/campaigns", json={**CAMPAIGN, "subject": "a\u0000b"}),
        "huge retry spacing": await api.post("/api/v1/campaigns", json={**CAMPAIGN, "retry_spacing_min": 10**20}),
    }
    unchanged = (await api.get(f"/api/v1/campaigns/{cid}")).json()
    cleared = await api.patch(f"/api/v1/campaigns/{cid}", json={"window_start": None, "window_end": None})
    for name, response in {**answers, **created}.items():
        assert response.status_code == 422, (name, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert "cannot be null" in answers["null name"].text and "Extra inputs" in answers["unknown field"].text
    assert (unchanged["name"], unchanged["purpose"]) == (CAMPAIGN["name"], CAMPAIGN["purpose"])
    assert cleared.status_code == 200 and cleared.json()["window_start"] is None


async def test_ops_requeue_a_finished_contact_and_release_a_held_one_with_who_and_why(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    cid = await make_campaign(api, purpose="marketing")
    csv_file = b"phone,state\n(212) 555-0123,NY\n+1 800 555 0123,\n"  # no consent; a toll-free number
    await api.post(f"/api/v1/campaigns/{cid}/contacts/csv", files={"file": ("c.csv", csv_file, "text/csv")})
    base = f"/api/v1/campaigns/{cid}/contacts"
    held = (await api.get(base, params={"status": "held"})).json()["items"]
    found = (await api.get(base, params={"phone": "212-555-0123"})).json()["items"]
    assert [c["phone"] for c in held] == ["+18005550123"] and [c["phone"] for c in found] == ["+12125550123"]
    ada = found[0]
    # Marketing without consent: the dialer ends the contact (done, consent.required) ...
    decision = (await api.get(f"{base}/{ada['id']}/decision", params={"at": "2026-07-01T16:00:00Z"})).json()
    assert decision["outcome"] != "allow"
    # ... a consent is recorded later, and ops put the contact back in the queue.
    early = await api.post(f"{base}/{ada['id']}/requeue", json={"reason": "written consent received"})
    assert early.status_code == 409  # still pending: nothing to re-queue
    await api.post("/api/v1/consents", json={"phone": "+12125550123", "kind": "written", "source": "web form"})
    engine = make_engine(make_settings(tmp_path, realtime_url="x").effective_database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE contacts SET status = 'done', disposition = 'consent.required' WHERE id = :id"),
                {"id": ada["id"]},
            )
    finally:
        await engine.dispose()
    requeued = await api.post(f"{base}/{ada['id']}/requeue", json={"reason": "written consent received"})
    assert requeued.status_code == 200 and requeued.json()["status"] == "pending"
    assert requeued.json()["disposition"] is None
    # A held toll-free number needs the callee's state to be released; then it is located there.
    toll_free = held[0]
    no_state = await api.post(f"{base}/{toll_free['id']}/release", json={"reason": "customer file says Texas"})
    assert no_state.status_code == 422 and "give the callee's state" in no_state.text
    released = await api.post(f"{base}/{toll_free['id']}/release",
                              json={"reason": "customer file says Texas", "state": "TX"})  # fmt: skip
    assert released.status_code == 200 and released.json()["status"] == "pending"
    assert "America/Chicago" in released.json()["location"]["zones"]
    again = await api.post(f"{base}/{toll_free['id']}/release", json={"reason": "again"})
    assert again.status_code == 409
    assert (await api.get(base, params={"status": "sideways"})).status_code == 422
    entries = await audit_entries(tmp_path)
    actions = [(e.action, e.target, e.detail.get("reason")) for e in entries if e.action.endswith("_contact")]
    assert actions == [
        ("requeue_contact", f"contact:{ada['id']}", "written consent received"),
        ("release_contact", f"contact:{toll_free['id']}", "customer file says Texas"),
    ]
    assert all(e.key_id and e.role == "ops" for e in entries if e.action.endswith("_contact"))


async def audit_entries(tmp_path: Path) -> list[AuditEntry]:
    engine = make_engine(make_settings(tmp_path, realtime_url="x").effective_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return list(await session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    finally:
        await engine.dispose()


async def test_explain_says_why_and_an_api_revocation_blocks_every_campaign(api: httpx.AsyncClient) -> None:
    cid = await make_campaign(api)
    other = await make_campaign(api, name="Other", subject="billing")
    for campaign in (cid, other):
        await api.post(f"/api/v1/campaigns/{campaign}/contacts/csv", files={"file": ("c.csv", CSV, "text/csv")})
    contacts = (await api.get(f"/api/v1/campaigns/{cid}/contacts")).json()["items"]
    ada = next(c for c in contacts if c["phone"] == "+12125550123")

    async def explain(campaign: int, contact: int, at: str) -> dict[str, object]:
        response = await api.get(f"/api/v1/campaigns/{campaign}/contacts/{contact}/decision", params={"at": at})
        assert response.status_code == 200, response.text
        return dict(response.json())

    # 2026-07-01 15:00Z is 11:00 in New York: inside the law and the campaign's 10:00-18:00.
    assert (await explain(cid, ada["id"], "2026-07-01T15:00:00Z"))["outcome"] == "allow"
    early = await explain(cid, ada["id"], "2026-07-01T13:30:00Z")  # 09:30: the campaign window narrows
    assert early["outcome"] == "defer" and early["reasons"][0]["code"] == "window.campaign"  # type: ignore[index]
    assert early["defer_until"] == "2026-07-01T14:00:00Z"
    revoked = await api.post("/api/v1/consents/revoke", json={"phone": "212 555 0123", "reason": "asked by email"})
    assert revoked.status_code == 201
    other_ada = next(
        c
        for c in (await api.get(f"/api/v1/campaigns/{other}/contacts")).json()["items"]
        if c["phone"] == "+12125550123"
    )
    for campaign, contact in ((cid, ada["id"]), (other, other_ada["id"])):
        decision = await explain(campaign, contact, "2026-07-01T15:00:00Z")
        assert decision["outcome"] == "deny" and decision["reasons"][0]["code"] == "consent.revoked"  # type: ignore[index]
    dnc = (await api.get("/api/v1/dnc/+12125550123")).json()
    assert dnc["internal"] is True
    naive = await api.get(
        f"/api/v1/campaigns/{cid}/contacts/{ada['id']}/decision", params={"at": "2026-07-01T15:00:00"}
    )
    assert naive.status_code == 422


async def test_internal_dnc_add_check_remove_and_national_registry(api: httpx.AsyncClient) -> None:
    assert (await api.post("/api/v1/dnc", json={"phone": "+15125550123", "reason": "complaint"})).status_code == 201
    assert (await api.get("/api/v1/dnc/5125550123")).json()["internal"] is True
    assert (await api.delete("/api/v1/dnc/+15125550123")).status_code == 422  # a removal needs a reason
    assert (await api.delete("/api/v1/dnc/+15125550123", params={"reason": "added by mistake"})).status_code == 200
    assert (await api.get("/api/v1/dnc/+15125550123")).json()["internal"] is False
    bulk = (await api.post("/api/v1/dnc/import", json={"phones": ["+13055550123", "garbage"], "reason": "list"})).json()
    assert bulk["added"] == 1 and bulk["rejected"][0]["index"] == 1
    registry = await api.post("/api/v1/national-dnc", json={"as_of": "2026-06-20", "phones": ["+16175550123"]})
    assert registry.status_code == 201
    status = (await api.get("/api/v1/dnc/+16175550123")).json()
    assert status["national"] is True and status["national_as_of"] == "2026-06-20"


async def test_the_ops_api_needs_an_ops_key(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, realtime_url="ws://127.0.0.1:9/v1")
    supervisor = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/api/v1/campaigns")).status_code == 401
        forbidden = await client.get("/api/v1/campaigns", headers={"Authorization": f"Bearer {supervisor}"})
    assert forbidden.status_code == 403
