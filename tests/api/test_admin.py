"""An admin's day: keys listed, made and revoked over the API and the command line, each change in the audit
log, which the API reads with filters; the budget's overview at the path the README gives."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from app.auth.keys import Role
from app.cli import cli
from tests.support import key_for, make_settings, serve

pytestmark = pytest.mark.asyncio
UNUSED_REALTIME = "ws://127.0.0.1:9/v1"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_an_admin_lists_makes_and_revokes_keys_and_reads_it_all_in_the_audit_log(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, realtime_url=UNUSED_REALTIME)
    admin = await key_for(settings.effective_database_url, Role.admin)
    supervisor = await key_for(settings.effective_database_url, Role.supervisor)
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as api:
        made = await api.post("/api/v1/keys", json={"role": "ops", "name": "Olga (ops)", "grants": ["transcripts"]},
                              headers=bearer(admin))  # fmt: skip
        new_key = made.json()["key"]
        works = await api.get("/api/v1/calls", headers=bearer(new_key))
        listed = (await api.get("/api/v1/keys", headers=bearer(admin))).json()
        not_admin = await api.get("/api/v1/keys", headers=bearer(supervisor))
        bad_grant = await api.post("/api/v1/keys", json={"role": "ops", "name": "x", "grants": ["root"]},
                                   headers=bearer(admin))  # fmt: skip
        revoked = await api.delete(f"/api/v1/keys/{made.json()['key_id']}", headers=bearer(admin))
        refused = await api.get("/api/v1/calls", headers=bearer(new_key))
        again = await api.delete(f"/api/v1/keys/{made.json()['key_id']}", headers=bearer(admin))
        missing = await api.delete("/api/v1/keys/abcdef", headers=bearer(admin))
        self_revoke = await api.delete(f"/api/v1/keys/{admin.split('_')[1]}", headers=bearer(admin))
        audit = (await api.get("/api/v1/audit", headers=bearer(admin))).json()
        revokes = (await api.get("/api/v1/audit", params={"action": "revoke_key"}, headers=bearer(admin))).json()
        by_key = (await api.get("/api/v1/audit", params={"key_id": admin.split("_")[1], "limit": 1},
                                headers=bearer(admin))).json()  # fmt: skip
        budget = await api.get("/api/v1/budget", headers=bearer(supervisor))
    assert made.status_code == 201 and new_key.startswith("sb_") and works.status_code == 200
    assert made.json()["role"] == "ops" and made.json()["grants"] == ["transcripts"]
    mine = next(k for k in listed if k["key_id"] == made.json()["key_id"])
    assert mine["name"] == "Olga (ops)" and mine["revoked_at"] is None and "key" not in mine
    assert not_admin.status_code == 403 and bad_grant.status_code == 422
    assert (revoked.status_code, refused.status_code, again.status_code) == (204, 401, 204)
    assert missing.status_code == 404 and self_revoke.status_code == 409
    actions = [(e["action"], e["target"]) for e in audit["items"]]
    assert ("create_key", made.json()["key_id"]) in actions and ("revoke_key", made.json()["key_id"]) in actions
    assert [e["action"] for e in revokes["items"]] == ["revoke_key", "revoke_key"]  # the second: already revoked
    assert len(by_key["items"]) == 1 and by_key["next_before"] is not None
    assert budget.status_code == 200 and set(budget.json()) == {"caps", "spend"}


async def test_keys_list_and_revoke_on_the_command_line(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, realtime_url=UNUSED_REALTIME)
    env = {"DATABASE_URL": settings.effective_database_url}
    key = await key_for(settings.effective_database_url, Role.supervisor)
    key_id = key.split("_")[1]
    listed = await asyncio.to_thread(CliRunner().invoke, cli, ["keys", "list"], env=env)
    revoked = await asyncio.to_thread(CliRunner().invoke, cli, ["keys", "revoke", key_id], env=env)
    unknown = await asyncio.to_thread(CliRunner().invoke, cli, ["keys", "revoke", "0000"], env=env)
    after = await asyncio.to_thread(CliRunner().invoke, cli, ["keys", "list"], env=env)
    assert listed.exit_code == 0 and key_id in listed.output and "supervisor" in listed.output
    (before,) = [line for line in listed.output.splitlines() if line.startswith(key_id)]
    assert before.split()[1:6] == ["supervisor", "-", *before.split()[3:5], "-"]  # role, grants, created, revoked
    assert revoked.exit_code == 0 and revoked.output.startswith(f"revoked {key_id} (supervisor")
    assert unknown.exit_code == 1
    (row,) = [line for line in after.output.splitlines() if line.startswith(key_id)]
    assert row.split()[5] not in ("-", "test") and row.split()[-1] == "test"  # the revoked column has a time now
    async with serve(settings) as base, httpx.AsyncClient(base_url=base) as api:
        assert (await api.get("/api/v1/calls", headers=bearer(key))).status_code == 401
